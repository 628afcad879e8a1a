//! Tensor-core products for the GEMM template: the block's eight warps each multiply
//! 16x8 fragments of the shared tiles with `mma.sync` (TF32 `m16n8k8` or bf16
//! `m16n8k16`, f32 accumulators), and where those accumulators sit for the epilogue.
//!
//! The operand side is the FMA template's, tiles `[k][width]`: the loader applies the
//! prologue and stores each element rounded to what the products multiply, once per
//! element rather than once per fragment ([`round_for_store`]): TF32 tiles hold f32
//! words (`cvt.rna`, ties away, as the IR's cast), bf16 tiles 16-bit elements
//! (`cvt.rn.bf16x2.f32`, to nearest even, as the IR's cast; exact for operands the
//! policy's casts already rounded). A TF32 tile that arrived by `cp.async` holds the
//! buffer's f32 bits instead (the mma would truncate them): copied in runs, each thread
//! rounds its own runs with `cvt.rna` where they lie once they land; copied a word at a
//! time, its words are rounded as each fragment word is read. A bf16 tile that arrived by `cp.async`
//! holds a bf16 buffer's elements as they are, copied in runs along its width, or
//! along `k` into a tile that keeps its `k` adjacent (`calib_ir::copy_source` says
//! where).
//!
//! Fragment layout (PTX ISA, `g = lane / 4`, `t = lane % 4`, k in 32-bit words: one
//! TF32, or two bf16 with the lower k in the low half): A's register `r` holds row
//! `g + 8 (r % 2)`, word `t + 4 (r / 2)`; B's holds word `t + 4 r`, column `g`; C's
//! holds row `g + 8 (r / 2)`, column `2 t + r % 2`. A warp's fragments are a warp-grid
//! apart (`16 warps_m` rows, `8 warps_n` columns), like the FMA layout's patches, so
//! the epilogue stages the tile one band of `16 warps_m` rows at a time with every warp
//! taking part.
//!
//! TF32 fragment words are scalar shared loads at constant offsets from one address per
//! lane ([`Tf32Fragments`]); rows padded by 8 words put the lanes of a load (`t` rows and
//! `g` words apart) on 32 different banks, as do rows of `k` padded by 4 words (a tile
//! that keeps its `k` adjacent: lanes `g` rows and `t` words apart, rows `4 (mod 8)`
//! words long). A TF32 tile that keeps its `k` adjacent and was rounded in place is
//! read by `ldmatrix` instead, a fragment at a time. bf16 fragments are one
//! `ldmatrix.trans` each:
//! a pair along k is two elements of a tile column, which is what the transposed 8x8
//! matrix load hands a lane ([`super::ldmatrix`], with its padding); from a tile that
//! keeps its `k` adjacent the pair is two elements of a row, and `ldmatrix` reads it
//! without transposing.

use super::ldmatrix::Matrices;
use super::tiles::Tile;
use super::{shared_address, wavefronts};
use crate::error::Result;
use crate::eval::Emitter;
use crate::ptx::{ins, Operand, Reg, Ty};
use calib_ir::{GemmInstruction, GemmSchedule};

/// How the eight warps cover a tile (`GemmSchedule::warps`) and with what.
#[derive(Clone, Copy, Debug)]
pub(super) struct Warps {
    pub(super) warps_m: usize,
    pub(super) warps_n: usize,
    /// Fragments per warp along `m` (16 rows each) and `n` (8 columns each).
    pub(super) frags_m: usize,
    pub(super) frags_n: usize,
    pub(super) instruction: GemmInstruction,
}

impl Warps {
    pub(super) fn of(s: &GemmSchedule) -> Option<Warps> {
        if s.instruction.is_fma() {
            return None;
        }
        let (warps_m, warps_n) = s.warps()?;
        Some(Warps {
            warps_m,
            warps_n,
            frags_m: s.block_m / (16 * warps_m),
            frags_n: s.block_n / (8 * warps_n),
            instruction: s.instruction,
        })
    }

    /// Rows between a warp's fragments, and the height of one epilogue band.
    pub(super) fn span_m(&self) -> usize {
        16 * self.warps_m
    }

