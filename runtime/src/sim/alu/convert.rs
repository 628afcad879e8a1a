//! `cvt`: conversions between integer and floating-point types with PTX's rounding,
//! saturation and sub-word extension rules.

use super::float::{saturate, Float};
use super::int::{ext, sign_extend};
use crate::sim::ast::{Cvt, Rounding};
use crate::sim::types::Ty;
use half::{bf16, f16};
use std::cmp::Ordering;

/// A source value held exactly.
#[derive(Clone, Copy)]
enum Exact {
    Int(i128),
    Real(f64),
}

/// The float of type `F` nearest `x` in the direction `mode` asks for. Round to nearest
/// is exact in Rust's casts; the directed modes step one ulp from it when it landed on the
/// wrong side.
fn round_to<F: Float>(x: Exact, mode: Rounding) -> F {
    let (candidate, ord) = match x {
        Exact::Real(v) => {
            let c = F::from_f64_rn(v);
            (c, c.to_f64().partial_cmp(&v))
        }
        Exact::Int(v) => {
            // Integers round to integral floats (or infinity), so compare as integers;
            // `as i128` saturates infinities past every 64-bit value.
            let c = F::from_i128_rn(v);
            (c, Some((c.to_f64() as i128).cmp(&v)))
        }
    };
    let negative = match x {
        Exact::Real(v) => v < 0.0,
        Exact::Int(v) => v < 0,
    };
    match (mode, ord) {
        (Rounding::Rm, Some(Ordering::Greater)) => candidate.step(false),
        (Rounding::Rp, Some(Ordering::Less)) => candidate.step(true),
        (Rounding::Rz, Some(Ordering::Greater)) if !negative => candidate.step(false),
        (Rounding::Rz, Some(Ordering::Less)) if negative => candidate.step(true),
        _ => candidate,
    }
}

fn round_integral(x: f64, mode: Rounding) -> f64 {
    match mode {
        Rounding::Rzi => x.trunc(),
        Rounding::Rmi => x.floor(),
        Rounding::Rpi => x.ceil(),
        _ => x.round_ties_even(),
    }
}

/// The exact value of a float register of type `ty`.
fn read_float(ty: Ty, bits: u64, ftz: bool) -> f64 {
    match ty {
        Ty::F16 => f16::from_bits(bits as u16).to_f64(),
        Ty::Bf16 => bf16::from_bits(bits as u16).to_f64(),
        Ty::F32 => {
            let f = f32::from_u64(bits);
            f64::from(if ftz { f.flush() } else { f })
        }
        _ => f64::from_bits(bits),
    }
}

/// Integer bits of `dst`'s width, extended to 64 bits by `dst`'s signedness.
fn int_bits(dst: Ty, v: i128) -> u64 {
    let bits = v as u64 & dst.mask();
    if dst.is_signed() {
        sign_extend(bits, dst.bits())
    } else {
        bits
    }
}

fn int_range(ty: Ty) -> (i128, i128) {
    let bits = ty.bits();
    if ty.is_signed() {
        (-(1i128 << (bits - 1)), (1i128 << (bits - 1)) - 1)
    } else {
        (0, (1i128 << bits) - 1)
    }
}

