//! The GEMM template: `C[g; m, n] = sum_k A[g; m, k] * B[g; k, n]` with shared-memory
//! tiles, for convolutions (as implicit GEMMs, see [`crate::conv`]) and matmul, laid out
//! by a [`GemmSchedule`] (tile, k step, split).
//!
//! The operands are functions, not arrays: a problem ([`Operands`]) says how to compute
//! `A` and `B` at given coordinates (through the body evaluator, so a prologue runs while
//! a tile is loaded, and a convolution's padding reads as zero) and where `C[g; m, n]`
//! lands in the anchor's output. `m`, `n` and `k` are multi-dimensional (a convolution's
//! `m` is `(batch, row, column)`), decomposed from flat tile positions on the fly.
//!
//! 256 threads, as 16 x 16, compute a `BM x BN` tile; each thread holds a 4x4 patch of
//! accumulators per 64x64 quarter of the tile (so 4x4 up to 8x8), the patches of one
//! thread 64 rows or columns apart so that a warp's shared-memory reads are contiguous.
//! The k loop is double-buffered: while the products of step `t` run from one pair of
//! shared tiles, the operands of step `t + 1` are already loading into registers (every
//! element of a thread's share at once, without branches: out-of-range elements are read
//! at a clamped position and zeroed by a select), then go to the other pair; one barrier
//! per step. Shared rows are padded by four words so that transposed tile stores spread
//! over the banks.
//!
//! The epilogue stages `C` through shared memory, 64 rows at a time, transposed when the
//! anchor's output is contiguous along `m`, so that consecutive threads store
//! consecutive addresses. With `split_k > 1` each block covers one slice of the k steps
//! and writes its raw partial tile to the kernel's workspace instead; the next launch
//! reads the anchor as the sum of the slices in slice order ([`read_split`]), which
//! keeps the result bit-identical from run to run.

use crate::error::{CodegenError, Result};
use crate::eval::Emitter;
use crate::flow::Check;
use crate::index::Index;
use crate::kernel::Geometry;
use crate::ptx::{ins, Operand, Reg, Ty, SHARED};
use crate::{conv, matmul};
use calib_ir::{GemmDims, GemmSchedule, Value};

/// Which dimension is adjacent in memory, so that consecutive threads access
/// consecutive addresses.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Contiguity {
    /// `A` along `m` (else along `k`).
    pub a_m: bool,
    /// `B` along `n` (else along `k`).
    pub b_n: bool,
    /// `C` along `m` (else along `n`).
    pub c_m: bool,
}

/// A GEMM-shaped anchor op.
pub(crate) trait Operands {
    fn dims(&self) -> GemmDims;
    fn contiguity(&self) -> Contiguity;
    /// `A[g; m, k]`, zero outside the operand.
    fn a(&self, cx: &mut Emitter, g: Operand, m: &[Operand], k: &[Operand]) -> Result<Operand>;
    /// `B[g; k, n]`, zero outside the operand.
    fn b(&self, cx: &mut Emitter, g: Operand, k: &[Operand], n: &[Operand]) -> Result<Operand>;
    /// The anchor-output coordinates of `C[g; m, n]`.
    fn c(&self, cx: &mut Emitter, g: Operand, m: &[Operand], n: &[Operand]) -> Vec<Operand>;
    /// The inverse of [`Operands::c`].
    fn split(&self, cx: &mut Emitter, coords: &[Operand]) -> (Operand, Vec<Operand>, Vec<Operand>);
    /// For a GEMM over a lattice of the anchor's positions (a strided 1x1 data
    /// gradient): the strides along the anchor's axes 2 and 3. Positions off the lattice
    /// are zero, and the GEMM's blocks write them too.
    fn lattice(&self) -> Option<[usize; 2]> {
        None
    }
}

/// The GEMM-shaped op at body node `v`, if it is one.
pub(crate) fn operands_of(cx: &Emitter, v: Value) -> Option<Box<dyn Operands>> {
    if let Some(c) = conv::Conv::anchor(cx, v) {
        return Some(Box::new(c));
    }
    matmul::MatMul::of(cx, v).map(|m| Box::new(m) as Box<dyn Operands>)
}

