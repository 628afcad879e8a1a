//! Unsigned 32-bit index arithmetic that folds constants, so that the static shapes
//! baked into a kernel disappear from its address computations (`0 * stride + c` is `c`).
//!
//! Indices are `u32`: code generation refuses tensors of 2^31 elements or more. Negative
//! intermediate coordinates (a convolution's padding) wrap around and fail every
//! `< extent` bounds check, so a single unsigned compare tests both ends.
//!
//! Each result's upper bound follows from its operands' ([`known`](super::known)), and a
//! division, remainder, minimum or comparison that the bounds decide is not emitted; an
//! operation already computed on the same operands gives the register holding it.

use super::known::Expression;
use super::{ins, Address, Builder, Operand, Reg, Ty};

/// Constant offsets are carried beside a root operand only below this, so that sums of
/// them never wrap and byte offsets fit an address's immediate.
const OFFSET_LIMIT: u64 = 1 << 28;

fn int(v: i64) -> Operand {
    Operand::Int(v as u32 as i64)
}

/// `(a, b)` in a fixed order, for commutative operations.
fn sorted(a: Operand, b: Operand) -> [Operand; 2] {
    if a <= b {
        [a, b]
    } else {
        [b, a]
    }
}

impl Builder {
    /// The register holding `e`: the one remembered, or a new one written by the
    /// instruction `opcode d, operands...` and bounded by `max`.
    fn integer(&mut self, e: Expression, opcode: &str, arity: usize, max: Option<u64>) -> Operand {
        let operands: Vec<String> = e.1[..arity].iter().map(|x| x.to_string()).collect();
        self.computed(e, max, |b| {
            let d = b.reg(Ty::U32);
            ins!(b, "{opcode} {d}, {}", operands.join(", "));
            d
        })
    }

    /// The register holding `e`: the one remembered, or a new one `emit` writes, bounded
    /// by `max`.
    pub(super) fn computed(
        &mut self,
        e: Expression,
        max: Option<u64>,
        emit: impl FnOnce(&mut Self) -> Reg,
    ) -> Operand {
        if let Some(d) = self.known.lookup(&e) {
            return d;
        }
        let d = emit(self);
        self.known.bound(d, max);
        self.known.remember(e, d.into());
        d.into()
    }

    /// `x` as a root and a constant offset below [`OFFSET_LIMIT`]: a small constant is
    /// all offset, a register the sum of its known root and offset.
    fn split(&self, x: Operand) -> (Operand, u64) {
        match x.as_int() {
            Some(c) if (c as u32 as u64) < OFFSET_LIMIT => (Operand::Int(0), c as u32 as u64),
            _ => self.known.split(x),
        }
    }

    /// `a + b`. Constant offsets are gathered at the end (`(x + 1) + y` is `(x + y) + 1`)
    /// and the result remembered as its root plus that offset, so that an address can
    /// take the offset as an immediate ([`Builder::address`]).
    pub fn add_u32(&mut self, a: Operand, b: Operand) -> Operand {
        match (a.as_int(), b.as_int()) {
            (Some(x), Some(y)) => return int(x.wrapping_add(y)),
            (Some(0), _) => return b,
            (_, Some(0)) => return a,
            _ => {}
        }
        let ((ra, oa), (rb, ob)) = (self.split(a), self.split(b));
        let offset = oa + ob;
        if offset == 0 || offset >= OFFSET_LIMIT {
            return self.plain_add(a, b);
        }
        let root = match (ra.as_int(), rb.as_int()) {
            (Some(0), _) => rb,
            (_, Some(0)) => ra,
            _ => self.plain_add(ra, rb),
        };
        let d = self.plain_add(root, Operand::Int(offset as i64));
        if let Operand::Reg(r) = d {
            self.known.offset(r, root, offset);
        }
        d
    }

