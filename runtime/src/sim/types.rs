//! PTX scalar types (`.f32`, `.u64`, `.pred`, ...) and what the simulator needs to know
//! about each: its width and how its bits are read.

use std::fmt;

/// A PTX fundamental type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Ty {
    Pred,
    B8,
    B16,
    B32,
    B64,
    U8,
    U16,
    U32,
    U64,
    S8,
    S16,
    S32,
    S64,
    F16,
    Bf16,
    F32,
    F64,
}

/// How a type's bits are interpreted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Untyped bits (`.b32`); arithmetic treats them as unsigned.
    Bits,
    Unsigned,
    Signed,
    Float,
    Pred,
}

/// Name, type, width in bits and kind: the one table every lookup reads.
const TABLE: [(&str, Ty, u32, Kind); 17] = [
    ("pred", Ty::Pred, 1, Kind::Pred),
    ("b8", Ty::B8, 8, Kind::Bits),
    ("b16", Ty::B16, 16, Kind::Bits),
    ("b32", Ty::B32, 32, Kind::Bits),
    ("b64", Ty::B64, 64, Kind::Bits),
    ("u8", Ty::U8, 8, Kind::Unsigned),
    ("u16", Ty::U16, 16, Kind::Unsigned),
    ("u32", Ty::U32, 32, Kind::Unsigned),
    ("u64", Ty::U64, 64, Kind::Unsigned),
    ("s8", Ty::S8, 8, Kind::Signed),
    ("s16", Ty::S16, 16, Kind::Signed),
    ("s32", Ty::S32, 32, Kind::Signed),
    ("s64", Ty::S64, 64, Kind::Signed),
    ("f16", Ty::F16, 16, Kind::Float),
    ("bf16", Ty::Bf16, 16, Kind::Float),
    ("f32", Ty::F32, 32, Kind::Float),
    ("f64", Ty::F64, 64, Kind::Float),
];

impl Ty {
    fn row(self) -> &'static (&'static str, Ty, u32, Kind) {
        TABLE
            .iter()
            .find(|row| row.1 == self)
            .expect("every type is in TABLE")
    }

    /// The type named by a modifier without its dot (`"f32"`).
    pub fn from_name(name: &str) -> Option<Ty> {
        TABLE.iter().find(|row| row.0 == name).map(|row| row.1)
    }

    pub fn name(self) -> &'static str {
        self.row().0
    }

    /// Width in bits (1 for `.pred`).
    pub fn bits(self) -> u32 {
        self.row().2
    }

    /// Width in bytes in memory (`.pred` has no memory form and reports 1).
    pub fn bytes(self) -> usize {
        (self.bits() as usize).div_ceil(8)
    }

    pub fn kind(self) -> Kind {
        self.row().3
    }

    pub fn is_float(self) -> bool {
        self.kind() == Kind::Float
    }

    /// True for types arithmetic reads as two's-complement integers.
    pub fn is_int(self) -> bool {
        matches!(self.kind(), Kind::Bits | Kind::Unsigned | Kind::Signed)
    }

    pub fn is_signed(self) -> bool {
        self.kind() == Kind::Signed
    }

    /// The all-ones mask of this type's width.
    pub fn mask(self) -> u64 {
        width_mask(self.bits())
    }
}

/// The all-ones mask of `bits` low bits.
pub fn width_mask(bits: u32) -> u64 {
    if bits >= 64 {
        u64::MAX
    } else {
        (1u64 << bits) - 1
    }
}

impl fmt::Display for Ty {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, ".{}", self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_widths_follow_the_name() {
        for (name, ty, bits, _) in TABLE {
            assert_eq!(Ty::from_name(name), Some(ty));
            assert_eq!(ty.name(), name);
            assert_eq!(ty.bits(), bits);
        }
        assert_eq!(Ty::from_name("f128"), None);
        assert_eq!(Ty::S16.mask(), 0xffff);
        assert_eq!(Ty::U64.mask(), u64::MAX);
        assert_eq!(Ty::Bf16.bytes(), 2);
    }
}