const THREADS: usize = GemmSchedule::THREADS;
/// A thread's accumulators come in patches of this many rows and columns, one patch
/// per part of the tile the thread grid spans once.
const PATCH: usize = 4;

/// How the threads cover a tile ([`GemmSchedule::layout`]).
#[derive(Clone, Copy, Debug)]
struct Layout {
    /// Threads along `m` and along `n` (`tid = ty * threads_n + tx`).
    threads_m: usize,
    threads_n: usize,
    /// A thread's accumulators along `m` and `n`.
    tm: usize,
    tn: usize,
}

impl Layout {
    fn of(s: &GemmSchedule) -> Option<Layout> {
        let (threads_m, threads_n) = s.layout()?;
        Some(Layout {
            threads_m,
            threads_n,
            tm: s.block_m / threads_m,
            tn: s.block_n / threads_n,
        })
    }

    /// Rows the thread grid spans once: a patch's distance from the next along `m`.
    fn span_m(&self) -> usize {
        self.threads_m * PATCH
    }

    fn span_n(&self) -> usize {
        self.threads_n * PATCH
    }
}
/// Words of padding after each shared-memory row.
const PAD: usize = 4;

/// Where a split-K launch left its partial tiles, for the launches after it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct SplitResult {
    pub anchor: Value,
    pub slices: usize,
    /// The workspace is `[slice][group][n][m]` (else `[slice][group][m][n]`), following
    /// the anchor output's contiguous dimension.
    pub transposed: bool,
}

/// What [`emit`] produced.
pub(crate) struct Emitted {
    pub geometry: Geometry,
    /// Set when the launch wrote partial tiles instead of the epilogue.
    pub split: Option<SplitResult>,
}

/// `C` at anchor-output coordinates `at`, one product at a time: for a GEMM-shaped op
/// that is not its kernel's anchor.
pub(crate) fn serial(cx: &mut Emitter, ops: &dyn Operands, at: &[Operand]) -> Result<Operand> {
    let dims = ops.dims();
    let (g, m, n) = ops.split(cx, at);
    let acc = cx.b.reg(Ty::F32);
    ins!(cx.b, "mov.f32 {acc}, 0f00000000");
    cx.for_each(&dims.k, &mut |cx, k| {
        let a = ops.a(cx, g, &m, k)?;
        let b = ops.b(cx, g, k, &n)?;
        ins!(cx.b, "fma.rn.f32 {acc}, {a}, {b}, {acc}");
        Ok(())
    })?;
    Ok(acc.into())
}