    fn plain_add(&mut self, a: Operand, b: Operand) -> Operand {
        match (a.as_int(), b.as_int()) {
            (Some(x), Some(y)) => int(x.wrapping_add(y)),
            (Some(0), _) => b,
            (_, Some(0)) => a,
            _ => {
                let max = self.max_of(a).zip(self.max_of(b)).map(|(x, y)| x + y);
                let [a, b] = sorted(a, b);
                self.integer(("add", [a, b, Operand::Int(0)]), "add.u32", 2, max)
            }
        }
    }

    pub fn sub_u32(&mut self, a: Operand, b: Operand) -> Operand {
        match (a.as_int(), b.as_int()) {
            (Some(x), Some(y)) => int(x.wrapping_sub(y)),
            (_, Some(0)) => a,
            // A difference may wrap: no bound.
            _ => self.integer(("sub", [a, b, Operand::Int(0)]), "sub.u32", 2, None),
        }
    }

    pub fn mul_u32(&mut self, a: Operand, b: Operand) -> Operand {
        match (a.as_int(), b.as_int()) {
            (Some(x), Some(y)) => int(x.wrapping_mul(y)),
            (Some(0), _) | (_, Some(0)) => Operand::Int(0),
            (Some(1), _) => b,
            (_, Some(1)) => a,
            (None, Some(k)) | (Some(k), None) => {
                let x = if a.as_int().is_none() { a } else { b };
                let (root, c) = self.known.split(x);
                let offset = c * (k as u32 as u64);
                // `(x + c) * k` is `x * k + c * k`.
                if c > 0 && offset < OFFSET_LIMIT {
                    let scaled = self.mul_u32(root, Operand::Int(k));
                    return self.add_u32(scaled, Operand::Int(offset as i64));
                }
                self.product(a, b)
            }
            _ => self.product(a, b),
        }
    }

    /// `a * b` as one instruction.
    fn product(&mut self, a: Operand, b: Operand) -> Operand {
        let max = self.max_of(a).zip(self.max_of(b)).map(|(x, y)| x * y);
        let [a, b] = sorted(a, b);
        self.integer(("mul", [a, b, Operand::Int(0)]), "mul.lo.u32", 2, max)
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
        // `(x / d) * d + x % d` is `x` (an index decomposed and put back together, as a
        // slice along a leading axis does).
        for (q, d) in [(a, b), (b, a)] {
            let (Some(("div", [x, dq, _])), Some(("rem", [y, dr, _]))) =
                (self.known.definition(q), self.known.definition(c))
            else {
                continue;
            };
            if x == y && dq == d && dr == d {
                return x;
            }
        }
        // `(x + c1) * k + (z + c2)` is `(x * k + z) + (c1 * k + c2)`.
        let (x, k) = match (a.as_int(), b.as_int()) {
            (None, Some(k)) => (a, Some(k as u32 as u64)),
            (Some(k), None) => (b, Some(k as u32 as u64)),
            _ => (a, None),
        };
        let (rx, cx) = match k {
            Some(_) => self.known.split(x),
            None => (x, 0),
        };
        let (rc, cc) = self.split(c);
        let offset = cx * k.unwrap_or(0) + cc;
        if offset > 0 && offset < OFFSET_LIMIT {
            let root = match k {
                Some(k) => self.mad_u32(rx, Operand::Int(k as i64), rc),
                None => self.mad_u32(a, b, rc),
            };
            return self.add_u32(root, Operand::Int(offset as i64));
        }
        let max = match [a, b, c].map(|x| self.max_of(x)) {
            [Some(x), Some(y), Some(z)] => Some(x * y + z),
            _ => None,
        };
        let [a, b] = sorted(a, b);
        self.integer(("mad", [a, b, c]), "mad.lo.u32", 3, max)
    }

