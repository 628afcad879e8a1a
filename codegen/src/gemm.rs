//! The GEMM template: `C[g; m, n] = sum_k A[g; m, k] * B[g; k, n]` with shared-memory
//! tiles, for convolutions (as implicit GEMMs, see [`crate::conv`]) and matmul.
//!
//! The operands are functions, not arrays: a problem ([`Operands`]) says how to compute
//! `A` and `B` at given coordinates (through the body evaluator, so a prologue runs while
//! a tile is loaded, and a convolution's padding reads as zero) and where `C[g; m, n]`
//! lands in the anchor's output. `m`, `n` and `k` are multi-dimensional (a convolution's
//! `m` is `(batch, row, column)`), decomposed from flat tile positions on the fly.
//!
//! One block of 256 threads computes a `BM x BN` tile (`BM * BN = 4096`), each thread a
//! 4x4 micro-tile in registers, stepping through `k` by `BK`: every thread loads its
//! share of both tiles into shared memory, a barrier, the inner products, a barrier. The
//! accumulators are then staged through shared memory so that the epilogue runs as one
//! loop, with consecutive threads on consecutive output addresses.
//!
//! [`Tiling`] carries the storage dtype and the inner-product instruction: f32 tiles and
//! scalar `fma` today; f16/bf16 tiles and `mma.sync` fragments slot in there.

use crate::error::Result;
use crate::eval::Emitter;
use crate::index::Index;
use crate::kernel::Geometry;
use crate::ptx::{ins, Operand, Reg, Ty, SHARED};
use calib_ir::{numel, DType, Value};

/// The extents of a GEMM problem; `m`, `n`, `k` are row-major multi-indices.
#[derive(Clone, Debug)]
pub(crate) struct Dims {
    pub groups: usize,
    pub m: Vec<usize>,
    pub n: Vec<usize>,
    pub k: Vec<usize>,
}

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
    fn dims(&self) -> Dims;
    fn contiguity(&self) -> Contiguity;
    /// `A[g; m, k]`, zero outside the operand.
    fn a(&self, cx: &mut Emitter, g: Operand, m: &[Operand], k: &[Operand]) -> Result<Operand>;
    /// `B[g; k, n]`, zero outside the operand.
    fn b(&self, cx: &mut Emitter, g: Operand, k: &[Operand], n: &[Operand]) -> Result<Operand>;
    /// The anchor-output coordinates of `C[g; m, n]`.
    fn c(&self, cx: &mut Emitter, g: Operand, m: &[Operand], n: &[Operand]) -> Vec<Operand>;
    /// The inverse of [`Operands::c`].
    fn split(&self, cx: &mut Emitter, coords: &[Operand]) -> (Operand, Vec<Operand>, Vec<Operand>);
}

/// The instruction that accumulates products.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum InnerProduct {
    /// One `fma.rn.f32` per product.
    Fma,
}

/// Tile shape, storage dtype and inner-product instruction of one GEMM kernel.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Tiling {
    pub bm: usize,
    pub bn: usize,
    pub bk: usize,
    pub dtype: DType,
    pub inner: InnerProduct,
}

const THREADS: usize = 256;
/// Each thread's micro-tile is `MICRO x MICRO`.
const MICRO: usize = 4;

impl Tiling {
    /// The tile among `BM * BN = 4096` shapes that wastes the least work on `dims`.
    fn choose(dims: &Dims) -> Tiling {
        let (m, n) = (numel(&dims.m), numel(&dims.n));
        let shapes = [(64, 64), (128, 32), (32, 128), (256, 16), (16, 256)];
        let padded = |&(bm, bn): &(usize, usize)| m.div_ceil(bm) * bm * n.div_ceil(bn) * bn;
        let (bm, bn) = shapes
            .iter()
            .copied()
            .min_by_key(padded)
            .expect("candidates");
        Tiling {
            bm,
            bn,
            bk: 16,
            dtype: DType::F32,
            inner: InnerProduct::Fma,
        }
    }

