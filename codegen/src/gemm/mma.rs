//! Tensor-core products for the GEMM template: the block's eight warps each multiply
//! 16x8 fragments of the shared tiles with `mma.sync` (TF32 `m16n8k8` or bf16
//! `m16n8k16`, f32 accumulators), and where those accumulators sit for the epilogue.
//!
//! The operand side is the FMA template's: the loader applies the prologue and stores
//! f32 tiles `[k][width]` to shared memory, TF32 operands already rounded there
//! (`cvt.rna`, once per element rather than once per fragment). A tile that arrived by
//! `cp.async` holds the buffer's f32 bits instead, and its TF32 words are rounded with
//! `cvt.rna` as each fragment word is read (the mma would truncate them; the IR's cast
//! rounds to nearest, ties away). Fragments are read with scalar shared loads at
//! constant offsets from one address per lane, bf16 pairs packed by `cvt.rn.bf16x2.f32`
//! (round to nearest even, as the IR's `cast`, whichever way the tile came).
//!
//! Fragment layout (PTX ISA, `g = lane / 4`, `t = lane % 4`, k in 32-bit words: one
//! TF32, or two bf16 with the lower k in the low half): A's register `r` holds row
//! `g + 8 (r % 2)`, word `t + 4 (r / 2)`; B's holds word `t + 4 r`, column `g`; C's
//! holds row `g + 8 (r / 2)`, column `2 t + r % 2`. A warp's fragments are a warp-grid
//! apart (`16 warps_m` rows, `8 warps_n` columns), like the FMA layout's patches, so
//! the epilogue stages the tile one band of `16 warps_m` rows at a time with every warp
//! taking part.
//!
//! Shared rows are padded so each fragment load hits 32 different banks: lanes differ
//! by `t` rows and `g` words, so a TF32 load (`t` rows apart) wants a pitch of 8 modulo
//! 32 words, a bf16 pair (`2 t` rows apart) a pitch of 4.

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

    /// Words of padding per shared row (see the module's comment).
    pub(super) fn pad(&self) -> usize {
        match self.instruction {
            GemmInstruction::MmaTf32 => 8,
            _ => 4,
        }
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

/// Rounds a tile element to TF32 before it is stored to shared memory, when the
/// products are TF32 (ties away from zero, as the IR's `cast` to tf32); with the type
/// to store it as.
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
        _ => (v, "f32"),
    }
}

/// One step's products from the shared tiles at `bases`: for every `k` slice of one
/// instruction, each warp's A and B fragments, then an `mma` per pair.
pub(super) fn products(
    cx: &mut Emitter,
    acc: &[Reg],
    warps: &Warps,
    lane: &Lane,
    [a, b]: [Tile; 2],
    bases: [Operand; 2],
) -> Result<()> {
    let per = warps.instruction.k_per_instruction();
    let bf16 = warps.instruction == GemmInstruction::MmaBf16;
    // k rows a lane starts from: `t` words, one TF32 or two bf16 each.
    let k_row = if bf16 {
        cx.b.mul_u32(lane.t, Operand::Int(2))
    } else {
        lane.t
    };
    let base = |cx: &mut Emitter, tile: Tile, base: Operand, along: Operand| {
        let word =
            cx.b.mad_u32(k_row, Operand::Int(tile.pitch() as i64), along);
        let at = shared_address(cx, base, word);
        cx.b.materialize(at, Ty::U32)
    };
    let a_base = base(cx, a, bases[0], lane.a_row);
    let b_base = base(cx, b, bases[1], lane.b_col);
    let rows_per_word = if bf16 { 2 } else { 1 };
    let ways = |tile: Tile| {
        wavefronts(4, |l| {
            4 * ((rows_per_word * (l % 4)) * tile.pitch() + l / 4)
        })
    };
    let (a_ways, b_ways) = (ways(a), ways(b));
    // The f32 words of one 32-bit fragment register: k rows `k` (and `k + 1`), packed
    // to a bf16 pair when the products are bf16.
    let word = |cx: &mut Emitter, tile: Tile, base: Reg, k: usize, along: usize, ways| {
        // TF32 words go to the mma as they are (`.b32`), bf16 ones through `cvt` (`.f32`).
        let load = |cx: &mut Emitter, k: usize| {
            let (ty, suffix) = if bf16 || tile.copied {
                (Ty::F32, "f32")
            } else {
                (Ty::U32, "b32")
            };
            let v = cx.b.reg(ty);
            let offset = 4 * (k * tile.pitch() + along);
            cx.b.shared_ways(ways);
            ins!(cx.b, "ld.shared.{suffix} {v}, [{base}+{offset}]");
            v
        };
        if bf16 {
            let (lo, hi) = (load(cx, k), load(cx, k + 1));
            let packed = cx.b.reg(Ty::U32);
            ins!(cx.b, "cvt.rn.bf16x2.f32 {packed}, {hi}, {lo}");
            packed
        } else if tile.copied {
            // A tile copied by `cp.async` holds the buffer's f32 bits: the mma would
            // truncate them, the reference rounds to nearest with ties away.
            let raw = load(cx, k);
            let rounded = cx.b.reg(Ty::U32);
            ins!(cx.b, "cvt.rna.tf32.f32 {rounded}, {raw}");
            rounded
        } else {
            load(cx, k)
        }
    };
    for step in 0..a.depth / per {
        let k0 = step * per;
        // k rows between a fragment's first and second half of words.
        let half = 4 * rows_per_word;
        let mut af = vec![];
        for fm in 0..warps.frags_m {
            let m = fm * warps.span_m();
            af.push([
                word(cx, a, a_base, k0, m, a_ways),
                word(cx, a, a_base, k0, m + 8, a_ways),
                word(cx, a, a_base, k0 + half, m, a_ways),
                word(cx, a, a_base, k0 + half, m + 8, a_ways),
            ]);
        }
        let shape = match warps.instruction {
            GemmInstruction::MmaBf16 => "m16n8k16.row.col.f32.bf16.bf16.f32",
            _ => "m16n8k8.row.col.f32.tf32.tf32.f32",
        };
        // One B fragment at a time, each used by every A fragment at once: the
        // fewest fragment registers live beside the accumulators.
        for fn_ in 0..warps.frags_n {
            let n = fn_ * warps.span_n();
            let bw = [
                word(cx, b, b_base, k0, n, b_ways),
                word(cx, b, b_base, k0 + half, n, b_ways),
            ];
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

    #[test]
    fn fragment_loads_are_free_of_bank_conflicts() {
        for instruction in [GemmInstruction::MmaTf32, GemmInstruction::MmaBf16] {
            let w = warps(128, 128, instruction);
            let pitch = 128 + w.pad();
            let rows = if instruction == GemmInstruction::MmaBf16 {
                2
            } else {
                1
            };
            let ways = wavefronts(4, |l| 4 * ((rows * (l % 4)) * pitch + l / 4));
            assert_eq!(ways, 1, "{instruction:?}");
        }
    }
}