/// The anchor of a split-K kernel at `at`: the sum of its slices' partial results, in
/// slice order.
pub(crate) fn read_split(
    cx: &mut Emitter,
    split: SplitResult,
    workspace: Reg,
    at: &Index,
) -> Result<Operand> {
    let ops = operands_of(cx, split.anchor)
        .ok_or_else(|| cx.unsupported(split.anchor, "a split-K anchor must be a GEMM"))?;
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
fn lattice_check(cx: &mut Emitter, coords: &[Operand], [sh, sw]: [usize; 2]) -> Reg {
    let rh = cx.b.rem_u32(coords[2], sh);
    let rw = cx.b.rem_u32(coords[3], sw);
    let either = cx.b.reg(Ty::U32);
    ins!(cx.b, "or.b32 {either}, {rh}, {rw}");
    cx.b.setp("eq", Ty::U32, either.into(), Operand::Int(0))
}

/// The anchor's positions off the lattice a GEMM computes over: zero, their epilogue
/// run by a grid-stride pass of the GEMM's own blocks.
fn off_lattice(
    cx: &mut Emitter,
    anchor: Value,
    aligned: &[usize],
    strides: [usize; 2],
    blocks: usize,
) -> Result<()> {
    let shape = cx.ty(anchor).shape.clone();
    let (tid, ctaid) = (cx.tid(), cx.ctaid());
    let thread = cx.b.mad_u32(ctaid, Operand::Int(THREADS as i64), tid);
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

/// One operand's tile in shared memory: `depth` rows (k) of `width` elements (m or n),
/// each row padded, two stages.
#[derive(Clone, Copy, Debug)]
struct Tile {
    depth: usize,
    width: usize,
    /// Byte offset of stage 0 in shared memory.
    offset: usize,
    /// Whether the operand is contiguous along the tile's width (else along k): which
    /// way consecutive threads walk when loading it.
    along_width: bool,
}

impl Tile {
    fn pitch(&self) -> usize {
        self.width + PAD
    }

    fn stage_bytes(&self) -> usize {
        self.depth * self.pitch() * 4
    }

    /// The tile's sides as `(fast, slow)`: consecutive threads walk the fast one.
    fn sides(&self) -> (usize, usize) {
        if self.along_width {
            (self.width, self.depth)
        } else {
            (self.depth, self.width)
        }
    }

    /// Elements each thread loads per step.
    fn per_thread(&self) -> usize {
        (self.depth * self.width).div_ceil(THREADS)
    }

    /// The `(k, width)` position of element `e` of thread `tid`'s share.
    fn position(&self, tid: usize, e: usize) -> (usize, usize) {
        let idx = e * THREADS + tid;
        if self.along_width {
            (idx / self.width, idx % self.width)
        } else {
            (idx % self.depth, idx / self.depth)
        }
    }
}

/// Emits the tiled kernel around GEMM-shaped anchor `anchor` under `schedule`, storing
/// body outputs `aligned` (those with as many elements as the anchor) in its epilogue,
/// or with a split, the partial tiles to the kernel's workspace.
pub(crate) fn emit(
    cx: &mut Emitter,
    ops: &dyn Operands,
    anchor: Value,
    aligned: &[usize],
    schedule: GemmSchedule,
) -> Result<Emitted> {
    let dims = ops.dims();
    schedule
        .check(&dims)
        .map_err(|detail| CodegenError::Kernel {
            kernel: cx.kernel.name.clone(),
            detail: format!("schedule {}: {detail}", describe(&schedule)),
        })?;
    let GemmSchedule {
        block_m: bm,
        block_n: bn,
        block_k: bk,
        split_k: slices,
    } = schedule;
    let (m, n, _) = dims.mnk();
    let contiguity = ops.contiguity();
    let (tiles_m, tiles_n) = (m.div_ceil(bm), n.div_ceil(bn));
    let tiles = tiles_m * tiles_n * dims.groups;
    let (_, steps) = schedule.k_steps(&dims);

    let (tid, bid) = (cx.tid(), cx.ctaid());
    let tile_m = cx.b.rem_u32(bid, tiles_m);
    let rest = cx.b.div_u32(bid, tiles_m);
    let tile_n = cx.b.rem_u32(rest, tiles_n);
    let rest = cx.b.div_u32(rest, tiles_n);
    let g = cx.b.rem_u32(rest, dims.groups);
    let slice = cx.b.div_u32(rest, dims.groups);
    let m0 = cx.b.mul_u32(tile_m, Operand::Int(bm as i64));
    let n0 = cx.b.mul_u32(tile_n, Operand::Int(bn as i64));
    let k0 = cx.b.mul_u32(slice, Operand::Int((steps * bk) as i64));
    let layout = Layout::of(&schedule).expect("a checked schedule has a layout");
    let tx = cx.b.rem_u32(tid, layout.threads_n);
    let ty = cx.b.div_u32(tid, layout.threads_n);

    let a = Tile {
        depth: bk,
        width: bm,
        offset: 0,
        along_width: contiguity.a_m,
    };
    let b = Tile {
        depth: bk,
        width: bn,
        offset: 2 * a.stage_bytes(),
        along_width: contiguity.b_n,
    };
    let smem = cx.b.reg(Ty::U32);
    ins!(cx.b, "mov.u32 {smem}, {SHARED}");
    let (tm, tn) = (layout.tm, layout.tn);
    let acc: Vec<Reg> = (0..tm * tn).map(|_| cx.b.reg(Ty::F32)).collect();
    for r in &acc {
        ins!(cx.b, "mov.f32 {r}, 0f00000000");
    }

    let loader = Loader {
        ops,
        dims: &dims,
        a,
        b,
        m0,
        n0,
        k0,
        g,
        tid,
        bk,
    };
    let slots = loader.slots(cx);
    let first = loader.load(cx, &slots, Operand::Int(0))?;
    let stage0 = stage(cx, smem, [a, b], Operand::Int(0));
    loader.store(cx, &slots, &first, stage0)?;
    ins!(cx.b, "bar.sync 0");
    if steps > 1 {
        cx.for_range(steps - 1, |cx, kt| {
            let parity = cx.b.reg(Ty::U32);
            ins!(cx.b, "and.b32 {parity}, {kt}, 1");
            let next = cx.b.add_u32(kt, Operand::Int(1));
            let values = loader.load(cx, &slots, next)?;
            let current = stage(cx, smem, [a, b], parity.into());
            products(cx, &acc, [a, b], layout, current, [tx, ty])?;
            let other = cx.b.reg(Ty::U32);
            ins!(cx.b, "xor.b32 {other}, {parity}, 1");
            let other = stage(cx, smem, [a, b], other.into());
            loader.store(cx, &slots, &values, other)?;
            ins!(cx.b, "bar.sync 0");
            Ok(())
        })?;
    }
    let last = stage(cx, smem, [a, b], Operand::Int(((steps - 1) % 2) as i64));
    products(cx, &acc, [a, b], layout, last, [tx, ty])?;

    let operand_bytes = 2 * (a.stage_bytes() + b.stage_bytes());
    if slices > 1 {
        let workspace = cx.workspace()?;
        let transposed = contiguity.c_m;
        write_partials(
            cx,
            &acc,
            Partials {
                workspace,
                dims: &dims,
                tiles: [m0, n0],
                g,
                slice,
                transposed,
                layout,
                thread: [tx, ty],
            },
        )?;
        return Ok(Emitted {
            geometry: Geometry {
                blocks: tiles * slices,
                threads: THREADS,
                shared_bytes: operand_bytes,
            },
            split: Some(SplitResult {
                anchor,
                slices,
                transposed,
            }),
        });
    }

    ins!(cx.b, "bar.sync 0");
    let staged = Staged {
        ops,
        dims: &dims,
        anchor,
        aligned,
        m0,
        n0,
        g,
        transposed: contiguity.c_m,
        bn,
        layout,
    };
    for quarter in 0..tm / PATCH {
        staged.emit(cx, &acc, smem.into(), quarter, [tx, ty])?;
    }
    if let Some(strides) = ops.lattice() {
        off_lattice(cx, anchor, aligned, strides, tiles)?;
    }
    Ok(Emitted {
        geometry: Geometry {
            blocks: tiles,
            threads: THREADS,
            shared_bytes: operand_bytes.max(staged.bytes()),
        },
        split: None,
    })
}

fn describe(s: &GemmSchedule) -> String {
    calib_ir::Schedule::gemm(*s).to_string()
}

/// The shared addresses of both operand tiles in stage `index` (0 or 1).
fn stage(cx: &mut Emitter, smem: Reg, tiles: [Tile; 2], index: Operand) -> [Operand; 2] {
    tiles.map(|t| {
        let offset = cx.b.mul_u32(index, Operand::Int(t.stage_bytes() as i64));
        let at = cx.b.add_u32(smem.into(), Operand::Int(t.offset as i64));
        cx.b.add_u32(at, offset)
    })
}

/// Loads a step's operand tiles into registers and stores them to shared memory.
struct Loader<'a> {
    ops: &'a dyn Operands,
    dims: &'a GemmDims,
    a: Tile,
    b: Tile,
    m0: Operand,
    n0: Operand,
    k0: Operand,
    g: Operand,
    tid: Operand,
    bk: usize,
}

/// One element of a thread's share of a tile, with everything about it that stays the
/// same from step to step (computed once, before the k loop).
struct Slot {
    /// Its row (`k` within the step).
    kk: Operand,
    /// The coordinates of its `m` (or `n`), clamped into range, and whether the
    /// unclamped position is in range.
    width_coords: Vec<Operand>,
    width_inside: crate::flow::Check,
    /// Its shared-memory word within a stage.
    shared_word: Operand,
}

impl Loader<'_> {
    /// The slots of `A`'s share, then `B`'s.
    fn slots(&self, cx: &mut Emitter) -> Vec<Slot> {
        let (m, n, _) = self.dims.mnk();
        let mut slots = vec![];
        for (tile, is_a) in [(self.a, true), (self.b, false)] {
            let (origin, extent, dims) = if is_a {
                (self.m0, m, &self.dims.m)
            } else {
                (self.n0, n, &self.dims.n)
            };
            // Tile sides divide the block, so element `e` is element 0 moved along the
            // slow side by a constant: the fast coordinate is one register for all of
            // a thread's elements.
            let (fast, _) = tile.sides();
            let at_fast = cx.b.rem_u32(self.tid, fast);
            let first_slow = cx.b.div_u32(self.tid, fast);
            for e in 0..tile.per_thread() {
                let at_slow =
                    cx.b.add_u32(first_slow, Operand::Int((e * THREADS / fast) as i64));
                let (kk, ww) = if tile.along_width {
                    (at_slow, at_fast)
                } else {
                    (at_fast, at_slow)
                };
                let gw = cx.b.add_u32(origin, ww);
                let width_inside = cx.b.lt_u32(gw, Operand::Int(extent as i64));
                let clamped = cx.clamp_index(gw, extent);
                let width_coords = cx.coords(&Index::flat(clamped), dims);
                let shared_word = cx.b.mad_u32(kk, Operand::Int(tile.pitch() as i64), ww);
                slots.push(Slot {
                    kk,
                    width_coords,
                    width_inside,
                    shared_word,
                });
            }
        }
        slots
    }

    /// This thread's elements of step `kt` of both tiles (`A`'s, then `B`'s), all
    /// loaded before any is used.
    fn load(&self, cx: &mut Emitter, slots: &[Slot], kt: Operand) -> Result<Vec<Operand>> {
        let (_, _, k) = self.dims.mnk();
        let step = cx.b.mul_u32(kt, Operand::Int(self.bk as i64));
        let kbase = cx.b.add_u32(self.k0, step);
        let a_slots = self.a.per_thread();
        let mut values = vec![];
        // Each element is a chain of its own, written one after the other.
        cx.b.parallel_chains(slots.len());
        // Slots at the same `k` (a tile loaded along `k` gives a thread one row) share
        // its position, bounds check and coordinates.
        let mut rows: Vec<(Operand, Check, Operand)> = vec![];
        for (i, slot) in slots.iter().enumerate() {
            let is_a = i < a_slots;
            let (in_k, ck) = match rows.iter().find(|r| r.0 == slot.kk) {
                Some(&(_, in_k, ck)) => (in_k, ck),
                None => {
                    let gk = cx.b.add_u32(kbase, slot.kk);
                    let in_k = cx.b.lt_u32(gk, Operand::Int(k as i64));
                    let ck = cx.clamp_index(gk, k);
                    rows.push((slot.kk, in_k, ck));
                    (in_k, ck)
                }
            };
            let inside = vec![slot.width_inside, in_k];
            let value = cx.select_or_zero(inside, Ty::F32, |cx| {
                let ki = cx.coords(&Index::flat(ck), &self.dims.k);
                let w = &slot.width_coords;
                if is_a {
                    self.ops.a(cx, self.g, w, &ki)
                } else {
                    self.ops.b(cx, self.g, &ki, w)
                }
            })?;
            values.push(cx.b.materialize(value, Ty::F32).into());
        }
        cx.b.parallel_chains(1);
        Ok(values)
    }

    /// Stores `values` (from [`Loader::load`]) into the stage whose tiles start at
    /// shared addresses `bases`.
    fn store(
        &self,
        cx: &mut Emitter,
        slots: &[Slot],
        values: &[Operand],
        bases: [Operand; 2],
    ) -> Result<()> {
        let a_slots = self.a.per_thread();
        for (i, (slot, v)) in slots.iter().zip(values).enumerate() {
            let tile = if i < a_slots { self.a } else { self.b };
            let ways = wavefronts(4, |lane| {
                let (kk, ww) = tile.position(lane, 0);
                4 * (kk * tile.pitch() + ww)
            });
            let addr = shared_address(cx, bases[usize::from(i >= a_slots)], slot.shared_word);
            cx.b.shared_ways(ways);
            ins!(cx.b, "st.shared.f32 [{addr}], {v}");
        }
        Ok(())
    }
}