    pub(super) fn span_n(&self) -> usize {
        8 * self.warps_n
    }

    pub(super) fn accumulators(&self) -> usize {
        4 * self.frags_m * self.frags_n
    }

    /// Accumulator `r` of fragment `(fm, fn)`.
    fn acc(&self, fm: usize, fn_: usize, r: usize) -> usize {
        (fm * self.frags_n + fn_) * 4 + r
    }

    /// The tile row and column of accumulator `r` of fragment `(fm, fn)`, relative to
    /// the lane's origin ([`Lane::row`], [`Lane::col`]).
    fn offset(&self, fm: usize, fn_: usize, r: usize) -> (usize, usize) {
        (
            fm * self.span_m() + 8 * (r / 2),
            fn_ * self.span_n() + r % 2,
        )
    }
}

/// A lane's place: its thread in group, and the origins of its fragments and accumulators.
#[derive(Clone, Copy, Debug)]
pub(super) struct Lane {
    /// The lane in its warp, and the warp's place in the warp grid.
    pub(super) lane: Operand,
    pub(super) warp_m: Operand,
    pub(super) warp_n: Operand,
    t: Operand,
    /// Tile row of its first accumulator: `16 warp_m + g`.
    row: Operand,
    /// Tile column of its first accumulator: `8 warp_n + 2 t`.
    col: Operand,
    /// Row and column of its first A and B fragment element: `16 warp_m + g`, `8 warp_n + g`.
    a_row: Operand,
    b_col: Operand,
}

impl Lane {
    pub(super) fn of(cx: &mut Emitter, warps: &Warps, tid: Operand) -> Lane {
        let warp = cx.b.div_u32(tid, 32);
        let lane = cx.b.rem_u32(tid, 32);
        let g = cx.b.div_u32(lane, 4);
        let t = cx.b.rem_u32(lane, 4);
        let warp_m = cx.b.rem_u32(warp, warps.warps_m);
        let warp_n = cx.b.div_u32(warp, warps.warps_m);
        let a_row = cx.b.mad_u32(warp_m, Operand::Int(16), g);
        let b_col = cx.b.mad_u32(warp_n, Operand::Int(8), g);
        let two_t = cx.b.mul_u32(t, Operand::Int(2));
        let col = cx.b.mad_u32(warp_n, Operand::Int(8), two_t);
        Lane {
            lane,
            warp_m,
            warp_n,
            t,
            row: a_row,
            col,
            a_row,
            b_col,
        }
    }

    /// The tile position `(row, column)` of accumulator `r` of fragment `(fm, fn)`.
    pub(super) fn position(
        &self,
        cx: &mut Emitter,
        warps: &Warps,
        fm: usize,
        fn_: usize,
        r: usize,
    ) -> (Operand, Operand) {
        let (dr, dc) = warps.offset(fm, fn_, r);
        let row = cx.b.add_u32(self.row, Operand::Int(dr as i64));
        let col = cx.b.add_u32(self.col, Operand::Int(dc as i64));
        (row, col)
    }
}

/// Rounds a tile element to what the products multiply before it is stored to shared
/// memory, with the type to store it as: TF32 with ties away from zero (as the IR's
/// `cast` to tf32), once per element rather than once per fragment word; bf16 to
/// nearest even (as the IR's `cast` to bf16; exact for the policy's already rounded
/// operands) into the low half of a word, whose 16 bits a `.u16` store keeps.
pub(super) fn round_for_store(
    cx: &mut Emitter,
    warps: Option<&Warps>,
    v: Operand,
) -> (Operand, &'static str) {
    match warps.map(|w| w.instruction) {
        Some(GemmInstruction::MmaTf32) => {
            let r = cx.b.reg(Ty::U32);
            let f = cx.b.materialize(v, Ty::F32);
            ins!(cx.b, "cvt.rna.tf32.f32 {r}, {f}");
            (r.into(), "b32")
        }
        Some(GemmInstruction::MmaBf16) => {
            let f = cx.b.materialize(v, Ty::F32);
            let zero = cx.b.materialize(Operand::f32(0.0), Ty::F32);
            let packed = cx.b.reg(Ty::U32);
            ins!(cx.b, "cvt.rn.bf16x2.f32 {packed}, {zero}, {f}");
            (packed.into(), "u16")
        }
        _ => (v, "f32"),
    }
}

