//! The last block combines: a split reduction's slices added up by whichever block of
//! its launch finishes last, instead of by a launch of their own.
//!
//! A reduction split across blocks leaves each slice's partial results in the
//! workspace, and the next launch adds the slices in a fixed order. When that launch
//! is a block or two (BatchNorm's statistics of a few hundred channels), its fixed cost,
//! a launch and the gap before the next, is most of what it takes. Instead every block
//! counts itself done on the kernel's semaphore ([`calib_ir::Kernel::semaphore`]) once
//! its partial results are stored, and the block that counts last runs the combining
//! pass over all the elements, one block wide:
//!
//! ```text
//! bar.sync                      every thread of the block has stored its slices
//! thread 0: membar.gl           ... and they are visible device-wide
//!           old = atom.add(sem, 1)
//!           last = old == blocks - 1;  if last: sem = 0, membar.gl
//! bar.sync                      (last shared through shared memory)
//! if last: membar.gl, then the combining pass, by this block's threads
//! ```
//!
//! The semaphore is zero before the program first runs and the last block sets it back
//! to zero, so every run starts from zero. The sums are the same as the two-launch
//! form's, bit for bit: the slices are added in slice order whichever block is last.

use crate::error::Result;
use crate::eval::{Emitter, Slices};
use crate::kernel::MAX_THREADS;
use crate::launch::{self, Launch};
use crate::ptx::{ins, InstructionMix, Operand, Ty, SHARED};
use crate::{pointwise, Family};
use std::rc::Rc;

/// Where the last block of the split launch in `cx` can store `rest`, every output the
/// kernel still owes, in one pass over the combined slices: the pass is emitted into
/// `cx` and what one of its threads runs is returned, for the cost model. `None`, and
/// nothing emitted, where the kernel has no semaphore or the combine would not be one
/// small pointwise launch.
pub(crate) fn fold(
    cx: &mut Emitter,
    launch: &Launch,
    read_back: &[usize],
    rest: &[usize],
) -> Result<Option<InstructionMix>> {
    let Some(split) = launch.split.clone() else {
        return Ok(None);
    };
    let (program, kernel) = (cx.program, cx.kernel);
    if kernel.semaphore.is_none() || launch.family != Family::Reduction || rest.is_empty() {
        return Ok(None);
    }
    let stored: Vec<usize> = read_back.iter().chain(&launch.stores).copied().collect();
    let fresh = |split: Rc<dyn Slices>| {
        let mut probe = Emitter::new(program, kernel, crate::families::nested);
        probe.read_back(&stored);
        probe.read_split(split);
        probe.first_reduction = false;
        probe
    };
    // The combining launch the kernel would otherwise take.
    let separate = launch::emit(&mut fresh(split.clone()), rest, false)?;
    let small = separate.family == Family::Pointwise
        && separate.stores.len() == rest.len()
        && separate.loops.is_empty()
        && separate.geometry.blocks <= calib_ir::SERIAL_COMBINE_BLOCKS
        && separate.geometry.shared_bytes == 0
        && separate.geometry.max_registers.is_none();
    if !small {
        return Ok(None);
    }
    // What a thread of the last block runs: the same pass, one block wide.
    let mut probe = fresh(split.clone());
    let tid = probe.tid();
    pointwise::passes_by(&mut probe, rest, tid, MAX_THREADS)?;
    let mut tail = probe.b.mix();
    // It starts once the atomic has come back and the fence has drained the block's
    // stores: two round trips to L2, each as long as a round of loads.
    tail.load_rounds += 2.0;

    let blocks = launch.geometry.blocks;
    let done = cx.b.label();
    let last = count_done(cx, blocks)?;
    cx.b.bra_if(last, false, done);
    // Only one block runs this: it costs the other blocks nothing, and the cost model
    // prices it apart (`tail`).
    cx.b.enter_loop(0.0);
    // Every thread acquires the other blocks' stores itself, not only through thread
    // 0's fence and the barrier: its loads must not be served by stale lines.
    ins!(cx.b, "membar.gl");
    cx.read_back(&launch.stores);
    cx.read_split(split);
    cx.forget_values();
    let tid = cx.tid();
    cx.scoped(|cx| pointwise::passes_by(cx, rest, tid, MAX_THREADS))?;
    cx.b.exit_loop();
    cx.b.place(done);
    Ok(Some(tail))
}

/// Counts the block done on the semaphore once all its threads are; a predicate true
/// in every thread of the last block to do so (which resets the semaphore).
fn count_done(cx: &mut Emitter, blocks: usize) -> Result<crate::ptx::Reg> {
    let semaphore = cx.semaphore()?;
    let tid = cx.tid();
    let leader = cx.b.setp("eq", Ty::U32, tid, Operand::Int(0));
    ins!(cx.b, "bar.sync 0");
    let old = cx.b.reg(Ty::U32);
    ins!(cx.b, "mov.u32 {old}, 0");
    ins!(cx.b, "@{leader} membar.gl");
    ins!(
        cx.b,
        "@{leader} atom.global.add.u32 {old}, [{semaphore}], 1"
    );
    let counted_last =
        cx.b.setp("eq", Ty::U32, old.into(), Operand::Int(blocks as i64 - 1));
    let last_here = cx.b.reg(Ty::Pred);
    ins!(cx.b, "and.pred {last_here}, {counted_last}, {leader}");
    ins!(cx.b, "@{last_here} st.global.u32 [{semaphore}], 0");
    ins!(cx.b, "@{last_here} membar.gl");
    let flag = cx.b.reg(Ty::U32);
    ins!(cx.b, "selp.u32 {flag}, 1, 0, {last_here}");
    // Word 0 of shared memory: the launch's own uses of it ended at its last barrier.
    let base = cx.b.reg(Ty::U32);
    ins!(cx.b, "mov.u32 {base}, {SHARED}");
    ins!(cx.b, "@{leader} st.shared.u32 [{base}], {flag}");
    ins!(cx.b, "bar.sync 0");
    let shared_flag = cx.b.reg(Ty::U32);
    ins!(cx.b, "ld.shared.u32 {shared_flag}, [{base}]");
    Ok(cx
        .b
        .setp("ne", Ty::U32, shared_flag.into(), Operand::Int(0)))
}
