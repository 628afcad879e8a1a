//! The instruction table: from an opcode with its modifiers and raw operands to a typed
//! [`Op`]. Every modifier is either understood, explicitly ignored (cache and memory-order
//! hints, which do not change a single launch's results), or an error that names it.

use super::ast::{
    Address, Alu, AtomOp, BoolOp, Cmp, Cvt, FloatOp, IntOp, Op, Operand, PredSrc, Reg,
    Rounding, ShflMode, Space, Special, VoteMode, SHARED_WINDOW,
};
use super::types::Ty;

/// An instruction as written, before names and modifiers are understood.
#[derive(Clone, Debug)]
pub(crate) struct RawInstruction {
    pub line: usize,
    pub text: String,
    /// `@name` or `@!name`.
    pub guard: Option<(String, bool)>,
    pub opcode: String,
    pub operands: Vec<RawOperand>,
}

#[derive(Clone, Debug, PartialEq)]
pub(crate) enum RawOperand {
    /// A register, special register, symbol or label.
    Name(String),
    /// `symbol+offset`.
    SymbolOffset(String, i64),
    Literal(Literal),
    /// `!%p`.
    Not(String),
    /// `%r|%p` (a value and a predicate destination).
    Pair(String, String),
    /// `{%f1, %f2}`.
    Vector(Vec<String>),
    /// `[base+offset]`, `base` a register or symbol.
    Address { base: Option<String>, offset: i64 },
}

/// A numeric literal as PTX spells it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Literal {
    Int(i128),
    Float(f64),
    /// `0f3F800000`: the bits of an f32.
    F32Bits(u32),
    /// `0d3FF0000000000000`: the bits of an f64.
    F64Bits(u64),
}

impl Literal {
    pub fn parse(s: &str) -> Option<Literal> {
        let lower = s.to_ascii_lowercase();
        if let Some(hex) = lower.strip_prefix("0f").filter(|h| h.len() == 8) {
            return u32::from_str_radix(hex, 16).ok().map(Literal::F32Bits);
        }
        if let Some(hex) = lower.strip_prefix("0d").filter(|h| h.len() == 16) {
            return u64::from_str_radix(hex, 16).ok().map(Literal::F64Bits);
        }
        let digits = lower.strip_suffix('u').unwrap_or(&lower);
        if let Some(hex) = digits.strip_prefix("0x") {
            return i128::from_str_radix(hex, 16).ok().map(Literal::Int);
        }
        if let Some(bin) = digits.strip_prefix("0b") {
            return i128::from_str_radix(bin, 2).ok().map(Literal::Int);
        }
        if digits.contains(['.', 'e']) {
            return digits.parse().ok().map(Literal::Float);
        }
        if digits.len() > 1 && digits.starts_with('0') {
            return i128::from_str_radix(&digits[1..], 8).ok().map(Literal::Int);
        }
        digits.parse().ok().map(Literal::Int)
    }

    pub fn negate(self) -> Literal {
        match self {
            Literal::Int(v) => Literal::Int(-v),
            Literal::Float(v) => Literal::Float(-v),
            Literal::F32Bits(b) => Literal::F32Bits(b ^ 0x8000_0000),
            Literal::F64Bits(b) => Literal::F64Bits(b ^ (1 << 63)),
        }
    }

