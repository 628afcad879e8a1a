//! The adjoint of max pooling: each window's gradient goes to its first maximum.

use super::{stretch_start, tap, windows_containing, zero, LOWEST};
use crate::error::Result;
use crate::eval::{Emitter, Run};
use crate::flow::Check;
use crate::index::Index;
use crate::ptx::{ins, Operand, Reg, Ty};
use crate::window::Axis;
use calib_ir::{Layout, Op, Value};
use std::collections::HashMap;

/// The widest window (along either axis) whose max-pooling adjoint branches on residues
/// ([`max_pool_backward`]): 3x3 windows of stride 2 need four branches sharing up to 25
/// loads; wider ones scan each window instead.
const BRANCHED_WINDOWS: usize = 3;

/// Whether runs of `len` positions along a row can be computed together
/// ([`Row::Run`]): windows that branch on residues, and a stride along the row that
/// divides the run (its first column, a multiple of `len`, then has a known residue).
pub(super) fn takes_runs(w: [Axis; 2], kernel: [usize; 2], len: usize) -> bool {
    // A window then reaches at most the runs just before and after.
    kernel.iter().all(|&k| k <= BRANCHED_WINDOWS.min(len)) && len.is_multiple_of(w[1].stride)
}

/// The column stride of the max-pooling adjoints `outputs` read that branch on column
/// residues ([`max_pool_backward`]), if they share one above 1: a walk that gives each
/// warp pixels of one residue keeps those branches from diverging.
pub(crate) fn branching_column_stride(cx: &Emitter, outputs: &[Value]) -> Option<usize> {
    let read = cx.reads(outputs);
    let mut strides = (cx.kernel.body.nodes.iter().enumerate())
        .filter(|&(k, _)| read[k])
        .filter_map(|(_, node)| match node.op {
            Op::MaxPool2dBackward { kernel, stride, .. }
                if kernel.iter().all(|&k| k <= BRANCHED_WINDOWS) =>
            {
                Some(stride[1])
            }
            _ => None,
        });
    let first = strides.next()?;
    (first > 1 && strides.all(|s| s == first)).then_some(first)
}

/// A position no window element has.
const NOWHERE: i64 = u32::MAX as i64;

/// Each window's gradient goes to its first maximum in row-major order, a NaN counting
/// as the maximum (PyTorch's rule: the first NaN if there is one, else the first
/// largest value). An input position gathers from the windows whose first maximum it
/// is, and it can tell without finding the maximum: the value here is a window's first
/// maximum iff no tap before it is NaN or at least as large, and no tap after it is
/// larger or NaN (unless the value here is NaN itself, which only an earlier NaN beats).
///
/// Which windows contain a position, and as which of their taps, depends on
/// `(at + padding) % stride` along each axis. The kernel branches on those residues, so
/// that within a branch every tap lies at a constant offset from `at` and the windows
/// share the loads of the positions they have in common (a 3x3 window of stride 2
/// reaches 25 positions from its up to four windows, not 36). Where no position is NaN
/// or -inf (nearly everywhere), each tap is one unordered comparison chained into one
/// predicate; the exact rule takes the rest.
///
/// `elements` are adjacent positions of one row, computed together: one accumulator
/// each, in order. Several are allowed where the first's column is a multiple of the
/// stride along the row and so is their count ([`Row::Run`]): their column residues are
/// then known, the row's is branched on once for all of them, and they share every
/// load. The order of each position's sum does not depend on how many are computed
/// together.
pub(super) fn max_pool_backward(
    cx: &mut Emitter,
    [x, dy]: [Value; 2],
    elements: &[Vec<Operand>],
    row: Row,
    w: [Axis; 2],
    kernel: [usize; 2],
) -> Result<Vec<Reg>> {
    if kernel.iter().any(|&k| k > BRANCHED_WINDOWS) {
        return (elements.iter())
            .map(|at| max_pool_backward_by_scan(cx, [x, dy], at, w, kernel))
            .collect();
    }
    let at = &elements[0];
    let accs: Vec<Reg> = elements.iter().map(|_| zero(cx)).collect();
    let mut heres = vec![];
    for e in elements {
        let here = cx.value(x, &Index::coords(e.clone()))?;
        heres.push(cx.b.materialize(here, Ty::F32));
    }
    let [(rh, qh), (rw, qw)] = [0, 1].map(|a| {
        let shifted = cx.b.add_u32(at[2 + a], Operand::Int(w[a].padding as i64));
        let residue = match (a, row) {
            (1, Row::Run { .. }) => Operand::Int((w[1].padding % w[1].stride) as i64),
            _ => cx.b.rem_u32(shifted, w[a].stride),
        };
        (residue, cx.b.div_u32(shifted, w[a].stride))
    });
    let windows = Windows {
        x,
        dy,
        elements,
        row,
        w,
        kernel,
        heres,
        quotient: [qh, qw],
    };
    for residue_h in 0..w[0].stride {
        for residue_w in 0..w[1].stride {
            let residues = vec![equals(cx, rh, residue_h), equals(cx, rw, residue_w)];
            // Neighbouring threads differ in column, not (mostly) in row: a warp runs
            // every column branch but only its row's (a run's column residue is known),
            // unless its pixels were chosen by column residue (only its own then).
            let uniform =
                matches!(row, Row::Channels) && cx.uniform_column_residue == Some(w[1].stride);
            let columns = if uniform { w[1].stride } else { 1 };
            cx.b.enter_loop(1.0 / (w[0].stride * columns) as f64);
            cx.when_all(residues, |cx| {
                windows.gather(cx, [residue_h, residue_w], &accs)
            })?;
            cx.b.exit_loop();
        }
    }
    Ok(accs)
}

