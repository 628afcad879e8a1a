//! Floating-point semantics for `.f32` and `.f64`, written once over [`Float`].
//!
//! Arithmetic rounds to nearest even, as `.rn` and PTX's defaults do. The `.approx` and
//! `.full` forms are computed to the nearest representable result as well: that lies
//! within every error bound PTX documents for them, so simulated results are a valid
//! execution, though not always the bits a GPU would produce.

use crate::sim::ast::FloatOp;
use std::cmp::Ordering;
use std::ops::{Add, Div, Mul, Sub};

/// The IEEE binary formats the ALU computes in.
pub(crate) trait Float:
    Copy
    + PartialOrd
    + Add<Output = Self>
    + Sub<Output = Self>
    + Mul<Output = Self>
    + Div<Output = Self>
{
    const SIGN: u64;
    const ONE: Self;
    fn from_u64(bits: u64) -> Self;
    fn to_u64(self) -> u64;
    fn from_f64_rn(x: f64) -> Self;
    fn from_i128_rn(v: i128) -> Self;
    fn to_f64(self) -> f64;
    fn is_nan(self) -> bool;
    fn is_subnormal(self) -> bool;
    fn mul_add(self, b: Self, c: Self) -> Self;
    fn sqrt(self) -> Self;
    fn exp2(self) -> Self;
    fn log2(self) -> Self;
    fn sin(self) -> Self;
    fn cos(self) -> Self;
    fn tanh(self) -> Self;
    /// The quiet NaN NVIDIA GPUs return for invalid operations.
    fn canonical_nan() -> Self;

    /// Subnormals flushed to zero of the same sign (`.ftz`).
    fn flush(self) -> Self {
        if self.is_subnormal() {
            Self::from_u64(self.to_u64() & Self::SIGN)
        } else {
            self
        }
    }

    /// The next representable value toward +inf (`up`) or -inf.
    fn step(self, up: bool) -> Self {
        let bits = self.to_u64();
        let magnitude = bits & !Self::SIGN;
        let positive = bits & Self::SIGN == 0;
        if self.is_nan() || (self == Self::from_f64_rn(f64::INFINITY) && up) {
            return self;
        }
        if self == Self::from_f64_rn(f64::NEG_INFINITY) && !up {
            return self;
        }
        if magnitude == 0 {
            let tiny = Self::from_u64(1);
            return if up {
                tiny
            } else {
                Self::from_u64(1 | Self::SIGN)
            };
        }
        Self::from_u64(if positive == up { bits + 1 } else { bits - 1 })
    }
}

macro_rules! impl_float {
    ($t:ty, $bits:ty, $sign:expr, $nan:expr) => {
        impl Float for $t {
            const SIGN: u64 = $sign;
            const ONE: Self = 1.0;
            fn from_u64(bits: u64) -> Self {
                <$t>::from_bits(bits as $bits)
            }
            fn to_u64(self) -> u64 {
                self.to_bits() as u64
            }
            fn from_f64_rn(x: f64) -> Self {
                x as $t
            }
            fn from_i128_rn(v: i128) -> Self {
                v as $t
            }
            fn to_f64(self) -> f64 {
                self as f64
            }
            fn is_nan(self) -> bool {
                <$t>::is_nan(self)
            }
            fn is_subnormal(self) -> bool {
                <$t>::is_subnormal(self)
            }
            fn mul_add(self, b: Self, c: Self) -> Self {
                <$t>::mul_add(self, b, c)
            }
            fn sqrt(self) -> Self {
                <$t>::sqrt(self)
            }
            fn exp2(self) -> Self {
                <$t>::exp2(self)
            }
            fn log2(self) -> Self {
                <$t>::log2(self)
            }
            fn sin(self) -> Self {
                <$t>::sin(self)
            }
            fn cos(self) -> Self {
                <$t>::cos(self)
            }
            fn tanh(self) -> Self {
                <$t>::tanh(self)
            }
            fn canonical_nan() -> Self {
                <$t>::from_bits($nan)
            }
        }
    };
}

impl_float!(f32, u32, 1 << 31, 0x7fff_ffff);
impl_float!(f64, u64, 1 << 63, 0x7fff_ffff_ffff_ffff);

/// PTX `min`: a NaN operand yields the other operand, and -0 orders below +0.
fn min_max<F: Float>(a: F, b: F, want_min: bool) -> F {
    match (a.is_nan(), b.is_nan()) {
        (true, true) => return F::canonical_nan(),
        (true, false) => return b,
        (false, true) => return a,
        _ => {}
    }
    let ord = match a.partial_cmp(&b) {
        Some(Ordering::Equal) => {
            // Equal values differ at most in the sign of zero: the negative one is smaller.
            let a_negative = a.to_u64() & F::SIGN != 0;
            if a_negative {
                Ordering::Less
            } else {
                Ordering::Greater
            }
        }
        Some(o) => o,
        None => unreachable!("NaNs handled above"),
    };
    if (ord == Ordering::Less) == want_min {
        a
    } else {
        b
    }
}

