//! Unsigned 32-bit index arithmetic that folds constants, so that the static shapes
//! baked into a kernel disappear from its address computations (`0 * stride + c` is `c`).
//!
//! Indices are `u32`: code generation refuses tensors of 2^31 elements or more. Negative
//! intermediate coordinates (a convolution's padding) wrap around and fail every
//! `< extent` bounds check, so a single unsigned compare tests both ends.

use super::{ins, Builder, Operand, Reg, Ty};

fn int(v: i64) -> Operand {
    Operand::Int(v as u32 as i64)
}

impl Builder {
    pub fn add_u32(&mut self, a: Operand, b: Operand) -> Operand {
        match (a.as_int(), b.as_int()) {
            (Some(x), Some(y)) => int(x.wrapping_add(y)),
            (Some(0), _) => b,
            (_, Some(0)) => a,
            _ => {
                let d = self.reg(Ty::U32);
                ins!(self, "add.u32 {d}, {a}, {b}");
                d.into()
            }
        }
    }

    pub fn sub_u32(&mut self, a: Operand, b: Operand) -> Operand {
        match (a.as_int(), b.as_int()) {
            (Some(x), Some(y)) => int(x.wrapping_sub(y)),
            (_, Some(0)) => a,
            _ => {
                let d = self.reg(Ty::U32);
                ins!(self, "sub.u32 {d}, {a}, {b}");
                d.into()
            }
        }
    }

    pub fn mul_u32(&mut self, a: Operand, b: Operand) -> Operand {
        match (a.as_int(), b.as_int()) {
            (Some(x), Some(y)) => int(x.wrapping_mul(y)),
            (Some(0), _) | (_, Some(0)) => Operand::Int(0),
            (Some(1), _) => b,
            (_, Some(1)) => a,
            _ => {
                let d = self.reg(Ty::U32);
                ins!(self, "mul.lo.u32 {d}, {a}, {b}");
                d.into()
            }
        }
    }

    /// `a * b + c`.
    pub fn mad_u32(&mut self, a: Operand, b: Operand, c: Operand) -> Operand {
        let foldable = a.as_int().is_some() && b.as_int().is_some()
            || matches!(a.as_int(), Some(0 | 1))
            || matches!(b.as_int(), Some(0 | 1))
            || c.as_int() == Some(0);
        if foldable {
            let p = self.mul_u32(a, b);
            return self.add_u32(p, c);
        }
        let d = self.reg(Ty::U32);
        ins!(self, "mad.lo.u32 {d}, {a}, {b}, {c}");
        d.into()
    }

    pub fn div_u32(&mut self, a: Operand, divisor: usize) -> Operand {
        match a.as_int() {
            _ if divisor == 1 => a,
            Some(x) => int(x / divisor as i64),
            None => {
                let d = self.reg(Ty::U32);
                ins!(self, "div.u32 {d}, {a}, {divisor}");
                d.into()
            }
        }
    }

    pub fn rem_u32(&mut self, a: Operand, divisor: usize) -> Operand {
        match a.as_int() {
            _ if divisor == 1 => Operand::Int(0),
            Some(x) => int(x % divisor as i64),
            None => {
                let d = self.reg(Ty::U32);
                ins!(self, "rem.u32 {d}, {a}, {divisor}");
                d.into()
            }
        }
    }

    pub fn min_u32(&mut self, a: Operand, b: Operand) -> Operand {
        match (a.as_int(), b.as_int()) {
            (Some(x), Some(y)) => int(x.min(y)),
            _ => {
                let d = self.reg(Ty::U32);
                ins!(self, "min.u32 {d}, {a}, {b}");
                d.into()
            }
        }
    }

    /// A predicate for `a < b` (unsigned), or `None` when constants decide it: `Some`
    /// of the known answer is returned as `Err`.
    pub fn lt_u32(&mut self, a: Operand, b: Operand) -> Result<Reg, bool> {
        match (a.as_int(), b.as_int()) {
            (Some(x), Some(y)) => Err((x as u32) < (y as u32)),
            _ => Ok(self.setp("lt", Ty::U32, a, b)),
        }
    }

    /// The global address of element `index` of `size`-byte elements at `base`.
    pub fn address(&mut self, base: Reg, index: Operand, size: usize) -> Reg {
        match index.as_int() {
            Some(i) => {
                let d = self.reg(Ty::U64);
                ins!(self, "add.s64 {d}, {base}, {}", i * size as i64);
                d
            }
            None => {
                let off = self.reg(Ty::U64);
                ins!(self, "mul.wide.u32 {off}, {index}, {size}");
                let d = self.reg(Ty::U64);
                ins!(self, "add.s64 {d}, {base}, {off}");
                d
            }
        }
    }
}