    /// `a` as `x * k + y` with `k` a multiple of `divisor`, computed without wrapping (its
    /// bound is known): then `a / divisor` is `x * (k / divisor) + y / divisor` and
    /// `a % divisor` is `y % divisor` (a thread's `e`-th element of a row-major band
    /// whose rows the block's threads cover: `(e * 256 + tid) % 64` is `tid % 64`).
    fn multiple_plus(&self, a: Operand, divisor: usize) -> Option<(Operand, u64, Operand)> {
        self.max_of(a)?;
        let d = divisor as u64;
        let konst = |x: Operand| x.as_int().map(|k| k as u32 as u64);
        let (op, [p, q, r]) = self.known.definition(a)?;
        let (x, k, y) = match op {
            "mad" => match (konst(p), konst(q)) {
                (Some(k), _) => (q, k, r),
                (_, Some(k)) => (p, k, r),
                _ => return None,
            },
            "mul" => match (konst(p), konst(q)) {
                (Some(k), _) => (q, k, Operand::Int(0)),
                (_, Some(k)) => (p, k, Operand::Int(0)),
                _ => return None,
            },
            "add" => match (konst(p), konst(q)) {
                (Some(k), _) => (Operand::Int(1), k, q),
                (_, Some(k)) => (Operand::Int(1), k, p),
                _ => return None,
            },
            _ => return None,
        };
        (k % d == 0).then_some((x, k / d, y))
    }

    /// A factor `x`'s value is known to be a multiple of (1 when none is known), from
    /// constants and the expressions that computed it (`kt * 32 + 64` is a multiple of
    /// 32).
    fn factor(&self, x: Operand, depth: usize) -> u64 {
        let konst = |x: Operand| x.as_int().map(|k| k as u32 as u64);
        if let Some(k) = konst(x) {
            return k;
        }
        if depth == 0 {
            return 1;
        }
        let f = |x: Operand| self.factor(x, depth - 1);
        let (root, offset) = self.known.split(x);
        if offset > 0 {
            return gcd(f(root), offset);
        }
        match self.known.definition(x) {
            Some(("mul", [p, q, _])) => f(p).saturating_mul(f(q)),
            Some(("mad", [p, q, r])) => gcd(f(p).saturating_mul(f(q)), f(r)),
            Some(("add", [p, q, _])) => gcd(f(p), f(q)),
            _ => 1,
        }
    }

    /// `a` as `x + y` with `x` a multiple of some `f` that divides `divisor` and `y`
    /// below `f`, computed without wrapping: then `a / divisor` is `x / divisor` and
    /// `a % divisor` is `x % divisor + y` (the `k` of a tile row whose step starts at a
    /// multiple of 32, over a channel axis of 64: the step's channel plus the row).
    /// `None` where `y` would be 0 (nothing to gain).
    fn aligned_plus_small(&mut self, a: Operand, divisor: usize) -> Option<(Operand, Operand)> {
        self.max_of(a)?;
        let d = divisor as u64;
        let aligned = |b: &Self, x: Operand| gcd(b.factor(x, 4), d);
        let (root, offset) = self.known.split(a);
        // `root + offset`: the offset's multiples of `f` stay with the root.
        let f = aligned(self, root);
        if f > 1 && offset % f != 0 {
            let x = self.add_u32(root, Operand::Int((offset - offset % f) as i64));
            return Some((x, Operand::Int((offset % f) as i64)));
        }
        // `p + q + offset` with `p` aligned and `q` small.
        let ("add", [p, q, _]) = self.known.definition(root)? else {
            return None;
        };
        for (x, y) in [(p, q), (q, p)] {
            let f = aligned(self, x);
            if f > 1 && self.max_of(y).is_some_and(|m| m + offset % f < f) {
                let x = self.add_u32(x, Operand::Int((offset - offset % f) as i64));
                let y = self.add_u32(y, Operand::Int((offset % f) as i64));
                return Some((x, y));
            }
        }
        None
    }