    /// The literal encoded as an operand of type `ty`.
    fn bits(self, ty: Ty) -> Result<u64, String> {
        let as_float = |x: f64| match ty {
            Ty::F64 => x.to_bits(),
            Ty::F32 => (x as f32).to_bits() as u64,
            Ty::F16 => half::f16::from_f64(x).to_bits() as u64,
            _ => half::bf16::from_f64(x).to_bits() as u64,
        };
        match (self, ty.is_float()) {
            (Literal::Int(v), false) => {
                let bits = ty.bits();
                let fits = v >= -(1i128 << (bits - 1).min(64)) && v < (1i128 << bits);
                if ty == Ty::Pred && !(v == 0 || v == 1) || !fits {
                    return Err(format!("literal {v} does not fit {ty}"));
                }
                Ok(v as u64 & ty.mask())
            }
            (Literal::Int(v), true) => Ok(as_float(v as f64)),
            (Literal::Float(x), true) => Ok(as_float(x)),
            (Literal::F32Bits(b), true) => Ok(as_float(f32::from_bits(b) as f64)),
            (Literal::F64Bits(b), true) => Ok(as_float(f64::from_bits(b))),
            (Literal::F32Bits(b), false) if ty.bits() == 32 => Ok(b as u64),
            (Literal::F64Bits(b), false) if ty.bits() == 64 => Ok(b),
            _ => Err(format!("floating-point literal used as a {ty} operand")),
        }
    }
}

/// The address of a named variable.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Symbol {
    /// Offset in the block's shared memory.
    Shared(u64),
    /// Offset in the parameter buffer.
    Param(u64),
}

/// Name lookups the decoder needs from the enclosing scope.
pub(crate) trait Names {
    fn register(&self, name: &str) -> Option<(Reg, Ty)>;
    fn symbol(&mut self, name: &str) -> Option<Symbol>;
    /// An id for a branch target; the parser patches it to an instruction index.
    fn label(&mut self, name: &str) -> usize;
}

/// Decodes one instruction. Errors are messages; the parser adds line and text.
pub(crate) fn decode(raw: &RawInstruction, names: &mut dyn Names) -> Result<Op, String> {
    let mut parts = raw.opcode.split('.');
    let base = parts.next().unwrap_or_default();
    let mut m = Mods {
        opcode: &raw.opcode,
        list: parts.collect(),
    };
    let mut cx = Cx { raw, names };
    let op = match base {
        "mov" => mov(&mut cx, &mut m)?,
        "ld" | "st" => load_store(&mut cx, &mut m, base == "ld")?,
        "cvta" => cvta(&mut cx, &mut m)?,
        "cvt" => cvt(&mut cx, &mut m)?,
        "add" | "sub" | "mul" | "mad" | "fma" | "div" | "rem" | "min" | "max" | "neg"
        | "abs" | "rcp" | "sqrt" | "rsqrt" | "ex2" | "lg2" | "sin" | "cos" | "tanh" => {
            arithmetic(&mut cx, &mut m, base)?
        }
        "and" | "or" | "xor" | "not" | "shl" | "shr" | "popc" | "clz" | "brev" => {
            bitwise(&mut cx, &mut m, base)?
        }
        "setp" => setp(&mut cx, &mut m)?,
        "selp" => {
            let ty = m.ty()?;
            cx.arity(4)?;
            if matches!(cx.raw.operands[3], RawOperand::Not(_)) {
                return Err("selp takes a plain predicate; swap the operands instead of `!`".into());
            }
            Op::Alu {
                alu: Alu::Selp { bits: ty.bits() },
                dst: cx.dst(0, ty)?,
                src: vec![cx.src(1, ty)?, cx.src(2, ty)?, cx.src(3, Ty::Pred)?],
            }
        }
        "bra" => {
            m.ignore(&["uni"]);
            cx.arity(1)?;
            let RawOperand::Name(label) = &raw.operands[0] else {
                return Err("bra needs a label".into());
            };
            Op::Bra {
                target: cx.names.label(label),
            }
        }
        "ret" | "exit" => {
            m.ignore(&["uni"]);
            cx.arity(0)?;
            Op::Exit
        }
        "bar" | "barrier" => {
            m.ignore(&["cta", "aligned"]);
            if !m.has("sync") {
                return Err(format!("only {base}.sync is supported"));
            }
            if raw.operands.len() == 2 {
                return Err("barriers with a thread count are not supported".into());
            }
            cx.arity(1)?;
            Op::Bar {
                id: cx.src(0, Ty::U32)?,
            }
        }
        "shfl" => shfl(&mut cx, &mut m)?,
        "vote" => vote(&mut cx, &mut m)?,
        "atom" | "red" => atomic(&mut cx, &mut m, base == "atom")?,
        "membar" | "fence" => {
            m.ignore(&["cta", "gl", "gpu", "sys", "sc", "acq_rel"]);
            Op::Fence
        }
        _ => return Err(format!("unsupported instruction `{base}`")),
    };
    m.done()?;
    Ok(op)
}

