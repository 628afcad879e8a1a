//! Integer semantics. Values are widened to `i128` by their type's signedness, so one
//! formula per operation serves every width; results wrap to the type's width.

use super::Trap;
use crate::sim::ast::IntOp;
use crate::sim::types::{width_mask, Ty};

/// The value of the low `ty.bits()` of `x`, sign- or zero-extended by `ty`.
pub(crate) fn ext(ty: Ty, x: u64) -> i128 {
    if ty.is_signed() {
        sign_extend(x, ty.bits()) as i64 as i128
    } else {
        (x & ty.mask()) as i128
    }
}

/// Sign-extends the low `bits` of `x` to 64 bits.
pub(crate) fn sign_extend(x: u64, bits: u32) -> u64 {
    let shift = 64 - bits;
    (((x << shift) as i64) >> shift) as u64
}

fn wrap(bits: u32, v: i128) -> u64 {
    v as u64 & width_mask(bits)
}

fn wide_ty(ty: Ty) -> Ty {
    match ty {
        Ty::S16 => Ty::S32,
        Ty::S32 => Ty::S64,
        Ty::U16 => Ty::U32,
        _ => Ty::U64,
    }
}

/// The high half of the double-width product.
fn mul_hi(ty: Ty, a: u64, b: u64) -> i128 {
    let w = ty.bits();
    if ty.is_signed() {
        (ext(ty, a) * ext(ty, b)) >> w
    } else {
        (((a & ty.mask()) as u128 * (b & ty.mask()) as u128) >> w) as i128
    }
}

pub(super) fn apply(op: IntOp, ty: Ty, a: u64, b: u64, c: u64) -> Result<u64, Trap> {
    use IntOp::*;
    let w = ty.bits();
    let m = ty.mask();
    let (x, y) = (ext(ty, a), ext(ty, b));
    Ok(match op {
        Add => wrap(w, x + y),
        AddSat => wrap(w, (x + y).clamp(i32::MIN as i128, i32::MAX as i128)),
        Sub => wrap(w, x - y),
        MulLo => wrap(w, x.wrapping_mul(y)),
        MulHi => wrap(w, mul_hi(ty, a, b)),
        MulWide => wrap(2 * w, x * y),
        MadLo => wrap(w, x.wrapping_mul(y).wrapping_add(ext(ty, c))),
        MadHi => wrap(w, mul_hi(ty, a, b) + ext(ty, c)),
        MadWide => wrap(2 * w, x * y + ext(wide_ty(ty), c)),
        Div | Rem if y == 0 => return Err(Trap::DivideByZero),
        Div => wrap(w, x / y),
        Rem => wrap(w, x % y),
        Min => wrap(w, x.min(y)),
        Max => wrap(w, x.max(y)),
        And => a & b & m,
        Or => (a | b) & m,
        Xor => (a ^ b) & m,
        Not => !a & m,
        Shl => {
            let amount = b & 0xffff_ffff;
            if amount >= w as u64 {
                0
            } else {
                (a << amount) & m
            }
        }
        Shr => {
            // Shifts past the width clamp: all sign bits, or zero.
            let amount = (b & 0xffff_ffff).min(127) as u32;
            wrap(w, x >> amount)
        }
        Neg => wrap(w, -x),
        Abs => wrap(w, x.abs()),
        Popc => (a & m).count_ones() as u64,
        Clz => ((a & m).leading_zeros() - (64 - w)) as u64,
        Brev => (a & m).reverse_bits() >> (64 - w),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use IntOp::*;

    fn run(op: IntOp, ty: Ty, a: i64, b: i64) -> u64 {
        apply(op, ty, a as u64, b as u64, 0).unwrap()
    }

    #[test]
    fn wrapping_and_widening_products() {
        assert_eq!(run(Add, Ty::U32, 0xffff_ffff, 1), 0);
        assert_eq!(run(AddSat, Ty::S32, i32::MAX as i64, 1), i32::MAX as u64);
        assert_eq!(run(MulLo, Ty::U64, -1, -1), 1);
        assert_eq!(run(MulHi, Ty::U64, -1, -1), u64::MAX - 1);
        assert_eq!(run(MulHi, Ty::S32, -2, 3), 0xffff_ffff);
        assert_eq!(run(MulWide, Ty::S32, -3, 5), (-15i64) as u64);
        assert_eq!(run(MulWide, Ty::U32, 0xffff_ffff, 2), 0x1_ffff_fffe);
        assert_eq!(
            apply(MadWide, Ty::S32, (-2i64) as u64, 4, 100,).unwrap(),
            92
        );
    }

    #[test]
    fn division_truncates_and_traps_on_zero() {
        assert_eq!(run(Div, Ty::S32, -7, 2), (-3i32) as u32 as u64);
        assert_eq!(run(Rem, Ty::S32, -7, 2), (-1i32) as u32 as u64);
        assert_eq!(run(Div, Ty::U32, -7, 2), 0x7fff_fffc);
        assert_eq!(apply(Div, Ty::U32, 1, 0, 0), Err(Trap::DivideByZero));
    }

    #[test]
    fn shifts_clamp_past_the_width() {
        assert_eq!(run(Shl, Ty::B32, 1, 31), 0x8000_0000);
        assert_eq!(run(Shl, Ty::B32, 1, 32), 0);
        assert_eq!(run(Shr, Ty::S32, -8, 1), (-4i32) as u32 as u64);
        assert_eq!(run(Shr, Ty::S32, -8, 40), 0xffff_ffff);
        assert_eq!(run(Shr, Ty::U32, -8, 40), 0);
    }

    #[test]
    fn bit_counts_see_only_the_width() {
        assert_eq!(run(Popc, Ty::B32, -1, 0), 32);
        assert_eq!(run(Clz, Ty::B32, 1, 0), 31);
        assert_eq!(run(Clz, Ty::B64, 1, 0), 63);
        assert_eq!(run(Brev, Ty::B32, 1, 0), 0x8000_0000);
        assert_eq!(run(Not, Ty::Pred, 1, 0), 0);
        assert_eq!(run(Min, Ty::S32, -1, 1), 0xffff_ffff);
        assert_eq!(run(Min, Ty::U32, -1, 1), 1);
    }
}
