//! The GEMM template: `C[g; m, n] = sum_k A[g; m, k] * B[g; k, n]` with shared-memory
//! tiles, for convolutions (as implicit GEMMs, see [`crate::conv`]) and matmul, laid out
//! by a [`GemmSchedule`] (tile, k step, split).
//!
//! The operands are functions, not arrays: a problem ([`Operands`]) says which body
//! value and position each element of `A` and `B` reads ([`Element`]), evaluated through
//! the body evaluator (so a prologue runs while a tile is loaded, and a convolution's
//! padding reads as zero), and where `C[g; m, n]` lands in the anchor's output. `m`, `n` and `k` are multi-dimensional (a convolution's
//! `m` is `(batch, row, column)`), decomposed from flat tile positions on the fly.
//!
//! 256 threads, as 16 x 16, compute a `BM x BN` tile; each thread holds a 4x4 patch of
//! accumulators per 64x64 quarter of the tile (so 4x4 up to 8x8), the patches of one
//! thread 64 rows or columns apart so that a warp's shared-memory reads are contiguous.
//! The k loop ([`pipeline`]) is double-buffered by default: while the products of step
//! `t` run from one pair of shared tiles, the operands of step `t + 1` are already
//! loading into registers (every element of a thread's share at once, without branches:
//! out-of-range elements are read at a clamped position and zeroed by a select), then go
//! to the other pair; one barrier per step. Tensor-core schedules may instead keep a ring
//! of three or four stages (`GemmSchedule::stages`) filled `stages - 1` steps ahead, an
//! operand read straight from a buffer ([`calib_ir::copy_source`]: an f32 one for TF32
//! tiles, also through the precision policy's rounding casts; a bf16 one in runs along
//! the tile's width) copied by `cp.async` (4 bytes, or 16 for runs of eight bf16;
//! zero-filled outside the operand) rather than through registers. Tiles hold f32 words, or for bf16 products bf16 elements (half the
//! shared memory per stage, fragments read with `ldmatrix`, see [`ldmatrix`]); shared
//! rows are padded (`GemmInstruction::tile_pad`) so that the products' loads and
//! transposed tile stores spread over the banks.
//!
//! The epilogue stages `C` through shared memory, 64 rows at a time, transposed when the
//! anchor's output is contiguous along `m`, so that consecutive threads store
//! consecutive addresses. With `split_k > 1` each block covers one slice of the k steps
//! and writes its raw partial tile to the kernel's workspace instead; the next launch
//! reads the anchor as the sum of the slices in slice order ([`read_split`]), which
//! keeps the result bit-identical from run to run.

mod epilogue;
mod ldmatrix;
mod mma;
mod operand;
mod phases;
mod pipeline;
mod tiles;

pub(crate) use operand::{Contiguity, Element, Operands};
pub(crate) use phases::Phase;

use crate::error::{CodegenError, Result};
use crate::eval::Emitter;
use crate::kernel::Geometry;
use crate::ptx::{ins, Operand, Reg, Ty, SHARED};
use calib_ir::{GemmInstruction, GemmSchedule, Value};
use epilogue::{off_lattice, stage_patches, write_partials, Partials, Staged};
use mma::{Lane, Warps};
use pipeline::{Pipeline, Steps};
use std::rc::Rc;
use tiles::{products, Loader, Tile};

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

/// Where a split-K launch left its partial tiles, for the launches after it (which
/// read them as [`crate::eval::Slices`]).
#[derive(Clone)]
pub(crate) struct SplitResult {
    pub anchor: Value,
    /// The anchor's problem, to find where each element's slices lie.
    pub ops: Rc<dyn Operands>,
    pub slices: usize,
    /// The workspace is `[slice][group][n][m]` (else `[slice][group][m][n]`), following
    /// the anchor output's contiguous dimension.
    pub transposed: bool,
}

/// Words of padding after each row of the epilogue's f32 staging area (as the FMA
/// template's tiles, `GemmInstruction::Fma.tile_pad()`).
const PAD: usize = 4;

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