/// The modifiers of an opcode, consumed as they are understood.
struct Mods<'a> {
    opcode: &'a str,
    list: Vec<&'a str>,
}

impl<'a> Mods<'a> {
    fn has(&mut self, name: &'a str) -> bool {
        self.one_of(&[name]).is_some()
    }

    fn one_of(&mut self, names: &[&'a str]) -> Option<&'a str> {
        let i = self.list.iter().position(|m| names.contains(m))?;
        Some(self.list.remove(i))
    }

    fn ignore(&mut self, names: &[&str]) {
        self.list.retain(|m| !names.contains(m));
    }

    /// Removes and returns every type modifier, in order.
    fn types(&mut self) -> Vec<Ty> {
        let mut out = Vec::new();
        self.list.retain(|m| match Ty::from_name(m) {
            Some(t) => {
                out.push(t);
                false
            }
            None => true,
        });
        out
    }

    fn ty(&mut self) -> Result<Ty, String> {
        match self.types().as_slice() {
            [t] => Ok(*t),
            [] => Err(format!("`{}` needs a type modifier", self.opcode)),
            _ => Err(format!("`{}` has more than one type modifier", self.opcode)),
        }
    }

    fn done(&self) -> Result<(), String> {
        match self.list.first() {
            None => Ok(()),
            Some(m) => Err(format!("unsupported modifier `.{m}` in `{}`", self.opcode)),
        }
    }
}

/// Operand decoding for one instruction.
struct Cx<'a> {
    raw: &'a RawInstruction,
    names: &'a mut dyn Names,
}

impl Cx<'_> {
    fn arity(&self, n: usize) -> Result<(), String> {
        if self.raw.operands.len() == n {
            Ok(())
        } else {
            Err(format!(
                "`{}` takes {n} operands, found {}",
                self.raw.opcode,
                self.raw.operands.len()
            ))
        }
    }

    /// A declared register at least as wide as `ty` (`.pred` exactly for predicates).
    fn reg(&self, name: &str, ty: Ty) -> Result<Reg, String> {
        let (reg, declared) = self
            .names
            .register(name)
            .ok_or_else(|| format!("undeclared register {name}"))?;
        let fits = if ty == Ty::Pred || declared == Ty::Pred {
            ty == declared
        } else {
            declared.bits() >= ty.bits()
        };
        if !fits {
            return Err(format!("register {name} is {declared}, the instruction needs {ty}"));
        }
        Ok(reg)
    }

    fn dst(&self, i: usize, ty: Ty) -> Result<Reg, String> {
        match &self.raw.operands[i] {
            RawOperand::Name(name) => self.reg(name, ty),
            other => Err(format!("operand {} must be a register, found {other:?}", i + 1)),
        }
    }

    fn src(&mut self, i: usize, ty: Ty) -> Result<Operand, String> {
        match &self.raw.operands[i] {
            RawOperand::Literal(lit) => Ok(Operand::Imm(lit.bits(ty)?)),
            RawOperand::Name(name) => {
                if let Some(special) = special(name)? {
                    return Ok(Operand::Special(special));
                }
                if self.names.register(name).is_some() {
                    return Ok(Operand::Reg(self.reg(name, ty)?));
                }
                self.symbol_address(name, 0)
            }
            RawOperand::SymbolOffset(name, offset) => self.symbol_address(name, *offset),
            other => Err(format!("operand {} cannot be {other:?}", i + 1)),
        }
    }

    fn symbol_address(&mut self, name: &str, offset: i64) -> Result<Operand, String> {
        match self.names.symbol(name) {
            Some(Symbol::Shared(base)) => Ok(Operand::Imm(base.wrapping_add(offset as u64))),
            Some(Symbol::Param(_)) => Err(format!("the address of parameter {name} cannot be taken")),
            None => Err(format!("undeclared name {name}")),
        }
    }

