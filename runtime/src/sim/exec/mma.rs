//! `mma.sync.aligned.m16n8k{8,16}.row.col.f32.{tf32,bf16,f16}`: one warp multiplies a
//! 16xK fragment of A by a Kx8 fragment of B and adds a 16x8 f32 accumulator C.
//!
//! # Fragments
//!
//! Each lane holds pieces of every operand in 32-bit registers. With `g = lane / 4` and
//! `t = lane % 4`, and K counted in 32-bit *words* (one TF32, or two bf16/f16 with the
//! lower k in the low half), both shapes share the PTX ISA's one layout:
//!
//! | operand | register `r` holds                          |
//! |---------|---------------------------------------------|
//! | A (4)   | row `g + 8 (r % 2)`, word `t + 4 (r / 2)`  |
//! | B (2)   | word `t + 4 r`, column `g`                 |
//! | C, D (4)| row `g + 8 (r / 2)`, column `2 t + r % 2`  |
//!
//! # Numerics
//!
//! The ISA leaves the order and rounding of the accumulation inside an `mma` open; the
//! simulator fixes one so that tests can compare bit for bit:
//! * inputs: a TF32 operand is the register's f32 bits with the low 13 mantissa bits
//!   ignored (truncated; kernels round beforehand with `cvt.rna.tf32.f32`); bf16 and
//!   f16 elements widen exactly to f32. Nothing is flushed to zero.
//! * `D[i][j] = C[i][j]`, then for `k = 0, 1, ..., K-1` in increasing order
//!   `D[i][j] = fma(A[i][k], B[k][j], D[i][j])`: each product exact, each addition
//!   rounded once to nearest even in f32 (IEEE fused multiply-add).
//!
//! A GPU may add in another order or with wider intermediates, so its results may differ
//! from the simulator's in the last bits; the simulator's are reproducible everywhere.

use super::block::{BlockEnv, LaneFault};
use super::collective::converged;
use super::warp::{Warp, WARP};
use crate::sim::alu::tensor_formats::{bf16_value, f16_value, tf32_value};
use crate::sim::ast::{Mma, MmaInput, Operand, Reg};

const M: usize = 16;
const N: usize = 8;
/// The largest K (m16n8k16).
const K_MAX: usize = 16;

/// `(row, word)` of A's register `r` in `lane`.
fn a_at(lane: usize, r: usize) -> (usize, usize) {
    (lane / 4 + 8 * (r % 2), lane % 4 + 4 * (r / 2))
}

/// `(word, column)` of B's register `r` in `lane`.
fn b_at(lane: usize, r: usize) -> (usize, usize) {
    (lane % 4 + 4 * r, lane / 4)
}

/// `(row, column)` of C's and D's register `r` in `lane`.
fn cd_at(lane: usize, r: usize) -> (usize, usize) {
    (lane / 4 + 8 * (r / 2), 2 * (lane % 4) + r % 2)
}

/// The `j`-th element of a 32-bit operand word.
fn element(input: MmaInput, word: u32, j: usize) -> f32 {
    match input {
        MmaInput::Tf32 => tf32_value(word),
        MmaInput::Bf16 => bf16_value(word, j),
        MmaInput::F16 => f16_value(word, j),
    }
}

fn per_word(input: MmaInput) -> usize {
    match input {
        MmaInput::Tf32 => 1,
        MmaInput::Bf16 | MmaInput::F16 => 2,
    }
}

pub(super) fn execute(
    warp: &mut Warp,
    env: &BlockEnv,
    mma: &Mma,
    active: u32,
) -> Result<(), LaneFault> {
    converged(warp, active, "mma.sync.aligned")?;
    let read = |regs: &[Reg]| -> Result<Vec<[u64; WARP]>, LaneFault> {
        regs.iter()
            .map(|r| warp.read(env, Operand::Reg(*r), active))
            .collect()
    };
    let (a, b, c) = (read(&mma.a)?, read(&mma.b)?, read(&mma.c)?);
    let e = per_word(mma.input);
    let mut am = [[0f32; K_MAX]; M];
    let mut bm = [[0f32; N]; K_MAX];
    let mut d = [[0f32; N]; M];
    for lane in 0..WARP {
        for (r, regs) in a.iter().enumerate() {
            let (row, w) = a_at(lane, r);
            for j in 0..e {
                am[row][w * e + j] = element(mma.input, regs[lane] as u32, j);
            }
        }
        for (r, regs) in b.iter().enumerate() {
            let (w, col) = b_at(lane, r);
            for j in 0..e {
                bm[w * e + j][col] = element(mma.input, regs[lane] as u32, j);
            }
        }
        for (r, regs) in c.iter().enumerate() {
            let (row, col) = cd_at(lane, r);
            d[row][col] = f32::from_bits(regs[lane] as u32);
        }
    }
    for (i, d_row) in d.iter_mut().enumerate() {
        for (j, acc) in d_row.iter_mut().enumerate() {
            for k in 0..mma.k {
                *acc = am[i][k].mul_add(bm[k][j], *acc);
            }
        }
    }
    for (r, reg) in mma.d.iter().enumerate() {
        let mut out = [0u64; WARP];
        for (lane, v) in out.iter_mut().enumerate() {
            let (row, col) = cd_at(lane, r);
            *v = u64::from(d[row][col].to_bits());
        }
        warp.write(*reg, active, &out);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_element_of_every_operand_has_exactly_one_owner() {
        let mut a = [[0; 8]; M];
        let mut b = [[0; N]; 8];
        let mut cd = [[0; N]; M];
        for lane in 0..WARP {
            for r in 0..4 {
                let (i, w) = a_at(lane, r);
                a[i][w] += 1;
                let (i, j) = cd_at(lane, r);
                cd[i][j] += 1;
            }
            for r in 0..2 {
                let (w, j) = b_at(lane, r);
                b[w][j] += 1;
            }
        }
        assert!(a.iter().flatten().all(|&n| n == 1));
        assert!(b.iter().flatten().all(|&n| n == 1));
        assert!(cd.iter().flatten().all(|&n| n == 1));
    }
}
