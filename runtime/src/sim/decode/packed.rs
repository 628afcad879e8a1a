//! The packed forms the tensor cores read: `cvt` to TF32 and to bf16x2, and `mov` between
//! one register and a pair of halves.

use super::{Cx, Mods, RawOperand};
use crate::sim::ast::{Alu, Op, Operand, Reg};
use crate::sim::types::Ty;

/// True when a `cvt`'s modifiers name a packed format this module decodes.
pub(super) fn is_packed_cvt(m: &Mods) -> bool {
    m.list.iter().any(|t| matches!(*t, "tf32" | "bf16x2"))
}

/// `cvt.rna.tf32.f32 d, a` and `cvt.rn.bf16x2.f32 d, a, b`.
pub(super) fn cvt(cx: &mut Cx, m: &mut Mods) -> Result<Op, String> {
    let (alu, src_count, rounding) = if m.has("tf32") {
        (Alu::Tf32Rna, 1, "rna")
    } else {
        m.ignore(&["bf16x2"]);
        (Alu::Bf16x2Rn, 2, "rn")
    };
    if !m.has(rounding) {
        return Err(format!(
            "`{}`: the simulator executes this conversion with .{rounding} only",
            m.opcode
        ));
    }
    if m.types() != [Ty::F32] {
        return Err(format!("`{}` converts from .f32", m.opcode));
    }
    cx.arity(1 + src_count)?;
    let src = (1..=src_count)
        .map(|i| cx.src(i, Ty::F32))
        .collect::<Result<_, _>>()?;
    Ok(Op::Alu {
        alu,
        dst: cx.dst(0, Ty::B32)?,
        src,
    })
}

/// `mov.bN d, {a, b}` packs two halves, `mov.bN {a, b}, s` unpacks them; the first
/// register is the low half.
pub(super) fn mov_vector(cx: &mut Cx, ty: Ty) -> Result<Op, String> {
    if !matches!(ty, Ty::B32 | Ty::B64) {
        return Err("the vector forms of mov are executed for .b32 and .b64".into());
    }
    let half = Ty::from_name(&format!("b{}", ty.bits() / 2)).expect("b16 and b32 exist");
    let pair = |cx: &Cx, i: usize| -> Result<[Reg; 2], String> {
        let names = cx.vector(i, 2)?;
        Ok([cx.reg(&names[0], half)?, cx.reg(&names[1], half)?])
    };
    if matches!(cx.raw.operands[1], RawOperand::Vector(_)) {
        let [lo, hi] = pair(cx, 1)?;
        return Ok(Op::Alu {
            alu: Alu::Pack { bits: half.bits() },
            dst: cx.dst(0, ty)?,
            src: vec![Operand::Reg(lo), Operand::Reg(hi)],
        });
    }
    Ok(Op::Unpack {
        parts: pair(cx, 0)?,
        src: cx.src(1, ty)?,
        bits: half.bits(),
    })
}
