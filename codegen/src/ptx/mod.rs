//! A small PTX writer: typed virtual registers declared up front, labels, instruction
//! text, and the module around one entry.
//!
//! Registers are virtual and never reused: ptxas does the allocation, so the emitters
//! stay simple and every value keeps one name (accumulators and loop counters, which
//! are updated in place, are the exception).

mod arith;
mod census;
mod divide;
mod known;
mod lanes;
mod liveness;
mod types;

pub use calib_cost::InstructionMix;
pub use types::{Address, Operand, Reg, RegClass, Ty};

use std::fmt::Write;

/// The PTX ISA version and target every module declares: sm_80 PTX also assembles for
/// sm_90.
pub const VERSION: &str = "7.8";
pub const TARGET: &str = "sm_80";

/// Appends one instruction, `format!`-style: `ins!(b, "add.rn.f32 {d}, {x}, {y}")`.
macro_rules! ins {
    ($b:expr, $($fmt:tt)*) => {
        $b.emit(format!($($fmt)*))
    };
}
pub(crate) use ins;

/// A branch target.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Label(u32);

impl std::fmt::Display for Label {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "$L{}", self.0)
    }
}

/// A line of an entry's body: an instruction with its share of the census, or a label.
#[derive(Debug)]
enum Line {
    Instruction(String, census::Share),
    Label(Label),
    /// A statement for ptxas that executes nothing (`.pragma "nounroll"`).
    Directive(String),
}

/// The body of one entry under construction.
#[derive(Debug, Default)]
pub struct Builder {
    lines: Vec<Line>,
    counts: [u32; RegClass::ALL.len()],
    labels: u32,
    instructions: usize,
    counter: census::Counter,
    known: known::Known,
    lanes: lanes::Lanes,
}

impl Builder {
    pub fn new() -> Self {
        Self::default()
    }

    /// A fresh register of type `ty`.
    pub fn reg(&mut self, ty: Ty) -> Reg {
        let slot = &mut self.counts[ty.class().index()];
        *slot += 1;
        Reg {
            class: ty.class(),
            id: *slot,
        }
    }

    /// Appends an instruction (without its `;`).
    pub fn emit(&mut self, text: String) {
        self.known.written(&text);
        self.instructions += 1;
        let share = self.counter.count(&text);
        self.lines.push(Line::Instruction(text, share));
    }

    /// Declares that the `u32` register `r`, written once, never exceeds `max`: index
    /// arithmetic on it folds what that decides (see `known.rs`).
    pub fn bound(&mut self, r: Reg, max: u64) {
        self.known.bound(r, Some(max));
    }

    /// Withdraws [`Builder::bound`] from `r` before it is written again (a loop counter
    /// at its increment).
    pub fn unbound(&mut self, r: Reg) {
        self.known.forget(r);
    }

    /// `d` where `x` is known to hold `base + d` (a constant `d`, 0 when they are the
    /// same operand).
    pub fn offset_from(&self, x: Operand, base: Operand) -> Option<u64> {
        if let (Some(a), Some(b)) = (x.as_int(), base.as_int()) {
            return (a >= b).then(|| (a - b) as u64);
        }
        let ((rx, ox), (rb, ob)) = (self.known.split(x), self.known.split(base));
        (rx == rb && ox >= ob).then(|| ox - ob)
    }

    /// The largest value `x` can hold, when constants or bounds say.
    pub fn max_of(&self, x: Operand) -> Option<u64> {
        self.known.max(x)
    }

    /// Opens a scope for remembered index expressions: code that does not run on every
    /// path past it (a loop body, a branch arm).
    pub fn open_scope(&mut self) {
        self.known.open();
    }

    /// Closes what [`Builder::open_scope`] opened, forgetting its expressions.
    pub fn close_scope(&mut self) {
        self.known.close();
    }

    /// Starts code that runs `trips` times per run of the code around it (a loop body,
    /// or with a fraction, a branch taken that often): for the [`InstructionMix`].
    pub fn enter_loop(&mut self, trips: f64) {
        self.counter.enter(trips);
    }

    /// Ends what [`Builder::enter_loop`] started.
    pub fn exit_loop(&mut self) {
        self.counter.exit();
    }

    /// The next shared-memory access takes `ways` wavefronts (lanes colliding on a
    /// bank), as the emitter that laid out the array knows.
    pub fn shared_ways(&mut self, ways: usize) {
        self.counter.next_shared_ways = Some(ways as f64);
    }

    /// Marks the instructions emitted from now on as independent of each other (none
    /// waits for another's result), until called with `false`.
    pub fn independent(&mut self, on: bool) {
        self.counter.independent = on;
    }

    /// Marks the instructions emitted from now on as `n` interleaved independent chains
    /// (until called with 1): for the [`InstructionMix`], which counts all but one
    /// chain's share as independent.
    pub fn parallel_chains(&mut self, n: usize) {
        self.counter.chains = n.max(1);
    }

    /// What one thread executes, as counted so far, dead code left out.
    pub fn mix(&mut self) -> InstructionMix {
        let mut mix = self.counter.finish();
        let live = self.live();
        let instructions = self.lines.iter().filter_map(|l| match l {
            Line::Instruction(_, share) => Some(share),
            Line::Label(_) | Line::Directive(_) => None,
        });
        for (share, live) in instructions.zip(live) {
            if !live {
                census::Counter::uncount(&mut mix, share);
            }
        }
        mix
    }