/// Whether fragments of `tile` come by `ldmatrix`: every bf16 tile, and a TF32 tile
/// that keeps its `k` adjacent and was rounded in place (an 8x8 matrix of 16-bit
/// elements is then 8 rows of four words, each lane's word a fragment word).
fn by_matrices(instruction: GemmInstruction, tile: &Tile) -> bool {
    match instruction {
        GemmInstruction::MmaBf16 => true,
        _ => tile.k_inner && tile.rounded_in_place,
    }
}

/// The byte offsets, within a stage of the A and B tiles, where a lane's fragment loads
/// start: the same at every step, so computed once, before the `k` loop, and added to
/// each step's stage addresses ([`products`]).
pub(super) fn fragment_offsets(
    cx: &mut Emitter,
    warps: &Warps,
    lane: &Lane,
    tiles: [Tile; 2],
) -> [Operand; 2] {
    [0, 1].map(|i| {
        let tile = tiles[i];
        if by_matrices(warps.instruction, &tile) {
            return super::ldmatrix::offset(cx, lane, tile, i);
        }
        // A lane starts from k row `t`, at its fragment row (A) or column (B).
        let along = if i == 0 { lane.a_row } else { lane.b_col };
        let word = tile.element_at(cx, lane.t, along);
        let at = shared_address(cx, Operand::Int(0), word);
        cx.b.materialize(at, Ty::U32).into()
    })
}

/// Where a warp's fragment registers come from: the lane's words of A fragment `fm`
/// and B fragment `fn` for the instruction `k` slice starting at tile row `k0`.
pub(super) trait Fragments {
    fn a(&self, cx: &mut Emitter, k0: usize, fm: usize) -> [Reg; 4];
    fn b(&self, cx: &mut Emitter, k0: usize, fn_: usize) -> [Reg; 2];
}

/// TF32 fragments from f32 tiles: a scalar shared load per word at a constant offset
/// from one address per lane and tile, or one `ldmatrix` per fragment from a tile
/// [`by_matrices`] says.
struct Tf32Fragments {
    tiles: [Tile; 2],
    bases: [Reg; 2],
    ways: [usize; 2],
    matrices: [bool; 2],
    warps: Warps,
}

impl Tf32Fragments {
    /// The fragments of the stage whose tiles start at `bases`, for a lane whose loads
    /// start `offsets` into them ([`fragment_offsets`]).
    fn new(
        cx: &mut Emitter,
        warps: &Warps,
        offsets: [Operand; 2],
        tiles: [Tile; 2],
        bases: [Operand; 2],
    ) -> Tf32Fragments {
        let [a_base, b_base] = [0, 1].map(|i| {
            let at = cx.b.add_u32(bases[i], offsets[i]);
            cx.b.materialize(at, Ty::U32)
        });
        let ways = tiles.map(|tile| wavefronts(4, |l| 4 * tile.element(l % 4, l / 4)));
        Tf32Fragments {
            tiles,
            bases: [a_base, b_base],
            ways,
            matrices: tiles.map(|t| by_matrices(warps.instruction, &t)),
            warps: *warps,
        }
    }

    /// The fragment word at tile row `k` and column `along` of operand `i`.
    fn word(&self, cx: &mut Emitter, i: usize, k: usize, along: usize) -> Reg {
        let (tile, base) = (self.tiles[i], self.bases[i]);
        let offset = 4 * tile.element(k, along);
        cx.b.shared_ways(self.ways[i]);
        if tile.copied && !tile.rounded_in_place {
            // A tile copied by `cp.async` holds the buffer's f32 bits: the mma would
            // truncate them, the reference rounds to nearest with ties away.
            let raw = cx.b.reg(Ty::F32);
            ins!(cx.b, "ld.shared.f32 {raw}, [{base}+{offset}]");
            let rounded = cx.b.reg(Ty::U32);
            ins!(cx.b, "cvt.rna.tf32.f32 {rounded}, {raw}");
            rounded
        } else {
            // Rounded as stored: the words go to the mma as they are.
            let v = cx.b.reg(Ty::U32);
            ins!(cx.b, "ld.shared.b32 {v}, [{base}+{offset}]");
            v
        }
    }
}

