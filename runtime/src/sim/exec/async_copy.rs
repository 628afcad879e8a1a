//! `cp.async`: copies from global to shared memory that land later.
//!
//! A copy reads its source when it is issued (the source must not change while a copy is
//! in flight, so any moment between issue and completion reads the same bytes) and writes
//! its destination only when a `cp.async.wait_group` of the issuing thread retires its
//! group. Until then shared memory keeps its old contents: a kernel that reads a
//! destination before waiting reads stale data, as it may on a GPU.
//!
//! With the race check on (the sanitizer), a copy is a write that lasts from issue to
//! retire:
//! * at issue it is a write to the race detector, so an access of the same bytes by
//!   another thread earlier in the barrier interval races with it;
//! * while it is in flight, any access of its bytes (a load, a store, an atomic, an
//!   `ldmatrix`, another copy; by any thread, the issuer included) is a
//!   [`FaultKind::AsyncCopyPending`] hazard naming the copy;
//! * at retire it is a write again, so a later access by another thread in the same
//!   barrier interval races with it. Only a `bar.sync` after the wait makes the data
//!   visible to the other threads of the block.
//!
//! Groups are per thread, as the PTX ISA defines them: `commit_group` closes the thread's
//! uncommitted copies into a group (possibly empty) and `wait_group n` retires all but its
//! `n` newest groups.

use super::block::{BlockEnv, BlockState, LaneFault};
use super::memory::{addresses, Site};
use super::race::Accessor;
use super::warp::{lanes, Warp, WARP};
use crate::sim::ast::{Address, Operand, Space};
use crate::sim::error::{Access, FaultKind};
use crate::sim::memory;
use std::collections::VecDeque;

/// One copy in flight.
#[derive(Clone, Copy)]
struct Copy {
    /// Destination offset in shared memory.
    dst: usize,
    data: [u8; 16],
    len: usize,
    issuer: Accessor,
}

#[derive(Default)]
struct Groups {
    uncommitted: Vec<u32>,
    committed: VecDeque<Vec<u32>>,
}

/// The copies in flight in one block.
#[derive(Default)]
pub(crate) struct AsyncCopies {
    /// Per shared byte: 1 + the index in `copies` of the copy in flight to it, or 0.
    /// Sized on a block's first copy, so kernels without `cp.async` pay nothing.
    pending: Vec<u32>,
    shared_bytes: usize,
    copies: Vec<Copy>,
    free: Vec<u32>,
    /// Per linear thread index.
    groups: Vec<Groups>,
}

impl AsyncCopies {
    /// Prepares for a block of `threads` threads with `shared_bytes` of shared memory.
    pub fn reset(&mut self, shared_bytes: usize, threads: usize) {
        self.pending.clear();
        self.shared_bytes = shared_bytes;
        self.copies.clear();
        self.free.clear();
        self.groups.resize_with(threads, Groups::default);
        for g in &mut self.groups {
            g.uncommitted.clear();
            g.committed.clear();
        }
    }

    /// The issuer of the copy in flight to shared byte `addr`, if any.
    pub fn in_flight(&self, addr: usize) -> Option<Accessor> {
        match self.pending.get(addr).copied().unwrap_or(0) {
            0 => None,
            i => Some(self.copies[i as usize - 1].issuer),
        }
    }

    fn start(&mut self, thread: usize, copy: Copy) {
        if self.pending.is_empty() {
            self.pending.resize(self.shared_bytes, 0);
        }
        let id = match self.free.pop() {
            Some(id) => {
                self.copies[id as usize] = copy;
                id
            }
            None => {
                self.copies.push(copy);
                self.copies.len() as u32 - 1
            }
        };
        self.pending[copy.dst..copy.dst + copy.len].fill(id + 1);
        self.groups[thread].uncommitted.push(id);
    }

    fn commit(&mut self, thread: usize) {
        let g = &mut self.groups[thread];
        let group = std::mem::take(&mut g.uncommitted);
        g.committed.push_back(group);
    }

