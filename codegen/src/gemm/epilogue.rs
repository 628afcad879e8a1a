//! The result side of the GEMM template: the staged epilogue of an unsplit GEMM, the
//! partial tiles a split GEMM writes to its workspace and the sum that reads them back,
//! and the zero positions off a lattice GEMM's lattice.

use super::SplitResult;
use super::{
    load_v4, offset_in_tile, shared_address, store_v4, wavefronts, Layout, Operands, PAD, PATCH,
    THREADS,
};
use crate::error::Result;
use crate::eval::Run;
use crate::eval::{Emitter, Slices};
use crate::flow::Check;
use crate::index::Index;
use crate::pointwise::evaluate_and_store;
use crate::ptx::{ins, Operand, Reg, Ty};
use calib_ir::{GemmDims, Layout as Storage, Value};

impl Slices for SplitResult {
    fn holds(&self, v: Value) -> bool {
        self.anchor == v
    }

    fn count(&self) -> usize {
        self.slices
    }

    fn combine(&self, cx: &mut Emitter, _: Value, workspace: Reg, at: &Index) -> Result<Operand> {
        read_split(cx, self, workspace, at)
    }
}

/// The anchor of a split-K kernel at `at`: the sum of its slices' partial results, in
/// slice order.
fn read_split(
    cx: &mut Emitter,
    split: &SplitResult,
    workspace: Reg,
    at: &Index,
) -> Result<Operand> {
    let ops = split.ops.as_ref();
    let dims = ops.dims();
    let (m, n, _) = dims.mnk();
    let coords = cx.coords(at, &cx.ty(split.anchor).shape.clone());
    let (g, mi, ni) = ops.split(cx, &coords);
    let on_lattice = ops
        .lattice()
        .map(|strides| lattice_check(cx, &coords, strides));
    let (mf, nf) = (cx.linearize(&mi, &dims.m), cx.linearize(&ni, &dims.n));
    let within = if split.transposed {
        cx.b.mad_u32(nf, Operand::Int(m as i64), mf)
    } else {
        cx.b.mad_u32(mf, Operand::Int(n as i64), nf)
    };
    let slice_elements = dims.groups * m * n;
    let base = cx.b.mad_u32(g, Operand::Int((m * n) as i64), within);
    let acc = cx.b.reg(Ty::F32);
    for s in 0..split.slices {
        let at =
            cx.b.add_u32(base, Operand::Int((s * slice_elements) as i64));
        let addr = cx.b.address(workspace, at, 4);
        let v = cx.b.reg(Ty::F32);
        ins!(cx.b, "ld.global.f32 {v}, [{addr}]");
        match s {
            0 => ins!(cx.b, "mov.f32 {acc}, {v}"),
            _ => ins!(cx.b, "add.rn.f32 {acc}, {acc}, {v}"),
        }
    }
    match on_lattice {
        // Off the lattice the anchor is zero (the loads above read the lattice
        // position below, harmlessly).
        Some(on) => cx.select_or_zero(vec![Ok(on)], Ty::F32, |_| Ok(acc.into())),
        None => Ok(acc.into()),
    }
}

/// Whether anchor coordinates `coords` (axes 2 and 3 spatial) lie on the lattice of
/// `strides`.
pub(super) fn lattice_check(cx: &mut Emitter, coords: &[Operand], [sh, sw]: [usize; 2]) -> Reg {
    let rh = cx.b.rem_u32(coords[2], sh);
    let rw = cx.b.rem_u32(coords[3], sw);
    let either = cx.b.reg(Ty::U32);
    ins!(cx.b, "or.b32 {either}, {rh}, {rw}");
    cx.b.setp("eq", Ty::U32, either.into(), Operand::Int(0))
}