pub(super) fn convert(c: &Cvt, x: u64) -> u64 {
    let mode = c.rounding.unwrap_or(Rounding::Rn);
    if !c.dst.is_float() {
        let v = if c.src.is_float() {
            // Float to integer saturates, and NaN becomes 0.
            let f = round_integral(read_float(c.src, x, c.ftz), mode);
            let (lo, hi) = int_range(c.dst);
            if f.is_nan() {
                0
            } else {
                (f as i128).clamp(lo, hi)
            }
        } else {
            let v = ext(c.src, x);
            let (lo, hi) = int_range(c.dst);
            if c.sat {
                v.clamp(lo, hi)
            } else {
                v
            }
        };
        return int_bits(c.dst, v);
    }
    let exact = if c.src.is_float() {
        let f = read_float(c.src, x, c.ftz);
        Exact::Real(if mode.is_integral() {
            round_integral(f, mode)
        } else {
            f
        })
    } else {
        Exact::Int(ext(c.src, x))
    };
    let float_mode = if mode.is_integral() {
        Rounding::Rn
    } else {
        mode
    };
    // Half-precision targets round from f64, which holds every source but 64-bit
    // integers beyond 2^53 exactly.
    let as_f64 = |e: Exact| match e {
        Exact::Real(v) => v,
        Exact::Int(v) => v as f64,
    };
    match c.dst {
        Ty::F16 => f16::from_f64(as_f64(exact)).to_bits() as u64,
        Ty::Bf16 => bf16::from_f64(as_f64(exact)).to_bits() as u64,
        Ty::F32 => {
            let r = round_to::<f32>(exact, float_mode);
            let r = if c.ftz { r.flush() } else { r };
            if c.sat { saturate(r) } else { r }.to_u64()
        }
        _ => {
            let r = round_to::<f64>(exact, float_mode);
            if c.sat { saturate(r) } else { r }.to_u64()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cvt(dst: Ty, src: Ty, rounding: Option<Rounding>, x: u64) -> u64 {
        convert(
            &Cvt {
                dst,
                src,
                rounding,
                ftz: false,
                sat: false,
            },
            x,
        )
    }

    fn f32b(x: f32) -> u64 {
        x.to_bits() as u64
    }

    #[test]
    fn float_to_int_rounds_then_saturates() {
        use Rounding::*;
        assert_eq!(
            cvt(Ty::S32, Ty::F32, Some(Rzi), f32b(-2.7)),
            (-2i32) as u32 as u64 | 0xffff_ffff_0000_0000
        );
        assert_eq!(
            cvt(Ty::S32, Ty::F32, Some(Rmi), f32b(-2.2)) as u32,
            (-3i32) as u32
        );
        assert_eq!(cvt(Ty::S32, Ty::F32, Some(Rpi), f32b(2.2)), 3);
        assert_eq!(cvt(Ty::S32, Ty::F32, Some(Rni), f32b(2.5)), 2);
        assert_eq!(cvt(Ty::U8, Ty::F32, Some(Rni), f32b(300.0)), 255);
        assert_eq!(cvt(Ty::U32, Ty::F32, Some(Rni), f32b(-5.0)), 0);
        assert_eq!(cvt(Ty::S32, Ty::F32, Some(Rni), f32b(f32::NAN)), 0);
    }

    #[test]
    fn int_to_float_honours_directed_rounding() {
        use Rounding::*;
        // 2^24 + 1 is not an f32: it lies between 2^24 and 2^24 + 2.
        let v = (1u64 << 24) + 1;
        let at = |r| f32::from_bits(cvt(Ty::F32, Ty::U32, Some(r), v) as u32);
        assert_eq!(at(Rn), 16777216.0);
        assert_eq!(at(Rz), 16777216.0);
        assert_eq!(at(Rm), 16777216.0);
        assert_eq!(at(Rp), 16777218.0);
        let neg = (-(1i64 << 24) - 1) as u64;
        let at_neg = |r| f32::from_bits(cvt(Ty::F32, Ty::S32, Some(r), neg) as u32);
        assert_eq!(at_neg(Rz), -16777216.0);
        assert_eq!(at_neg(Rm), -16777218.0);
        assert_eq!(
            f64::from_bits(cvt(Ty::F64, Ty::U64, Some(Rz), u64::MAX)),
            18446744073709549568.0
        );
    }

    #[test]
    fn float_narrowing_and_half_precision() {
        use Rounding::*;
        let third = (1.0f64 / 3.0).to_bits();
        let down = f32::from_bits(cvt(Ty::F32, Ty::F64, Some(Rm), third) as u32);
        let up = f32::from_bits(cvt(Ty::F32, Ty::F64, Some(Rp), third) as u32);
        assert!((down as f64) < 1.0 / 3.0 && (up as f64) > 1.0 / 3.0);
        assert_eq!(up.to_bits() - down.to_bits(), 1);
        assert_eq!(
            f32::from_bits(cvt(Ty::F32, Ty::F64, Some(Rz), 1e300f64.to_bits()) as u32),
            f32::MAX
        );
        let h = cvt(Ty::F16, Ty::F32, Some(Rn), f32b(1.0 + 1.0 / 4096.0));
        assert_eq!(f16::from_bits(h as u16).to_f32(), 1.0);
        let b = cvt(Ty::Bf16, Ty::F32, Some(Rn), f32b(3.0));
        assert_eq!(cvt(Ty::F32, Ty::Bf16, None, b), f32b(3.0));
        assert_eq!(
            f32::from_bits(cvt(Ty::F32, Ty::F32, Some(Rmi), f32b(-1.5)) as u32),
            -2.0
        );
    }

    #[test]
    fn integer_widening_extends_by_the_source_and_narrowing_chops() {
        assert_eq!(cvt(Ty::S64, Ty::S32, None, 0xffff_fffe), (-2i64) as u64);
        assert_eq!(cvt(Ty::U64, Ty::U32, None, 0xffff_fffe), 0xffff_fffe);
        assert_eq!(cvt(Ty::U16, Ty::U32, None, 0x1_2345), 0x2345);
        assert_eq!(cvt(Ty::S8, Ty::S32, None, 0x80) as i64, -128);
        let sat = Cvt {
            dst: Ty::S8,
            src: Ty::S32,
            rounding: None,
            ftz: false,
            sat: true,
        };
        assert_eq!(convert(&sat, 1000) as i64, 127);
    }
}
