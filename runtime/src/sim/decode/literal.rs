//! Numeric literals in every spelling PTX allows, and their encoding as operand bits.

use crate::sim::types::Ty;

/// A numeric literal as PTX spells it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Literal {
    Int(i128),
    Float(f64),
    /// `0f3F800000`: the bits of an f32.
    F32Bits(u32),
    /// `0d3FF0000000000000`: the bits of an f64.
    F64Bits(u64),
}

impl Literal {
    pub fn parse(s: &str) -> Option<Literal> {
        let lower = s.to_ascii_lowercase();
        if let Some(hex) = lower.strip_prefix("0f").filter(|h| h.len() == 8) {
            return u32::from_str_radix(hex, 16).ok().map(Literal::F32Bits);
        }
        if let Some(hex) = lower.strip_prefix("0d").filter(|h| h.len() == 16) {
            return u64::from_str_radix(hex, 16).ok().map(Literal::F64Bits);
        }
        let digits = lower.strip_suffix('u').unwrap_or(&lower);
        if let Some(hex) = digits.strip_prefix("0x") {
            return i128::from_str_radix(hex, 16).ok().map(Literal::Int);
        }
        if let Some(bin) = digits.strip_prefix("0b") {
            return i128::from_str_radix(bin, 2).ok().map(Literal::Int);
        }
        if digits.contains(['.', 'e']) {
            return digits.parse().ok().map(Literal::Float);
        }
        if digits.len() > 1 && digits.starts_with('0') {
            return i128::from_str_radix(&digits[1..], 8).ok().map(Literal::Int);
        }
        digits.parse().ok().map(Literal::Int)
    }

    pub fn negate(self) -> Literal {
        match self {
            Literal::Int(v) => Literal::Int(-v),
            Literal::Float(v) => Literal::Float(-v),
            Literal::F32Bits(b) => Literal::F32Bits(b ^ 0x8000_0000),
            Literal::F64Bits(b) => Literal::F64Bits(b ^ (1 << 63)),
        }
    }

    /// The literal encoded as an operand of type `ty`.
    pub(super) fn bits(self, ty: Ty) -> Result<u64, String> {
        let as_float = |x: f64| match ty {
            Ty::F64 => x.to_bits(),
            Ty::F32 => (x as f32).to_bits() as u64,
            Ty::F16 => half::f16::from_f64(x).to_bits() as u64,
            _ => half::bf16::from_f64(x).to_bits() as u64,
        };
        match (self, ty.is_float()) {
            (Literal::Int(v), false) => {
                let bits = ty.bits();
                let fits = v >= -(1i128 << (bits - 1).min(64)) && v < (1i128 << bits);
                if ty == Ty::Pred && !(v == 0 || v == 1) || !fits {
                    return Err(format!("literal {v} does not fit {ty}"));
                }
                Ok(v as u64 & ty.mask())
            }
            (Literal::Int(v), true) => Ok(as_float(v as f64)),
            (Literal::Float(x), true) => Ok(as_float(x)),
            (Literal::F32Bits(b), true) => Ok(as_float(f32::from_bits(b) as f64)),
            (Literal::F64Bits(b), true) => Ok(as_float(f64::from_bits(b))),
            (Literal::F32Bits(b), false) if ty.bits() == 32 => Ok(b as u64),
            (Literal::F64Bits(b), false) if ty.bits() == 64 => Ok(b),
            _ => Err(format!("floating-point literal used as a {ty} operand")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals_in_every_spelling() {
        assert_eq!(Literal::parse("42"), Some(Literal::Int(42)));
        assert_eq!(Literal::parse("0x1F"), Some(Literal::Int(31)));
        assert_eq!(Literal::parse("017"), Some(Literal::Int(15)));
        assert_eq!(Literal::parse("0b101"), Some(Literal::Int(5)));
        assert_eq!(Literal::parse("7U"), Some(Literal::Int(7)));
        assert_eq!(
            Literal::parse("0f3F800000"),
            Some(Literal::F32Bits(0x3f80_0000))
        );
        assert_eq!(Literal::parse("1.5"), Some(Literal::Float(1.5)));
        assert_eq!(Literal::parse("1e-3"), Some(Literal::Float(1e-3)));
        assert_eq!(Literal::parse("12abc"), None);
        assert_eq!(Literal::Int(-1).bits(Ty::U32), Ok(0xffff_ffff));
        assert_eq!(Literal::Float(1.0).bits(Ty::F32), Ok(0x3f80_0000));
        assert_eq!(
            Literal::F32Bits(0x3f80_0000).bits(Ty::F64),
            Ok(1f64.to_bits())
        );
        assert!(Literal::Int(1 << 40).bits(Ty::U32).is_err());
        assert!(Literal::Float(1.0).bits(Ty::S32).is_err());
        assert!(Literal::Int(2).bits(Ty::Pred).is_err());
    }
}