/// How the positions of [`max_pool_backward`] lie in their row.
#[derive(Clone, Copy)]
pub(super) enum Row<'a> {
    /// One position, anywhere.
    Alone,
    /// A run of a pointwise thread's: adjacent positions from a column that is a
    /// multiple of their count, which the stride divides. The stretches of the rows
    /// above and below, and the runs before and after, come in as vectors like the
    /// run's own ([`Windows::load_rows`]).
    Run { shape: &'a [usize], layout: Layout },
    /// A run along a channels-last image's channels: one position, several channels.
    /// They share the windows and the branches, and a tap's load of the first channel
    /// reads them all ([`Emitter::load`] under the run).
    Channels,
}

impl Row<'_> {
    /// Which of `count` positions lie along the row: all of them, or (across channels)
    /// one.
    fn along(self, count: usize) -> usize {
        match self {
            Row::Channels => 1,
            _ => count,
        }
    }
}

/// [`max_pool_backward`] by finding each window's first maximum: for windows wider than
/// [`BRANCHED_WINDOWS`], whose residue branches would repeat too much code.
fn max_pool_backward_by_scan(
    cx: &mut Emitter,
    [x, dy]: [Value; 2],
    at: &[Operand],
    w: [Axis; 2],
    kernel: [usize; 2],
) -> Result<Reg> {
    let acc = zero(cx);
    let here = cx.b.mad_u32(at[2], Operand::Int(w[1].input as i64), at[3]);
    windows_containing(cx, at, w, kernel, &mut |cx, oh, ow, contains| {
        let best = cx.b.materialize(LOWEST, Ty::F32);
        let pos = cx.b.materialize(Operand::Int(NOWHERE), Ty::U32);
        cx.for_each_small(&kernel, &mut |cx, k| {
            let ([ih, iw], inside) = tap(cx, w, [oh, ow], k);
            let v = cx.value(x, &Index::coords(vec![at[0], at[1], ih, iw]))?;
            let v = cx.b.materialize(v, Ty::F32);
            // better = inside && (first || (best is a number && (v > best || v is NaN)))
            let first = cx.b.setp("eq", Ty::U32, pos.into(), Operand::Int(NOWHERE));
            let number = cx.b.setp("num", Ty::F32, best.into(), best.into());
            let above = cx.b.setp("gtu", Ty::F32, v.into(), best.into());
            let better = cx.b.reg(Ty::Pred);
            ins!(cx.b, "and.pred {better}, {number}, {above}");
            ins!(cx.b, "or.pred {better}, {better}, {first}");
            match inside {
                Ok(p) => ins!(cx.b, "and.pred {better}, {better}, {p}"),
                Err(true) => {}
                Err(false) => return Ok(()),
            }
            let flat = cx.b.mad_u32(ih, Operand::Int(w[1].input as i64), iw);
            ins!(cx.b, "@{better} mov.f32 {best}, {v}");
            ins!(cx.b, "@{better} mov.u32 {pos}, {flat}");
            Ok(())
        })?;
        let mine = cx.b.setp("eq", Ty::U32, pos.into(), here);
        let g = cx.select_or_zero(vec![Ok(mine), contains], Ty::F32, |cx| {
            cx.value(dy, &Index::coords(vec![at[0], at[1], oh, ow]))
        })?;
        ins!(cx.b, "add.rn.f32 {acc}, {acc}, {g}");
        Ok(())
    })?;
    Ok(acc)
}

