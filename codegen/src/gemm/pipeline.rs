//! The GEMM template's `k` loop: how the operand tiles of step `t + 1`, `t + 2`, ...
//! reach shared memory while the products of step `t` run.
//!
//! * Two stages (`GemmSchedule::stages == 2`): double-buffering through registers. The
//!   next step's elements load into registers while this step's products run, then go
//!   to the other stage; one barrier per step.
//! * A ring of three or four stages: stage `t % S` holds step `t`, filled `S - 1` steps
//!   ahead. Operands read straight from a buffer arrive by `cp.async`, one commit group
//!   per step; each iteration waits for all but the newest `S - 2` groups (so step `t`'s
//!   copies have landed), rounds its own copied runs of TF32 tiles in place
//!   ([`Loader::round_in_place`]), then a barrier makes every thread's copies visible and frees
//!   the stage step `t - 1` used, which is refilled with step `t + S - 1` before the
//!   products of step `t` start. An operand with a prologue loads that step into
//!   registers at the same point and stores it after the products (as with two stages).
//!   Every prologue slot and every iteration commits exactly one group (empty when
//!   there is nothing left to copy), so group `t` is always step `t`'s.
//!
//! A block of a phased data gradient takes its phase's steps ([`Steps::Walked`]): the
//! same loops over a run-time count, each step's `k` found by the loader.

use super::tiles::{Loader, Slot, Tile};
use super::Math;
use crate::error::Result;
use crate::eval::Emitter;
use crate::flow::Check;
use crate::ptx::{ins, Operand, Reg, Ty};

/// How many steps through `k` a block takes.
#[derive(Clone, Copy)]
pub(super) enum Steps {
    /// Every block the same.
    Fixed(usize),
    /// A run-time count of at most `most`, `mean` on average ([`super::phases::Walk`]).
    Walked {
        count: Operand,
        most: usize,
        mean: f64,
    },
}

impl Steps {
    fn count(&self) -> Operand {
        match *self {
            Steps::Fixed(n) => Operand::Int(n as i64),
            Steps::Walked { count, .. } => count,
        }
    }

    /// Whether step `s` (a constant) is one of the block's: `Err` when constants say.
    fn has(&self, cx: &mut Emitter, s: usize) -> Check {
        match *self {
            Steps::Fixed(n) => Err(s < n),
            Steps::Walked { count, .. } => cx.b.lt_u32(Operand::Int(s as i64), count),
        }
    }

    /// Runs `f` for the first `count - skip` steps (none when there are no more).
    fn each(
        &self,
        cx: &mut Emitter,
        skip: usize,
        f: impl FnOnce(&mut Emitter, Operand) -> Result<()>,
    ) -> Result<()> {
        match *self {
            Steps::Fixed(n) if n > skip => cx.for_range_rolled(n - skip, f),
            Steps::Fixed(_) => Ok(()),
            Steps::Walked { count, most, mean } => {
                let rest = cx.b.sub_u32(count, Operand::Int(skip as i64));
                let mean = (mean - skip as f64).max(0.0);
                cx.for_range_dynamic(rest, most.saturating_sub(skip), mean, f)
            }
        }
    }
}

/// What the loop needs: the loader and its slots, the products, and the tiles.
pub(super) struct Pipeline<'a, 'b> {
    pub(super) loader: &'a Loader<'b>,
    pub(super) slots: &'a [Slot],
    pub(super) math: &'a Math,
    /// Where this thread's fragment loads start within a stage (`Math::fragment_offsets`).
    pub(super) fragments: [Operand; 2],
    pub(super) acc: &'a [Reg],
    /// The shared address of stage 0.
    pub(super) smem: Reg,
    pub(super) tiles: [Tile; 2],
    /// Steps of this block's slice of `k`, and shared stages.
    pub(super) steps: Steps,
    pub(super) stages: usize,
}

impl Pipeline<'_, '_> {
    /// Emits the whole `k` loop: afterwards the accumulators hold the block's products.
    pub(super) fn emit(&self, cx: &mut Emitter) -> Result<()> {
        match self.stages {
            2 => self.double_buffered(cx),
            _ => self.ring(cx),
        }
    }

