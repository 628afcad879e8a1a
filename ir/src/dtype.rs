//! Element types of IR values.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// The element type of a tensor. Floating types are computed in f32 by the reference
/// interpreter; `I64` carries labels and BatchNorm's `num_batches_tracked` counters.
///
/// `TF32` is NVIDIA's tensor-float: f32 storage (4 bytes) holding an f32 whose mantissa
/// is rounded to 10 bits, to nearest with ties away from zero, exactly as PTX
/// `cvt.rna.tf32.f32` does ([`round_tf32`]). It exists so that the precision policy
/// (`calib_ir::Precision`) can say in the IR where GEMM operands are rounded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DType {
    F32,
    F16,
    BF16,
    TF32,
    I64,
}

impl DType {
    pub const ALL: [DType; 5] = [DType::F32, DType::F16, DType::BF16, DType::TF32, DType::I64];

    /// Bytes per element in memory and in safetensors files.
    pub fn size_bytes(self) -> usize {
        match self {
            DType::F32 | DType::TF32 => 4,
            DType::F16 | DType::BF16 => 2,
            DType::I64 => 8,
        }
    }

    pub fn is_float(self) -> bool {
        !matches!(self, DType::I64)
    }

    pub fn name(self) -> &'static str {
        match self {
            DType::F32 => "f32",
            DType::F16 => "f16",
            DType::BF16 => "bf16",
            DType::TF32 => "tf32",
            DType::I64 => "i64",
        }
    }
}

/// The f32 bits that drop out of a TF32 value: the low 13 of the 23 mantissa bits.
pub const TF32_DROPPED_BITS: u32 = (1 << 13) - 1;

/// `x` rounded to TF32 as PTX `cvt.rna.tf32.f32` rounds it: to a 10-bit mantissa, to
/// nearest with ties away from zero, the dropped bits cleared. Adding half of the dropped
/// range to the bits rounds the magnitude (the sign bit is untouched); a carry into the
/// exponent is the next binade, and past the largest finite value it makes infinity.
/// Subnormals round the same way (a carry makes the smallest normal). Infinities are
/// kept; a NaN stays a quiet NaN with its payload's high bits (the dropped bits may have
/// been its only payload, so the quiet bit is set).
pub fn round_tf32(x: f32) -> f32 {
    let bits = x.to_bits();
    if x.is_nan() {
        return f32::from_bits((bits | 0x0040_0000) & !TF32_DROPPED_BITS);
    }
    if x.is_infinite() {
        return x;
    }
    f32::from_bits((bits + (1 << 12)) & !TF32_DROPPED_BITS)
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for DType {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        DType::ALL
            .into_iter()
            .find(|d| d.name() == s)
            .ok_or_else(|| format!("unknown dtype `{s}` (expected f32, f16, bf16, tf32 or i64)"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tf32_rounds_ties_away_from_zero_and_keeps_specials() {
        let b = f32::from_bits;
        assert_eq!(round_tf32(b(0x3f80_1000)).to_bits(), 0x3f80_2000);
        assert_eq!(
            round_tf32(b(0x3f80_3000)).to_bits(),
            0x3f80_4000,
            "away, not even"
        );
        assert_eq!(round_tf32(b(0xbf80_1000)).to_bits(), 0xbf80_2000);
        assert_eq!(round_tf32(b(0x3f80_0fff)).to_bits(), 0x3f80_0000);
        assert_eq!(
            round_tf32(f32::MAX),
            f32::INFINITY,
            "overflow rounds to infinity"
        );
        assert_eq!(round_tf32(f32::NEG_INFINITY), f32::NEG_INFINITY);
        assert!(
            round_tf32(b(0x7f80_0001)).is_nan(),
            "a NaN whose payload drops stays NaN"
        );
        assert_eq!(
            round_tf32(b(0x007f_ffff)),
            f32::MIN_POSITIVE,
            "subnormal carries"
        );
        assert_eq!(round_tf32(-0.0).to_bits(), 0x8000_0000);
        assert_eq!(DType::TF32.size_bytes(), 4);
        assert_eq!("tf32".parse::<DType>(), Ok(DType::TF32));
    }
}