    fn pred(&mut self, i: usize) -> Result<PredSrc, String> {
        if let RawOperand::Not(name) = &self.raw.operands[i] {
            return Ok(PredSrc {
                operand: Operand::Reg(self.reg(name, Ty::Pred)?),
                negated: true,
            });
        }
        Ok(PredSrc {
            operand: self.src(i, Ty::Pred)?,
            negated: false,
        })
    }

    fn addr(&mut self, i: usize, space: Space) -> Result<Address, String> {
        let RawOperand::Address { base, offset } = &self.raw.operands[i] else {
            return Err(format!("operand {} must be an address `[...]`", i + 1));
        };
        let Some(base) = base else {
            return Ok(Address {
                base: None,
                offset: *offset,
            });
        };
        if self.names.register(base).is_some() {
            if space == Space::Param {
                return Err("parameters are addressed by name, not through a register".into());
            }
            let (_, ty) = self.names.register(base).expect("checked above");
            if !matches!(ty.bits(), 32 | 64) || ty.is_float() {
                return Err(format!("address register {base} is {ty}"));
            }
            return Ok(Address {
                base: Some(self.reg(base, ty)?),
                offset: *offset,
            });
        }
        let symbol_base = match (self.names.symbol(base), space) {
            (Some(Symbol::Shared(a)), Space::Shared) => a,
            (Some(Symbol::Shared(a)), Space::Generic) => a + SHARED_WINDOW,
            (Some(Symbol::Param(a)), Space::Param) => a,
            (Some(_), _) => return Err(format!("{base} is not in the .{} state space", space.name())),
            (None, _) => return Err(format!("undeclared name {base}")),
        };
        Ok(Address {
            base: None,
            offset: symbol_base as i64 + offset,
        })
    }
}

/// Special registers by name; `None` for names that are not special registers.
fn special(name: &str) -> Result<Option<Special>, String> {
    if !name.starts_with('%') && name != "WARP_SZ" {
        return Ok(None);
    }
    let dim = |d: &str| match d {
        "x" => Ok(0),
        "y" => Ok(1),
        "z" => Ok(2),
        _ => Err(format!("unsupported special register {name}")),
    };
    let s = match name.split_once('.') {
        Some(("%tid", d)) => Special::Tid(dim(d)?),
        Some(("%ntid", d)) => Special::Ntid(dim(d)?),
        Some(("%ctaid", d)) => Special::Ctaid(dim(d)?),
        Some(("%nctaid", d)) => Special::Nctaid(dim(d)?),
        None if name == "%laneid" => Special::LaneId,
        None if name == "%warpid" => Special::WarpId,
        None if name == "%nwarpid" => Special::NWarpId,
        None if name == "WARP_SZ" => Special::WarpSize,
        _ => {
            const KNOWN: [&str; 8] = ["%clock", "%clock64", "%smid", "%nsmid", "%gridid", "%lanemask_eq", "%globaltimer", "%pm0"];
            if KNOWN.iter().any(|k| name.starts_with(k)) {
                return Err(format!("unsupported special register {name}"));
            }
            return Ok(None);
        }
    };
    Ok(Some(s))
}

fn mov(cx: &mut Cx, m: &mut Mods) -> Result<Op, String> {
    let ty = m.ty()?;
    cx.arity(2)?;
    if matches!(cx.raw.operands[0], RawOperand::Vector(_)) || matches!(cx.raw.operands[1], RawOperand::Vector(_)) {
        return Err("vector pack/unpack forms of mov are not supported".into());
    }
    Ok(Op::Alu {
        alu: Alu::Mov { bits: ty.bits() },
        dst: cx.dst(0, ty)?,
        src: vec![cx.src(1, ty)?],
    })
}