/// The anchor's positions off the lattice a GEMM computes over: zero, their epilogue
/// run by a grid-stride pass of the GEMM's own blocks. Where every output lies
/// channels-last in whole runs of channels ([`channel_run`]), the pass walks memory a
/// run at a time (a pixel's run is all on the lattice or all off it); else element by
/// element.
pub(super) fn off_lattice(
    cx: &mut Emitter,
    anchor: Value,
    aligned: &[usize],
    strides: [usize; 2],
    blocks: usize,
) -> Result<()> {
    let shape = cx.ty(anchor).shape.clone();
    let (tid, ctaid) = (cx.tid(), cx.ctaid());
    let thread = cx.b.mad_u32(ctaid, Operand::Int(THREADS as i64), tid);
    if let Some(run) = channel_run(cx, anchor, aligned) {
        return off_lattice_runs(cx, anchor, aligned, strides, (thread, blocks), run);
    }
    cx.for_strided(
        thread,
        calib_ir::numel(&shape),
        blocks * THREADS,
        |cx, e| {
            let coords = cx.coords(&Index::flat(e), &shape);
            let on = lattice_check(cx, &coords, strides);
            cx.if_then(on, false, |cx| {
                let at = Index::both(e, coords);
                cx.bind(anchor, &at, Operand::f32(0.0));
                cx.store_aligned(aligned, &shape, &at)
            })
        },
    )
}

/// The channels a thread of the off-lattice pass takes at one pixel: a 128-bit run of
/// bf16 (eight), where every output the pass stores lies channels-last with the
/// anchor's shape and whole runs of channels.
fn channel_run(cx: &Emitter, anchor: Value, aligned: &[usize]) -> Option<usize> {
    const RUN: usize = 8;
    let shape = &cx.ty(anchor).shape;
    let stored = |i: &usize| {
        let out = cx.kernel.body.outputs[*i].value;
        cx.output_layout(*i) == Storage::ChannelsLast && &cx.ty(out).shape == shape
    };
    let whole = shape.len() == 4 && shape[1].is_multiple_of(RUN);
    (whole && !aligned.is_empty() && aligned.iter().all(stored)).then_some(RUN)
}

/// [`off_lattice`] a run of `run` channels at a time, in memory order (`[N, H, W, C]`):
/// the pixel's lattice check once a run, the run's results stored as vectors.
fn off_lattice_runs(
    cx: &mut Emitter,
    anchor: Value,
    aligned: &[usize],
    strides: [usize; 2],
    (thread, blocks): (Operand, usize),
    run: usize,
) -> Result<()> {
    let shape = cx.ty(anchor).shape.clone();
    let memory = [shape[0], shape[2], shape[3], shape[1] / run];
    let outputs: Vec<Value> = aligned
        .iter()
        .map(|&i| cx.kernel.body.outputs[i].value)
        .collect();
    cx.for_strided(
        thread,
        memory.iter().product(),
        blocks * THREADS,
        |cx, u| {
            let [n, h, w, r] = cx.coords(&Index::flat(u), &memory)[..] else {
                unreachable!("four memory axes")
            };
            let first = cx.b.mul_u32(r, Operand::Int(run as i64));
            let on = lattice_check(cx, &[n, first, h, w], strides);
            cx.if_then(on, false, |cx| {
                let elements: Vec<Vec<Operand>> = (0..run)
                    .map(|k| vec![n, cx.b.add_u32(first, Operand::Int(k as i64)), h, w])
                    .collect();
                for at in &elements {
                    cx.bind(anchor, &Index::coords(at.clone()), Operand::f32(0.0));
                }
                let run = Run {
                    elements: &elements,
                    walked: 1,
                };
                cx.load_runs(&outputs, &shape, Storage::ChannelsLast, &run)?;
                evaluate_and_store(cx, aligned, &outputs, &run, None)
            })
        },
    )
}

/// Where a split-K block writes its partial tile.
pub(super) struct Partials<'a> {
    pub(super) workspace: Reg,
    pub(super) dims: &'a GemmDims,
    /// `m0`, `n0`.
    pub(super) tiles: [Operand; 2],
    pub(super) g: Operand,
    pub(super) slice: Operand,
    pub(super) transposed: bool,
}

impl Partials<'_> {
    /// The first element of this block's slice and group in the workspace.
    fn base(&self, cx: &mut Emitter) -> Operand {
        let (m, n, _) = self.dims.mnk();
        let base =
            cx.b.mad_u32(self.slice, Operand::Int(self.dims.groups as i64), self.g);
        cx.b.mul_u32(base, Operand::Int((m * n) as i64))
    }

    /// Stores each accumulator at its tile position `(row, column)`, one element at a
    /// time (the tensor-core layout holds no runs of four along either side).
    pub(super) fn write_elements(
        &self,
        cx: &mut Emitter,
        elements: &[(Reg, Operand, Operand)],
    ) -> Result<()> {
        let (m, n, _) = self.dims.mnk();
        let base = self.base(cx);
        for &(v, row, col) in elements {
            let gm = cx.b.add_u32(self.tiles[0], row);
            let gn = cx.b.add_u32(self.tiles[1], col);
            let within = if self.transposed {
                cx.b.mad_u32(gn, Operand::Int(m as i64), gm)
            } else {
                cx.b.mad_u32(gm, Operand::Int(n as i64), gn)
            };
            let at = cx.b.add_u32(base, within);
            let inside = vec![
                cx.b.lt_u32(gm, Operand::Int(m as i64)),
                cx.b.lt_u32(gn, Operand::Int(n as i64)),
            ];
            cx.when_all(inside, |cx| {
                let addr = cx.b.address(self.workspace, at, 4);
                ins!(cx.b, "st.global.f32 [{addr}], {v}");
                Ok(())
            })?;
        }
        Ok(())
    }
}