    /// Removes the thread's groups older than its `keep` newest; returns their copies.
    fn retire(&mut self, thread: usize, keep: usize) -> Vec<Copy> {
        let mut out = Vec::new();
        while self.groups[thread].committed.len() > keep {
            let group = self.groups[thread]
                .committed
                .pop_front()
                .expect("non-empty");
            for id in group {
                let copy = self.copies[id as usize];
                self.pending[copy.dst..copy.dst + copy.len].fill(0);
                self.free.push(id);
                out.push(copy);
            }
        }
        out
    }
}

/// `cp.async [dst], [src], bytes[, src_size]` for the lanes of `active`.
#[allow(clippy::too_many_arguments)]
pub(super) fn issue(
    warp: &Warp,
    env: &BlockEnv,
    state: &mut BlockState,
    pc: usize,
    dst: Address,
    src: Address,
    bytes: u32,
    src_size: Option<Operand>,
    active: u32,
) -> Result<(), LaneFault> {
    let dsts = addresses(warp, env, dst, active)?;
    let srcs = addresses(warp, env, src, active)?;
    let sizes = match src_size {
        Some(s) => warp.read(env, s, active)?,
        None => [bytes as u64; WARP],
    };
    let len = bytes as usize;
    for lane in lanes(active) {
        let site = Site::new(env, warp, state, lane, pc, Access::AsyncCopy);
        let read = sizes[lane] as u32 as usize;
        if read > len {
            return Err(site.fault(FaultKind::BadOperand {
                detail: format!("cp.async src-size {read} exceeds the copy size {len}"),
            }));
        }
        site.check_aligned(Space::Shared, dsts[lane], len)?;
        site.check_aligned(Space::Global, srcs[lane], len)?;
        let offset = site.in_bounds("shared", dsts[lane], len, state.shared.len())?;
        let mut data = [0u8; 16];
        if read > 0 {
            let (words, at) = env
                .global
                .locate(srcs[lane], read)
                .map_err(|detail| site.out_of_bounds("global", srcs[lane], read, detail))?;
            for (i, byte) in data.iter_mut().take(read).enumerate() {
                *byte = memory::load(words, at + i, 1) as u8;
            }
        }
        site.shared_race(state, offset, len, true)?;
        let copy = Copy {
            dst: offset,
            data,
            len,
            issuer: site.accessor(),
        };
        state.copies.start(thread(warp, lane), copy);
    }
    Ok(())
}

pub(super) fn commit(warp: &Warp, state: &mut BlockState, active: u32) {
    for lane in lanes(active) {
        state.copies.commit(thread(warp, lane));
    }
}

/// `cp.async.wait_group n` (and `wait_all`, which commits first): the retired copies
/// land in shared memory.
pub(super) fn wait(
    warp: &Warp,
    env: &BlockEnv,
    state: &mut BlockState,
    newest_pending: u32,
    commit_first: bool,
    active: u32,
) -> Result<(), LaneFault> {
    for lane in lanes(active) {
        let t = thread(warp, lane);
        if commit_first {
            state.copies.commit(t);
        }
        for copy in state.copies.retire(t, newest_pending as usize) {
            state.shared[copy.dst..copy.dst + copy.len].copy_from_slice(&copy.data[..copy.len]);
            if !env.options.race_check {
                continue;
            }
            // The landing is a write by the issuing thread, at this moment.
            let now = Accessor {
                event: state.event,
                ..copy.issuer
            };
            for addr in copy.dst..copy.dst + copy.len {
                if let Err(race) = state.race.write(addr, now, false) {
                    return Err(LaneFault::new(
                        lane as u32,
                        FaultKind::SharedRace {
                            addr: addr as u64,
                            what: race.what,
                            other: env.other(race.other),
                        },
                    ));
                }
            }
        }
    }
    Ok(())
}

fn thread(warp: &Warp, lane: usize) -> usize {
    warp.index as usize * WARP + lane
}