/// Whether `r` equals `value`.
fn equals(cx: &mut Emitter, r: Operand, value: usize) -> Check {
    match r.as_int() {
        Some(r) => Err(r == value as i64),
        None => Ok(cx.b.setp("eq", Ty::U32, r, Operand::Int(value as i64))),
    }
}

/// What the branches of [`max_pool_backward`] share.
struct Windows<'a> {
    x: Value,
    dy: Value,
    /// The positions computed, adjacent along one row.
    elements: &'a [Vec<Operand>],
    row: Row<'a>,
    w: [Axis; 2],
    kernel: [usize; 2],
    /// The pooled input at each position.
    heres: Vec<Reg>,
    /// `(at + padding) / stride` along each axis, for the first position `at`: the last
    /// window containing it.
    quotient: [Operand; 2],
}

/// One tap of the pooled input at a constant offset from `at`.
#[derive(Clone, Copy)]
struct Tap {
    value: Reg,
    inside: Check,
}

/// A window containing some of the positions: whether it exists, and its position
/// clamped into range (its gradient is loaded there either way).
struct Window {
    valid: Check,
    at: [Operand; 2],
}

/// A position and a window containing it: `u` is tap `mine` of window `window`, whose
/// first column lies `start` columns after `at`'s.
struct Pair {
    window: usize,
    u: usize,
    mine: [usize; 2],
    start: i64,
}

/// -inf, below every number: what a tap in the padding reads as.
const NEG_INFINITY: Operand = Operand::F32(0xFF80_0000);

