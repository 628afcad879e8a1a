//! Warp-wide instructions: `shfl.sync` and `vote.sync`.

use super::{Cx, Mods, RawOperand};
use crate::sim::ast::{Op, ShflMode, VoteMode};
use crate::sim::types::Ty;

pub(super) fn shfl(cx: &mut Cx, m: &mut Mods) -> Result<Op, String> {
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

pub(super) fn vote(cx: &mut Cx, m: &mut Mods) -> Result<Op, String> {
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
    let want = if mode == VoteMode::Ballot {
        Ty::B32
    } else {
        Ty::Pred
    };
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
