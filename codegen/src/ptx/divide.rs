//! Division by a constant as a multiply-high and a shift.
//!
//! ptxas does not strength-reduce `div.u32` and `rem.u32` by an immediate: it emits its
//! general sequence (an integer-to-float conversion, a reciprocal on the special-function
//! unit, a float-to-integer conversion, two multiply-highs and two predicated
//! corrections), a dozen instructions where a compiler for the CPU emits two (seen in
//! the SASS of our kernels, with ptxas 12.9 and `nvdisasm`). Index arithmetic divides
//! by tensor extents everywhere, so the builder emits the short form itself:
//! `x / d = mulhi(x, m) >> s` for a magic multiplier `m` exact over the dividend's known
//! range, `x % d = x - (x / d) * d`, and shifts and masks for powers of two.

use super::{ins, Builder, Operand, Ty};

/// A multiplier `m < 2^32` and shift `s` with `x / d == (x * m) >> (32 + s)` for every
/// `x <= max`, if one exists (`d` is neither 0, 1 nor a power of two).
///
/// With `m = ceil(2^(32+s) / d)` and `e = m·d - 2^(32+s)` (`0 <= e < d`),
/// `x·m / 2^(32+s) = x/d + x·e / (d·2^(32+s))`, whose floor is `x / d` when
/// `x·e < 2^(32+s)`: true for `x <= max` once `e·max < 2^(32+s)`. For `max < 2^31`,
/// `s = floor(log2 d)` always qualifies (`e < d < 2^(s+1)`), so an index with a known
/// bound always divides this way.
pub(super) fn magic(d: u64, max: u64) -> Option<(u64, u32)> {
    debug_assert!(d > 1 && !d.is_power_of_two());
    for s in 0..32 {
        let p = 1u128 << (32 + s);
        let m = p.div_ceil(u128::from(d));
        if m >> 32 != 0 {
            return None;
        }
        let e = m * u128::from(d) - p;
        if e * u128::from(max) < p {
            return Some((m as u64, s));
        }
    }
    None
}

impl Builder {
    /// `a / divisor` (`divisor > 1`, `a` a register at most `max`) in the fewest
    /// instructions exact over that range; `div.u32` only where no multiplier is.
    pub(super) fn quotient(&mut self, a: Operand, divisor: usize, max: u64) -> Operand {
        let e = ("div", [a, Operand::Int(divisor as i64), Operand::Int(0)]);
        let d = divisor as u64;
        self.computed(e, Some(max / d), |b| {
            let q = b.reg(Ty::U32);
            if d.is_power_of_two() {
                ins!(b, "shr.u32 {q}, {a}, {}", d.trailing_zeros());
            } else if let Some((m, s)) = magic(d, max) {
                let high = match s {
                    0 => q,
                    _ => b.reg(Ty::U32),
                };
                ins!(b, "mul.hi.u32 {high}, {a}, {m}");
                if s > 0 {
                    ins!(b, "shr.u32 {q}, {high}, {s}");
                }
            } else {
                ins!(b, "div.u32 {q}, {a}, {divisor}");
            }
            q
        })
    }

    /// `a % divisor` (`divisor > 1`, `a` a register at most `max`): a mask for a power
    /// of two, else `a` less its quotient times the divisor (sharing the quotient with
    /// a division of the same operands).
    pub(super) fn remainder(&mut self, a: Operand, divisor: usize, max: u64) -> Operand {
        let e = ("rem", [a, Operand::Int(divisor as i64), Operand::Int(0)]);
        let d = divisor as u64;
        let bound = max.min(d - 1);
        if d.is_power_of_two() {
            return self.computed(e, Some(bound), |b| {
                let r = b.reg(Ty::U32);
                ins!(b, "and.b32 {r}, {a}, {}", d - 1);
                r
            });
        }
        if let Some(r) = self.known.lookup(&e) {
            return r;
        }
        let q = self.quotient(a, divisor, max);
        self.computed(e, Some(bound), |b| {
            let whole = b.reg(Ty::U32);
            ins!(b, "mul.lo.u32 {whole}, {q}, {divisor}");
            let r = b.reg(Ty::U32);
            ins!(b, "sub.u32 {r}, {a}, {whole}");
            r
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A few thousand dividends spread over `0..=max`, both ends and the multiples of
    /// `d` near the top included.
    fn dividends(d: u64, max: u64) -> Vec<u64> {
        let mut xs: Vec<u64> = (0..2000).map(|i| max / 1999 * i).collect();
        xs.extend([
            max,
            max.saturating_sub(1),
            max / d * d,
            (max / d * d).saturating_sub(1),
        ]);
        xs.extend(0..d.min(max + 1) * 3);
        xs.retain(|&x| x <= max);
        xs
    }

    #[test]
    fn magic_multipliers_divide_exactly_over_their_range() {
        for d in (3..300u64).chain([3136, 12544, 50176, 200704]) {
            if d.is_power_of_two() {
                continue;
            }
            for max in [d * 4, (1 << 20) - 1, (1 << 31) - 1, u32::MAX as u64] {
                let Some((m, s)) = magic(d, max) else {
                    assert_eq!(
                        max,
                        u32::MAX as u64,
                        "d = {d}: indices below 2^31 always have one"
                    );
                    continue;
                };
                for x in dividends(d, max) {
                    assert_eq!(
                        (x * m) >> (32 + s),
                        x / d,
                        "{x} / {d} with m = {m}, s = {s}"
                    );
                }
            }
        }
    }

    #[test]
    fn a_multiplier_too_short_for_the_range_is_refused() {
        // 7 needs a 33-bit multiplier over every u32; below 2^31, 32 bits do.
        assert_eq!(magic(7, u32::MAX as u64), None);
        assert!(magic(7, (1 << 31) - 1).is_some());
    }

    fn text(b: &Builder) -> String {
        b.body()
            .lines()
            .filter(|l| !l.contains(".reg"))
            .map(|l| l.trim())
            .collect::<Vec<_>>()
            .join("\n")
    }

    #[test]
    fn constant_divisions_are_multiplies_shifts_and_masks() {
        let mut b = Builder::new();
        let x = b.reg(Ty::U32);
        ins!(b, "mov.u32 {x}, %tid.x");
        b.bound(x, 1 << 20);
        let q = b.div_u32(x.into(), 56);
        let r = b.rem_u32(x.into(), 56);
        let h = b.div_u32(x.into(), 64);
        let l = b.rem_u32(x.into(), 64);
        for v in [q, r, h, l] {
            ins!(b, "st.global.u32 [%rd1], {v}");
        }
        let t = text(&b);
        assert!(!t.contains("div.u32") && !t.contains("rem.u32"), "{t}");
        // One multiply-high, shared by the quotient and the remainder.
        assert_eq!(t.matches("mul.hi.u32").count(), 1, "{t}");
        assert!(t.contains(&format!("shr.u32 {h}, {x}, 6")), "{t}");
        assert!(t.contains(&format!("and.b32 {l}, {x}, 63")), "{t}");
        assert_eq!(b.max_of(r), Some(55));
        assert_eq!(b.max_of(q), Some((1 << 20) / 56));
    }
}
