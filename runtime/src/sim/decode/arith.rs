//! Elementwise instructions: `cvt`, integer and floating-point arithmetic, bit operations
//! and `setp`.

use super::{Cx, Mods, RawOperand};
use crate::sim::ast::{Alu, BoolOp, Cmp, Cvt, FloatOp, IntOp, Op, Rounding};
use crate::sim::types::Ty;

pub(super) fn cvt(cx: &mut Cx, m: &mut Mods) -> Result<Op, String> {
    let rounding = m
        .one_of(&["rn", "rz", "rm", "rp", "rni", "rzi", "rmi", "rpi"])
        .and_then(Rounding::from_name);
    let ftz = m.has("ftz");
    let sat = m.has("sat");
    let [dst_ty, src_ty] = m.types()[..] else {
        return Err("cvt needs a destination and a source type (`cvt.f32.s32`)".into());
    };
    if dst_ty == Ty::Pred || src_ty == Ty::Pred {
        return Err("cvt does not convert predicates; use selp or setp".into());
    }
    let integral = rounding.is_some_and(Rounding::is_integral);
    match (src_ty.is_float(), dst_ty.is_float()) {
        (true, false) if !integral => {
            return Err("float-to-integer cvt needs .rni, .rzi, .rmi or .rpi".into())
        }
        (false, true) if rounding.is_none() || integral => {
            return Err("integer-to-float cvt needs .rn, .rz, .rm or .rp".into())
        }
        (false, false) if rounding.is_some() => {
            return Err("integer-to-integer cvt takes no rounding modifier".into())
        }
        (true, true) => {
            let narrowing = dst_ty.bits() < src_ty.bits();
            if narrowing && (rounding.is_none() || integral) {
                return Err(format!(
                    "narrowing cvt{dst_ty}{src_ty} needs .rn, .rz, .rm or .rp"
                ));
            }
            if !narrowing && rounding.is_some() && !integral {
                return Err(format!(
                    "cvt{dst_ty}{src_ty} is exact and takes no .rn/.rz/.rm/.rp"
                ));
            }
        }
        _ => {}
    }
    let directed = matches!(rounding, Some(Rounding::Rz | Rounding::Rm | Rounding::Rp));
    if directed && matches!(dst_ty, Ty::F16 | Ty::Bf16) {
        return Err(format!("only .rn conversions to {dst_ty} are supported"));
    }
    cx.arity(2)?;
    Ok(Op::Alu {
        alu: Alu::Cvt(Cvt {
            dst: dst_ty,
            src: src_ty,
            rounding,
            ftz,
            sat,
        }),
        dst: cx.dst(0, dst_ty)?,
        src: vec![cx.src(1, src_ty)?],
    })
}

/// The `.rn`/`.approx`/`.full` forms an f32/f64 operation accepts, and whether one is
/// required; `None` means the operation takes none of them.
fn precision_rule(op: FloatOp, ty: Ty) -> Option<(&'static [&'static str], bool)> {
    use FloatOp::*;
    Some(match (op, ty) {
        (Add | Sub | Mul, _) => (&["rn"], false),
        (Fma, _) => (&["rn"], true),
        (Div, Ty::F32) => (&["rn", "approx", "full"], true),
        (Sqrt, Ty::F32) | (Rcp, _) => (&["rn", "approx"], true),
        (Div | Sqrt, _) => (&["rn"], true),
        (Rsqrt | Ex2 | Lg2 | Sin | Cos | Tanh, _) => (&["approx"], true),
        (Min | Max | MinNan | MaxNan | Neg | Abs, _) => return None,
    })
}

pub(super) fn arithmetic(cx: &mut Cx, m: &mut Mods, base: &str) -> Result<Op, String> {
    let ty = m.ty()?;
    if ty.is_float() {
        float_arithmetic(cx, m, base, ty)
    } else if ty.is_int() {
        int_arithmetic(cx, m, base, ty)
    } else {
        Err(format!("`{base}` does not take {ty}"))
    }
}