    pub fn div_u32(&mut self, a: Operand, divisor: usize) -> Operand {
        let max = self.max_of(a);
        match a.as_int() {
            _ if divisor == 1 => a,
            Some(x) => int(x / divisor as i64),
            None if max.is_some_and(|m| m < divisor as u64) => Operand::Int(0),
            None => {
                if let Some((x, q, y)) = self.multiple_plus(a, divisor) {
                    let low = self.div_u32(y, divisor);
                    return self.mad_u32(x, Operand::Int(q as i64), low);
                }
                if let Some((x, _)) = self.aligned_plus_small(a, divisor) {
                    return self.div_u32(x, divisor);
                }
                self.quotient(a, divisor, max.unwrap_or(u32::MAX as u64))
            }
        }
    }

    pub fn rem_u32(&mut self, a: Operand, divisor: usize) -> Operand {
        let max = self.max_of(a);
        match a.as_int() {
            _ if divisor == 1 => Operand::Int(0),
            Some(x) => int(x % divisor as i64),
            None if max.is_some_and(|m| m < divisor as u64) => a,
            None => {
                if let Some((_, _, y)) = self.multiple_plus(a, divisor) {
                    return self.rem_u32(y, divisor);
                }
                if let Some((x, y)) = self.aligned_plus_small(a, divisor) {
                    let low = self.rem_u32(x, divisor);
                    return self.add_u32(low, y);
                }
                self.remainder(a, divisor, max.unwrap_or(u32::MAX as u64))
            }
        }
    }

    pub fn min_u32(&mut self, a: Operand, b: Operand) -> Operand {
        let (ma, mb) = (self.max_of(a), self.max_of(b));
        // `x` when it can never exceed the constant `y`.
        let below = |x: Option<u64>, y: Operand| {
            y.as_int()
                .is_some_and(|y| x.is_some_and(|m| m <= y as u32 as u64))
        };
        match (a.as_int(), b.as_int()) {
            (Some(x), Some(y)) => int(x.min(y)),
            _ if below(ma, b) => a,
            _ if below(mb, a) => b,
            _ => {
                let max = match (ma, mb) {
                    (Some(x), Some(y)) => Some(x.min(y)),
                    (x, y) => x.or(y),
                };
                let [a, b] = sorted(a, b);
                self.integer(("min", [a, b, Operand::Int(0)]), "min.u32", 2, max)
            }
        }
    }

    /// A predicate for `a < b` (unsigned), or `None` when constants or bounds decide it:
    /// `Some` of the known answer is returned as `Err`.
    pub fn lt_u32(&mut self, a: Operand, b: Operand) -> Result<Reg, bool> {
        match (a.as_int(), b.as_int()) {
            (Some(x), Some(y)) => Err((x as u32) < (y as u32)),
            (_, Some(y)) if self.max_of(a).is_some_and(|m| m < y as u32 as u64) => Err(true),
            _ => Ok(self.compare("lt", a, b)),
        }
    }

    /// A predicate for `a == b`, or the answer when both are constants.
    pub fn eq_u32(&mut self, a: Operand, b: Operand) -> Result<Reg, bool> {
        match (a.as_int(), b.as_int()) {
            (Some(x), Some(y)) => Err(x as u32 == y as u32),
            _ => Ok(self.compare("eq", a, b)),
        }
    }

    /// `setp.{cmp}.u32` of `a` and `b`, or the predicate this scope already computed for
    /// it (the rows of a GEMM step share their tap's bounds checks). Only within the
    /// scope: a thread has few predicate registers, and recomputing a comparison costs
    /// one instruction where keeping it alive across a loop may not be free.
    fn compare(&mut self, cmp: &'static str, a: Operand, b: Operand) -> Reg {
        let e = (cmp, [a, b, Operand::Int(0)]);
        if let Some(Operand::Reg(p)) = self.known.lookup_here(&e) {
            return p;
        }
        let p = self.setp(cmp, Ty::U32, a, b);
        self.known.remember(e, p.into());
        p
    }