/// Accumulates one step's products from the shared tiles at `bases`: for every `k` of
/// the step, the thread's `A` and `B` fragments as 16-byte loads, then every product of
/// the two.
fn products(
    cx: &mut Emitter,
    acc: &[Reg],
    [a, b]: [Tile; 2],
    layout: Layout,
    bases: [Operand; 2],
    [tx, ty]: [Operand; 2],
) -> Result<()> {
    let depth = a.depth;
    let (tm, tn) = (layout.tm, layout.tn);
    // Each thread's fragments sit at fixed offsets from one address per tile: loads
    // name them as `[address+offset]`, with no arithmetic per load.
    let thread_base = |cx: &mut Emitter, base: Operand, lane: Operand| {
        let words = cx.b.mul_u32(lane, Operand::Int(PATCH as i64));
        let at = shared_address(cx, base, words);
        cx.b.materialize(at, Ty::U32)
    };
    let a_base = thread_base(cx, bases[0], ty);
    let b_base = thread_base(cx, bases[1], tx);
    let n_threads = layout.threads_n;
    let a_ways = wavefronts(16, |lane| 16 * (lane / n_threads));
    let b_ways = wavefronts(16, |lane| 16 * (lane % n_threads));
    for kk in 0..depth {
        let frag = |cx: &mut Emitter, tile: Tile, base: Reg, quarters, span, ways| {
            let mut regs = vec![];
            for q in 0..quarters {
                let word = kk * tile.pitch() + q * span;
                cx.b.shared_ways(ways);
                regs.extend(load_v4(cx, base, 4 * word));
            }
            regs
        };
        let af = frag(cx, a, a_base, tm / PATCH, layout.span_m(), a_ways);
        let bf = frag(cx, b, b_base, tn / PATCH, layout.span_n(), b_ways);
        // Every product goes to its own accumulator: a warp issues them back to back.
        cx.b.independent(true);
        for (i, ai) in af.iter().enumerate() {
            for (j, bj) in bf.iter().enumerate() {
                let c = acc[i * tn + j];
                ins!(cx.b, "fma.rn.f32 {c}, {ai}, {bj}, {c}");
            }
        }
        cx.b.independent(false);
    }
    Ok(())
}

