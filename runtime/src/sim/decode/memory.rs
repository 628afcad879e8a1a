//! Memory instructions: `ld`, `st`, `cvta` and the atomics `atom` and `red`.

use super::{Cx, Mods, RawOperand};
use crate::sim::ast::{Alu, AtomOp, IntOp, Op, Operand, Space, SHARED_WINDOW};
use crate::sim::types::Ty;

/// State space modifiers shared by `ld`, `st` and `atom`.
pub(super) fn space(m: &mut Mods) -> Result<Space, String> {
    Ok(
        match m.one_of(&["global", "shared", "param", "const", "local"]) {
            Some("global") => Space::Global,
            Some("shared") => Space::Shared,
            Some("param") => Space::Param,
            Some(other) => return Err(format!("the .{other} state space is not supported")),
            None => Space::Generic,
        },
    )
}

pub(super) fn load_store(cx: &mut Cx, m: &mut Mods, is_load: bool) -> Result<Op, String> {
    // Cache and ordering hints: a single launch computes the same values either way.
    m.ignore(&[
        "ca", "cg", "cs", "lu", "cv", "wb", "wt", "nc", "volatile", "weak", "relaxed",
    ]);
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
            return Err(format!(
                "a .v{n} access needs {n} registers, found {}",
                v.len()
            ))
        }
        (_, 1) => Vec::new(),
        _ => {
            return Err(format!(
                "a .v{lanes} access needs a register vector `{{...}}`"
            ))
        }
    };
    let addr = cx.addr(addr_at, space)?;
    if is_load {
        let dst = if names.is_empty() {
            vec![cx.dst(value_at, ty)?]
        } else {
            names
                .iter()
                .map(|n| cx.reg(n, ty))
                .collect::<Result<_, _>>()?
        };
        return Ok(Op::Ld {
            space,
            ty,
            dst,
            addr,
        });
    }
    let src = if names.is_empty() {
        vec![cx.src(value_at, ty)?]
    } else {
        names
            .iter()
            .map(|n| cx.reg(n, ty).map(Operand::Reg))
            .collect::<Result<_, _>>()?
    };
    Ok(Op::St {
        space,
        ty,
        src,
        addr,
    })
}

/// `cvta[.to].space.u64`: between generic and global addresses nothing changes; shared
/// addresses move in and out of the shared window.
pub(super) fn cvta(cx: &mut Cx, m: &mut Mods) -> Result<Op, String> {
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

pub(super) fn atomic(cx: &mut Cx, m: &mut Mods, returns: bool) -> Result<Op, String> {
    use AtomOp::*;
    // Memory-order and scope qualifiers: the simulator's atomics are sequentially
    // consistent at every scope.
    m.ignore(&[
        "relaxed", "acquire", "release", "acq_rel", "cta", "gpu", "sys",
    ]);
    let space = match space(m)? {
        Space::Param => return Err("atomics on .param are not allowed".into()),
        s => s,
    };
    const OPS: [(&str, AtomOp); 10] = [
        ("add", Add),
        ("min", Min),
        ("max", Max),
        ("inc", Inc),
        ("dec", Dec),
        ("and", And),
        ("or", Or),
        ("xor", Xor),
        ("exch", Exch),
        ("cas", Cas),
    ];
    let names: Vec<&str> = OPS.iter().map(|o| o.0).collect();
    let op_name = m
        .one_of(&names)
        .ok_or("atom/red needs an operation (.add, .cas, ...)")?;
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
    if !returns && matches!(op, Cas | Exch) {
        return Err(format!("red has no .{op_name}; use atom"));
    }
    let first = usize::from(returns);
    cx.arity(first + if op == Cas { 3 } else { 2 })?;
    let dst = if returns { Some(cx.dst(0, ty)?) } else { None };
    let addr = cx.addr(first, space)?;
    let b = cx.src(first + 1, ty)?;
    let c = if op == Cas {
        Some(cx.src(first + 2, ty)?)
    } else {
        None
    };
    Ok(Op::Atom {
        space,
        op,
        ty,
        dst,
        addr,
        b,
        c,
    })
}