impl Windows<'_> {
    /// Adds to each position's accumulator the gradient of every window whose first
    /// maximum it is, where `residue` is `(at + padding) % stride` of the first position
    /// `at` along each axis. Along the rows, `at` is tap `residue + i * stride` of the
    /// `i`-th window back; along the columns, window `j` (relative to the last
    /// containing `at`) starts `j * stride - residue` columns after `at`, and holds the
    /// positions within its width of that. Each position takes its windows last first
    /// along both axes, whatever the number of positions.
    fn gather(&self, cx: &mut Emitter, residue: [usize; 2], accs: &[Reg]) -> Result<()> {
        let (s, k) = (self.w, self.kernel);
        let rows: Vec<(Operand, usize)> = (0..)
            .map(|i| (i, residue[0] + i * s[0].stride))
            .take_while(|&(_, t)| t < k[0])
            .map(|(i, t)| (cx.b.sub_u32(self.quotient[0], Operand::Int(i as i64)), t))
            .collect();
        // Windows overlapping the positions' columns `0..len` (relative to `at`).
        let (len, stride, r) = (
            self.row.along(self.elements.len()) as i64,
            s[1].stride as i64,
            residue[1] as i64,
        );
        let first_column = |j: i64| j * stride - r;
        let columns: Vec<(Operand, i64)> = (-(k[1] as i64)..=len)
            .rev()
            .filter(|&j| first_column(j) < len && first_column(j) + k[1] as i64 > 0)
            .map(|j| {
                let ow = match j {
                    j if j >= 0 => cx.b.add_u32(self.quotient[1], Operand::Int(j)),
                    j => cx.b.sub_u32(self.quotient[1], Operand::Int(-j)),
                };
                (ow, first_column(j))
            })
            .collect();
        // Every window and every position it holds.
        let (mut windows, mut pairs) = (vec![], vec![]);
        for &(oh, th) in &rows {
            for &(ow, start) in &columns {
                let valid = vec![
                    cx.b.lt_u32(oh, Operand::Int(s[0].output as i64)),
                    cx.b.lt_u32(ow, Operand::Int(s[1].output as i64)),
                ];
                windows.push(Window {
                    valid: cx.all_of(valid),
                    at: [
                        cx.clamp_index(oh, s[0].output),
                        cx.clamp_index(ow, s[1].output),
                    ],
                });
                for u in 0..self.elements.len() {
                    let tw = self.column(u) - start;
                    if (0..k[1] as i64).contains(&tw) {
                        pairs.push(Pair {
                            window: windows.len() - 1,
                            u,
                            mine: [th, tw as usize],
                            start,
                        });
                    }
                }
            }
        }
        // Where no position is NaN or -inf, unordered comparisons decide alone: a tap
        // in the padding then reads as -inf and beats nothing. Those values are rare,
        // so the census counts their branch as never taken.
        let mut special = vec![];
        for here in &self.heres {
            special.push(cx.b.setp("equ", Ty::F32, (*here).into(), NEG_INFINITY));
        }
        let special = any(cx, special).expect("at least one position");
        cx.b.enter_loop(0.0);
        cx.if_then(special, true, |cx| {
            self.load_rows(cx, &rows, &columns)?;
            self.add_exact(cx, &windows, &pairs, accs)
        })?;
        cx.b.exit_loop();
        cx.if_then(special, false, |cx| {
            self.load_rows(cx, &rows, &columns)?;
            self.add_ordinary(cx, &windows, &pairs, accs)
        })
    }

    /// The other taps of `pair`'s window in row-major order: whether each comes before
    /// the position, and its offset from `at`.
    fn others(&self, pair: &Pair) -> Vec<(bool, [i64; 2])> {
        let mut others = vec![];
        for kh in 0..self.kernel[0] {
            for kw in 0..self.kernel[1] {
                if [kh, kw] != pair.mine {
                    let d = [kh as i64 - pair.mine[0] as i64, pair.start + kw as i64];
                    others.push(([kh, kw] < pair.mine, d));
                }
            }
        }
        others
    }

    /// [`Windows::gather`]'s sums where no position is NaN or -inf: a tap beats the
    /// value here if it is earlier and at least as large or NaN (`geu`), or later and
    /// larger or NaN (`gtu`), one comparison a tap chained into one predicate.
    fn add_ordinary(
        &self,
        cx: &mut Emitter,
        windows: &[Window],
        pairs: &[Pair],
        accs: &[Reg],
    ) -> Result<()> {
        let mut taps: HashMap<([i64; 2], usize), Tap> = HashMap::new();
        for pair in pairs {
            let here = self.heres[pair.u];
            let window = &windows[pair.window];
            let mut beaten = match window.valid {
                Err(false) => continue,
                Err(true) => None,
                Ok(valid) => Some(format!("!{valid}")),
            };
            for (earlier, d) in self.others(pair) {
                let tap = self.tap(cx, pair.u, d, &mut taps)?;
                if tap.inside == Err(false) {
                    continue;
                }
                let v = tap.value;
                let cmp = if earlier { "geu" } else { "gtu" };
                let p = cx.b.reg(Ty::Pred);
                match beaten {
                    None => ins!(cx.b, "setp.{cmp}.f32 {p}, {v}, {here}"),
                    Some(b) => ins!(cx.b, "setp.{cmp}.or.f32 {p}, {v}, {here}, {b}"),
                }
                beaten = Some(p.to_string());
            }
            let g = self.gradient(cx, window, pair.u)?;
            let g = match beaten {
                None => g,
                Some(beaten) => {
                    let r = cx.b.reg(Ty::F32);
                    ins!(cx.b, "selp.f32 {r}, 0f00000000, {g}, {beaten}");
                    r.into()
                }
            };
            let acc = accs[pair.u];
            ins!(cx.b, "add.rn.f32 {acc}, {acc}, {g}");
        }
        Ok(())
    }

    /// [`Windows::gather`]'s sums by the exact rule, for runs holding NaN or -inf.
    fn add_exact(
        &self,
        cx: &mut Emitter,
        windows: &[Window],
        pairs: &[Pair],
        accs: &[Reg],
    ) -> Result<()> {
        let mut taps: HashMap<([i64; 2], usize), Tap> = HashMap::new();
        let mut nans: HashMap<([i64; 2], usize), Check> = HashMap::new();
        let numbers: Vec<Reg> = (self.heres.iter())
            .map(|&h| cx.b.setp("num", Ty::F32, h.into(), h.into()))
            .collect();
        for pair in pairs {
            let here = self.heres[pair.u];
            let (mut before, mut after) = (vec![], vec![]);
            for (earlier, d) in self.others(pair) {
                let tap = self.tap(cx, pair.u, d, &mut taps)?;
                // Ties go to the earlier tap; a NaN beats everything before it.
                let cmp = if earlier { "ge" } else { "gtu" };
                let (v, h) = (tap.value, here);
                let beats = match tap.inside {
                    Err(false) => continue,
                    Err(true) => cx.b.setp(cmp, Ty::F32, v.into(), h.into()),
                    Ok(inside) => {
                        let p = cx.b.reg(Ty::Pred);
                        ins!(cx.b, "setp.{cmp}.and.f32 {p}, {v}, {h}, {inside}");
                        p
                    }
                };
                if earlier {
                    before.push(beats);
                    let key = (d, self.channel(pair.u));
                    let nan = *nans.entry(key).or_insert_with(|| nan_inside(cx, tap));
                    before.extend(nan.ok());
                } else {
                    after.push(beats);
                }
            }
            // A later tap that is larger or NaN wins unless the value here is NaN.
            let mut beaten = before;
            if let Some(later) = any(cx, after) {
                let p = cx.b.reg(Ty::Pred);
                ins!(cx.b, "and.pred {p}, {later}, {}", numbers[pair.u]);
                beaten.push(p);
            }
            let mut mine = vec![windows[pair.window].valid];
            if let Some(beaten) = any(cx, beaten) {
                let first = cx.b.reg(Ty::Pred);
                ins!(cx.b, "not.pred {first}, {beaten}");
                mine.push(Ok(first));
            }
            let window = &windows[pair.window];
            let g = cx.select_or_zero(mine, Ty::F32, |cx| self.gradient(cx, window, pair.u))?;
            let acc = accs[pair.u];
            ins!(cx.b, "add.rn.f32 {acc}, {acc}, {g}");
        }
        Ok(())
    }

    /// The row `d` rows from `at`'s, clamped into the image, and whether it is inside.
    fn row(&self, cx: &mut Emitter, d: i64) -> (Operand, Check) {
        let axis = self.w[0];
        let p = match d {
            d if d >= 0 => cx.b.add_u32(self.elements[0][2], Operand::Int(d)),
            d => cx.b.sub_u32(self.elements[0][2], Operand::Int(-d)),
        };
        // A position before the image wraps around to a huge one.
        let inside = cx.b.lt_u32(p, Operand::Int(axis.input as i64));
        (cx.clamp_index(p, axis.input), inside)
    }

    /// Loads, where the positions are a run, the stretches of every row the windows of
    /// `rows` reach that their taps read, a run's length each, as the run's own are
    /// loaded: its columns in every other row, and the runs before and after it where
    /// the windows of `columns` reach past it. The taps there are then registers.
    fn load_rows(
        &self,
        cx: &mut Emitter,
        rows: &[(Operand, usize)],
        columns: &[(Operand, i64)],
    ) -> Result<()> {
        let Row::Run { shape, layout } = self.row else {
            return Ok(());
        };
        let len = self.elements.len() as i64;
        let mut offsets: Vec<i64> = rows
            .iter()
            .flat_map(|&(_, t)| (0..self.kernel[0] as i64).map(move |kh| kh - t as i64))
            .collect();
        offsets.sort();
        offsets.dedup();
        let first = columns.iter().map(|c| c.1).min().unwrap_or(0);
        let last = columns.iter().map(|c| c.1).max().unwrap_or(0) + self.kernel[1] as i64 - 1;
        let blocks = [(-1, first < 0), (0, true), (1, last >= len)];
        for d in offsets {
            let (row, _) = self.row(cx, d);
            for (block, needed) in blocks {
                // The run's own elements in its own row are loaded already.
                if !needed || (d, block) == (0, 0) {
                    continue;
                }
                let start = self.block_start(cx, block);
                let elements: Vec<Vec<Operand>> = (0..len)
                    .map(|u| {
                        let e = &self.elements[0];
                        vec![e[0], e[1], row, cx.b.add_u32(start, Operand::Int(u))]
                    })
                    .collect();
                let run = Run {
                    elements: &elements,
                    walked: 1,
                };
                cx.load_runs(&[self.x], shape, layout, &run)?;
            }
        }
        Ok(())
    }

    /// The first column of the run `block` runs after the positions' ([`stretch_start`]).
    fn block_start(&self, cx: &mut Emitter, block: i64) -> Operand {
        let (at, len) = (self.elements[0][3], self.elements.len());
        stretch_start(cx, at, block, len, self.w[1].input)
    }

    /// The gradient of `window`, in position `u`'s channel.
    fn gradient(&self, cx: &mut Emitter, window: &Window, u: usize) -> Result<Operand> {
        let at = &self.elements[self.channel(u)];
        let [oh, ow] = window.at;
        cx.value(self.dy, &Index::coords(vec![at[0], at[1], oh, ow]))
    }

    /// The pooled input at offset `d` from `at` (from `taps` if already there), with
    /// whether it really is inside the image: loaded at the position clamped into the
    /// image (the load needs no branch), and read as -inf where it is not. Within the
    /// positions' columns it needs no clamp, and in their row it is one of them.
    fn tap(
        &self,
        cx: &mut Emitter,
        u: usize,
        d: [i64; 2],
        taps: &mut HashMap<([i64; 2], usize), Tap>,
    ) -> Result<Tap> {
        let channel = self.channel(u);
        if let Some(&tap) = taps.get(&(d, channel)) {
            return Ok(tap);
        }
        let len = self.row.along(self.elements.len()) as i64;
        let own_column = (0..len).contains(&d[1]);
        if d[0] == 0 && own_column {
            let here = match self.row {
                Row::Channels => u,
                _ => d[1] as usize,
            };
            return Ok(Tap {
                value: self.heres[here],
                inside: Err(true),
            });
        }
        let (row, row_inside) = self.row(cx, d[0]);
        let (column, column_inside) = match (own_column, self.row) {
            (true, _) => (self.elements[d[1] as usize][3], Err(true)),
            (false, Row::Run { .. }) => {
                // In the run before or after, loaded by `load_rows`.
                let block = d[1].div_euclid(len);
                let start = self.block_start(cx, block);
                let column = cx.b.add_u32(start, Operand::Int(d[1] - block * len));
                let at = self.elements[0][3];
                let p = match d[1] {
                    d if d >= 0 => cx.b.add_u32(at, Operand::Int(d)),
                    d => cx.b.sub_u32(at, Operand::Int(-d)),
                };
                (column, cx.b.lt_u32(p, Operand::Int(self.w[1].input as i64)))
            }
            (false, Row::Alone | Row::Channels) => {
                let axis = self.w[1];
                let at = self.elements[0][3];
                let p = match d[1] {
                    d if d >= 0 => cx.b.add_u32(at, Operand::Int(d)),
                    d => cx.b.sub_u32(at, Operand::Int(-d)),
                };
                let inside = cx.b.lt_u32(p, Operand::Int(axis.input as i64));
                (cx.clamp_index(p, axis.input), inside)
            }
        };
        let inside = cx.all_of(vec![row_inside, column_inside]);
        if inside == Err(false) {
            return Ok(Tap {
                value: cx.b.materialize(NEG_INFINITY, Ty::F32),
                inside,
            });
        }
        let at = &self.elements[channel];
        let loaded = cx.value(self.x, &Index::coords(vec![at[0], at[1], row, column]))?;
        let value = match inside {
            Ok(p) => {
                let m = cx.b.reg(Ty::F32);
                ins!(cx.b, "selp.f32 {m}, {loaded}, {NEG_INFINITY}, {p}");
                m
            }
            _ => cx.b.materialize(loaded, Ty::F32),
        };
        let tap = Tap { value, inside };
        taps.insert((d, channel), tap);
        Ok(tap)
    }

    /// Position `u`'s column, relative to the first position's.
    fn column(&self, u: usize) -> i64 {
        match self.row {
            Row::Channels => 0,
            _ => u as i64,
        }
    }

    /// Position `u`'s channel, as an index into the positions: they differ in channel
    /// only across channels.
    fn channel(&self, u: usize) -> usize {
        match self.row {
            Row::Channels => u,
            _ => 0,
        }
    }
}

/// Whether `tap` is inside the image and NaN.
fn nan_inside(cx: &mut Emitter, tap: Tap) -> Check {
    let value = tap.value;
    match tap.inside {
        Err(false) => Err(false),
        Err(true) => Ok(cx.b.setp("nan", Ty::F32, value.into(), value.into())),
        Ok(q) => {
            let p = cx.b.reg(Ty::Pred);
            ins!(cx.b, "setp.nan.and.f32 {p}, {value}, {value}, {q}");
            Ok(p)
        }
    }
}

/// One predicate for "any of `ps` holds", if there are any.
fn any(cx: &mut Emitter, ps: Vec<Reg>) -> Option<Reg> {
    ps.into_iter().reduce(|a, b| {
        let p = cx.b.reg(Ty::Pred);
        ins!(cx.b, "or.pred {p}, {a}, {b}");
        p
    })
}