    fn element_bytes(&self) -> usize {
        self.dtype.size_bytes()
    }

    /// Shared memory: both input tiles, or the staged output tile, whichever is larger.
    fn shared_bytes(&self) -> usize {
        let inputs = self.bk * (self.bm + self.bn) * self.element_bytes();
        inputs.max(self.bm * self.bn * 4)
    }
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

/// Emits the tiled kernel around GEMM-shaped anchor `anchor`, storing body outputs
/// `aligned` (those with as many elements as the anchor) in its epilogue.
pub(crate) fn emit(
    cx: &mut Emitter,
    ops: &dyn Operands,
    anchor: Value,
    aligned: &[usize],
) -> Result<Geometry> {
    let dims = ops.dims();
    let t = Tiling::choose(&dims);
    let (m, n, k) = (numel(&dims.m), numel(&dims.n), numel(&dims.k));
    let (tiles_m, tiles_n) = (m.div_ceil(t.bm), n.div_ceil(t.bn));
    let blocks = tiles_m * tiles_n * dims.groups;

    let (tid, bid) = (cx.tid(), cx.ctaid());
    let tile_m = cx.b.rem_u32(bid, tiles_m);
    let rest = cx.b.div_u32(bid, tiles_m);
    let tile_n = cx.b.rem_u32(rest, tiles_n);
    let g = cx.b.div_u32(rest, tiles_n);
    let m0 = cx.b.mul_u32(tile_m, Operand::Int(t.bm as i64));
    let n0 = cx.b.mul_u32(tile_n, Operand::Int(t.bn as i64));
    let smem = cx.b.reg(Ty::U32);
    ins!(cx.b, "mov.u32 {smem}, {SHARED}");
    let a_tile: Operand = smem.into();
    let b_tile = cx.b.add_u32(a_tile, Operand::Int((t.bk * t.bm * 4) as i64));

    let acc: Vec<Reg> = (0..MICRO * MICRO).map(|_| cx.b.reg(Ty::F32)).collect();
    for r in &acc {
        ins!(cx.b, "mov.f32 {r}, 0f00000000");
    }
    // This thread's micro-tile: rows row0.., columns col0.. of the block tile.
    let lanes_n = t.bn / MICRO;
    let row0 = cx.b.div_u32(tid, lanes_n);
    let row0 = cx.b.mul_u32(row0, Operand::Int(MICRO as i64));
    let col0 = cx.b.rem_u32(tid, lanes_n);
    let col0 = cx.b.mul_u32(col0, Operand::Int(MICRO as i64));

    let contiguity = ops.contiguity();
    cx.for_range(k.div_ceil(t.bk), |cx, kt| {
        let k0 = cx.b.mul_u32(kt, Operand::Int(t.bk as i64));
        let tile = TileLoad {
            tid,
            rows: t.bk,
            cols: t.bm,
            fast_cols: contiguity.a_m,
        };
        tile.emit(cx, a_tile, |cx, kk, mm| {
            let (gm, gk) = (cx.b.add_u32(m0, mm), cx.b.add_u32(k0, kk));
            in_range(cx, &[(gm, m), (gk, k)], |cx| {
                let mi = cx.coords(&Index::flat(gm), &dims.m);
                let ki = cx.coords(&Index::flat(gk), &dims.k);
                ops.a(cx, g, &mi, &ki)
            })
        })?;
        let tile = TileLoad {
            tid,
            rows: t.bk,
            cols: t.bn,
            fast_cols: contiguity.b_n,
        };
        tile.emit(cx, b_tile, |cx, kk, nn| {
            let (gn, gk) = (cx.b.add_u32(n0, nn), cx.b.add_u32(k0, kk));
            in_range(cx, &[(gn, n), (gk, k)], |cx| {
                let ki = cx.coords(&Index::flat(gk), &dims.k);
                let ni = cx.coords(&Index::flat(gn), &dims.n);
                ops.b(cx, g, &ki, &ni)
            })
        })?;
        ins!(cx.b, "bar.sync 0");
        let lanes = lanes_n;
        let a_ways = wavefronts(16, |tid| 16 * (tid / lanes));
        let b_ways = wavefronts(16, |tid| 16 * (tid % lanes));
        for kk in 0..t.bk {
            cx.b.shared_ways(a_ways);
            let a = load_v4(cx, a_tile, kk * t.bm, row0);
            cx.b.shared_ways(b_ways);
            let b = load_v4(cx, b_tile, kk * t.bn, col0);
            match t.inner {
                InnerProduct::Fma => {
                    for (i, ai) in a.iter().enumerate() {
                        for (j, bj) in b.iter().enumerate() {
                            let c = acc[i * MICRO + j];
                            ins!(cx.b, "fma.rn.f32 {c}, {ai}, {bj}, {c}");
                        }
                    }
                }
            }
        }
        ins!(cx.b, "bar.sync 0");
        Ok(())
    })?;

    // Stage C through shared memory, row-major [BM][BN].
    let stage_ways = wavefronts(16, |tid| {
        4 * ((tid / lanes_n) * MICRO * t.bn + tid % lanes_n * MICRO)
    });
    for i in 0..MICRO {
        let row = cx.b.add_u32(row0, Operand::Int(i as i64));
        let at = cx.b.mad_u32(row, Operand::Int(t.bn as i64), col0);
        let addr = shared_address(cx, a_tile, at);
        cx.b.shared_ways(stage_ways);
        let v = &acc[i * MICRO..(i + 1) * MICRO];
        ins!(
            cx.b,
            "st.shared.v4.f32 [{addr}], {{{}, {}, {}, {}}}",
            v[0],
            v[1],
            v[2],
            v[3]
        );
    }
    ins!(cx.b, "bar.sync 0");

    let anchor_shape = cx.ty(anchor).shape.clone();
    let tile = TileLoad {
        tid,
        rows: if contiguity.c_m { t.bn } else { t.bm },
        cols: if contiguity.c_m { t.bm } else { t.bn },
        fast_cols: true,
    };
    let read_ways = wavefronts(4, |tid| {
        let (slow, fast) = tile.position(tid);
        let (mm, nn) = if contiguity.c_m {
            (fast, slow)
        } else {
            (slow, fast)
        };
        4 * (mm * t.bn + nn)
    });
    tile.each(cx, |cx, slow, fast| {
        let (mm, nn) = if contiguity.c_m {
            (fast, slow)
        } else {
            (slow, fast)
        };
        let (gm, gn) = (cx.b.add_u32(m0, mm), cx.b.add_u32(n0, nn));
        let inside = [(gm, m), (gn, n)];
        guard(cx, &inside, |cx| {
            let at = cx.b.mad_u32(mm, Operand::Int(t.bn as i64), nn);
            let addr = shared_address(cx, a_tile, at);
            let value = cx.b.reg(Ty::F32);
            cx.b.shared_ways(read_ways);
            ins!(cx.b, "ld.shared.f32 {value}, [{addr}]");
            let mi = cx.coords(&Index::flat(gm), &dims.m);
            let ni = cx.coords(&Index::flat(gn), &dims.n);
            let coords = ops.c(cx, g, &mi, &ni);
            let flat = cx.linearize(&coords, &anchor_shape);
            let at = Index::both(flat, coords);
            cx.bind(anchor, &at, value.into());
            cx.store_aligned(aligned, &anchor_shape, &at)
        })
    })?;
    Ok(Geometry {
        blocks,
        threads: THREADS,
        shared_bytes: t.shared_bytes(),
    })
}

/// A `rows x cols` tile in shared memory (row-major), filled or walked by all threads
/// together, consecutive threads along the columns (`fast_cols`) or the rows.
struct TileLoad {
    tid: Operand,
    rows: usize,
    cols: usize,
    fast_cols: bool,
}

impl TileLoad {
    /// The `(row, column)` thread `tid` handles first (the pattern repeats every
    /// `THREADS` elements).
    fn position(&self, tid: usize) -> (usize, usize) {
        if self.fast_cols {
            (tid / self.cols, tid % self.cols)
        } else {
            (tid % self.rows, tid / self.rows)
        }
    }

