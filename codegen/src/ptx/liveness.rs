//! Dead-code removal: instructions that only compute a register no live instruction
//! reads are left out of the module and of the instruction count.
//!
//! Emitters compute index expressions eagerly and let addresses absorb constant offsets
//! (`[%rd4+64]`), so the full index of a tile's second row may never be read; ptxas
//! would drop it too, and the cost model must not count it. Only side-effect-free
//! arithmetic, comparisons and moves with one destination register are candidates;
//! loads, stores, barriers, branches and tensor-core operations always stay.

use std::collections::HashSet;

/// Opcodes (before the first `.`) of instructions with no effect beyond their
/// destination register.
const PURE: [&str; 17] = [
    "add", "sub", "mul", "mad", "div", "rem", "min", "max", "setp", "selp", "mov", "shl", "shr",
    "and", "or", "xor", "cvt",
];

/// A register name (`%r12`, `%rd3`, `%p4`, `%f7`) as it appears in instruction text.
type Name = String;

/// The register an instruction alone defines (its first operand), when it is a
/// candidate for removal.
fn pure_destination(text: &str) -> Option<Name> {
    let text = text.trim_start();
    let text = match text.strip_prefix('@') {
        Some(rest) => rest.split_once(char::is_whitespace)?.1.trim_start(),
        None => text,
    };
    let (opcode, operands) = text.split_once(char::is_whitespace)?;
    let base = opcode.split('.').next().unwrap_or("");
    if !PURE.contains(&base) {
        return None;
    }
    let first = operands.split(',').next()?.trim();
    let is_register = first.starts_with('%') && first[1..].chars().any(|c| c.is_ascii_digit());
    is_register.then(|| first.to_string())
}

/// Every register name `text` mentions, destination included.
fn registers(text: &str) -> impl Iterator<Item = &str> {
    text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '%' || c == '_'))
        .filter(|t| {
            t.starts_with('%')
                && t.len() > 1
                && t[1..].chars().last().is_some_and(|c| c.is_ascii_digit())
        })
}

/// Which of `instructions` are live: not a candidate, or defining a register that a
/// live instruction reads (loop-carried reads included: the analysis ignores order).
pub(super) fn live(instructions: &[&str]) -> Vec<bool> {
    let destinations: Vec<Option<Name>> =
        instructions.iter().map(|t| pure_destination(t)).collect();
    let mut live: Vec<bool> = destinations.iter().map(|d| d.is_none()).collect();
    loop {
        let mut read: HashSet<&str> = HashSet::new();
        for (i, text) in instructions.iter().enumerate() {
            if !live[i] {
                continue;
            }
            // A candidate's own destination is not a read of it (an in-place update
            // such as `add %r1, %r1, 1` reads it again and is counted below).
            let skip = destinations[i].as_deref();
            let mut seen_destination = false;
            for r in registers(text) {
                if Some(r) == skip && !seen_destination {
                    seen_destination = true;
                    continue;
                }
                read.insert(r);
            }
        }
        let mut changed = false;
        for (i, d) in destinations.iter().enumerate() {
            if let Some(d) = d {
                let now = read.contains(d.as_str());
                changed |= now != live[i];
                live[i] = now;
            }
        }
        if !changed {
            return live;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unread_arithmetic_goes_and_what_feeds_memory_stays() {
        let code = [
            "mov.u32 %r1, %tid.x",
            "add.u32 %r2, %r1, 1",         // read only by the dead %r3
            "mad.lo.u32 %r3, %r2, 4, %r1", // never read
            "mul.wide.u32 %rd1, %r1, 4",
            "add.s64 %rd2, %rd0, %rd1",
            "ld.global.nc.f32 %f1, [%rd2+4]",
            "st.global.f32 [%rd2], %f1",
            "mov.u32 %r4, 0", // a loop counter: read by its own increment and the test
            "add.u32 %r4, %r4, 1",
            "setp.lt.u32 %p1, %r4, 8",
            "@%p1 bra $L1",
        ];
        let live = live(&code);
        assert_eq!(
            live,
            vec![true, false, false, true, true, true, true, true, true, true, true]
        );
    }

    #[test]
    fn a_counter_only_its_own_increment_reads_is_dead() {
        let code = ["mov.u32 %r4, 0", "add.u32 %r4, %r4, 1", "mov.u32 %r5, %r4"];
        assert_eq!(live(&code), vec![false, false, false]);
    }
}
