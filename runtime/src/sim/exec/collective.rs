//! Warp-wide instructions: `shfl.sync` and `vote.sync`. They run once for the whole group
//! of lanes at the instruction, reading other lanes' registers directly.

use super::block::{BlockEnv, LaneFault};
use super::warp::{lanes, Warp, WARP};
use crate::sim::ast::{Op, Operand, ShflMode, VoteMode};
use crate::sim::error::FaultKind;

fn sync_fault(lane: u32, detail: String) -> LaneFault {
    LaneFault::new(lane, FaultKind::WarpSync { detail })
}

/// `.aligned` warp-collective instructions (`mma`, `ldmatrix`) need all 32 lanes of the
/// warp executing them together: their fragments are spread over every lane.
pub(super) fn converged(warp: &Warp, active: u32, what: &str) -> Result<(), LaneFault> {
    if active == u32::MAX {
        return Ok(());
    }
    let lane = (!active).trailing_zeros();
    let why = if warp.exited >> lane & 1 != 0 {
        "has exited (or does not exist in a partial warp)"
    } else {
        "is not executing it (it diverged or its guard is false)"
    };
    Err(sync_fault(
        active.trailing_zeros(),
        format!(
            "{what} is warp-collective and needs all 32 lanes converged, but lane {lane} {why}"
        ),
    ))
}

/// Reads the member mask, which must be the same in every executing lane, and checks that
/// the executing lanes are exactly its members that have not exited.
fn membermask(warp: &Warp, env: &BlockEnv, mask: Operand, active: u32) -> Result<u32, LaneFault> {
    let values = warp.read(env, mask, active)?;
    let first = active.trailing_zeros() as usize;
    let m = values[first] as u32;
    if let Some(lane) = lanes(active).find(|&l| values[l] as u32 != m) {
        return Err(sync_fault(
            lane as u32,
            format!(
                "lanes disagree on the member mask ({m:#010x} in lane {first}, {:#010x} here)",
                values[lane] as u32
            ),
        ));
    }
    let outsider = active & !m;
    if outsider != 0 {
        return Err(sync_fault(
            outsider.trailing_zeros(),
            format!("this lane executes the instruction but is not in the member mask {m:#010x}"),
        ));
    }
    let absent = m & !active & !warp.exited;
    if absent != 0 {
        return Err(sync_fault(
            first as u32,
            format!(
                "lane {} is in the member mask {m:#010x} but is not executing this instruction (it diverged or its guard is false)",
                absent.trailing_zeros()
            ),
        ));
    }
    Ok(m)
}

pub(super) fn execute(
    warp: &mut Warp,
    env: &BlockEnv,
    op: &Op,
    active: u32,
) -> Result<(), LaneFault> {
    match *op {
        Op::Shfl {
            mode,
            dst,
            pred,
            a,
            b,
            c,
            membermask: mask,
        } => {
            membermask(warp, env, mask, active)?;
            let (av, bv, cv) = (
                warp.read(env, a, active)?,
                warp.read(env, b, active)?,
                warp.read(env, c, active)?,
            );
            let (mut out, mut valid) = ([0u64; WARP], [0u64; WARP]);
            for lane in lanes(active) {
                let (source, ok) = shfl_source(mode, lane as i32, bv[lane] as u32, cv[lane] as u32);
                if ok && active >> source & 1 == 0 {
                    return Err(sync_fault(
                        lane as u32,
                        format!("shfl.sync reads lane {source}, which is not executing it"),
                    ));
                }
                out[lane] = av[source as usize] & 0xffff_ffff;
                valid[lane] = ok as u64;
            }
            warp.write(dst, active, &out);
            if let Some(p) = pred {
                warp.write(p, active, &valid);
            }
        }
        Op::Vote {
            mode,
            dst,
            a,
            membermask: mask,
        } => {
            membermask(warp, env, mask, active)?;
            let set = warp.pred_mask(env, a, active)?;
            let result = match mode {
                VoteMode::All => (set == active) as u64,
                VoteMode::Any => (set != 0) as u64,
                VoteMode::Uni => (set == 0 || set == active) as u64,
                VoteMode::Ballot => set as u64,
            };
            warp.write(dst, active, &[result; WARP]);
        }
        _ => unreachable!("collective::execute is called for shfl and vote"),
    }
    Ok(())
}

/// The lane `lane` reads from and whether that lane is in range, as the PTX ISA defines
/// `shfl.sync`: `c` packs the clamp lane (bits 0-4) and the segment mask (bits 8-12).
fn shfl_source(mode: ShflMode, lane: i32, b: u32, c: u32) -> (i32, bool) {
    let b = (b & 0x1f) as i32;
    let clamp = (c & 0x1f) as i32;
    let segmask = ((c >> 8) & 0x1f) as i32;
    let max_lane = (lane & segmask) | (clamp & !segmask);
    let min_lane = lane & segmask;
    let (j, ok) = match mode {
        ShflMode::Up => (lane - b, lane - b >= max_lane),
        ShflMode::Down => (lane + b, lane + b <= max_lane),
        ShflMode::Bfly => (lane ^ b, (lane ^ b) <= max_lane),
        ShflMode::Idx => {
            let j = min_lane | (b & !segmask);
            (j, j <= max_lane)
        }
    };
    if ok {
        (j, true)
    } else {
        (lane, false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shfl_sources_with_full_warp_clamps() {
        // down by 4 with clamp 31: lanes 28..31 keep their own value.
        assert_eq!(shfl_source(ShflMode::Down, 3, 4, 0x1f), (7, true));
        assert_eq!(shfl_source(ShflMode::Down, 29, 4, 0x1f), (29, false));
        // up by 1 with clamp 0: lane 0 keeps its own value.
        assert_eq!(shfl_source(ShflMode::Up, 0, 1, 0), (0, false));
        assert_eq!(shfl_source(ShflMode::Up, 5, 1, 0), (4, true));
        assert_eq!(shfl_source(ShflMode::Bfly, 6, 1, 0x1f), (7, true));
        assert_eq!(shfl_source(ShflMode::Idx, 9, 2, 0x1f), (2, true));
    }

    #[test]
    fn shfl_segments_of_eight_lanes() {
        // width 8: c = ((32 - 8) << 8) | 0x1f; idx 2 reads lane 2 of its own segment.
        let c = (24 << 8) | 0x1f;
        assert_eq!(shfl_source(ShflMode::Idx, 13, 2, c), (10, true));
        assert_eq!(shfl_source(ShflMode::Down, 14, 1, c), (15, true));
        assert_eq!(shfl_source(ShflMode::Down, 15, 1, c), (15, false));
    }
}
