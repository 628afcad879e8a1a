//! The tensor cores' input formats. TF32 is an f32 whose low 13 mantissa bits are
//! ignored: `cvt.rna.tf32.f32` rounds them away (to nearest, ties away from zero) and an
//! `mma` reading an f32 register as TF32 truncates them. bf16 and f16 values travel two to
//! a 32-bit register, the first element in the low half.

use half::{bf16, f16};

/// The mantissa bits TF32 drops.
const TF32_DROPPED: u32 = (1 << 13) - 1;

/// `cvt.rna.tf32.f32`: the f32 bits rounded to TF32, low 13 bits zero. Adding half of the
/// dropped range to the magnitude rounds ties away from zero; a carry into the exponent is
/// the correct next binade, and past the largest finite value it makes infinity.
pub(crate) fn tf32_rna(bits: u32) -> u32 {
    let x = f32::from_bits(bits);
    if x.is_nan() {
        // Keep a quiet NaN: the dropped bits may have been its only payload.
        return (bits | 0x0040_0000) & !TF32_DROPPED;
    }
    if x.is_infinite() {
        return bits;
    }
    (bits + (1 << 12)) & !TF32_DROPPED
}

/// The value an `mma` reads from a TF32 operand register.
pub(crate) fn tf32_value(bits: u32) -> f32 {
    f32::from_bits(bits & !TF32_DROPPED)
}

/// `cvt.rn.bf16x2.f32 d, a, b`: `a` goes to the high half.
pub(crate) fn bf16x2_rn(a: u32, b: u32) -> u32 {
    let round = |x: u32| u32::from(bf16::from_f32(f32::from_bits(x)).to_bits());
    round(a) << 16 | round(b)
}

/// The `j`-th (0 = low) 16-bit element of a packed register, widened exactly.
pub(crate) fn bf16_value(word: u32, j: usize) -> f32 {
    bf16::from_bits((word >> (16 * j)) as u16).to_f32()
}

pub(crate) fn f16_value(word: u32, j: usize) -> f32 {
    f16::from_bits((word >> (16 * j)) as u16).to_f32()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tf32_rounds_to_nearest_with_ties_away_from_zero() {
        // 1 + 2^-11 is exactly halfway between 1 and 1 + 2^-10: away from zero.
        let one = 1.0f32.to_bits();
        assert_eq!(tf32_rna(one + (1 << 12)), one + (1 << 13));
        assert_eq!(tf32_rna(one + (1 << 12) - 1), one);
        let neg = (-1.0f32).to_bits();
        assert_eq!(tf32_rna(neg + (1 << 12)), neg + (1 << 13));
        assert_eq!(tf32_rna(f32::MAX.to_bits()), f32::INFINITY.to_bits());
        assert_eq!(
            tf32_rna(f32::NEG_INFINITY.to_bits()),
            f32::NEG_INFINITY.to_bits()
        );
        // A NaN whose payload lies only in the dropped bits stays a NaN.
        assert!(f32::from_bits(tf32_rna(0x7f80_0001)).is_nan());
        assert_eq!(tf32_value(one | TF32_DROPPED), 1.0);
    }

    #[test]
    fn bf16x2_puts_the_first_source_high() {
        let packed = bf16x2_rn(1.0f32.to_bits(), (-2.0f32).to_bits());
        assert_eq!(packed, 0x3f80_c000);
        assert_eq!(bf16_value(packed, 1), 1.0);
        assert_eq!(bf16_value(packed, 0), -2.0);
        // Round to nearest even: 1 + 2^-8 is a tie between 1 and 1 + 2^-7, and 1 is even.
        assert_eq!(bf16x2_rn(0x3f80_8000, 0) >> 16, 0x3f80);
        assert_eq!(bf16x2_rn(0x3f81_8000, 0) >> 16, 0x3f82);
        assert_eq!(f16_value(0x3c00_0000, 1), 1.0);
    }
}