pub(super) fn apply<F: Float>(op: FloatOp, ftz: bool, sat: bool, a: u64, b: u64, c: u64) -> u64 {
    use FloatOp::*;
    let read = |x: u64| {
        let f = F::from_u64(x);
        if ftz {
            f.flush()
        } else {
            f
        }
    };
    let (x, y, z) = (read(a), read(b), read(c));
    let r = match op {
        Add => x + y,
        Sub => x - y,
        Mul => x * y,
        Fma => x.mul_add(y, z),
        Div => x / y,
        Min => min_max(x, y, true),
        Max => min_max(x, y, false),
        MinNan | MaxNan if x.is_nan() || y.is_nan() => F::canonical_nan(),
        MinNan => min_max(x, y, true),
        MaxNan => min_max(x, y, false),
        // Sign manipulations are bit operations: they keep NaN payloads.
        Neg => return x.to_u64() ^ F::SIGN,
        Abs => return x.to_u64() & !F::SIGN,
        Rcp => F::ONE / x,
        Sqrt => x.sqrt(),
        Rsqrt => F::ONE / x.sqrt(),
        Ex2 => x.exp2(),
        Lg2 => x.log2(),
        Sin => x.sin(),
        Cos => x.cos(),
        Tanh => x.tanh(),
    };
    let r = if ftz { r.flush() } else { r };
    let r = if sat { saturate(r) } else { r };
    r.to_u64()
}

/// `.sat`: clamp to [0, 1], NaN to +0.
pub(super) fn saturate<F: Float>(r: F) -> F {
    let zero = F::from_u64(0);
    if r.is_nan() || r < zero {
        zero
    } else if r > F::ONE {
        F::ONE
    } else {
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use FloatOp::*;

    fn f32op(op: FloatOp, ftz: bool, sat: bool, a: f32, b: f32, c: f32) -> f32 {
        let bits = |x: f32| x.to_bits() as u64;
        f32::from_bits(apply::<f32>(op, ftz, sat, bits(a), bits(b), bits(c)) as u32)
    }

    #[test]
    fn fma_rounds_once() {
        // a*b = 1 - 2^-46 exactly; rounding the product first loses it.
        let a = 1.0 + f32::EPSILON;
        let b = 1.0 - f32::EPSILON;
        assert_eq!(
            f32op(Fma, false, false, a, b, -1.0),
            -(f32::EPSILON * f32::EPSILON)
        );
        assert_eq!(a * b - 1.0, 0.0);
    }

    #[test]
    fn min_max_prefer_numbers_and_order_signed_zeros() {
        assert_eq!(f32op(Min, false, false, f32::NAN, 3.0, 0.0), 3.0);
        assert_eq!(f32op(Max, false, false, 2.0, f32::NAN, 0.0), 2.0);
        assert!(f32op(Min, false, false, f32::NAN, f32::NAN, 0.0).is_nan());
        assert!(f32op(Min, false, false, 0.0, -0.0, 0.0).is_sign_negative());
        assert!(f32op(Max, false, false, -0.0, 0.0, 0.0).is_sign_positive());
        assert!(f32op(MaxNan, false, false, 2.0, f32::NAN, 0.0).is_nan());
        assert!(f32op(MinNan, false, false, f32::NAN, 3.0, 0.0).is_nan());
        assert_eq!(f32op(MaxNan, false, false, -0.0, 0.0, 0.0).to_bits(), 0);
    }

    #[test]
    fn ftz_and_sat() {
        let tiny = f32::from_bits(5);
        assert_eq!(f32op(Add, false, false, tiny, 0.0, 0.0), tiny);
        assert_eq!(f32op(Add, true, false, tiny, 0.0, 0.0), 0.0);
        assert!(f32op(Mul, true, false, -tiny, 1.0, 0.0).is_sign_negative());
        assert_eq!(f32op(Add, false, true, 0.75, 0.5, 0.0), 1.0);
        assert_eq!(f32op(Mul, false, true, f32::NAN, 1.0, 0.0), 0.0);
        assert_eq!(f32op(Neg, false, false, 2.0, 0.0, 0.0), -2.0);
    }

    #[test]
    fn step_walks_one_ulp_across_zero_and_to_infinity() {
        assert_eq!(1.0f32.step(true), 1.0 + f32::EPSILON);
        assert_eq!(0.0f32.step(false), -f32::from_bits(1));
        assert_eq!(f32::INFINITY.step(false), f32::MAX);
        assert_eq!(f64::NEG_INFINITY.step(true), f64::MIN);
        assert_eq!((-1.0f64).step(true), -1.0 + f64::EPSILON / 2.0);
    }
}