impl Fragments for Tf32Fragments {
    fn a(&self, cx: &mut Emitter, k0: usize, fm: usize) -> [Reg; 4] {
        let m = fm * self.warps.span_m();
        if self.matrices[0] {
            return super::ldmatrix::load(cx, (&self.tiles[0], 0), self.bases[0], k0, m);
        }
        [
            self.word(cx, 0, k0, m),
            self.word(cx, 0, k0, m + 8),
            self.word(cx, 0, k0 + 4, m),
            self.word(cx, 0, k0 + 4, m + 8),
        ]
    }

    fn b(&self, cx: &mut Emitter, k0: usize, fn_: usize) -> [Reg; 2] {
        let n = fn_ * self.warps.span_n();
        if self.matrices[1] {
            return super::ldmatrix::load(cx, (&self.tiles[1], 1), self.bases[1], k0, n);
        }
        [self.word(cx, 1, k0, n), self.word(cx, 1, k0 + 4, n)]
    }
}

/// One step's products from the shared tiles at `bases`: for every `k` slice of one
/// instruction, each warp's A and B fragments, then an `mma` per pair.
pub(super) fn products(
    cx: &mut Emitter,
    acc: &[Reg],
    warps: &Warps,
    offsets: [Operand; 2],
    tiles: [Tile; 2],
    bases: [Operand; 2],
) -> Result<()> {
    let per = warps.instruction.k_per_instruction();
    let fragments: Box<dyn Fragments> = match warps.instruction {
        GemmInstruction::MmaBf16 => Box::new(Matrices::new(cx, warps, offsets, tiles, bases)),
        _ => Box::new(Tf32Fragments::new(cx, warps, offsets, tiles, bases)),
    };
    let shape = match warps.instruction {
        GemmInstruction::MmaBf16 => "m16n8k16.row.col.f32.bf16.bf16.f32",
        _ => "m16n8k8.row.col.f32.tf32.tf32.f32",
    };
    for step in 0..tiles[0].depth / per {
        let k0 = step * per;
        let af: Vec<[Reg; 4]> = (0..warps.frags_m)
            .map(|fm| fragments.a(cx, k0, fm))
            .collect();
        // One B fragment at a time, each used by every A fragment at once: the
        // fewest fragment registers live beside the accumulators.
        for fn_ in 0..warps.frags_n {
            let bw = fragments.b(cx, k0, fn_);
            cx.b.independent(true);
            for (fm, a) in af.iter().enumerate() {
                let c: Vec<Reg> = (0..4).map(|r| acc[warps.acc(fm, fn_, r)]).collect();
                ins!(
                    cx.b,
                    "mma.sync.aligned.{shape} {{{c0}, {c1}, {c2}, {c3}}}, {{{}, {}, {}, {}}}, {{{}, {}}}, {{{c0}, {c1}, {c2}, {c3}}}",
                    a[0],
                    a[1],
                    a[2],
                    a[3],
                    bw[0],
                    bw[1],
                    c0 = c[0],
                    c1 = c[1],
                    c2 = c[2],
                    c3 = c[3]
                );
            }
            cx.b.independent(false);
        }
    }
    Ok(())
}