/// Emits the tiled kernel around GEMM-shaped anchor `anchor` under `schedule`, storing
/// body outputs `aligned` (those with as many elements as the anchor) in its epilogue,
/// or with a split, the partial tiles to the kernel's workspace.
pub(crate) fn emit(
    cx: &mut Emitter,
    problem: &Rc<dyn Operands>,
    anchor: Value,
    aligned: &[usize],
    schedule: GemmSchedule,
) -> Result<Emitted> {
    let ops = problem.as_ref();
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
        ..
    } = schedule;
    let (m, n, _) = dims.mnk();
    let contiguity = ops.contiguity();
    let (tiles_m, tiles_n) = (m.div_ceil(bm), n.div_ceil(bn));
    let tiles = tiles_m * tiles_n * dims.groups;
    let (_, steps) = schedule.k_steps(&dims);

    // One block per tile and slice: with the block index bounded, so are the tile and
    // `k` origins, and a `k` range that ends inside the problem needs no bounds check.
    cx.grid_at_most(tiles * slices);
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
    // A phase of a strided data gradient steps through the taps it meets only.
    let walk = dims.phases.map(|p| {
        let phase = Phase::of(cx, &p, g);
        phases::Walk::of(cx, &p, &phase, [dims.k[2], bk], (slice, slices, steps))
    });
    let math = Math::of(cx, &schedule, tid);
    let (bytes, pad) = (
        schedule.instruction.tile_bytes(),
        schedule.instruction.tile_pad(),
    );

    // With a ring of three or more stages, operands read straight from a buffer
    // arrive by `cp.async`; two stages, and prologues, go through registers.
    let stages = schedule.stages;
    // (A tile is copied in runs along the operand's contiguous side: its width, or `k`,
    // where the tile then keeps each row's `k` adjacent.)
    let along_width = [contiguity.a_m, contiguity.b_n];
    let widths = [bm, bn];
    let sources = match &math {
        Math::Mma { warps, .. } if stages > 2 => [0, 1].map(|i| {
            let copy = operand::copy_source(cx, anchor, i, warps.instruction)
                .filter(|c| c.run == 1 || c.along_k != along_width[i])?;
            Some((copy, copy.grain(bk, widths[i], THREADS)?))
        }),
        _ => [None, None],
    };
    let k_inner = sources.map(|s| s.is_some_and(|(c, _)| c.along_k));
    let pads = k_inner.map(|k_inner| match k_inner {
        true => schedule.instruction.k_inner_pad(),
        false => pad,
    });
    // A TF32 tile copied in runs is rounded in place once its copies land (a vector
    // load and store of each run); a tile copied a word at a time is rounded as each
    // fragment word is read.
    let tf32 = schedule.instruction == GemmInstruction::MmaTf32;
    let rounded_in_place = sources.map(|s| tf32 && s.is_some_and(|(_, grain)| grain > 1));
    // A bf16 input loaded through registers moves its 16 bits as they are; along `k`,
    // in runs of adjacent elements where the input has them (`bf16_run_along_k`) and
    // the tile's share of runs fills every thread.
    let bf16 =
        matches!(&math, Math::Mma { warps, .. } if warps.instruction == GemmInstruction::MmaBf16);
    let raw = [0, 1].map(|i| {
        calib_ir::bf16_input(&cx.kernel.body, anchor, i)
            .filter(|&x| bf16 && sources[i].is_none() && cx.is_plain_input(x))
    });
    let layouts = cx.input_layouts();
    let grain = |i: usize| match sources[i] {
        Some((_, grain)) => grain,
        None if raw[i].is_some() && !along_width[i] => {
            calib_ir::bf16_run_along_k(&cx.kernel.body, anchor, i, &layouts).map_or(1, |run| {
                calib_ir::tile_run_along_k(run, bk, widths[i], THREADS)
            })
        }
        None => 1,
    };
    let a = Tile {
        depth: bk,
        width: bm,
        offset: 0,
        along_width: contiguity.a_m,
        bytes,
        pad: pads[0],
        copied: sources[0].is_some(),
        rounded_in_place: rounded_in_place[0],
        grain: grain(0),
        k_inner: k_inner[0],
    };
    let b = Tile {
        depth: bk,
        width: bn,
        offset: stages * a.stage_bytes(),
        along_width: contiguity.b_n,
        bytes,
        pad: pads[1],
        copied: sources[1].is_some(),
        rounded_in_place: rounded_in_place[1],
        grain: grain(1),
        k_inner: k_inner[1],
    };
    let smem = cx.b.reg(Ty::U32);
    ins!(cx.b, "mov.u32 {smem}, {SHARED}");
    let acc: Vec<Reg> = (0..math.accumulators())
        .map(|_| cx.b.reg(Ty::F32))
        .collect();
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
        walk: walk.as_ref(),
        g,
        tid,
        bk,
        warps: math.warps(),
        sources: sources.map(|c| c.map(|(c, _)| c.input)),
        raw,
    };
    let slots = loader.slots(cx);
    let fragments = math.fragment_offsets(cx, [a, b]);
    Pipeline {
        loader: &loader,
        slots: &slots,
        math: &math,
        fragments,
        acc: &acc,
        smem,
        tiles: [a, b],
        steps: match &walk {
            Some(w) => Steps::Walked {
                count: w.count,
                most: w.most_steps,
                mean: w.mean,
            },
            None => Steps::Fixed(steps),
        },
        stages,
    }
    .emit(cx)?;

    let operand_bytes = stages * (a.stage_bytes() + b.stage_bytes());
    if slices > 1 {
        let workspace = cx.workspace()?;
        let transposed = contiguity.c_m;
        let partials = Partials {
            workspace,
            dims: &dims,
            tiles: [m0, n0],
            g,
            slice,
            transposed,
        };
        match &math {
            Math::Fma { layout, thread } => {
                write_partials(cx, &acc, partials, *layout, *thread)?;
            }
            Math::Mma { warps, lane } => {
                let elements = mma::positions(cx, &acc, warps, lane);
                partials.write_elements(cx, &elements)?;
            }
        }
        return Ok(Emitted {
            geometry: Geometry {
                blocks: tiles * slices,
                threads: THREADS,
                shared_bytes: operand_bytes,
                max_registers: None,
            },
            split: Some(SplitResult {
                anchor,
                ops: Rc::clone(problem),
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
        span_m: math.span_m(),
    };
    for band in 0..bm / math.span_m() {
        let transposed = staged.transposed;
        staged.emit(cx, smem.into(), band, |cx, pitch| match &math {
            Math::Fma { layout, thread } => stage_patches(
                cx,
                &acc,
                *layout,
                smem.into(),
                band,
                pitch,
                transposed,
                *thread,
            ),
            Math::Mma { warps, lane } => mma::stage_band(
                cx,
                &acc,
                (warps, lane),
                smem.into(),
                band,
                pitch,
                transposed,
            ),
        })?;
    }
    if let Some(strides) = ops.lattice() {
        off_lattice(cx, anchor, aligned, strides, tiles)?;
    }
    Ok(Emitted {
        geometry: Geometry {
            blocks: tiles,
            threads: THREADS,
            shared_bytes: operand_bytes.max(staged.bytes()),
            max_registers: None,
        },
        split: None,
    })
}

/// How a block's threads multiply the tiles, and where their accumulators sit.
enum Math {
    /// Each thread a patch of FMA accumulators (`thread` = `[tx, ty]`).
    Fma {
        layout: Layout,
        thread: [Operand; 2],
    },
    /// Each warp fragments of `mma` accumulators.
    Mma { warps: Warps, lane: Lane },
}

impl Math {
    fn of(cx: &mut Emitter, schedule: &GemmSchedule, tid: Operand) -> Math {
        match Warps::of(schedule) {
            Some(warps) => {
                let lane = Lane::of(cx, &warps, tid);
                Math::Mma { warps, lane }
            }
            None => {
                let layout = Layout::of(schedule).expect("a checked schedule has a layout");
                let tx = cx.b.rem_u32(tid, layout.threads_n);
                let ty = cx.b.div_u32(tid, layout.threads_n);
                Math::Fma {
                    layout,
                    thread: [tx, ty],
                }
            }
        }
    }

    fn accumulators(&self) -> usize {
        match self {
            Math::Fma { layout, .. } => layout.tm * layout.tn,
            Math::Mma { warps, .. } => warps.accumulators(),
        }
    }

    fn warps(&self) -> Option<Warps> {
        match self {
            Math::Fma { .. } => None,
            Math::Mma { warps, .. } => Some(*warps),
        }
    }

    /// Rows of one epilogue band: each thread holds accumulators in every band.
    fn span_m(&self) -> usize {
        match self {
            Math::Fma { layout, .. } => layout.span_m(),
            Math::Mma { warps, .. } => warps.span_m(),
        }
    }

    /// Where a thread's fragment loads start within a stage of `tiles`, computed once
    /// before the `k` loop (tensor cores; the FMA products address from their thread).
    fn fragment_offsets(&self, cx: &mut Emitter, tiles: [Tile; 2]) -> [Operand; 2] {
        match self {
            Math::Fma { .. } => [Operand::Int(0); 2],
            Math::Mma { warps, lane } => mma::fragment_offsets(cx, warps, lane, tiles),
        }
    }

    /// One step's products from the stage whose tiles start at `bases`; `offsets` from
    /// [`Math::fragment_offsets`].
    fn products(
        &self,
        cx: &mut Emitter,
        acc: &[Reg],
        tiles: [Tile; 2],
        bases: [Operand; 2],
        offsets: [Operand; 2],
    ) -> Result<()> {
        match self {
            Math::Fma { layout, thread } => products(cx, acc, tiles, *layout, bases, *thread),
            Math::Mma { warps, .. } => mma::products(cx, acc, warps, offsets, tiles, bases),
        }
    }
}

fn describe(s: &GemmSchedule) -> String {
    calib_ir::Schedule::gemm(*s).to_string()
}

/// Tile row (or column) `r` of a thread's accumulators, relative to its first: `r / 4`
/// picks the patch, `span` apart.
fn offset_in_tile(r: usize, span: usize) -> usize {
    (r / PATCH) * span + r % PATCH
}

/// The shared address of f32 element `index` of the array at `base`.
fn shared_address(cx: &mut Emitter, base: Operand, index: Operand) -> Operand {
    let bytes = cx.b.mul_u32(index, Operand::Int(4));
    cx.b.add_u32(base, bytes)
}

/// Stores four f32 registers to consecutive addresses of `space` (`shared`, `global`)
/// at `addr`, with one 16-byte store.
fn store_v4(cx: &mut Emitter, space: &str, addr: impl std::fmt::Display, v: &[Reg]) {
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
    wavefronts_of(32, width, address)
}

/// [`wavefronts`] of an access by the first `lanes` lanes of a warp (`ldmatrix`: eight
/// per matrix), `width` bytes each; a 16-bit access shares its word's bank.
fn wavefronts_of(lanes: usize, width: usize, address: impl Fn(usize) -> usize) -> usize {
    let lanes_per_phase = (128 / width).clamp(1, lanes);
    (0..lanes)
        .step_by(lanes_per_phase)
        .map(|first| {
            let mut words: Vec<Vec<usize>> = vec![vec![]; 32];
            for lane in first..first + lanes_per_phase {
                let start = address(lane) / 4;
                for word in start..(address(lane) + width).div_ceil(4) {
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
        assert_eq!(calib_ir::GemmInstruction::Fma.tile_pad(), PAD);
        let tile = |pad: usize| {
            Tile {
                depth: 8,
                width: 128,
                offset: 0,
                along_width: false,
                bytes: 4,
                pad: PAD,
                copied: false,
                rounded_in_place: false,
                grain: 1,
                k_inner: false,
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
                bytes: 4,
                pad: PAD,
                copied: false,
                rounded_in_place: false,
                grain: 1,
                k_inner: false,
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