/// Tile row (or column) `r` of a thread's accumulators, relative to its first: `r / 4`
/// picks the patch, `span` apart.
fn offset_in_tile(r: usize, span: usize) -> usize {
    (r / PATCH) * span + r % PATCH
}

/// Where a split-K block writes its partial tile.
struct Partials<'a> {
    workspace: Reg,
    dims: &'a GemmDims,
    /// `m0`, `n0`.
    tiles: [Operand; 2],
    g: Operand,
    slice: Operand,
    transposed: bool,
    layout: Layout,
    /// `tx`, `ty`.
    thread: [Operand; 2],
}

/// Stores the accumulators to the workspace, four consecutive elements at a time along
/// its contiguous dimension where alignment allows.
fn write_partials(cx: &mut Emitter, acc: &[Reg], p: Partials) -> Result<()> {
    let (m, n, _) = p.dims.mnk();
    let (tm, tn) = (p.layout.tm, p.layout.tn);
    let (span_m, span_n) = (p.layout.span_m(), p.layout.span_n());
    let [tx, ty] = p.thread;
    let slice_base =
        cx.b.mad_u32(p.slice, Operand::Int(p.dims.groups as i64), p.g);
    let slice_base = cx.b.mul_u32(slice_base, Operand::Int((m * n) as i64));
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
                    store_v4(cx, "global", addr.into(), &values);
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
struct Staged<'a> {
    ops: &'a dyn Operands,
    dims: &'a GemmDims,
    anchor: Value,
    aligned: &'a [usize],
    m0: Operand,
    n0: Operand,
    g: Operand,
    /// Staged as `[n][m]` (the output is contiguous along `m`), else `[m][n]`.
    transposed: bool,
    bn: usize,
    layout: Layout,
}