/// Writes band `band` of the accumulators (fragment row `band` of every warp, tile rows
/// `16 warps_m band ..`) to the staging area at `smem`: `[row][column]` with `pitch`
/// words per row, or `[column][row]` when `transposed`.
pub(super) fn stage_band(
    cx: &mut Emitter,
    acc: &[Reg],
    (warps, lane): (&Warps, &Lane),
    smem: Operand,
    band: usize,
    pitch: usize,
    transposed: bool,
) {
    let span_m = warps.span_m();
    for fn_ in 0..warps.frags_n {
        for half in 0..2 {
            // Accumulators 2 half and 2 half + 1: one row, two adjacent columns.
            let (row, col) = lane.position(cx, warps, band, fn_, 2 * half);
            let row = cx.b.sub_u32(row, Operand::Int((band * span_m) as i64));
            let pair = [
                acc[warps.acc(band, fn_, 2 * half)],
                acc[warps.acc(band, fn_, 2 * half + 1)],
            ];
            if transposed {
                for (e, v) in pair.iter().enumerate() {
                    let c = cx.b.add_u32(col, Operand::Int(e as i64));
                    let at = cx.b.mad_u32(c, Operand::Int(pitch as i64), row);
                    let addr = shared_address(cx, smem, at);
                    cx.b.shared_ways(wavefronts(4, |l| 4 * ((2 * (l % 4) + e) * pitch + l / 4)));
                    ins!(cx.b, "st.shared.f32 [{addr}], {v}");
                }
            } else {
                let at = cx.b.mad_u32(row, Operand::Int(pitch as i64), col);
                let addr = shared_address(cx, smem, at);
                cx.b.shared_ways(wavefronts(8, |l| 4 * ((l / 4) * pitch + 2 * (l % 4))));
                ins!(
                    cx.b,
                    "st.shared.v2.f32 [{addr}], {{{}, {}}}",
                    pair[0],
                    pair[1]
                );
            }
        }
    }
}

/// Every accumulator with its tile position, for the split-K partial tiles.
pub(super) fn positions(
    cx: &mut Emitter,
    acc: &[Reg],
    warps: &Warps,
    lane: &Lane,
) -> Vec<(Reg, Operand, Operand)> {
    let mut out = vec![];
    for fm in 0..warps.frags_m {
        for fn_ in 0..warps.frags_n {
            for r in 0..4 {
                let (row, col) = lane.position(cx, warps, fm, fn_, r);
                out.push((acc[warps.acc(fm, fn_, r)], row, col));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn warps(bm: usize, bn: usize, instruction: GemmInstruction) -> Warps {
        let s = GemmSchedule {
            block_m: bm,
            block_n: bn,
            block_k: 16,
            split_k: 1,
            instruction,
            stages: 2,
        };
        Warps::of(&s).expect("warps")
    }

    #[test]
    fn every_tile_shape_has_a_warp_layout_covering_it_once() {
        for (bm, bn) in GemmSchedule::TILES {
            let w = warps(bm, bn, GemmInstruction::MmaTf32);
            assert_eq!(w.warps_m * w.warps_n, 8);
            let mut hit = vec![0u8; bm * bn];
            for warp_m in 0..w.warps_m {
                for warp_n in 0..w.warps_n {
                    for lane in 0..32 {
                        let (row, col) = (16 * warp_m + lane / 4, 8 * warp_n + 2 * (lane % 4));
                        for fm in 0..w.frags_m {
                            for fn_ in 0..w.frags_n {
                                for r in 0..4 {
                                    let (dr, dc) = w.offset(fm, fn_, r);
                                    hit[(row + dr) * bn + col + dc] += 1;
                                }
                            }
                        }
                    }
                }
            }
            assert!(hit.iter().all(|&h| h == 1), "{bm}x{bn}");
        }
    }

    /// TF32 fragment words, lanes `t` rows and `g` words apart, each hit a bank of
    /// their own in padded rows of every tile width (bf16 fragments: the `ldmatrix`
    /// module's test).
    #[test]
    fn fragment_loads_are_free_of_bank_conflicts() {
        let pad = GemmInstruction::MmaTf32.tile_pad();
        for (bm, bn) in GemmSchedule::TILES {
            for width in [bm, bn] {
                let pitch = width + pad;
                let ways = wavefronts(4, |l| 4 * ((l % 4) * pitch + l / 4));
                assert_eq!(ways, 1, "width {width}");
            }
        }
        assert_eq!(wavefronts(4, |l| 4 * ((l % 4) * 128 + l / 4)), 4);
    }
}