    /// The shared addresses of both operand tiles in stage `index`.
    fn stage(&self, cx: &mut Emitter, index: Operand) -> [Operand; 2] {
        self.tiles.map(|t| {
            let offset = cx.b.mul_u32(index, Operand::Int(t.stage_bytes() as i64));
            let at =
                cx.b.add_u32(self.smem.into(), Operand::Int(t.offset as i64));
            cx.b.add_u32(at, offset)
        })
    }

    fn double_buffered(&self, cx: &mut Emitter) -> Result<()> {
        let has_first = self.steps.has(cx, 0);
        cx.when_all(vec![has_first], |cx| self.double_buffered_steps(cx))
    }

    /// The double-buffered loop of a block that takes at least one step.
    fn double_buffered_steps(&self, cx: &mut Emitter) -> Result<()> {
        let (loader, slots) = (self.loader, self.slots);
        let first = loader.load(cx, slots, Operand::Int(0))?;
        let stage0 = self.stage(cx, Operand::Int(0));
        loader.store(cx, slots, &first, stage0)?;
        ins!(cx.b, "bar.sync 0");
        self.steps.each(cx, 1, |cx, kt| {
            let parity = cx.b.reg(Ty::U32);
            ins!(cx.b, "and.b32 {parity}, {kt}, 1");
            let next = cx.b.add_u32(kt, Operand::Int(1));
            let values = loader.load(cx, slots, next)?;
            let current = self.stage(cx, parity.into());
            self.math
                .products(cx, self.acc, self.tiles, current, self.fragments)?;
            let other = cx.b.reg(Ty::U32);
            ins!(cx.b, "xor.b32 {other}, {parity}, 1");
            let other = self.stage(cx, other.into());
            loader.store(cx, slots, &values, other)?;
            ins!(cx.b, "bar.sync 0");
            Ok(())
        })?;
        let last = self.steps.count();
        let last = cx.b.sub_u32(last, Operand::Int(1));
        let last = cx.b.rem_u32(last, 2);
        let last = self.stage(cx, last);
        self.math
            .products(cx, self.acc, self.tiles, last, self.fragments)
    }

    /// Whether any tile arrives by `cp.async` (else no groups are committed or waited).
    fn copies(&self) -> bool {
        self.tiles.iter().any(|t| t.copied)
    }

    fn commit(&self, cx: &mut Emitter) {
        if self.copies() {
            ins!(cx.b, "cp.async.commit_group");
        }
    }

    fn ring(&self, cx: &mut Emitter) -> Result<()> {
        let (loader, slots, stages) = (self.loader, self.slots, self.stages);
        for s in 0..stages - 1 {
            let has = self.steps.has(cx, s);
            cx.when_all(vec![has], |cx| {
                let at = Operand::Int(s as i64);
                let bases = self.stage(cx, at);
                loader.copy(cx, slots, at, bases);
                let values = loader.load(cx, slots, at)?;
                loader.store(cx, slots, &values, bases)
            })?;
            self.commit(cx);
        }
        self.steps.each(cx, 0, |cx, kt| {
            let current = cx.b.rem_u32(kt, stages);
            let current = self.stage(cx, current);
            if self.copies() {
                ins!(cx.b, "cp.async.wait_group {}", stages - 2);
                loader.round_in_place(cx, slots, current);
            }
            ins!(cx.b, "bar.sync 0");
            let next = cx.b.add_u32(kt, Operand::Int(stages as i64 - 1));
            let count = self.steps.count();
            let more = cx.b.lt_u32(next, count);
            let slot = cx.b.rem_u32(next, stages);
            let refill = self.stage(cx, slot);
            let mut values = vec![];
            cx.when_all(vec![more], |cx| {
                loader.copy(cx, slots, next, refill);
                values = loader.load(cx, slots, next)?;
                Ok(())
            })?;
            self.commit(cx);
            self.math
                .products(cx, self.acc, self.tiles, current, self.fragments)?;
            if !values.is_empty() {
                cx.when_all(vec![more], |cx| loader.store(cx, slots, &values, refill))?;
            }
            Ok(())
        })
    }
}