/// State space modifiers shared by `ld`, `st` and `atom`.
fn space(m: &mut Mods) -> Result<Space, String> {
    Ok(match m.one_of(&["global", "shared", "param", "const", "local"]) {
        Some("global") => Space::Global,
        Some("shared") => Space::Shared,
        Some("param") => Space::Param,
        Some(other) => return Err(format!("the .{other} state space is not supported")),
        None => Space::Generic,
    })
}

fn load_store(cx: &mut Cx, m: &mut Mods, is_load: bool) -> Result<Op, String> {
    // Cache and ordering hints: a single launch computes the same values either way.
    m.ignore(&["ca", "cg", "cs", "lu", "cv", "wb", "wt", "nc", "volatile", "weak", "relaxed"]);
    let space = space(m)?;
    let lanes = match m.one_of(&["v2", "v4"]) {
        Some("v2") => 2,
        Some(_) => 4,
        None => 1,
    };
    let ty = m.ty()?;
    if ty == Ty::Pred {
        return Err("predicates cannot be loaded or stored".into());
    }
    if lanes * ty.bytes() > 16 {
        return Err(format!("a .v{lanes}{ty} access is wider than 16 bytes"));
    }
    if !is_load && space == Space::Param {
        return Err("kernel parameters are read-only".into());
    }
    cx.arity(2)?;
    let (value_at, addr_at) = if is_load { (0, 1) } else { (1, 0) };
    let names: Vec<String> = match (&cx.raw.operands[value_at], lanes) {
        (RawOperand::Vector(v), n) if v.len() == n => v.clone(),
        (RawOperand::Vector(v), n) => {
            return Err(format!("a .v{n} access needs {n} registers, found {}", v.len()))
        }
        (_, 1) => Vec::new(),
        _ => return Err(format!("a .v{lanes} access needs a register vector `{{...}}`")),
    };
    let addr = cx.addr(addr_at, space)?;
    if is_load {
        let dst = if names.is_empty() {
            vec![cx.dst(value_at, ty)?]
        } else {
            names.iter().map(|n| cx.reg(n, ty)).collect::<Result<_, _>>()?
        };
        return Ok(Op::Ld { space, ty, dst, addr });
    }
    let src = if names.is_empty() {
        vec![cx.src(value_at, ty)?]
    } else {
        names
            .iter()
            .map(|n| cx.reg(n, ty).map(Operand::Reg))
            .collect::<Result<_, _>>()?
    };
    Ok(Op::St { space, ty, src, addr })
}

/// `cvta[.to].space.u64`: between generic and global addresses nothing changes; shared
/// addresses move in and out of the shared window.
fn cvta(cx: &mut Cx, m: &mut Mods) -> Result<Op, String> {
    let to = m.has("to");
    let space = space(m)?;
    let ty = m.ty()?;
    cx.arity(2)?;
    if ty != Ty::U64 {
        return Err("cvta needs .u64 (64-bit addressing)".into());
    }
    let (dst, a) = (cx.dst(0, ty)?, cx.src(1, ty)?);
    let alu_src = |op| Op::Alu {
        alu: Alu::Int { op, ty },
        dst,
        src: vec![a, Operand::Imm(SHARED_WINDOW)],
    };
    Ok(match (space, to) {
        (Space::Global, _) => Op::Alu {
            alu: Alu::Mov { bits: 64 },
            dst,
            src: vec![a],
        },
        (Space::Shared, false) => alu_src(IntOp::Add),
        (Space::Shared, true) => alu_src(IntOp::Sub),
        _ => return Err("cvta supports the .global and .shared spaces".into()),
    })
}

fn cvt(cx: &mut Cx, m: &mut Mods) -> Result<Op, String> {
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
                return Err(format!("narrowing cvt{dst_ty}{src_ty} needs .rn, .rz, .rm or .rp"));
            }
            if !narrowing && rounding.is_some() && !integral {
                return Err(format!("cvt{dst_ty}{src_ty} is exact and takes no .rn/.rz/.rm/.rp"));
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
        (Min | Max | Neg | Abs, _) => return None,
    })
}