    /// Calls `f(row, column)` for this thread's share of the tile.
    fn each(
        &self,
        cx: &mut Emitter,
        mut f: impl FnMut(&mut Emitter, Operand, Operand) -> Result<()>,
    ) -> Result<()> {
        let per_thread = (self.rows * self.cols).div_ceil(THREADS);
        let (rows, cols, fast_cols, tid) = (self.rows, self.cols, self.fast_cols, self.tid);
        cx.for_range(per_thread, |cx, e| {
            let idx = cx.b.mad_u32(e, Operand::Int(THREADS as i64), tid);
            let (row, col) = if fast_cols {
                (cx.b.div_u32(idx, cols), cx.b.rem_u32(idx, cols))
            } else {
                (cx.b.rem_u32(idx, rows), cx.b.div_u32(idx, rows))
            };
            f(cx, row, col)
        })
    }

    /// Fills the tile at shared address `base` with `value(row, column)`.
    fn emit(
        &self,
        cx: &mut Emitter,
        base: Operand,
        mut value: impl FnMut(&mut Emitter, Operand, Operand) -> Result<Operand>,
    ) -> Result<()> {
        let cols = self.cols;
        let ways = wavefronts(4, |lane| {
            let (row, col) = self.position(lane);
            4 * (row * cols + col)
        });
        self.each(cx, |cx, row, col| {
            let v = value(cx, row, col)?;
            let v = cx.b.materialize(v, Ty::F32);
            let at = cx.b.mad_u32(row, Operand::Int(cols as i64), col);
            let addr = shared_address(cx, base, at);
            cx.b.shared_ways(ways);
            ins!(cx.b, "st.shared.f32 [{addr}], {v}");
            Ok(())
        })
    }
}

/// The shared address of f32 element `index` of the array at `base`.
fn shared_address(cx: &mut Emitter, base: Operand, index: Operand) -> Operand {
    let bytes = cx.b.mul_u32(index, Operand::Int(4));
    cx.b.add_u32(base, bytes)
}

/// Loads four consecutive f32 values at element `offset + start` of the shared array.
fn load_v4(cx: &mut Emitter, base: Operand, offset: usize, start: Operand) -> [Reg; 4] {
    let at = cx.b.add_u32(start, Operand::Int(offset as i64));
    let addr = shared_address(cx, base, at);
    let r = [(); 4].map(|_| cx.b.reg(Ty::F32));
    ins!(
        cx.b,
        "ld.shared.v4.f32 {{{}, {}, {}, {}}}, [{addr}]",
        r[0],
        r[1],
        r[2],
        r[3]
    );
    r
}

/// `f()` where every `index < extent`, else 0.
fn in_range(
    cx: &mut Emitter,
    checks: &[(Operand, usize)],
    f: impl FnOnce(&mut Emitter) -> Result<Operand>,
) -> Result<Operand> {
    let preds = checks
        .iter()
        .map(|&(i, e)| cx.b.lt_u32(i, Operand::Int(e as i64)))
        .collect();
    cx.value_or_zero(preds, Ty::F32, f)
}

/// Runs `f` where every `index < extent`.
fn guard(
    cx: &mut Emitter,
    checks: &[(Operand, usize)],
    f: impl FnOnce(&mut Emitter) -> Result<()>,
) -> Result<()> {
    let preds = checks
        .iter()
        .map(|&(i, e)| cx.b.lt_u32(i, Operand::Int(e as i64)))
        .collect();
    cx.when_all(preds, f)
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