/// Stores the FMA layout's accumulators to the workspace, four consecutive elements at
/// a time along its contiguous dimension where alignment allows.
pub(super) fn write_partials(
    cx: &mut Emitter,
    acc: &[Reg],
    p: Partials,
    layout: Layout,
    [tx, ty]: [Operand; 2],
) -> Result<()> {
    let (m, n, _) = p.dims.mnk();
    let (tm, tn) = (layout.tm, layout.tn);
    let (span_m, span_n) = (layout.span_m(), layout.span_n());
    let slice_base = p.base(cx);
    let row0 = cx.b.mul_u32(ty, Operand::Int(PATCH as i64));
    let col0 = cx.b.mul_u32(tx, Operand::Int(PATCH as i64));
    // Runs of four along the contiguous side: rows when transposed, columns otherwise.
    let (runs_along, across, extent_along, extent_across) = if p.transposed {
        (tm, tn, m, n)
    } else {
        (tn, tm, n, m)
    };
    let vector = extent_along % PATCH == 0;
    for r in 0..across {
        for q in 0..runs_along / PATCH {
            let (first_row, first_col) = if p.transposed {
                (q * span_m, offset_in_tile(r, span_n))
            } else {
                (offset_in_tile(r, span_m), q * span_n)
            };
            let row = cx.b.add_u32(row0, Operand::Int(first_row as i64));
            let col = cx.b.add_u32(col0, Operand::Int(first_col as i64));
            let gm = cx.b.add_u32(p.tiles[0], row);
            let gn = cx.b.add_u32(p.tiles[1], col);
            let (along, across_pos) = if p.transposed { (gm, gn) } else { (gn, gm) };
            let within =
                cx.b.mad_u32(across_pos, Operand::Int(extent_along as i64), along);
            let at = cx.b.add_u32(slice_base, within);
            let values: Vec<Reg> = (0..PATCH)
                .map(|e| {
                    let (i, j) = if p.transposed {
                        (q * PATCH + e, r)
                    } else {
                        (r, q * PATCH + e)
                    };
                    acc[i * tn + j]
                })
                .collect();
            let across_ok = cx.b.lt_u32(across_pos, Operand::Int(extent_across as i64));
            if vector {
                let inside = vec![
                    across_ok,
                    cx.b.lt_u32(along, Operand::Int(extent_along as i64)),
                ];
                cx.when_all(inside, |cx| {
                    let addr = cx.b.address(p.workspace, at, 4);
                    store_v4(cx, "global", addr, &values);
                    Ok(())
                })?;
            } else {
                for (e, v) in values.iter().enumerate() {
                    let pos = cx.b.add_u32(along, Operand::Int(e as i64));
                    let inside = vec![
                        across_ok,
                        cx.b.lt_u32(pos, Operand::Int(extent_along as i64)),
                    ];
                    let at = cx.b.add_u32(at, Operand::Int(e as i64));
                    cx.when_all(inside, |cx| {
                        let addr = cx.b.address(p.workspace, at, 4);
                        ins!(cx.b, "st.global.f32 [{addr}], {v}");
                        Ok(())
                    })?;
                }
            }
        }
    }
    Ok(())
}

/// The epilogue of an unsplit GEMM: one 64-row quarter of the tile at a time, staged in
/// shared memory and walked with consecutive threads on consecutive output addresses.
pub(super) struct Staged<'a> {
    pub(super) ops: &'a dyn Operands,
    pub(super) dims: &'a GemmDims,
    pub(super) anchor: Value,
    pub(super) aligned: &'a [usize],
    pub(super) m0: Operand,
    pub(super) n0: Operand,
    pub(super) g: Operand,
    /// Staged as `[n][m]` (the output is contiguous along `m`), else `[m][n]`.
    pub(super) transposed: bool,
    pub(super) bn: usize,
    /// Rows of one staged band: every thread holds accumulators in each band.
    pub(super) span_m: usize,
}