fn float_arithmetic(cx: &mut Cx, m: &mut Mods, base: &str, ty: Ty) -> Result<Op, String> {
    use FloatOp::*;
    if !matches!(ty, Ty::F32 | Ty::F64) {
        return Err(format!("{ty} arithmetic is not supported; convert to .f32"));
    }
    let (op, arity) = match base {
        "add" => (Add, 2),
        "sub" => (Sub, 2),
        "mul" => (Mul, 2),
        "mad" | "fma" => (Fma, 3),
        "div" => (Div, 2),
        "min" => (Min, 2),
        "max" => (Max, 2),
        "neg" => (Neg, 1),
        "abs" => (Abs, 1),
        "rcp" => (Rcp, 1),
        "sqrt" => (Sqrt, 1),
        "rsqrt" => (Rsqrt, 1),
        "ex2" => (Ex2, 1),
        "lg2" => (Lg2, 1),
        "sin" => (Sin, 1),
        "cos" => (Cos, 1),
        "tanh" => (Tanh, 1),
        _ => return Err(format!("`{base}` does not take {ty}")),
    };
    if let Some(directed) = m.one_of(&["rz", "rm", "rp"]) {
        return Err(format!(
            "unsupported rounding modifier `.{directed}`: the simulator implements .rn arithmetic"
        ));
    }
    let given = m.one_of(&["rn", "approx", "full"]);
    match (precision_rule(op, ty), given) {
        (None, Some(p)) => return Err(format!("`{base}` takes no `.{p}` modifier")),
        (Some((_, true)), None) => {
            let (allowed, _) = precision_rule(op, ty).expect("matched Some");
            return Err(format!(
                "`{base}{ty}` needs one of .{}",
                allowed.join(", .")
            ));
        }
        (Some((allowed, _)), Some(p)) if !allowed.contains(&p) => {
            return Err(format!("`{base}{ty}` does not take `.{p}`"))
        }
        _ => {}
    }
    let op = match (op, m.has("NaN")) {
        (op, false) => op,
        (Min, true) => MinNan,
        (Max, true) => MaxNan,
        (_, true) => return Err(format!("`{base}` takes no `.NaN` modifier")),
    };
    let ftz = m.has("ftz");
    let sat = m.has("sat");
    if sat && ty != Ty::F32 {
        return Err(".sat applies to .f32 only".into());
    }
    float_or_int_alu(cx, Alu::Float { op, ty, ftz, sat }, ty, ty, arity)
}

fn int_arithmetic(cx: &mut Cx, m: &mut Mods, base: &str, ty: Ty) -> Result<Op, String> {
    use IntOp::*;
    let mode = m.one_of(&["lo", "hi", "wide"]);
    let needs_mode = matches!(base, "mul" | "mad");
    if needs_mode != mode.is_some() {
        return Err(match needs_mode {
            true => format!("integer `{base}` needs .lo, .hi or .wide"),
            false => format!("`{base}` takes no .{} modifier", mode.unwrap_or_default()),
        });
    }
    let (op, arity) = match (base, mode) {
        ("add", _) if m.has("sat") => (AddSat, 2),
        ("add", _) => (Add, 2),
        ("sub", _) => (Sub, 2),
        ("mul", Some("lo")) => (MulLo, 2),
        ("mul", Some("hi")) => (MulHi, 2),
        ("mul", _) => (MulWide, 2),
        ("mad", Some("lo")) => (MadLo, 3),
        ("mad", Some("hi")) => (MadHi, 3),
        ("mad", _) => (MadWide, 3),
        ("div", _) => (Div, 2),
        ("rem", _) => (Rem, 2),
        ("min", _) => (Min, 2),
        ("max", _) => (Max, 2),
        ("neg", _) => (Neg, 1),
        ("abs", _) => (Abs, 1),
        _ => return Err(format!("`{base}` does not take integer type {ty}")),
    };
    if op == AddSat && ty != Ty::S32 {
        return Err("add.sat applies to .s32 only".into());
    }
    if matches!(op, Neg | Abs) && !ty.is_signed() {
        return Err(format!("`{base}` needs a signed type, not {ty}"));
    }
    if ty == Ty::Pred || ty.bits() < 16 {
        return Err(format!("`{base}` does not take {ty}"));
    }
    let dst_ty = if matches!(op, MulWide | MadWide) {
        wide(ty)?
    } else {
        ty
    };
    let alu = Alu::Int { op, ty };
    if op == MadWide {
        // The addend is already double width.
        cx.arity(4)?;
        return Ok(Op::Alu {
            alu,
            dst: cx.dst(0, dst_ty)?,
            src: vec![cx.src(1, ty)?, cx.src(2, ty)?, cx.src(3, dst_ty)?],
        });
    }
    float_or_int_alu(cx, alu, dst_ty, ty, arity)
}

fn wide(ty: Ty) -> Result<Ty, String> {
    Ok(match ty {
        Ty::U16 => Ty::U32,
        Ty::U32 => Ty::U64,
        Ty::S16 => Ty::S32,
        Ty::S32 => Ty::S64,
        _ => {
            return Err(format!(
                ".wide needs a 16- or 32-bit integer type, not {ty}"
            ))
        }
    })
}

