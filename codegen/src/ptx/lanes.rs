//! How a warp's global accesses spread over memory: the 32-byte sectors one access of
//! its 32 lanes touches, beyond the fewest that many bytes could fill. The cost model
//! prices those extra sectors (`InstructionMix::global_excess_bytes`): an access walking
//! a tensor across its innermost axis (a channels-last image read along its pixels)
//! moves a sector per lane where a walk along it moves one per eight lanes.
//!
//! The builder knows how every index register was computed (`known.rs`), so it can
//! evaluate an address in each lane of a warp: the thread index is the lane (the
//! first warp of the first block), a loop counter varies across lanes as the value it
//! starts from (grid strides are whole warps), and any other register is taken as the
//! same value, 0, in every lane. That is a sample of one warp, not a proof: a warp
//! whose lanes straddle an image row touches a sector more than the sample's.

use super::{Address, Builder, Operand, Reg};
use std::collections::HashMap;

/// Lanes of a warp.
pub(crate) const LANES: usize = 32;
/// Bytes of a sector, the unit in which L1 and L2 move global memory.
const SECTOR: u64 = 32;

/// What varies across a warp's lanes.
#[derive(Debug, Default)]
pub(super) struct Lanes {
    /// The register holding the thread index.
    index: Option<Reg>,
    /// Registers that vary across lanes as another operand does (a loop counter as its
    /// start).
    like: HashMap<Reg, Operand>,
}

/// Expressions deeper than this are taken as lane-invariant (a guard, never reached by
/// the index arithmetic of static shapes).
const MAX_DEPTH: usize = 64;

impl Builder {
    /// Declares that `r` holds the thread index.
    pub fn lane_index(&mut self, r: Reg) {
        self.lanes.index = Some(r);
    }

    /// Declares that `r` varies across a warp's lanes as `start` does.
    pub fn lanes_like(&mut self, r: Reg, start: Operand) {
        self.lanes.like.insert(r, start);
    }

    /// The next global access, of `bytes` per lane at `at`: counts the sectors it
    /// touches beyond the fewest for the census.
    pub fn global_access(&mut self, at: Address, bytes: usize) {
        let mut memo = HashMap::new();
        let lanes = self.lane_values(at.reg.into(), &mut memo, 0);
        let sectors = sectors(
            &lanes.map(|a| a.wrapping_add(at.offset as u64)),
            bytes as u64,
        );
        // A warp's `bytes * 32` fill `bytes` sectors at best: the rest are extra, and
        // counted per thread (a warp's extra sectors over its 32 threads, times 32
        // bytes) they are extra bytes per thread.
        self.counter.next_global_excess = Some(sectors.saturating_sub(bytes as u64) as f64);
    }

    /// `x`'s value in each lane of a warp (wrapping `u64`; `u32` results masked).
    fn lane_values(
        &self,
        x: Operand,
        memo: &mut HashMap<Reg, [u64; LANES]>,
        depth: usize,
    ) -> [u64; LANES] {
        let r = match x {
            Operand::Int(v) => return [v as u32 as u64; LANES],
            Operand::F32(_) => return [0; LANES],
            Operand::Reg(r) => r,
        };
        if let Some(v) = memo.get(&r) {
            return *v;
        }
        let values = if Some(r) == self.lanes.index {
            std::array::from_fn(|lane| lane as u64)
        } else if depth >= MAX_DEPTH {
            [0; LANES]
        } else if let Some(&start) = self.lanes.like.get(&r) {
            self.lane_values(start, memo, depth + 1)
        } else if let Some((op, [p, q, s])) = self.known.definition(x) {
            let [p, q, s] = [p, q, s].map(|o| self.lane_values(o, memo, depth + 1));
            let u32_of = |v: u64| v & u32::MAX as u64;
            std::array::from_fn(|l| match op {
                "add" => u32_of(p[l].wrapping_add(q[l])),
                "sub" => u32_of(p[l].wrapping_sub(q[l])),
                "mul" => u32_of(p[l].wrapping_mul(q[l])),
                "mad" => u32_of(p[l].wrapping_mul(q[l]).wrapping_add(s[l])),
                "div" => p[l].checked_div(q[l]).unwrap_or(0),
                "rem" => p[l].checked_rem(q[l]).unwrap_or(0),
                "min" => p[l].min(q[l]),
                // A 64-bit address: the base is the same in every lane.
                "address" => q[l].wrapping_mul(s[l]),
                _ => 0,
            })
        } else {
            [0; LANES]
        };
        memo.insert(r, values);
        values
    }
}

