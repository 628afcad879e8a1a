//! PTX scalar types, virtual registers and operands.

use std::fmt;

/// A PTX scalar type, as written after an opcode (`.f32`, `.u32`, ...).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Ty {
    Pred,
    U32,
    U64,
    S64,
    F32,
}

impl Ty {
    pub fn name(self) -> &'static str {
        match self {
            Ty::Pred => "pred",
            Ty::U32 => "u32",
            Ty::U64 => "u64",
            Ty::S64 => "s64",
            Ty::F32 => "f32",
        }
    }

    /// The register bank a value of this type lives in.
    pub fn class(self) -> RegClass {
        match self {
            Ty::Pred => RegClass::Pred,
            Ty::U32 => RegClass::B32,
            Ty::U64 | Ty::S64 => RegClass::B64,
            Ty::F32 => RegClass::F32,
        }
    }

    pub fn is_float(self) -> bool {
        self == Ty::F32
    }
}

impl fmt::Display for Ty {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A register bank: one `.reg` declaration with a name prefix (`%f<12>`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RegClass {
    Pred,
    B32,
    B64,
    F32,
}

impl RegClass {
    pub const ALL: [RegClass; 4] = [RegClass::Pred, RegClass::B32, RegClass::B64, RegClass::F32];

    pub fn prefix(self) -> &'static str {
        match self {
            RegClass::Pred => "%p",
            RegClass::B32 => "%r",
            RegClass::B64 => "%rd",
            RegClass::F32 => "%f",
        }
    }

    /// The type the bank is declared with.
    pub fn decl(self) -> &'static str {
        match self {
            RegClass::Pred => ".pred",
            RegClass::B32 => ".b32",
            RegClass::B64 => ".b64",
            RegClass::F32 => ".f32",
        }
    }

    pub(crate) fn index(self) -> usize {
        self as usize
    }
}

/// A virtual register: PTX registers are unlimited and ptxas allocates the real ones.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Reg {
    pub class: RegClass,
    pub id: u32,
}

impl fmt::Display for Reg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", self.class.prefix(), self.id)
    }
}

/// An instruction source: a register or an immediate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Operand {
    Reg(Reg),
    Int(i64),
    /// An f32 immediate by its bits, written `0fXXXXXXXX` so it is exact.
    F32(u32),
}

impl Operand {
    pub fn f32(x: f32) -> Operand {
        Operand::F32(x.to_bits())
    }

    /// The value of an integer immediate.
    pub fn as_int(self) -> Option<i64> {
        match self {
            Operand::Int(v) => Some(v),
            _ => None,
        }
    }
}

impl From<Reg> for Operand {
    fn from(r: Reg) -> Self {
        Operand::Reg(r)
    }
}

impl fmt::Display for Operand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Operand::Reg(r) => r.fmt(f),
            Operand::Int(v) => write!(f, "{v}"),
            Operand::F32(bits) => write!(f, "0f{bits:08X}"),
        }
    }
}

/// A global address: a 64-bit register plus a constant byte offset, written as an
/// instruction's `[reg+offset]` operand.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Address {
    pub reg: Reg,
    pub offset: i64,
}

impl Address {
    pub fn new(reg: Reg, offset: i64) -> Self {
        Address { reg, offset }
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.offset {
            0 => self.reg.fmt(f),
            o if o > 0 => write!(f, "{}+{o}", self.reg),
            o => write!(f, "{}{o}", self.reg),
        }
    }
}
