//! `ldmatrix.sync.aligned.m8n8.xN[.trans].shared.b16`: a warp loads N 8x8 matrices of
//! 16-bit elements from shared memory, one register per matrix.
//!
//! Lanes `8m .. 8m + 7` give the addresses of rows 0-7 of matrix `m` (16 contiguous,
//! 16-byte-aligned bytes each; the other lanes' addresses are not read). Lane `l`
//! receives elements `2 (l % 4)` and `2 (l % 4) + 1` of row `l / 4`, the first in the low
//! half; with `.trans` it receives them from the transposed matrix, that is rows
//! `2 (l % 4)` and `2 (l % 4) + 1` of column `l / 4`. Each row read is a shared load of
//! the lane that gave its address, checked like any other.

use super::block::{BlockEnv, BlockState, LaneFault};
use super::collective::converged;
use super::memory::{addresses, Site};
use super::warp::{lanes, Warp, WARP};
use crate::sim::ast::{Address, Reg, Space};
use crate::sim::error::Access;

#[allow(clippy::too_many_arguments)]
pub(super) fn execute(
    warp: &mut Warp,
    env: &BlockEnv,
    state: &mut BlockState,
    pc: usize,
    trans: bool,
    dst: &[Reg],
    addr: Address,
    active: u32,
) -> Result<(), LaneFault> {
    converged(warp, active, "ldmatrix.sync.aligned")?;
    let providers = match dst.len() {
        4 => u32::MAX,
        n => (1u32 << (8 * n)) - 1,
    };
    let addrs = addresses(warp, env, addr, providers)?;
    // rows[m][r][c]: element c of row r of matrix m.
    let mut rows = [[[0u16; 8]; 8]; 4];
    for lane in lanes(providers) {
        let site = Site::new(env, warp, state, lane, pc, Access::Load);
        site.check_aligned(Space::Shared, addrs[lane], 16)?;
        for half in 0..2 {
            let at = addrs[lane].wrapping_add(8 * half as u64);
            let v = site.load(state, Space::Shared, at, 8)?;
            for e in 0..4 {
                rows[lane / 8][lane % 8][4 * half + e] = (v >> (16 * e)) as u16;
            }
        }
    }
    for (m, reg) in dst.iter().enumerate() {
        let mut out = [0u64; WARP];
        for (lane, v) in out.iter_mut().enumerate() {
            let (r, c) = (lane / 4, 2 * (lane % 4));
            let (lo, hi) = if trans {
                (rows[m][c][r], rows[m][c + 1][r])
            } else {
                (rows[m][r][c], rows[m][r][c + 1])
            };
            *v = u64::from(lo) | u64::from(hi) << 16;
        }
        warp.write(*reg, active, &out);
    }
    Ok(())
}