impl Staged<'_> {
    /// Words per staged row.
    pub(super) fn pitch(&self) -> usize {
        if self.transposed {
            self.span_m + PAD
        } else {
            self.bn + PAD
        }
    }

    pub(super) fn bytes(&self) -> usize {
        let rows = if self.transposed {
            self.bn
        } else {
            self.span_m
        };
        rows * self.pitch() * 4
    }

    /// Band `band` of the tile: `write` puts the band's accumulators into the staging
    /// area (given its pitch), then the block stores the band through the epilogue.
    pub(super) fn emit(
        &self,
        cx: &mut Emitter,
        smem: Operand,
        band: usize,
        write: impl FnOnce(&mut Emitter, usize),
    ) -> Result<()> {
        let pitch = self.pitch();
        let span_m = self.span_m;
        let transposed = self.transposed;
        write(cx, pitch);
        ins!(cx.b, "bar.sync 0");

        // Walk the staged band: consecutive threads along the staged rows.
        let (rows, cols) = if transposed {
            (self.bn, span_m)
        } else {
            (span_m, self.bn)
        };
        let tid = cx.tid();
        let walk = Walk {
            rows,
            cols,
            pitch,
            quarter_m: cx.b.add_u32(self.m0, Operand::Int((band * span_m) as i64)),
        };
        let run = self.run(cx, cols);
        // Threads that cover whole staged rows keep their column in every row they walk:
        // its coordinates are computed once, before the walk.
        if THREADS.is_multiple_of(cols / run.len) {
            let fast = walk.fast(cx, tid, run.len);
            let (origin, dims) = match transposed {
                true => (walk.quarter_m, &self.dims.m),
                false => (self.n0, &self.dims.n),
            };
            let at = cx.b.add_u32(origin, fast);
            cx.coords(&Index::flat(at), dims);
        }
        let per_thread = (rows * cols / run.len).div_ceil(THREADS);
        let store = |cx: &mut Emitter, e: Operand| match run.len {
            1 => self.store_row(cx, smem, &walk, e),
            _ => self.store_run(cx, smem, &walk, e, run),
        };
        // A thread's few rows are written one by one: each row is then a constant
        // offset from the first, which shared and global addresses take as immediates.
        // They run one after the other on every path, so they share one memo scope (a
        // row's index arithmetic serves the next).
        if per_thread <= UNROLL_ROWS {
            for e in 0..per_thread {
                store(cx, Operand::Int(e as i64))?;
            }
        } else {
            cx.for_range(per_thread, store)?;
        }
        ins!(cx.b, "bar.sync 0");
        Ok(())
    }
}

/// How a block walks a staged band: `rows` rows of `cols` words, `pitch` apart, whose
/// first `m` is `quarter_m`.
struct Walk {
    rows: usize,
    cols: usize,
    pitch: usize,
    quarter_m: Operand,
}

impl Walk {
    /// The first staged column of thread `tid`'s share in each row it walks, taking
    /// runs of `run` columns.
    fn fast(&self, cx: &mut Emitter, tid: Operand, run: usize) -> Operand {
        let q = cx.b.rem_u32(tid, self.cols / run);
        cx.b.mul_u32(q, Operand::Int(run as i64))
    }
}

/// Staged rows a thread writes one by one rather than in a loop.
const UNROLL_ROWS: usize = 16;

/// Staged elements a thread takes at once along a row, where outputs allow.
const RUN: usize = 4;

/// How a thread walks a staged row: `len` adjacent elements at a time, which span the
/// `walked` innermost axes (in memory order) of the anchor's output, stored in `layout`.
#[derive(Clone, Copy)]
struct RunOf {
    len: usize,
    walked: usize,
    layout: Storage,
}