    /// `a && b`, or the predicate this scope already computed for it.
    pub fn and_pred(&mut self, a: Reg, b: Reg) -> Reg {
        let [x, y] = sorted(a.into(), b.into());
        let e = ("and.pred", [x, y, Operand::Int(0)]);
        if let Some(Operand::Reg(p)) = self.known.lookup_here(&e) {
            return p;
        }
        let p = self.reg(Ty::Pred);
        ins!(self, "and.pred {p}, {a}, {b}");
        self.known.remember(e, p.into());
        p
    }

    /// The global address of element `index` of `size`-byte elements at `base`. An
    /// index known as a root plus a constant is addressed from the root's address with
    /// an immediate offset, when the root's bound shows the sum cannot wrap (`u32`
    /// indices are widened before scaling): the elements of a tile's rows then share
    /// one address computation.
    pub fn address(&mut self, base: Reg, index: Operand, size: usize) -> Address {
        let bytes = |n: u64| (n * size as u64) as i64;
        if let Some(i) = index.as_int() {
            let i = i as u32 as u64;
            if i < OFFSET_LIMIT {
                return Address::new(base, bytes(i));
            }
        }
        let (root, offset) = self.known.split(index);
        let fits = self
            .max_of(root)
            .is_some_and(|m| m + offset <= u32::MAX as u64);
        if offset > 0 && fits {
            let at = self.address(base, root, size);
            return Address::new(at.reg, at.offset + bytes(offset));
        }
        let e = ("address", [base.into(), index, Operand::Int(size as i64)]);
        if let Some(Operand::Reg(d)) = self.known.lookup_here(&e) {
            return Address::new(d, 0);
        }
        let off = self.reg(Ty::U64);
        ins!(self, "mul.wide.u32 {off}, {index}, {size}");
        let d = self.reg(Ty::U64);
        ins!(self, "add.s64 {d}, {base}, {off}");
        self.known.remember(e, d.into());
        Address::new(d, 0)
    }
}