impl Staged<'_> {
    /// Words per staged row.
    fn pitch(&self) -> usize {
        if self.transposed {
            self.layout.span_m() + PAD
        } else {
            self.bn + PAD
        }
    }

    fn bytes(&self) -> usize {
        let rows = if self.transposed {
            self.bn
        } else {
            self.layout.span_m()
        };
        rows * self.pitch() * 4
    }

    fn emit(
        &self,
        cx: &mut Emitter,
        acc: &[Reg],
        smem: Operand,
        quarter: usize,
        [tx, ty]: [Operand; 2],
    ) -> Result<()> {
        let (m, n, _) = self.dims.mnk();
        let pitch = self.pitch();
        let row0 = cx.b.mul_u32(ty, Operand::Int(PATCH as i64));
        let col0 = cx.b.mul_u32(tx, Operand::Int(PATCH as i64));
        let patch_rows = PATCH;
        let (tn, span_m, span_n) = (self.layout.tn, self.layout.span_m(), self.layout.span_n());
        let n_threads = self.layout.threads_n;
        // Write this quarter's accumulators: runs of four along the staged rows.
        let transposed = self.transposed;
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
        ins!(cx.b, "bar.sync 0");

        // Walk the staged quarter: consecutive threads along the staged rows.
        let (rows, cols) = if transposed {
            (self.bn, span_m)
        } else {
            (span_m, self.bn)
        };
        let read_ways = wavefronts(4, |lane| 4 * lane);
        let anchor_shape = cx.ty(self.anchor).shape.clone();
        let per_thread = (rows * cols).div_ceil(THREADS);
        let tid = cx.tid();
        let quarter_m =
            cx.b.add_u32(self.m0, Operand::Int((quarter * span_m) as i64));
        cx.for_range(per_thread, |cx, e| {
            let idx = cx.b.mad_u32(e, Operand::Int(THREADS as i64), tid);
            let (slow, fast) = (cx.b.div_u32(idx, cols), cx.b.rem_u32(idx, cols));
            let (mm, nn) = if transposed {
                (fast, slow)
            } else {
                (slow, fast)
            };
            let (gm, gn) = (cx.b.add_u32(quarter_m, mm), cx.b.add_u32(self.n0, nn));
            let inside = vec![
                cx.b.lt_u32(slow, Operand::Int(rows as i64)),
                cx.b.lt_u32(gm, Operand::Int(m as i64)),
                cx.b.lt_u32(gn, Operand::Int(n as i64)),
            ];
            cx.when_all(inside, |cx| {
                let at = cx.b.mad_u32(slow, Operand::Int(pitch as i64), fast);
                let addr = shared_address(cx, smem, at);
                let value = cx.b.reg(Ty::F32);
                cx.b.shared_ways(read_ways);
                ins!(cx.b, "ld.shared.f32 {value}, [{addr}]");
                let mi = cx.coords(&Index::flat(gm), &self.dims.m);
                let ni = cx.coords(&Index::flat(gn), &self.dims.n);
                let coords = self.ops.c(cx, self.g, &mi, &ni);
                let flat = cx.linearize(&coords, &anchor_shape);
                let at = Index::both(flat, coords);
                cx.bind(self.anchor, &at, value.into());
                cx.store_aligned(self.aligned, &anchor_shape, &at)
            })
        })?;
        ins!(cx.b, "bar.sync 0");
        Ok(())
    }
}

