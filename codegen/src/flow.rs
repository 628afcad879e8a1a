//! Structured control flow for emitters: loops over static extents, grid- and
//! team-stride loops, and regions guarded by predicates. Each body runs in its own memo
//! scope (see [`Emitter::scoped`]), because its code does not run on every path.

use crate::error::Result;
use crate::eval::Emitter;
use crate::ptx::{ins, Operand, Reg, Ty};
use crate::render;

/// Windows of at most this many positions are unrolled ([`Emitter::for_each_small`]).
pub(crate) const UNROLL_WINDOWS: usize = 16;

/// A condition known at run time (`Ok`) or already decided by constants (`Err`).
pub(crate) type Check = std::result::Result<Reg, bool>;

impl Emitter<'_> {
    /// Emits `for i in 0..extent { f(i) }` for a static `extent` of at least 1, the body
    /// in its own memo scope.
    pub fn for_range(
        &mut self,
        extent: usize,
        f: impl FnOnce(&mut Self, Operand) -> Result<()>,
    ) -> Result<()> {
        self.range_loop(extent, false, f)
    }

    /// [`Emitter::for_range`] that ptxas must not unroll ([`crate::ptx::Builder::keep_rolled`]).
    pub fn for_range_rolled(
        &mut self,
        extent: usize,
        f: impl FnOnce(&mut Self, Operand) -> Result<()>,
    ) -> Result<()> {
        self.range_loop(extent, true, f)
    }

    /// [`Emitter::for_range_rolled`] over a run-time `count` of at most `most` (no
    /// iteration when it is 0), which the instruction census counts as `mean`
    /// iterations: a phase of a strided data gradient stepping through its own taps.
    pub fn for_range_dynamic(
        &mut self,
        count: Operand,
        most: usize,
        mean: f64,
        f: impl FnOnce(&mut Self, Operand) -> Result<()>,
    ) -> Result<()> {
        match count.as_int() {
            Some(0) => Ok(()),
            Some(n) => self.range_loop(n as usize, true, f),
            None => self.counted_loop(count, most, mean, true, f),
        }
    }

    fn range_loop(
        &mut self,
        extent: usize,
        rolled: bool,
        f: impl FnOnce(&mut Self, Operand) -> Result<()>,
    ) -> Result<()> {
        if extent == 1 {
            return self.scoped(|cx| f(cx, Operand::Int(0)));
        }
        let count = Operand::Int(extent as i64);
        self.counted_loop(count, extent, extent as f64, rolled, f)
    }

    /// `for i in 0..count`, `count` at most `most` and, unless a constant, checked for
    /// 0 before the first iteration.
    fn counted_loop(
        &mut self,
        count: Operand,
        most: usize,
        mean: f64,
        rolled: bool,
        f: impl FnOnce(&mut Self, Operand) -> Result<()>,
    ) -> Result<()> {
        let i = self.b.reg(Ty::U32);
        ins!(self.b, "mov.u32 {i}, 0");
        let top = self.b.label();
        let done = count.as_int().is_none().then(|| {
            let done = self.b.label();
            let none = self.b.setp("eq", Ty::U32, count, Operand::Int(0));
            self.b.bra_if(none, true, done);
            done
        });
        self.b.place(top);
        if rolled {
            self.b.keep_rolled();
        }
        self.b.enter_loop(mean);
        // Inside the body the counter is below `most`; the increment writes it again.
        self.b.bound(i, most.max(1) as u64 - 1);
        self.scoped(|cx| f(cx, i.into()))?;
        self.b.unbound(i);
        ins!(self.b, "add.u32 {i}, {i}, 1");
        let more = self.b.setp("lt", Ty::U32, i.into(), count);
        self.b.bra_if(more, true, top);
        self.b.exit_loop();
        if let Some(done) = done {
            self.b.place(done);
        }
        Ok(())
    }

    /// Emits `for (i = start; i < end; i += step) f(i)` with a run-time `start` (below
    /// `step`, so that a thread runs about `end / step` iterations).
    pub fn for_strided(
        &mut self,
        start: Operand,
        end: usize,
        step: usize,
        f: impl FnOnce(&mut Self, Operand) -> Result<()>,
    ) -> Result<()> {
        let i = self.b.reg(Ty::U32);
        ins!(self.b, "mov.u32 {i}, {start}");
        // Strides are whole warps, so every pass spreads over lanes as the first does.
        self.b.lanes_like(i, start);
        let (top, done) = (self.b.label(), self.b.label());
        self.b.place(top);
        let stop = self
            .b
            .setp("ge", Ty::U32, i.into(), Operand::Int(end as i64));
        self.b.bra_if(stop, true, done);
        self.b.enter_loop(end as f64 / step.max(1) as f64);
        self.b.bound(i, (end as u64).saturating_sub(1));
        self.scoped(|cx| f(cx, i.into()))?;
        self.b.unbound(i);
        ins!(self.b, "add.u32 {i}, {i}, {step}");
        self.b.bra(top);
        self.b.exit_loop();
        self.b.place(done);
        Ok(())
    }

    /// Emits nested loops over every multi-index of `extents` (outermost first) and
    /// calls `f` with the loop indices.
    pub fn for_each(
        &mut self,
        extents: &[usize],
        f: &mut dyn FnMut(&mut Self, &[Operand]) -> Result<()>,
    ) -> Result<()> {
        fn nest<'a>(
            cx: &mut Emitter<'a>,
            extents: &[usize],
            index: &mut Vec<Operand>,
            f: &mut dyn FnMut(&mut Emitter<'a>, &[Operand]) -> Result<()>,
        ) -> Result<()> {
            match extents.split_first() {
                None => f(cx, index),
                Some((&e, rest)) => cx.for_range(e, |cx, i| {
                    index.push(i);
                    nest(cx, rest, index, f)?;
                    index.pop();
                    Ok(())
                }),
            }
        }
        nest(self, extents, &mut Vec::new(), f)
    }

    /// [`Emitter::for_each`] written out in full when there are at most
    /// [`UNROLL_WINDOWS`] indices (a pooling window): the indices are constants, and
    /// the loads of all iterations form one stretch the GPU overlaps. The iterations
    /// are straight-line code, each running after the one before, so they share one
    /// memo scope: what the first computes that does not depend on the index (a
    /// channel's batch-norm scale in a pooled operand) serves them all.
    pub fn for_each_small(
        &mut self,
        extents: &[usize],
        f: &mut dyn FnMut(&mut Self, &[Operand]) -> Result<()>,
    ) -> Result<()> {
        let count: usize = extents.iter().product();
        if count > UNROLL_WINDOWS {
            return self.for_each(extents, f);
        }
        for flat in 0..count {
            let mut rest = flat;
            let mut index = vec![Operand::Int(0); extents.len()];
            for (a, &e) in extents.iter().enumerate().rev() {
                index[a] = Operand::Int((rest % e) as i64);
                rest /= e;
            }
            f(self, &index)?;
        }
        Ok(())
    }

    /// Runs `f` only where `p` holds (with `when` false: where it does not), in its own
    /// memo scope.
    pub fn if_then(
        &mut self,
        p: Reg,
        when: bool,
        f: impl FnOnce(&mut Self) -> Result<()>,
    ) -> Result<()> {
        let skip = self.b.label();
        self.b.bra_if(p, !when, skip);
        self.scoped(f)?;
        self.b.place(skip);
        Ok(())
    }

    /// One predicate for "all of `conditions` hold"; `Err` when constants decide it.
    pub fn all_of(&mut self, conditions: Vec<Check>) -> Check {
        self.all(conditions)
    }

    fn all(&mut self, conditions: Vec<Check>) -> Check {
        let mut known = true;
        let mut p: Option<Reg> = None;
        for c in conditions {
            match c {
                Err(v) => known &= v,
                Ok(q) => {
                    p = Some(match p {
                        None => q,
                        Some(prev) => self.b.and_pred(prev, q),
                    })
                }
            }
        }
        match (known, p) {
            (false, _) => Err(false),
            (true, None) => Err(true),
            (true, Some(p)) => Ok(p),
        }
    }

    /// Runs `f` where all `conditions` hold.
    pub fn when_all(
        &mut self,
        conditions: Vec<Check>,
        f: impl FnOnce(&mut Self) -> Result<()>,
    ) -> Result<()> {
        match self.all(conditions) {
            Ok(p) => self.if_then(p, true, f),
            Err(true) => f(self),
            Err(false) => Ok(()),
        }
    }

    /// `f()` where all `conditions` hold, else zero, without a branch: `f` runs on every
    /// path and a select picks its result, so that the loads of several such values stay
    /// in one straight stretch the GPU overlaps. The caller makes `f`'s memory accesses
    /// safe whatever the conditions say (it clamps its indices into range).
    pub fn select_or_zero(
        &mut self,
        conditions: Vec<Check>,
        ty: Ty,
        f: impl FnOnce(&mut Self) -> Result<Operand>,
    ) -> Result<Operand> {
        let zero = render::one_zero(ty).1;
        self.select_or(conditions, ty, zero, f)
    }

    /// [`Emitter::select_or_zero`] with another value where the conditions fail.
    pub fn select_or(
        &mut self,
        conditions: Vec<Check>,
        ty: Ty,
        otherwise: Operand,
        f: impl FnOnce(&mut Self) -> Result<Operand>,
    ) -> Result<Operand> {
        match self.all(conditions) {
            Err(true) => f(self),
            Err(false) => Ok(otherwise),
            Ok(p) => {
                let v = f(self)?;
                let r = self.b.reg(ty);
                ins!(self.b, "selp.{ty} {r}, {v}, {otherwise}, {p}");
                Ok(r.into())
            }
        }
    }

    /// `index` clamped to `extent - 1` (wrapped negative positions included), for
    /// [`Emitter::select_or_zero`]'s always-executed loads.
    pub fn clamp_index(&mut self, index: Operand, extent: usize) -> Operand {
        self.b
            .min_u32(index, Operand::Int(extent.max(1) as i64 - 1))
    }
}