impl Staged<'_> {
    /// The `m` and `n` coordinates of staged element (`slow`, `fast`) of `walk`, and
    /// whether it lies inside the problem.
    fn output_coords(
        &self,
        cx: &mut Emitter,
        walk: &Walk,
        slow: Operand,
        fast: Operand,
    ) -> (Vec<Operand>, Vec<Operand>, Vec<Check>) {
        let (m, n, _) = self.dims.mnk();
        let (mm, nn) = if self.transposed {
            (fast, slow)
        } else {
            (slow, fast)
        };
        let (gm, gn) = (cx.b.add_u32(walk.quarter_m, mm), cx.b.add_u32(self.n0, nn));
        let inside = vec![
            cx.b.lt_u32(gm, Operand::Int(m as i64)),
            cx.b.lt_u32(gn, Operand::Int(n as i64)),
        ];
        let mi = cx.coords(&Index::flat(gm), &self.dims.m);
        let ni = cx.coords(&Index::flat(gn), &self.dims.n);
        (mi, ni, inside)
    }

    /// Where element (or run of `run`) `e` of this thread's share of the staged band
    /// lies: its `m` and `n` coordinates, whether it is inside the problem and the band,
    /// and its shared address.
    fn locate(
        &self,
        cx: &mut Emitter,
        smem: Operand,
        walk: &Walk,
        e: Operand,
        run: usize,
    ) -> (Vec<Operand>, Vec<Operand>, Vec<Check>, Operand) {
        let tid = cx.tid();
        let per_row = walk.cols / run;
        let idx = cx.b.mad_u32(e, Operand::Int(THREADS as i64), tid);
        let slow = cx.b.div_u32(idx, per_row);
        let q = cx.b.rem_u32(idx, per_row);
        let fast = cx.b.mul_u32(q, Operand::Int(run as i64));
        let (mi, ni, mut inside) = self.output_coords(cx, walk, slow, fast);
        inside.push(cx.b.lt_u32(slow, Operand::Int(walk.rows as i64)));
        let at = cx.b.mad_u32(slow, Operand::Int(walk.pitch as i64), fast);
        (mi, ni, inside, shared_address(cx, smem, at))
    }

    /// Runs of four along the staged rows, where the four are adjacent in the memory of
    /// every output the epilogue stores: outputs of the anchor's shape in one layout,
    /// along the stretch its output keeps contiguous ([`Operands::c_contiguous`]),
    /// walking the output's innermost one or two axes in memory order
    /// (`calib_ir::run_axes`; one, the channels, for a channels-last output, whose
    /// staged rows run along them). Else single elements.
    fn run(&self, cx: &Emitter, cols: usize) -> RunOf {
        let layout = self
            .aligned
            .first()
            .map_or(Storage::RowMajor, |&i| cx.output_layout(i));
        let single = RunOf {
            len: 1,
            walked: 0,
            layout,
        };
        let shape = &cx.ty(self.anchor).shape;
        let same = self.aligned.iter().all(|&i| {
            let out = cx.kernel.body.outputs[i].value;
            &cx.ty(out).shape == shape && cx.output_layout(i) == layout
        });
        if !same || !cols.is_multiple_of(RUN) || !self.ops.c_contiguous().is_multiple_of(RUN) {
            return single;
        }
        let most = if layout.is_row_major() { 2 } else { 1 };
        match calib_ir::run_axes(&layout.to_memory(shape), RUN, most) {
            Some(walked) => RunOf {
                len: RUN,
                walked,
                layout,
            },
            None => single,
        }
    }

    /// Run `e` of this thread's share of the staged band: four elements read from shared
    /// memory with one load, the epilogue evaluated at each (inputs stored like the
    /// output read with one load per run), and each output stored with one store.
    fn store_run(
        &self,
        cx: &mut Emitter,
        smem: Operand,
        walk: &Walk,
        e: Operand,
        run: RunOf,
    ) -> Result<()> {
        // The problem's extent along the run is a multiple of four (the output's
        // contiguous stretch is): the first element's checks hold for all four.
        let (mi, ni, inside, addr) = self.locate(cx, smem, walk, e, RUN);
        let shape = cx.ty(self.anchor).shape.clone();
        let (layout, walked) = (run.layout, run.walked);
        let memory_shape = layout.to_memory(&shape);
        cx.when_all(inside, |cx| {
            let base = cx.b.materialize(addr, Ty::U32);
            cx.b.shared_ways(wavefronts(16, |lane| 16 * lane));
            let values = load_v4(cx, base, 0);
            let first = layout.to_memory(&self.ops.c(cx, self.g, &mi, &ni));
            let flat = (walked > 1).then(|| cx.linearize(&first, &memory_shape));
            let elements: Vec<Vec<Operand>> = (0..RUN)
                .map(|u| {
                    let memory = match (u, flat) {
                        (0, _) => first.clone(),
                        // Within one row of the output (in memory order): its innermost
                        // coordinate moves.
                        (_, None) => {
                            let mut at = first.clone();
                            let last = at.len() - 1;
                            at[last] = cx.b.add_u32(at[last], Operand::Int(u as i64));
                            at
                        }
                        (_, Some(flat)) => {
                            let f = cx.b.add_u32(flat, Operand::Int(u as i64));
                            cx.coords(&Index::flat(f), &memory_shape)
                        }
                    };
                    layout.to_logical(&memory)
                })
                .collect();
            for (at, value) in elements.iter().zip(values) {
                cx.bind(self.anchor, &Index::coords(at.clone()), value.into());
            }
            let run = Run {
                elements: &elements,
                walked,
            };
            let outputs: Vec<Value> = self
                .aligned
                .iter()
                .map(|&i| cx.kernel.body.outputs[i].value)
                .collect();
            cx.load_runs(&outputs, &shape, layout, &run)?;
            evaluate_and_store(cx, self.aligned, &outputs, &run, None)
        })
    }

    /// Row `e` of this thread's share of the staged band: each element read from shared
    /// memory and stored through the epilogue.
    fn store_row(&self, cx: &mut Emitter, smem: Operand, walk: &Walk, e: Operand) -> Result<()> {
        let (mi, ni, inside, addr) = self.locate(cx, smem, walk, e, 1);
        let anchor_shape = cx.ty(self.anchor).shape.clone();
        cx.when_all(inside, |cx| {
            let value = cx.b.reg(Ty::F32);
            cx.b.shared_ways(wavefronts(4, |lane| 4 * lane));
            ins!(cx.b, "ld.shared.f32 {value}, [{addr}]");
            let coords = self.ops.c(cx, self.g, &mi, &ni);
            let flat = cx.linearize(&coords, &anchor_shape);
            let at = Index::both(flat, coords);
            cx.bind(self.anchor, &at, value.into());
            cx.store_aligned(self.aligned, &anchor_shape, &at)
        })
    }
}