/// The shared address of f32 element `index` of the array at `base`.
fn shared_address(cx: &mut Emitter, base: Operand, index: Operand) -> Operand {
    let bytes = cx.b.mul_u32(index, Operand::Int(4));
    cx.b.add_u32(base, bytes)
}

/// Stores four f32 registers to consecutive addresses of `space` (`shared`, `global`)
/// at `addr`, with one 16-byte store.
fn store_v4(cx: &mut Emitter, space: &str, addr: Operand, v: &[Reg]) {
    ins!(
        cx.b,
        "st.{space}.v4.f32 [{addr}], {{{}, {}, {}, {}}}",
        v[0],
        v[1],
        v[2],
        v[3]
    );
}

/// Loads four consecutive f32 values `offset` bytes past shared address `base`.
fn load_v4(cx: &mut Emitter, base: Reg, offset: usize) -> [Reg; 4] {
    let r = [(); 4].map(|_| cx.b.reg(Ty::F32));
    ins!(
        cx.b,
        "ld.shared.v4.f32 {{{}, {}, {}, {}}}, [{base}+{offset}]",
        r[0],
        r[1],
        r[2],
        r[3]
    );
    r
}

/// Shared-memory wavefronts one warp needs for an access of `width` bytes per lane at
/// byte address `address(lane)`: a wavefront serves each of the 32 four-byte banks
/// once, lanes reading the same word share it, and wide accesses are split into phases
/// of `128 / width` lanes.
fn wavefronts(width: usize, address: impl Fn(usize) -> usize) -> usize {
    let lanes_per_phase = (128 / width).clamp(1, 32);
    (0..32)
        .step_by(lanes_per_phase)
        .map(|first| {
            let mut words: Vec<Vec<usize>> = vec![vec![]; 32];
            for lane in first..first + lanes_per_phase {
                let start = address(lane) / 4;
                for word in start..start + width / 4 {
                    let bank = &mut words[word % 32];
                    if !bank.contains(&word) {
                        bank.push(word);
                    }
                }
            }
            words.iter().map(Vec::len).max().unwrap_or(1).max(1)
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn padded_rows_spread_transposed_tile_stores_over_the_banks() {
        let tile = |pad: usize| {
            Tile {
                depth: 8,
                width: 128,
                offset: 0,
                along_width: false,
            }
            .pitch()
                - PAD
                + pad
        };
        let ways = |pitch: usize| {
            let t = Tile {
                depth: 8,
                width: 128,
                offset: 0,
                along_width: false,
            };
            wavefronts(4, |lane| {
                let (kk, ww) = t.position(lane, 0);
                4 * (kk * pitch + ww)
            })
        };
        assert_eq!(ways(tile(0)), 8, "unpadded rows collide");
        assert_eq!(ways(tile(PAD)), 1, "padded rows do not");
    }

    #[test]
    fn fragment_loads_take_the_fewest_wavefronts() {
        assert_eq!(wavefronts(16, |lane| 16 * (lane / 16)), 4);
        assert_eq!(wavefronts(16, |lane| 16 * (lane % 16)), 4);
        assert_eq!(wavefronts(4, |lane| 4 * lane), 1);
    }

    #[test]
    fn patches_are_a_quarter_apart() {
        assert_eq!(offset_in_tile(3, 64), 3);
        assert_eq!(offset_in_tile(4, 64), 64);
        assert_eq!(offset_in_tile(7, 128), 131);
    }
}