    /// Whether each instruction, in order, is live ([`liveness`]).
    fn live(&self) -> Vec<bool> {
        let texts: Vec<&str> = self
            .lines
            .iter()
            .filter_map(|l| match l {
                Line::Instruction(text, _) => Some(text.as_str()),
                Line::Label(_) | Line::Directive(_) => None,
            })
            .collect();
        liveness::live(&texts)
    }

    /// Instructions emitted so far (a guard against runaway code).
    pub fn instructions(&self) -> usize {
        self.instructions
    }

    pub fn label(&mut self) -> Label {
        self.labels += 1;
        Label(self.labels)
    }

    pub fn place(&mut self, label: Label) {
        self.lines.push(Line::Label(label));
    }

    /// Asks ptxas to keep the loop whose label was just placed rolled. A GEMM's `k`
    /// loop, fully unrolled, made ptxas switch the epilogue's divisions by constants to
    /// its general division sequence (more than twice the instructions); rolled, it
    /// keeps them as multiply-high.
    pub fn keep_rolled(&mut self) {
        self.lines
            .push(Line::Directive(".pragma \"nounroll\"".into()));
    }

    pub fn bra(&mut self, target: Label) {
        ins!(self, "bra.uni {target}");
    }

    /// Branches to `target` where `p` is true (or false, with `when` false).
    pub fn bra_if(&mut self, p: Reg, when: bool, target: Label) {
        let not = if when { "" } else { "!" };
        ins!(self, "@{not}{p} bra {target}");
    }

    /// A register holding `value` (a `mov` unless it already is one).
    pub fn materialize(&mut self, value: Operand, ty: Ty) -> Reg {
        match value {
            Operand::Reg(r) => r,
            imm => {
                let r = self.reg(ty);
                ins!(self, "mov.{ty} {r}, {imm}");
                r
            }
        }
    }

    /// `p = a <cmp> b` for a comparison such as `lt` on type `ty`.
    pub fn setp(&mut self, cmp: &str, ty: Ty, a: Operand, b: Operand) -> Reg {
        let p = self.reg(Ty::Pred);
        ins!(self, "setp.{cmp}.{ty} {p}, {a}, {b}");
        p
    }

    /// The entry's register declarations followed by its instructions.
    fn body(&self) -> String {
        let mut out = String::new();
        for class in RegClass::ALL {
            let n = self.counts[class.index()];
            if n > 0 {
                writeln!(
                    out,
                    "\t.reg {} {}<{}>;",
                    class.decl(),
                    class.prefix(),
                    n + 1
                )
                .unwrap();
            }
        }
        let mut live = self.live().into_iter();
        for line in &self.lines {
            match line {
                Line::Instruction(text, _) => {
                    if live.next().unwrap_or(true) {
                        writeln!(out, "\t{text};").unwrap();
                    }
                }
                Line::Label(label) => writeln!(out, "{label}:").unwrap(),
                Line::Directive(text) => writeln!(out, "\t{text};").unwrap(),
            }
        }
        out
    }
}

/// One `.entry`: pointer parameters, a fixed block size, optional dynamic shared
/// memory, and the comment lines that head its file.
#[derive(Debug)]
pub struct Entry<'a> {
    pub name: &'a str,
    pub params: &'a [String],
    pub threads: u32,
    /// A cap on registers per thread (`.maxnreg`), so that more blocks fit an SM.
    pub max_registers: Option<u32>,
    /// Whether the body addresses the dynamic shared array `smem`.
    pub shared: bool,
    pub header: &'a [String],
}

/// The name of the dynamic shared-memory array, declared at module scope.
pub const SHARED: &str = "smem";
const SHARED_DECL: &str = ".extern .shared .align 16 .b8 smem[];";

impl Entry<'_> {
    /// A complete module holding this entry alone.
    pub fn module(&self, body: &Builder) -> String {
        let mut out = String::new();
        for line in self.header {
            writeln!(out, "// {line}").unwrap();
        }
        writeln!(
            out,
            ".version {VERSION}\n.target {TARGET}\n.address_size 64\n"
        )
        .unwrap();
        if self.shared {
            writeln!(out, "{SHARED_DECL}\n").unwrap();
        }
        let params: Vec<String> = self
            .params
            .iter()
            .map(|p| format!("\t.param .u64 {p}"))
            .collect();
        writeln!(
            out,
            ".visible .entry {}(\n{}\n)\n.reqntid {}, 1, 1\n{}{{",
            self.name,
            params.join(",\n"),
            self.threads,
            self.max_registers
                .map_or(String::new(), |r| format!(".maxnreg {r}\n"))
        )
        .unwrap();
        out.push_str(&body.body());
        out.push_str("\tret;\n}\n");
        out
    }
}

/// Joins standalone modules into one (their entries under a single header), for tools
/// such as ptxas that are faster on one file. Entry names must differ.
pub fn join_modules<'a>(modules: impl IntoIterator<Item = &'a str>) -> String {
    let mut out =
        format!(".version {VERSION}\n.target {TARGET}\n.address_size 64\n\n{SHARED_DECL}\n\n");
    for m in modules {
        let start = m.find(".visible .entry").unwrap_or(0);
        out.push_str(&m[start..]);
        out.push('\n');
    }
    out
}
