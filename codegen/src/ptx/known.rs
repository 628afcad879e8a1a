//! What the builder knows about its integer registers, so that index arithmetic is
//! emitted once and folds what static shapes decide:
//!
//! * *upper bounds*: `x % 56` of an `x` below 56 is `x`, `x / 64` of an `x` clamped to
//!   63 is 0, and `x < 56` of a remainder by 56 is true (a 1x1 convolution's window
//!   coordinates, a `k` that cannot pass the end of the problem);
//! * *available expressions*: the same operation on the same operands gives the register
//!   that already holds it (the coordinates of a tile's rows, recomputed per element).
//!
//! Both are facts about a register's value, so the builder checks every instruction it
//! emits. An expression whose register (or operand) is written again in place is
//! forgotten. A bound is relied on as soon as it is known, so writing a bounded register
//! again is a code-generation bug that fails loudly; a loop counter's bound is withdrawn
//! before its increment. Expressions are scoped like the emitter's memo: one computed in
//! a loop body or a branch is forgotten when that code closes, since it does not
//! dominate what follows.

use super::{Operand, Reg, RegClass};
use crate::scope::ScopedMap;
use std::collections::{HashMap, HashSet};

/// An integer operation and its operands (commutative ones in a canonical order).
pub(super) type Expression = (&'static str, [Operand; 3]);

#[derive(Debug)]
pub(super) struct Known {
    max: HashMap<Reg, u64>,
    /// Registers holding another operand plus a constant: `r = root + offset`.
    offsets: HashMap<Reg, (Operand, u64)>,
    /// The expression each remembered register was computed as.
    definitions: HashMap<Reg, Expression>,
    expressions: ScopedMap<Expression, Operand>,
    /// Registers written so far (a second write is an in-place update).
    written: HashSet<Reg>,
    /// Registers that appear in a remembered expression, for forgetting it.
    remembered: HashSet<Reg>,
}

impl Default for Known {
    fn default() -> Self {
        Known {
            max: HashMap::new(),
            offsets: HashMap::new(),
            definitions: HashMap::new(),
            expressions: ScopedMap::new(),
            written: HashSet::new(),
            remembered: HashSet::new(),
        }
    }
}

impl Known {
    /// The largest value `x` can hold, if known.
    pub fn max(&self, x: Operand) -> Option<u64> {
        match x {
            Operand::Int(v) => Some(v as u32 as u64),
            Operand::Reg(r) => self.max.get(&r).copied(),
            Operand::F32(_) => None,
        }
    }

    /// Records that `r` never exceeds `max` (ignored beyond `u32`'s range, where
    /// arithmetic wraps).
    pub fn bound(&mut self, r: Reg, max: Option<u64>) {
        match max {
            Some(m) if m <= u32::MAX as u64 => {
                self.max.insert(r, m);
            }
            _ => {}
        }
    }

    /// Forgets `r`'s bound (a loop counter leaving its body).
    pub fn forget(&mut self, r: Reg) {
        self.max.remove(&r);
    }

    /// `x` as a root operand plus a constant offset (`(x, 0)` when none is known).
    pub fn split(&self, x: Operand) -> (Operand, u64) {
        match x {
            Operand::Reg(r) => self.offsets.get(&r).copied().unwrap_or((x, 0)),
            _ => (x, 0),
        }
    }

    /// Records that `r` holds `root + offset`.
    pub fn offset(&mut self, r: Reg, root: Operand, offset: u64) {
        if let Operand::Reg(q) = root {
            self.remembered.insert(q);
        }
        self.offsets.insert(r, (root, offset));
    }

    /// The register already holding `e`, if any.
    pub fn lookup(&self, e: &Expression) -> Option<Operand> {
        self.expressions.get(e)
    }

    /// The register already holding `e` if the current scope computed it: for values
    /// that are costly to keep alive across code that runs conditionally (a 64-bit
    /// address over a branch is a spill candidate).
    pub fn lookup_here(&self, e: &Expression) -> Option<Operand> {
        self.expressions.get_innermost(e)
    }

    /// Remembers that `result` holds `e` until the current scope closes.
    pub fn remember(&mut self, e: Expression, result: Operand) {
        for x in e.1.iter().chain([&result]) {
            if let Operand::Reg(r) = x {
                self.remembered.insert(*r);
            }
        }
        if let Operand::Reg(r) = result {
            self.definitions.insert(r, e);
        }
        self.expressions.insert(e, result);
    }

    /// The expression register `x` was computed as, if remembered (a fact about its one
    /// value, so not scoped).
    pub fn definition(&self, x: Operand) -> Option<Expression> {
        match x {
            Operand::Reg(r) => self.definitions.get(&r).copied(),
            _ => None,
        }
    }

    pub fn open(&mut self) {
        self.expressions.push();
    }

    pub fn close(&mut self) {
        self.expressions.pop();
    }

    /// Notes the register instruction `text` writes: a bounded one must not be written
    /// twice, and expressions involving one written again are forgotten.
    pub fn written(&mut self, text: &str) {
        let Some(dest) = destination(text) else {
            return;
        };
        if self.written.insert(dest) {
            return;
        }
        assert!(
            !self.max.contains_key(&dest),
            "code generation writes the bounded register {dest} twice: `{text}`"
        );
        if self.remembered.remove(&dest) {
            let mentions = |e: &Expression, v: &Operand| {
                e.1.iter().chain([v]).any(|x| *x == Operand::Reg(dest))
            };
            self.expressions.retain(|e, v| !mentions(e, v));
            self.offsets
                .retain(|r, (root, _)| *r != dest && *root != Operand::Reg(dest));
            let mentions =
                |r: &Reg, e: &Expression| *r == dest || e.1.contains(&Operand::Reg(dest));
            self.definitions.retain(|r, e| !mentions(r, e));
        }
        self.offsets.remove(&dest);
        self.definitions.remove(&dest);
    }
}

/// The integer or predicate register an instruction writes first, if it names one
/// (`add.u32 %r5, ...`, `@%p2 mov.u32 %r7, ...`, `setp.lt.u32 %p3, ...`).
fn destination(text: &str) -> Option<Reg> {
    let mut text = text.trim_start();
    if text.starts_with('@') {
        text = text.split_once(char::is_whitespace)?.1.trim_start();
    }
    let (opcode, operands) = text.split_once(char::is_whitespace)?;
    if opcode.starts_with("st.") || opcode.starts_with("bra") {
        return None;
    }
    let first = operands.split(',').next()?.trim();
    let (class, id) = if let Some(id) = first.strip_prefix("%rd") {
        (RegClass::B64, id)
    } else if let Some(id) = first.strip_prefix("%r") {
        (RegClass::B32, id)
    } else if let Some(id) = first.strip_prefix("%p") {
        (RegClass::Pred, id)
    } else {
        return None;
    };
    let id = id.parse().ok()?;
    (class != RegClass::B64).then_some(Reg { class, id })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(id: u32) -> Reg {
        Reg {
            class: RegClass::B32,
            id,
        }
    }

    #[test]
    fn destinations_are_the_first_register_operand() {
        assert_eq!(destination("add.u32 %r5, %r1, 3"), Some(r(5)));
        assert_eq!(destination("@!%p1 mov.u32 %r7, %r2"), Some(r(7)));
        let p3 = Reg {
            class: RegClass::Pred,
            id: 3,
        };
        assert_eq!(destination("setp.lt.u32 %p3, %r1, 4"), Some(p3));
        assert_eq!(destination("cvta.to.global.u64 %rd5, %rd5"), None);
        assert_eq!(destination("st.shared.u16 [%r3], %r4"), None);
        assert_eq!(destination("@%p1 bra $L2"), None);
        assert_eq!(destination("add.f32 %f2, %f1, %f1"), None);
    }

    #[test]
    fn an_expression_is_forgotten_when_its_operand_is_written_again() {
        let mut k = Known::default();
        let e: Expression = ("add", [r(1).into(), Operand::Int(1), Operand::Int(0)]);
        k.written("mov.u32 %r1, 0");
        k.written("add.u32 %r2, %r1, 1");
        k.remember(e, r(2).into());
        assert_eq!(k.lookup(&e), Some(r(2).into()));
        k.written("add.u32 %r1, %r1, 1");
        assert_eq!(k.lookup(&e), None);
    }

    #[test]
    fn expressions_of_a_closed_scope_are_forgotten() {
        let mut k = Known::default();
        let e: Expression = ("rem", [r(1).into(), Operand::Int(3), Operand::Int(0)]);
        k.open();
        k.remember(e, r(2).into());
        assert_eq!(k.lookup(&e), Some(r(2).into()));
        k.close();
        assert_eq!(k.lookup(&e), None);
    }

    #[test]
    #[should_panic(expected = "bounded register")]
    fn writing_a_bounded_register_again_fails() {
        let mut k = Known::default();
        k.written("mov.u32 %r1, %tid.x");
        k.bound(r(1), Some(255));
        k.written("add.u32 %r1, %r1, 1");
    }
}
