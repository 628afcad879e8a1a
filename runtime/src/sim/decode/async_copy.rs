//! `cp.async` and its group instructions `commit_group`, `wait_group` and `wait_all`.

use super::{Cx, Mods, RawOperand};
use crate::sim::ast::{Op, Operand, Space};
use crate::sim::types::Ty;

pub(super) fn cp(cx: &mut Cx, m: &mut Mods) -> Result<Op, String> {
    if !m.has("async") {
        return Err("only cp.async is supported".into());
    }
    if m.has("commit_group") {
        cx.arity(0)?;
        return Ok(Op::CpAsyncCommit);
    }
    if m.has("wait_all") {
        cx.arity(0)?;
        return Ok(Op::CpAsyncWait {
            newest_pending: 0,
            commit: true,
        });
    }
    if m.has("wait_group") {
        cx.arity(1)?;
        let Operand::Imm(n) = cx.src(0, Ty::U32)? else {
            return Err("cp.async.wait_group takes an integer constant".into());
        };
        return Ok(Op::CpAsyncWait {
            newest_pending: n as u32,
            commit: false,
        });
    }
    // L2 prefetch sizes are hints; the copied bytes are the same.
    m.ignore(&["L2::64B", "L2::128B", "L2::256B"]);
    let cache = m
        .one_of(&["ca", "cg"])
        .ok_or("cp.async needs .ca or .cg (the bulk and tensor forms are not supported)")?;
    if m.one_of(&["shared", "shared::cta"]).is_none() || !m.has("global") {
        return Err("cp.async copies .shared.global (global to shared)".into());
    }
    if !matches!(cx.raw.operands.len(), 3 | 4) {
        return Err(format!(
            "`{}` takes 3 or 4 operands ([dst], [src], size[, src-size]), found {}",
            cx.raw.opcode,
            cx.raw.operands.len()
        ));
    }
    let bytes = match &cx.raw.operands[2] {
        RawOperand::Literal(_) => match cx.src(2, Ty::U32)? {
            Operand::Imm(b @ (4 | 8 | 16)) => b as u32,
            _ => return Err("cp.async copies 4, 8 or 16 bytes".into()),
        },
        _ => return Err("cp.async's copy size must be the constant 4, 8 or 16".into()),
    };
    if cache == "cg" && bytes != 16 {
        return Err("cp.async.cg copies 16 bytes".into());
    }
    let src_size = match cx.raw.operands.len() {
        4 => Some(cx.src(3, Ty::U32)?),
        _ => None,
    };
    Ok(Op::CpAsync {
        dst: cx.addr(0, Space::Shared)?,
        src: cx.addr(1, Space::Global)?,
        bytes,
        src_size,
    })
}
