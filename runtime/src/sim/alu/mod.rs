//! Scalar semantics of the elementwise instructions, one lane at a time. Registers hold
//! raw bits in a `u64`; each operation reads the low bits its type names and returns the
//! result's bits, zero-extended (sign-extended for signed sub-word conversions and loads,
//! as PTX extends into a wider register).

mod convert;
mod float;
mod int;
pub(crate) mod tensor_formats;

pub(crate) use float::Float;
pub(crate) use int::sign_extend;

use super::ast::{Alu, Cmp};
use super::types::{width_mask, Ty};

/// An elementwise operation that cannot produce a value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Trap {
    DivideByZero,
}

impl Alu {
    /// Computes one lane: `a`, `b`, `c` are the sources in order (unused ones are 0).
    pub(crate) fn apply(&self, a: u64, b: u64, c: u64) -> Result<u64, Trap> {
        match *self {
            Alu::Mov { bits } => Ok(a & width_mask(bits)),
            Alu::Int { op, ty } => int::apply(op, ty, a, b, c),
            Alu::Float { op, ty, ftz, sat } => Ok(match ty {
                Ty::F64 => float::apply::<f64>(op, ftz, sat, a, b, c),
                _ => float::apply::<f32>(op, ftz, sat, a, b, c),
            }),
            Alu::Cvt(cvt) => Ok(convert::convert(&cvt, a)),
            Alu::Selp { bits } => Ok(if c & 1 != 0 { a } else { b } & width_mask(bits)),
            Alu::Pack { bits } => Ok(a & width_mask(bits) | (b & width_mask(bits)) << bits),
            Alu::Tf32Rna => Ok(u64::from(tensor_formats::tf32_rna(a as u32))),
            Alu::Bf16x2Rn => Ok(u64::from(tensor_formats::bf16x2_rn(a as u32, b as u32))),
        }
    }
}

/// `setp`'s comparison of `a` and `b` as `ty`.
pub(crate) fn compare(cmp: Cmp, ty: Ty, ftz: bool, a: u64, b: u64) -> bool {
    use std::cmp::Ordering::*;
    if ty.is_float() {
        let read = |x: u64| match ty {
            Ty::F64 => f64::from_bits(x),
            _ => {
                let f = f32::from_u64(x);
                f64::from(if ftz { f.flush() } else { f })
            }
        };
        let (x, y) = (read(a), read(b));
        let unordered = x.is_nan() || y.is_nan();
        let ord = x.partial_cmp(&y);
        return match cmp {
            Cmp::Num => !unordered,
            Cmp::Nan => unordered,
            Cmp::Equ | Cmp::Neu | Cmp::Ltu | Cmp::Leu | Cmp::Gtu | Cmp::Geu if unordered => true,
            _ if unordered => false,
            Cmp::Eq | Cmp::Equ => ord == Some(Equal),
            Cmp::Ne | Cmp::Neu => ord != Some(Equal),
            Cmp::Lt | Cmp::Ltu => ord == Some(Less),
            Cmp::Le | Cmp::Leu => ord != Some(Greater),
            Cmp::Gt | Cmp::Gtu => ord == Some(Greater),
            Cmp::Ge | Cmp::Geu => ord != Some(Less),
            // Unsigned comparisons of floats are rejected by the decoder.
            Cmp::Lo | Cmp::Ls | Cmp::Hi | Cmp::Hs => false,
        };
    }
    let (ua, ub) = (a & ty.mask(), b & ty.mask());
    let (sa, sb) = (int::ext(ty, a), int::ext(ty, b));
    match cmp {
        Cmp::Eq => ua == ub,
        Cmp::Ne => ua != ub,
        Cmp::Lt => sa < sb,
        Cmp::Le => sa <= sb,
        Cmp::Gt => sa > sb,
        Cmp::Ge => sa >= sb,
        Cmp::Lo => ua < ub,
        Cmp::Ls => ua <= ub,
        Cmp::Hi => ua > ub,
        Cmp::Hs => ua >= ub,
        // Float-only comparisons are rejected by the decoder for integers.
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(x: f32) -> u64 {
        x.to_bits() as u64
    }

    #[test]
    fn ordered_and_unordered_float_comparisons() {
        let nan = f(f32::NAN);
        assert!(compare(Cmp::Lt, Ty::F32, false, f(1.0), f(2.0)));
        assert!(!compare(Cmp::Lt, Ty::F32, false, nan, f(2.0)));
        assert!(compare(Cmp::Ltu, Ty::F32, false, nan, f(2.0)));
        assert!(!compare(Cmp::Ne, Ty::F32, false, nan, nan));
        assert!(compare(Cmp::Neu, Ty::F32, false, nan, nan));
        assert!(compare(Cmp::Nan, Ty::F32, false, f(0.0), nan));
        assert!(compare(Cmp::Eq, Ty::F32, false, f(0.0), f(-0.0)));
        // A subnormal equals zero only when flushed.
        let tiny = f(f32::from_bits(1));
        assert!(!compare(Cmp::Eq, Ty::F32, false, tiny, f(0.0)));
        assert!(compare(Cmp::Eq, Ty::F32, true, tiny, f(0.0)));
    }

    #[test]
    fn signed_and_unsigned_integer_comparisons() {
        let minus_one = 0xffff_ffffu64;
        assert!(compare(Cmp::Lt, Ty::S32, false, minus_one, 0));
        assert!(!compare(Cmp::Lt, Ty::U32, false, minus_one, 0));
        assert!(compare(Cmp::Hi, Ty::S32, false, minus_one, 0));
        // Only the type's low bits take part.
        assert!(compare(Cmp::Eq, Ty::U32, false, 0x1_0000_0005, 5));
    }

    #[test]
    fn selp_and_mov_keep_the_type_width() {
        let selp = Alu::Selp { bits: 32 };
        assert_eq!(selp.apply(7, 9, 1), Ok(7));
        assert_eq!(selp.apply(7, 9, 0), Ok(9));
        assert_eq!(Alu::Mov { bits: 16 }.apply(0x12345, 0, 0), Ok(0x2345));
    }
}