fn gcd(a: u64, b: u64) -> u64 {
    match b {
        0 => a,
        _ => gcd(b, a % b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(b: &Builder) -> Vec<String> {
        b.body()
            .lines()
            .filter(|l| !l.contains(".reg"))
            .map(|l| l.trim().to_string())
            .collect()
    }

    #[test]
    fn bounds_decide_divisions_remainders_clamps_and_comparisons() {
        let mut b = Builder::new();
        let tid = b.reg(Ty::U32);
        ins!(b, "mov.u32 {tid}, %tid.x");
        b.bound(tid, 255);
        let w = b.rem_u32(tid.into(), 56);
        assert_eq!(b.rem_u32(w, 56), w, "a remainder is below its divisor");
        assert_eq!(b.lt_u32(w, Operand::Int(56)), Err(true));
        assert_eq!(b.min_u32(w, Operand::Int(55)), w);
        let k = b.min_u32(tid.into(), Operand::Int(63));
        assert_eq!(b.div_u32(k, 64), Operand::Int(0), "a clamped index");
        // Unbounded values keep their arithmetic.
        let x = b.reg(Ty::U32);
        ins!(b, "ld.global.u32 {x}, [%rd1]");
        assert!(matches!(b.div_u32(x.into(), 64), Operand::Reg(_)));
        assert!(b.lt_u32(x.into(), Operand::Int(56)).is_ok());
    }

    #[test]
    fn multiples_of_the_divisor_leave_the_remainder_and_scale_the_quotient() {
        let mut b = Builder::new();
        let tid = b.reg(Ty::U32);
        ins!(b, "mov.u32 {tid}, %tid.x");
        b.bound(tid, 255);
        let e = b.reg(Ty::U32);
        ins!(b, "mov.u32 {e}, 0");
        b.bound(e, 15);
        // The e-th element of a thread in a band 64 wide: (e * 256 + tid).
        let flat = b.mad_u32(e.into(), Operand::Int(256), tid.into());
        let col = b.rem_u32(flat, 64);
        assert_eq!(col, b.rem_u32(tid.into(), 64));
        let row = b.div_u32(flat, 64);
        let tid_row = b.div_u32(tid.into(), 64);
        assert_eq!(row, b.mad_u32(e.into(), Operand::Int(4), tid_row));
        // Not a multiple: the division stays.
        let other = b.rem_u32(flat, 56);
        for v in [col, row, other] {
            ins!(b, "st.global.u32 [%rd1], {v}");
        }
        let text = lines(&b);
        assert!(
            !text.iter().any(|l| l.contains(&format!(", {flat}, 64"))),
            "{text:?}"
        );
        // (Divisions are multiply-highs: `ptx/divide.rs`.)
        assert!(text
            .iter()
            .any(|l| l.starts_with("mul.hi.u32") && l.contains(&format!(", {flat}, "))));
        assert!(text
            .iter()
            .any(|l| l.starts_with(&format!("sub.u32 {other}, {flat}, "))));
    }

    #[test]
    fn an_aligned_step_plus_a_small_row_splits_at_the_step() {
        let mut b = Builder::new();
        let kt = b.reg(Ty::U32);
        ins!(b, "mov.u32 {kt}, 0");
        b.bound(kt, 17);
        let lane = b.reg(Ty::U32);
        ins!(b, "mov.u32 {lane}, %laneid");
        b.bound(lane, 31);
        // The k of row 5 of the step after step kt, 32 rows a step, over channels 64.
        let step = b.mul_u32(kt.into(), Operand::Int(32));
        let next = b.add_u32(step, Operand::Int(32));
        let row = b.add_u32(next, Operand::Int(5));
        let channel = b.rem_u32(row, 64);
        let tap = b.div_u32(row, 64);
        assert_eq!(tap, b.div_u32(next, 64), "the row's tap is its step's");
        let step_channel = b.rem_u32(next, 64);
        assert_eq!(
            b.split(channel),
            (step_channel, 5),
            "the step's channel plus 5"
        );
        // A row in a register below 32 (a lane's row) splits the same way.
        let lanes_row = b.add_u32(next, lane.into());
        assert_eq!(b.div_u32(lanes_row, 64), tap);
        let lanes_channel = b.rem_u32(lanes_row, 64);
        assert_eq!(lanes_channel, b.add_u32(step_channel, lane.into()));
        // 48 channels: 32 does not divide them, 16 does. `next + 17` is the multiple of
        // 16 `next + 16` plus 1: one remainder of that, plus 1.
        let odd = b.add_u32(next, Operand::Int(17));
        let kept = b.rem_u32(odd, 48);
        let sixteen_on = b.add_u32(next, Operand::Int(16));
        let base = b.rem_u32(sixteen_on, 48);
        assert_eq!(b.split(kept), (base, 1));
        ins!(b, "st.global.u32 [%rd1], {kept}");
        for v in [channel, tap, lanes_channel] {
            ins!(b, "st.global.u32 [%rd1], {v}");
        }
        // One division by 64 (a shift), one remainder by 64 (a mask), one by 48 (a
        // multiply-high: `ptx/divide.rs`).
        let text = lines(&b);
        let count = |op: &str| text.iter().filter(|l| l.starts_with(op)).count();
        assert_eq!(
            [count("shr.u32"), count("and.b32"), count("mul.hi.u32")],
            [1, 1, 1],
            "{text:?}"
        );
    }

    #[test]
    fn a_quotient_and_remainder_put_back_together_are_the_index() {
        let mut b = Builder::new();
        let x = b.reg(Ty::U32);
        ins!(b, "mov.u32 {x}, %tid.x");
        b.bound(x, 8191);
        for d in [256, 56] {
            let (q, r) = (b.div_u32(x.into(), d), b.rem_u32(x.into(), d));
            assert_eq!(b.mad_u32(q, Operand::Int(d as i64), r), x.into());
            assert_eq!(b.mad_u32(Operand::Int(d as i64), q, r), x.into());
        }
        // Another divisor is another index.
        let (q, r) = (b.div_u32(x.into(), 56), b.rem_u32(x.into(), 56));
        assert_ne!(b.mad_u32(q, Operand::Int(57), r), x.into());
    }

    #[test]
    fn comparisons_and_conjunctions_are_shared_within_a_scope() {
        let mut b = Builder::new();
        let x = b.reg(Ty::U32);
        ins!(b, "ld.global.u32 {x}, [%rd1]");
        let y = b.reg(Ty::U32);
        ins!(b, "ld.global.u32 {y}, [%rd2]");
        b.open_scope();
        let p = b.lt_u32(x.into(), Operand::Int(28)).unwrap();
        let q = b.eq_u32(y.into(), Operand::Int(0)).unwrap();
        assert_eq!(b.lt_u32(x.into(), Operand::Int(28)), Ok(p));
        assert_eq!(b.eq_u32(y.into(), Operand::Int(0)), Ok(q));
        let both = b.and_pred(p, q);
        assert_eq!(b.and_pred(q, p), both);
        b.close_scope();
        // Outside the scope that computed them they are computed again.
        assert_ne!(b.lt_u32(x.into(), Operand::Int(28)), Ok(p));
        assert_eq!(b.eq_u32(Operand::Int(3), Operand::Int(3)), Err(true));
    }

    #[test]
    fn the_same_operation_gives_the_same_register() {
        let mut b = Builder::new();
        let x = b.reg(Ty::U32);
        ins!(b, "ld.global.u32 {x}, [%rd1]");
        let y = b.reg(Ty::U32);
        ins!(b, "ld.global.u32 {y}, [%rd2]");
        let first = b.mad_u32(x.into(), Operand::Int(56), y.into());
        assert_eq!(b.mad_u32(Operand::Int(56), x.into(), y.into()), first);
        b.open_scope();
        let inner = b.div_u32(x.into(), 3);
        b.close_scope();
        // Computed in a closed scope (a branch): not available after it.
        assert_ne!(b.div_u32(x.into(), 3), inner);
    }

    #[test]
    fn offsets_from_a_bounded_root_become_immediates() {
        let mut b = Builder::new();
        let base = b.reg(Ty::U64);
        let tid = b.reg(Ty::U32);
        ins!(b, "mov.u32 {tid}, %tid.x");
        b.bound(tid, 255);
        // Rows r and r + 3 of a [256][56] f32 array.
        let row = b.add_u32(tid.into(), Operand::Int(3));
        let at = b.mad_u32(row, Operand::Int(56), Operand::Int(7));
        let root = b.mul_u32(tid.into(), Operand::Int(56));
        let first = b.address(base, root, 4);
        let later = b.address(base, at, 4);
        assert_eq!(later.reg, first.reg, "one address computation");
        assert_eq!(later.offset - first.offset, 4 * (3 * 56 + 7));
        ins!(b, "ld.global.f32 %f1, [{first}]");
        ins!(b, "ld.global.f32 %f2, [{later}]");
        // The index arithmetic only the immediate used is dead code.
        let _ = b.mix();
        let text = lines(&b).join("\n");
        assert!(!text.contains("add.u32"), "{text}");
        assert_eq!(text.matches("mul.wide.u32").count(), 1, "{text}");
        // An unbounded root could wrap: no immediate.
        let x = b.reg(Ty::U32);
        ins!(b, "ld.global.u32 {x}, [%rd1]");
        let shifted = b.add_u32(x.into(), Operand::Int(1));
        assert_eq!(b.address(base, shifted, 4).offset, 0);
    }
}
