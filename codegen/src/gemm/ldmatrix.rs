//! Tensor-core fragments by `ldmatrix.sync.aligned.m8n8.{x4,x2}[.trans].shared.b16`:
//! bf16 fragments for `mma.m16n8k16` from 16-bit shared tiles, and TF32 ones for
//! `m16n8k8` from tiles of words that keep their `k` adjacent.
//!
//! Both tiles are `[k][width]` (rows of k, the m or n elements of a row contiguous), and
//! both fragments want pairs along k in a register: A's register `r` holds row
//! `g + 8 (r % 2)`, k `2 t + 8 (r / 2)` and the next; B's register `r` holds k
//! `2 t + 8 r` and the next, column `g` (`g = lane / 4`, `t = lane % 4`, the lower k in
//! the low half). An 8x8 matrix of the tile, k rows by width columns, loaded with
//! `.trans` gives lane `l` elements `(2 t, g)` and `(2 t + 1, g)`: exactly that pair. So
//! A's fragment is four matrices (x4), matrix `j` at k `8 (j / 2)` and m `8 (j % 2)` of
//! the fragment; B's is two (x2), matrix `j` at k `8 j`. Lane `l` gives the address of
//! row `l % 8` of matrix `l / 8`, so each lane's address is its own fixed position plus
//! a constant per fragment and k slice (`[address+offset]`, no arithmetic per load).
//!
//! Each 8-lane phase of an `ldmatrix` reads eight 16-byte rows of a matrix, one per k
//! row. Rows padded by 8 elements (16 bytes) are `2 width + 16` bytes apart, an odd
//! number of 16-byte chunks for every tile width (a multiple of 32): eight consecutive
//! rows fall on eight different 16-byte bank groups, so every phase takes one wavefront.
//! Padding rather than an XOR swizzle keeps every fragment's rows at constant offsets
//! from one address per lane, and the loader's 16-bit stores at a fixed element each;
//! it costs 16 bytes per row.
//!
//! A tile copied in runs along `k` keeps each row's `k` adjacent instead (`width` rows of
//! `depth`, [`Tile::k_inner`]). There an 8x8 matrix is eight m (or n) rows of eight k,
//! and without `.trans` lane `l` receives row `g`, elements `2 t` and `2 t + 1`: the
//! same pair along k. Lane `l` then addresses row `l % 8` of matrix `l / 8` along the
//! width, at the matrix's k. Rows of `depth + 8` elements (`depth` a multiple of 16)
//! are an odd number of 16-byte chunks apart as well.
//!
//! TF32 tiles that keep their `k` adjacent (copied in runs along `k` and rounded in
//! place) are read the same way: a matrix row is four words of `k`, and lane `l`
//! receives row `g`, word `t` (the 16-bit pair `2 t`, `2 t + 1`), which is exactly an
//! `m16n8k8` fragment word. A's matrix `j` lies at k `4 (j / 2)`, B's at k `4 j` (16
//! bytes on, as for bf16); rows of `depth + 4` words are an odd number of 16-byte
//! chunks apart. `ldmatrix` cannot transpose 32-bit elements, so TF32 tiles laid out
//! `[k][width]` are read a word at a time (`super::mma`).

use super::mma::{Fragments, Lane, Warps};
use super::tiles::Tile;
use super::wavefronts_of;
use crate::eval::Emitter;
use crate::ptx::{ins, Operand, Reg, Ty};

/// Bytes of one row of an 8x8 matrix of 16-bit elements: what one lane's address covers.
const ROW: usize = 16;

/// The byte offset, within its stage, of the matrix row lane `lane` addresses for an A
/// fragment (`.x4`, relative to the warp's first row and k 0).
pub(super) fn a_row(lane: usize, pitch: usize) -> usize {
    2 * ((8 * (lane / 16) + lane % 8) * pitch + 8 * ((lane / 8) % 2))
}

/// The same for a B fragment (`.x2`: lanes 0-15 address, the others repeat them).
pub(super) fn b_row(lane: usize, pitch: usize) -> usize {
    2 * ((8 * ((lane / 8) % 2) + lane % 8) * pitch)
}

/// [`a_row`] for a tile that keeps its `k` adjacent (rows of m, `pitch` elements of
/// `bytes` each): matrix `j` is 16 bytes of `k` further for `j >= 2`.
pub(super) fn a_row_k_inner(lane: usize, pitch: usize, bytes: usize) -> usize {
    bytes * (8 * ((lane / 8) % 2) + lane % 8) * pitch + ROW * (lane / 16)
}

/// [`b_row`] for a tile that keeps its `k` adjacent (rows of n).
pub(super) fn b_row_k_inner(lane: usize, pitch: usize, bytes: usize) -> usize {
    bytes * (lane % 8) * pitch + ROW * ((lane / 8) % 2)
}