/// `op.ty d, a[, b[, c]]` with every source of type `src_ty`.
fn float_or_int_alu(
    cx: &mut Cx,
    alu: Alu,
    dst_ty: Ty,
    src_ty: Ty,
    arity: usize,
) -> Result<Op, String> {
    cx.arity(arity + 1)?;
    let dst = cx.dst(0, dst_ty)?;
    let src = (1..=arity)
        .map(|i| cx.src(i, src_ty))
        .collect::<Result<_, _>>()?;
    Ok(Op::Alu { alu, dst, src })
}

pub(super) fn bitwise(cx: &mut Cx, m: &mut Mods, base: &str) -> Result<Op, String> {
    use IntOp::*;
    let ty = m.ty()?;
    if !(ty.is_int() || ty == Ty::Pred) || ty.bits() == 8 {
        return Err(format!("`{base}` does not take {ty}"));
    }
    let (op, arity) = match base {
        "and" => (And, 2),
        "or" => (Or, 2),
        "xor" => (Xor, 2),
        "not" => (Not, 1),
        "shl" => (Shl, 2),
        "shr" => (Shr, 2),
        "popc" => (Popc, 1),
        "clz" => (Clz, 1),
        _ => (Brev, 1),
    };
    if ty == Ty::Pred && !matches!(op, And | Or | Xor | Not) {
        return Err(format!("`{base}` does not take .pred"));
    }
    cx.arity(arity + 1)?;
    let dst_ty = if matches!(op, Popc | Clz) {
        Ty::U32
    } else {
        ty
    };
    let dst = cx.dst(0, dst_ty)?;
    let mut src = vec![cx.src(1, ty)?];
    if arity == 2 {
        // Shift amounts are always .u32.
        let b_ty = if matches!(op, Shl | Shr) { Ty::U32 } else { ty };
        src.push(cx.src(2, b_ty)?);
    }
    Ok(Op::Alu {
        alu: Alu::Int { op, ty },
        dst,
        src,
    })
}

pub(super) fn setp(cx: &mut Cx, m: &mut Mods) -> Result<Op, String> {
    use Cmp::*;
    const CMPS: [(&str, Cmp); 18] = [
        ("eq", Eq),
        ("ne", Ne),
        ("lt", Lt),
        ("le", Le),
        ("gt", Gt),
        ("ge", Ge),
        ("lo", Lo),
        ("ls", Ls),
        ("hi", Hi),
        ("hs", Hs),
        ("equ", Equ),
        ("neu", Neu),
        ("ltu", Ltu),
        ("leu", Leu),
        ("gtu", Gtu),
        ("geu", Geu),
        ("num", Num),
        ("nan", Nan),
    ];
    let names: Vec<&str> = CMPS.iter().map(|c| c.0).collect();
    let cmp_name = m
        .one_of(&names)
        .ok_or("setp needs a comparison (.lt, .eq, ...)")?;
    let cmp = CMPS.iter().find(|c| c.0 == cmp_name).expect("listed").1;
    let combine = match m.one_of(&["and", "or", "xor"]) {
        Some("and") => Some(BoolOp::And),
        Some("or") => Some(BoolOp::Or),
        Some(_) => Some(BoolOp::Xor),
        None => None,
    };
    let ftz = m.has("ftz");
    let ty = m.ty()?;
    let float_only = matches!(cmp, Equ | Neu | Ltu | Leu | Gtu | Geu | Num | Nan);
    if float_only && !ty.is_float() || matches!(cmp, Lo | Ls | Hi | Hs) && ty.is_float() {
        return Err(format!("setp.{cmp_name} does not take {ty}"));
    }
    if matches!(ty, Ty::F16 | Ty::Bf16 | Ty::Pred) {
        return Err(format!("setp does not take {ty}"));
    }
    cx.arity(if combine.is_some() { 4 } else { 3 })?;
    let (p, q) = match &cx.raw.operands[0] {
        RawOperand::Pair(p, q) => (cx.reg(p, Ty::Pred)?, Some(cx.reg(q, Ty::Pred)?)),
        _ => (cx.dst(0, Ty::Pred)?, None),
    };
    let (a, b) = (cx.src(1, ty)?, cx.src(2, ty)?);
    let combine = match combine {
        Some(op) => Some((op, cx.pred(3)?)),
        None => None,
    };
    Ok(Op::Setp {
        cmp,
        ty,
        ftz,
        p,
        q,
        a,
        b,
        combine,
    })
}
