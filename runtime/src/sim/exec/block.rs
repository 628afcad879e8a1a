//! One thread block: its warps, shared memory, and the barriers between them.
//!
//! Warps of a block run one after another, each until every live lane waits at a barrier
//! or has exited. That is one of the interleavings CUDA allows, and because races are
//! judged per barrier interval (not by the order things happened to run in), the
//! schedule does not change which races are found. When no warp can go on, every live
//! thread must be waiting at the same `bar.sync`; then the barrier opens.

use super::async_copy::AsyncCopies;
use super::race::{Accessor, RaceDetector};
use super::warp::{Progress, Warp, WARP};
use super::{SimOptions, Stats};
use crate::sim::ast::Kernel;
use crate::sim::error::{Fault, FaultKind, OtherThread};
use crate::sim::memory::GlobalMemory;

/// What every warp of a block reads and nothing writes.
pub(crate) struct BlockEnv<'a> {
    pub kernel: &'a Kernel,
    pub grid: [u32; 3],
    pub block: [u32; 3],
    pub ctaid: [u32; 3],
    pub params: &'a [u8],
    pub global: &'a GlobalMemory,
    pub options: &'a SimOptions,
    /// Static plus dynamic shared memory.
    pub shared_bytes: usize,
}

impl BlockEnv<'_> {
    pub fn threads(&self) -> usize {
        self.block.iter().map(|&d| d as usize).product()
    }

    pub fn warps(&self) -> usize {
        self.threads().div_ceil(WARP)
    }

    /// `%tid` of the thread with linear index `linear` (x fastest).
    pub fn thread_index(&self, linear: usize) -> [u32; 3] {
        let [bx, by, _] = self.block.map(|d| d as usize);
        [
            (linear % bx) as u32,
            (linear / bx % by) as u32,
            (linear / (bx * by)) as u32,
        ]
    }

    fn site(&self, pc: usize) -> (usize, String) {
        match self.kernel.body.get(pc) {
            Some(i) => (i.line, i.text.clone()),
            None => (0, "<end of kernel>".into()),
        }
    }

    /// Another thread's access, for race reports.
    pub fn other(&self, a: Accessor) -> OtherThread {
        let (line, instruction) = self.site(a.pc as usize);
        OtherThread {
            thread: self.thread_index(a.thread as usize),
            line,
            instruction,
        }
    }

    fn fault(&self, warp: u32, pc: usize, f: LaneFault) -> Box<Fault> {
        let (line, instruction) = self.site(pc);
        Box::new(Fault {
            kernel: self.kernel.name.clone(),
            block: self.ctaid,
            thread: self.thread_index(warp as usize * WARP + f.lane as usize),
            line,
            instruction,
            kind: f.kind,
        })
    }
}

/// A fault in one lane of the executing warp; the block adds where it happened.
#[derive(Debug)]
pub(crate) struct LaneFault {
    pub lane: u32,
    pub kind: FaultKind,
}

impl LaneFault {
    pub fn new(lane: u32, kind: FaultKind) -> Self {
        LaneFault { lane, kind }
    }
}

/// What the warps of a block change together.
#[derive(Default)]
pub(crate) struct BlockState {
    pub shared: Vec<u8>,
    pub race: RaceDetector,
    pub copies: AsyncCopies,
    /// Counts warp instructions, naming each for the race detector.
    pub event: u32,
    pub stats: Stats,
}

/// Storage reused from block to block on one worker thread.
#[derive(Default)]
pub(crate) struct Scratch {
    warps: Vec<Warp>,
    state: BlockState,
}

/// Runs one block to completion.
pub(crate) fn run(env: &BlockEnv, scratch: &mut Scratch) -> Result<Stats, Box<Fault>> {
    let threads = env.threads();
    let warp_count = env.warps();
    let registers = env.kernel.registers.len();
    while scratch.warps.len() < warp_count {
        scratch.warps.push(Warp::new());
    }
    let warps = &mut scratch.warps[..warp_count];
    for (w, warp) in warps.iter_mut().enumerate() {
        let in_warp = (threads - w * WARP).min(WARP);
        let live = if in_warp == WARP {
            u32::MAX
        } else {
            (1u32 << in_warp) - 1
        };
        warp.reset(w as u32, registers, live);
    }
    let state = &mut scratch.state;
    state.shared.clear();
    state.shared.resize(env.shared_bytes, 0);
    state.race.reset(env.shared_bytes);
    state.copies.reset(env.shared_bytes, warp_count * WARP);
    state.stats = Stats {
        blocks: 1,
        ..Stats::default()
    };
    loop {
        for warp in warps.iter_mut() {
            loop {
                match warp.step(env, state) {
                    Ok(Progress::Ran) => {}
                    Ok(Progress::Blocked) => break,
                    Err((pc, f)) => return Err(env.fault(warp.index, pc, f)),
                }
            }
        }
        if warps.iter().all(Warp::done) {
            return Ok(state.stats);
        }
        check_one_barrier(env, warps)?;
        for warp in warps.iter_mut() {
            warp.release_barrier();
        }
        state.race.barrier();
    }
}

/// Every live thread waits at a barrier; they must all wait at the same one.
fn check_one_barrier(env: &BlockEnv, warps: &[Warp]) -> Result<(), Box<Fault>> {
    let mut first: Option<(u32, usize, u32)> = None;
    for warp in warps {
        for g in &warp.groups {
            let lane = g.mask.trailing_zeros();
            match first {
                None => first = Some((warp.index, g.pc, lane)),
                Some((w0, pc0, lane0)) if g.pc != pc0 => {
                    let (line, instruction) = env.site(pc0);
                    let other = OtherThread {
                        thread: env.thread_index(w0 as usize * WARP + lane0 as usize),
                        line,
                        instruction,
                    };
                    let kind = FaultKind::BarrierDivergence { other };
                    return Err(env.fault(warp.index, g.pc, LaneFault::new(lane, kind)));
                }
                Some(_) => {}
            }
        }
    }
    Ok(())
}