/// The distinct sectors `bytes`-wide accesses at `addresses` touch.
fn sectors(addresses: &[u64; LANES], bytes: u64) -> u64 {
    let mut touched: Vec<u64> = addresses
        .iter()
        .flat_map(|&a| (a / SECTOR)..=a.saturating_add(bytes.max(1) - 1) / SECTOR)
        .collect();
    touched.sort_unstable();
    touched.dedup();
    touched.len() as u64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ptx::{ins, Ty};

    /// A builder with a thread index below 256 and a base address.
    fn start() -> (Builder, Operand, Reg) {
        let mut b = Builder::new();
        let tid = b.reg(Ty::U32);
        ins!(b, "mov.u32 {tid}, %tid.x");
        b.bound(tid, 255);
        b.lane_index(tid);
        let base = b.reg(Ty::U64);
        ins!(b, "ld.param.u64 {base}, [in0]");
        (b, tid.into(), base)
    }

    fn excess(b: &mut Builder, at: Address, bytes: usize) -> f64 {
        b.global_access(at, bytes);
        b.counter.next_global_excess.take().unwrap()
    }

    #[test]
    fn consecutive_lanes_fill_their_sectors() {
        let (mut b, tid, base) = start();
        let at = b.address(base, tid, 4);
        assert_eq!(excess(&mut b, at, 4), 0.0);
        // bf16: 64 bytes, two sectors.
        let at = b.address(base, tid, 2);
        assert_eq!(excess(&mut b, at, 2), 0.0);
        // The same element in every lane: one sector, fewer than four.
        let at = b.address(base, Operand::Int(7), 4);
        assert_eq!(excess(&mut b, at, 4), 0.0);
    }

    #[test]
    fn strided_lanes_touch_a_sector_each() {
        let (mut b, tid, base) = start();
        // Lanes 64 elements apart (a channels-last image read along its pixels).
        let strided = b.mul_u32(tid, Operand::Int(64));
        let at = b.address(base, strided, 4);
        assert_eq!(excess(&mut b, at, 4), 28.0);
        // Two apart: eight sectors for four sectors' worth.
        let pairs = b.mul_u32(tid, Operand::Int(2));
        let at = b.address(base, pairs, 4);
        assert_eq!(excess(&mut b, at, 4), 4.0);
    }

    #[test]
    fn divisions_and_loop_counters_follow_their_lanes() {
        let (mut b, tid, base) = start();
        // `(tid / 8) * 100 + tid % 8`: four runs of eight, 100 apart.
        let (row, col) = (b.div_u32(tid, 8), b.rem_u32(tid, 8));
        let index = b.mad_u32(row, Operand::Int(100), col);
        let at = b.address(base, index, 4);
        let got = excess(&mut b, at, 4);
        assert!((4.0..=8.0).contains(&(got + 4.0)), "{got}");
        // A counter starting at the thread index walks like it.
        let i = b.reg(Ty::U32);
        ins!(b, "mov.u32 {i}, {tid}");
        b.lanes_like(i, tid);
        let scaled = b.mul_u32(i.into(), Operand::Int(32));
        let at = b.address(base, scaled, 4);
        assert_eq!(excess(&mut b, at, 4), 28.0);
    }
}