fn arithmetic(cx: &mut Cx, m: &mut Mods, base: &str) -> Result<Op, String> {
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
            return Err(format!("`{base}{ty}` needs one of .{}", allowed.join(", .")));
        }
        (Some((allowed, _)), Some(p)) if !allowed.contains(&p) => {
            return Err(format!("`{base}{ty}` does not take `.{p}`"))
        }
        _ => {}
    }
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
        _ => return Err(format!(".wide needs a 16- or 32-bit integer type, not {ty}")),
    })
}

/// `op.ty d, a[, b[, c]]` with every source of type `src_ty`.
fn float_or_int_alu(cx: &mut Cx, alu: Alu, dst_ty: Ty, src_ty: Ty, arity: usize) -> Result<Op, String> {
    cx.arity(arity + 1)?;
    let dst = cx.dst(0, dst_ty)?;
    let src = (1..=arity)
        .map(|i| cx.src(i, src_ty))
        .collect::<Result<_, _>>()?;
    Ok(Op::Alu { alu, dst, src })
}

fn bitwise(cx: &mut Cx, m: &mut Mods, base: &str) -> Result<Op, String> {
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
    let dst_ty = if matches!(op, Popc | Clz) { Ty::U32 } else { ty };
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

fn setp(cx: &mut Cx, m: &mut Mods) -> Result<Op, String> {
    use Cmp::*;
    const CMPS: [(&str, Cmp); 18] = [
        ("eq", Eq), ("ne", Ne), ("lt", Lt), ("le", Le), ("gt", Gt), ("ge", Ge),
        ("lo", Lo), ("ls", Ls), ("hi", Hi), ("hs", Hs),
        ("equ", Equ), ("neu", Neu), ("ltu", Ltu), ("leu", Leu), ("gtu", Gtu), ("geu", Geu),
        ("num", Num), ("nan", Nan),
    ];
    let names: Vec<&str> = CMPS.iter().map(|c| c.0).collect();
    let cmp_name = m.one_of(&names).ok_or("setp needs a comparison (.lt, .eq, ...)")?;
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
    Ok(Op::Setp { cmp, ty, ftz, p, q, a, b, combine })
}

fn shfl(cx: &mut Cx, m: &mut Mods) -> Result<Op, String> {
    if !m.has("sync") {
        return Err("only shfl.sync is supported (sm_70 and later)".into());
    }
    let mode = match m.one_of(&["up", "down", "bfly", "idx"]) {
        Some("up") => ShflMode::Up,
        Some("down") => ShflMode::Down,
        Some("bfly") => ShflMode::Bfly,
        Some(_) => ShflMode::Idx,
        None => return Err("shfl.sync needs .up, .down, .bfly or .idx".into()),
    };
    if m.ty()? != Ty::B32 {
        return Err("shfl.sync moves .b32 values".into());
    }
    cx.arity(5)?;
    let (dst, pred) = match &cx.raw.operands[0] {
        RawOperand::Pair(d, p) => (cx.reg(d, Ty::B32)?, Some(cx.reg(p, Ty::Pred)?)),
        _ => (cx.dst(0, Ty::B32)?, None),
    };
    Ok(Op::Shfl {
        mode,
        dst,
        pred,
        a: cx.src(1, Ty::B32)?,
        b: cx.src(2, Ty::B32)?,
        c: cx.src(3, Ty::B32)?,
        membermask: cx.src(4, Ty::B32)?,
    })
}

fn vote(cx: &mut Cx, m: &mut Mods) -> Result<Op, String> {
    if !m.has("sync") {
        return Err("only vote.sync is supported (sm_70 and later)".into());
    }
    let mode = match m.one_of(&["all", "any", "uni", "ballot"]) {
        Some("all") => VoteMode::All,
        Some("any") => VoteMode::Any,
        Some("uni") => VoteMode::Uni,
        Some(_) => VoteMode::Ballot,
        None => return Err("vote.sync needs .all, .any, .uni or .ballot".into()),
    };
    let ty = m.ty()?;
    let want = if mode == VoteMode::Ballot { Ty::B32 } else { Ty::Pred };
    if ty != want {
        return Err(format!("vote.sync with this mode writes {want}"));
    }
    cx.arity(3)?;
    Ok(Op::Vote {
        mode,
        dst: cx.dst(0, ty)?,
        a: cx.pred(1)?,
        membermask: cx.src(2, Ty::B32)?,
    })
}

fn atomic(cx: &mut Cx, m: &mut Mods, returns: bool) -> Result<Op, String> {
    use AtomOp::*;
    // Memory-order and scope qualifiers: the simulator's atomics are sequentially
    // consistent at every scope.
    m.ignore(&["relaxed", "acquire", "release", "acq_rel", "cta", "gpu", "sys"]);
    let space = match space(m)? {
        Space::Param => return Err("atomics on .param are not allowed".into()),
        s => s,
    };
    const OPS: [(&str, AtomOp); 10] = [
        ("add", Add), ("min", Min), ("max", Max), ("inc", Inc), ("dec", Dec),
        ("and", And), ("or", Or), ("xor", Xor), ("exch", Exch), ("cas", Cas),
    ];
    let names: Vec<&str> = OPS.iter().map(|o| o.0).collect();
    let op_name = m.one_of(&names).ok_or("atom/red needs an operation (.add, .cas, ...)")?;
    let op = OPS.iter().find(|o| o.0 == op_name).expect("listed").1;
    let ty = m.ty()?;
    let supported = match op {
        Add => matches!(ty, Ty::U32 | Ty::S32 | Ty::U64 | Ty::F32 | Ty::F64),
        Min | Max => matches!(ty, Ty::U32 | Ty::S32 | Ty::U64 | Ty::S64),
        Inc | Dec => ty == Ty::U32,
        And | Or | Xor | Exch | Cas => ty.is_int() && matches!(ty.bits(), 32 | 64),
    };
    if !supported {
        return Err(format!("atomic .{op_name} does not take {ty}"));
    }
    if !returns && op == Cas || !returns && op == Exch {
        return Err(format!("red has no .{op_name}; use atom"));
    }
    let first = usize::from(returns);
    cx.arity(first + if op == Cas { 3 } else { 2 })?;
    let dst = if returns { Some(cx.dst(0, ty)?) } else { None };
    let addr = cx.addr(first, space)?;
    let b = cx.src(first + 1, ty)?;
    let c = if op == Cas { Some(cx.src(first + 2, ty)?) } else { None };
    Ok(Op::Atom { space, op, ty, dst, addr, b, c })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals_in_every_spelling() {
        assert_eq!(Literal::parse("42"), Some(Literal::Int(42)));
        assert_eq!(Literal::parse("0x1F"), Some(Literal::Int(31)));
        assert_eq!(Literal::parse("017"), Some(Literal::Int(15)));
        assert_eq!(Literal::parse("0b101"), Some(Literal::Int(5)));
        assert_eq!(Literal::parse("7U"), Some(Literal::Int(7)));
        assert_eq!(Literal::parse("0f3F800000"), Some(Literal::F32Bits(0x3f80_0000)));
        assert_eq!(Literal::parse("1.5"), Some(Literal::Float(1.5)));
        assert_eq!(Literal::parse("1e-3"), Some(Literal::Float(1e-3)));
        assert_eq!(Literal::parse("12abc"), None);
        assert_eq!(Literal::Int(-1).bits(Ty::U32), Ok(0xffff_ffff));
        assert_eq!(Literal::Float(1.0).bits(Ty::F32), Ok(0x3f80_0000));
        assert_eq!(Literal::F32Bits(0x3f80_0000).bits(Ty::F64), Ok(1f64.to_bits()));
        assert!(Literal::Int(1 << 40).bits(Ty::U32).is_err());
        assert!(Literal::Float(1.0).bits(Ty::S32).is_err());
        assert!(Literal::Int(2).bits(Ty::Pred).is_err());
    }
}