/// The byte offset of the matrix row lane `lane` addresses in operand `operand` (0 for
/// A) of `tile`.
fn row_of(tile: &Tile, operand: usize, lane: usize) -> usize {
    let pitch = tile.pitch();
    match (operand, tile.k_inner) {
        (0, false) => a_row(lane, pitch),
        (0, true) => a_row_k_inner(lane, pitch, tile.bytes),
        (_, false) => b_row(lane, pitch),
        (_, true) => b_row_k_inner(lane, pitch, tile.bytes),
    }
}

/// Shared-memory wavefronts of one warp's `ldmatrix` of `matrices` 8x8 matrices whose
/// rows lane `l` addresses at byte `address(l)`: a phase of eight 16-byte rows per
/// matrix.
pub(super) fn ways(matrices: usize, address: impl Fn(usize) -> usize) -> usize {
    wavefronts_of(8 * matrices, ROW, address)
}

/// Wavefronts of one warp's fragment load of operand `operand` from `tile`.
pub(super) fn fragment_ways(tile: &Tile, operand: usize) -> usize {
    let matrices = if operand == 0 { 4 } else { 2 };
    ways(matrices, |l| row_of(tile, operand, l))
}

/// A lane's `ldmatrix` addresses into a step's two tiles.
pub(super) struct Matrices {
    tiles: [Tile; 2],
    bases: [Reg; 2],
    warps: Warps,
}

/// The byte offset, within a stage of `tile` (operand `operand`, 0 for A), of the
/// matrix row lane `lane` addresses (`super::mma::fragment_offsets`).
pub(super) fn offset(cx: &mut Emitter, lane: &Lane, tile: Tile, operand: usize) -> Operand {
    let row = cx.b.rem_u32(lane.lane, 8);
    let matrix = cx.b.div_u32(lane.lane, 8);
    let odd = cx.b.rem_u32(matrix, 2);
    // Elements of `k` in a matrix row of a tile that keeps its `k` adjacent: 16 bytes.
    let k_run = Operand::Int((ROW / tile.bytes) as i64);
    let (k, col) = if operand == 0 {
        // A: matrix `j` at k `8 (j / 2)` (16 bytes), m `8 (j % 2)`, from the warp's
        // 16 rows; the lane's row of it runs along k (transposed) or along m.
        let half = cx.b.div_u32(matrix, 2);
        let first = cx.b.mul_u32(lane.warp_m, Operand::Int(16));
        match tile.k_inner {
            false => (
                cx.b.mad_u32(half, Operand::Int(8), row),
                cx.b.mad_u32(odd, Operand::Int(8), first),
            ),
            true => {
                let col = cx.b.mad_u32(odd, Operand::Int(8), row);
                (cx.b.mul_u32(half, k_run), cx.b.add_u32(first, col))
            }
        }
    } else {
        // B: matrix `j` (lanes 16-31 repeat 0-15) at k `8 j` (16 bytes), from the
        // warp's 8 columns.
        let first = cx.b.mul_u32(lane.warp_n, Operand::Int(8));
        match tile.k_inner {
            false => (cx.b.mad_u32(odd, Operand::Int(8), row), first),
            true => (cx.b.mul_u32(odd, k_run), cx.b.add_u32(first, row)),
        }
    };
    let element = tile.element_at(cx, k, col);
    let at = tile.address(cx, Operand::Int(0), element);
    cx.b.materialize(at, Ty::U32).into()
}

/// `N` registers of operand `operand`'s matrices from `tile`, whose lane's address in
/// this stage is `base`: `along` elements into the tile's width and `k0` rows down. A
/// tile that keeps its `k` adjacent holds each lane's word (a bf16 pair along `k`, or a
/// TF32 element) along a matrix row; one laid out `[k][width]` is read transposed.
pub(super) fn load<const N: usize>(
    cx: &mut Emitter,
    (tile, operand): (&Tile, usize),
    base: Reg,
    k0: usize,
    along: usize,
) -> [Reg; N] {
    let offset = tile.bytes * tile.element(k0, along);
    let trans = if tile.k_inner { "" } else { ".trans" };
    let r = [(); N].map(|_| cx.b.reg(Ty::U32));
    let list = r
        .iter()
        .map(|r| r.to_string())
        .collect::<Vec<_>>()
        .join(", ");
    cx.b.shared_ways(fragment_ways(tile, operand));
    ins!(
        cx.b,
        "ldmatrix.sync.aligned.m8n8.x{N}{trans}.shared.b16 {{{list}}}, [{base}+{offset}]"
    );
    r
}