/// The FMA layout's accumulators of quarter `quarter` (patch row `quarter` of every
/// thread), into a staging area of `pitch` words per row: runs of four along the
/// staged rows.
#[allow(clippy::too_many_arguments)]
pub(super) fn stage_patches(
    cx: &mut Emitter,
    acc: &[Reg],
    layout: Layout,
    smem: Operand,
    quarter: usize,
    pitch: usize,
    transposed: bool,
    [tx, ty]: [Operand; 2],
) {
    let row0 = cx.b.mul_u32(ty, Operand::Int(PATCH as i64));
    let col0 = cx.b.mul_u32(tx, Operand::Int(PATCH as i64));
    let patch_rows = PATCH;
    let (tn, span_n) = (layout.tn, layout.span_n());
    let n_threads = layout.threads_n;
    let write_ways = wavefronts(16, |lane| {
        let (x, y) = (lane % n_threads, lane / n_threads);
        4 * if transposed {
            x * PATCH * pitch + y * PATCH
        } else {
            y * PATCH * pitch + x * PATCH
        }
    });
    if transposed {
        for j in 0..tn {
            let col =
                cx.b.add_u32(col0, Operand::Int(offset_in_tile(j, span_n) as i64));
            let at = cx.b.mad_u32(col, Operand::Int(pitch as i64), row0);
            let addr = shared_address(cx, smem, at);
            let v: Vec<Reg> = (0..patch_rows)
                .map(|i| acc[(quarter * PATCH + i) * tn + j])
                .collect();
            cx.b.shared_ways(write_ways);
            store_v4(cx, "shared", addr, &v);
        }
    } else {
        for i in 0..patch_rows {
            let row = cx.b.add_u32(row0, Operand::Int(i as i64));
            for q in 0..tn / PATCH {
                let col = cx.b.add_u32(col0, Operand::Int((q * span_n) as i64));
                let at = cx.b.mad_u32(row, Operand::Int(pitch as i64), col);
                let addr = shared_address(cx, smem, at);
                let v = &acc[(quarter * PATCH + i) * tn + q * PATCH..][..PATCH];
                cx.b.shared_ways(write_ways);
                store_v4(cx, "shared", addr, v);
            }
        }
    }
}