impl Matrices {
    /// The fragments of the stage whose tiles start at `bases`, for a lane whose matrix
    /// rows lie `offsets` into them ([`offset`]).
    pub(super) fn new(
        cx: &mut Emitter,
        warps: &Warps,
        offsets: [Operand; 2],
        tiles: [Tile; 2],
        bases: [Operand; 2],
    ) -> Matrices {
        let bases = [0, 1].map(|i| {
            let at = cx.b.add_u32(bases[i], offsets[i]);
            cx.b.materialize(at, Ty::U32)
        });
        Matrices {
            tiles,
            bases,
            warps: *warps,
        }
    }
}

impl Fragments for Matrices {
    fn a(&self, cx: &mut Emitter, k0: usize, fm: usize) -> [Reg; 4] {
        let along = fm * self.warps.span_m();
        load(cx, (&self.tiles[0], 0), self.bases[0], k0, along)
    }

    fn b(&self, cx: &mut Emitter, k0: usize, fn_: usize) -> [Reg; 2] {
        let along = fn_ * self.warps.span_n();
        load(cx, (&self.tiles[1], 1), self.bases[1], k0, along)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use calib_ir::{GemmInstruction, GemmSchedule};

    /// Every tile width's padded rows: each phase of an ldmatrix is one wavefront.
    #[test]
    fn matrix_loads_are_free_of_bank_conflicts() {
        let pad = GemmInstruction::MmaBf16.tile_pad();
        for (bm, bn) in GemmSchedule::TILES {
            for width in [bm, bn] {
                let pitch = width + pad;
                assert_eq!(ways(4, |l| a_row(l, pitch)), 4, "A, width {width}");
                assert_eq!(ways(2, |l| b_row(l, pitch)), 2, "B, width {width}");
            }
        }
        // Unpadded rows 128 bytes apart (or 64 for width 32) collide in every phase.
        assert_eq!(ways(4, |l| a_row(l, 64)), 32);
        assert_eq!(ways(4, |l| a_row(l, 32)), 16);
    }

    /// Tiles that keep their `k` adjacent, bf16 and TF32: every depth's padded rows take
    /// one wavefront a phase, and lane `l` addresses row `l % 8` of matrix `l / 8` along
    /// the width, 16 bytes of `k` on for the second half of A's matrices (A's matrix `j`
    /// at m `8 (j % 2)`, k `8 (j / 2)` bf16 or `4 (j / 2)` words; B's at k `8 j` or
    /// `4 j`). A TF32 matrix row is four words of `k`, so lane `l` receives row `l / 4`,
    /// word `l % 4`: an `m16n8k8` fragment word.
    #[test]
    fn tiles_along_k_are_read_whole_and_free_of_bank_conflicts() {
        for (instruction, depths) in [
            (GemmInstruction::MmaBf16, &[16, 32][..]),
            (GemmInstruction::MmaTf32, &[8, 16, 32][..]),
        ] {
            let (bytes, pad) = (instruction.tile_bytes(), instruction.k_inner_pad());
            let run = ROW / bytes;
            for &depth in depths {
                let pitch = depth + pad;
                let label = format!("{instruction:?}, depth {depth}");
                assert_eq!(ways(4, |l| a_row_k_inner(l, pitch, bytes)), 4, "A, {label}");
                assert_eq!(ways(2, |l| b_row_k_inner(l, pitch, bytes)), 2, "B, {label}");
                let at = |offset: usize| (offset / bytes / pitch, offset / bytes % pitch);
                for l in 0..32 {
                    let (j, r) = (l / 8, l % 8);
                    let a = a_row_k_inner(l, pitch, bytes);
                    assert_eq!(at(a), (8 * (j % 2) + r, run * (j / 2)), "{label}");
                    let b = b_row_k_inner(l, pitch, bytes);
                    assert_eq!(at(b), (r, run * (j % 2)), "{label}");
                    assert_eq!(a % ROW, 0, "16-byte aligned rows");
                }
            }
        }
        // Unpadded bf16 rows of 32 k, 64 bytes apart: a phase's eight rows fall on two
        // 16-byte bank groups, four ways each.
        assert_eq!(ways(4, |l| a_row_k_inner(l, 32, 2)), 16);
    }

    /// The rows lanes address cover each fragment's 16x16 (A) or 16x8 (B) elements
    /// once, as the matrices the module's comment names: A's matrix `j` at k
    /// `8 (j / 2)`, column `8 (j % 2)`, B's at k `8 j`.
    #[test]
    fn lanes_address_every_row_of_the_fragments_matrices() {
        let pitch = 64 + 8;
        let row_of = |bytes: usize| (bytes / 2 / pitch, bytes / 2 % pitch);
        for l in 0..32 {
            let (j, r) = (l / 8, l % 8);
            assert_eq!(row_of(a_row(l, pitch)), (8 * (j / 2) + r, 8 * (j % 2)));
            assert_eq!(row_of(b_row(l, pitch)), (8 * (j % 2) + r, 0));
            assert_eq!(
                a_row(l, pitch) % ROW,
                0,
                "ldmatrix rows are 16-byte aligned"
            );
        }
    }
}
