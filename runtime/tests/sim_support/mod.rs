//! Helpers for the simulator tests: the hand-written PTX under `tests/ptx`, launches that
//! must succeed, launches that must fault, and deterministic test inputs.
#![allow(dead_code)]

use calib_runtime::sim::{
    self, Fault, GlobalMemory, KernelArg, Module, SimError, SimOptions, Stats,
};
use std::path::{Path, PathBuf};

/// The folder of hand-written PTX programs, relative to this crate.
pub fn ptx_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/ptx")
}

pub fn ptx(file: &str) -> String {
    let path = ptx_dir().join(file);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

pub fn module(file: &str) -> Module {
    parse_text(&ptx(file))
}

pub fn parse_text(text: &str) -> Module {
    sim::parse(text).unwrap_or_else(|e| panic!("{e}"))
}

/// One launch: geometry and arguments.
pub struct Launch<'a> {
    pub kernel: &'a str,
    pub grid: [u32; 3],
    pub block: [u32; 3],
    pub shared: usize,
    pub args: Vec<KernelArg>,
}

impl<'a> Launch<'a> {
    pub fn new(kernel: &'a str, grid: u32, block: u32, args: Vec<KernelArg>) -> Self {
        Launch {
            kernel,
            grid: [grid, 1, 1],
            block: [block, 1, 1],
            shared: 0,
            args,
        }
    }

    pub fn try_run(
        &self,
        m: &Module,
        mem: &mut GlobalMemory,
        options: &SimOptions,
    ) -> Result<Stats, SimError> {
        sim::simulate_with(
            options,
            m,
            self.kernel,
            self.grid,
            self.block,
            self.shared,
            &self.args,
            mem,
        )
    }

    /// Runs the launch, which must succeed.
    pub fn run(&self, m: &Module, mem: &mut GlobalMemory) -> Stats {
        self.try_run(m, mem, &SimOptions::default())
            .unwrap_or_else(|e| panic!("launch of `{}` failed: {e}", self.kernel))
    }

    /// Runs the launch, which must fault; returns the fault.
    pub fn fault(&self, m: &Module, mem: &mut GlobalMemory) -> Fault {
        self.fault_with(m, mem, &SimOptions::default())
    }

    pub fn fault_with(&self, m: &Module, mem: &mut GlobalMemory, options: &SimOptions) -> Fault {
        match self.try_run(m, mem, options) {
            Err(SimError::Fault(f)) => *f,
            other => panic!("expected `{}` to fault, got {other:?}", self.kernel),
        }
    }
}

/// The ptxas binary, or `None` when the environment asks to skip ptxas checks
/// (`CALIB_SKIP_PTXAS=1`). Without either, the test fails saying where it looked.
pub fn ptxas_or_skip() -> Option<PathBuf> {
    if std::env::var("CALIB_SKIP_PTXAS").as_deref() == Ok("1") {
        eprintln!("CALIB_SKIP_PTXAS=1: ptxas checks skipped");
        return None;
    }
    Some(sim::ptxas::find_ptxas().unwrap_or_else(|e| panic!("{e}")))
}

/// `text` with the lines tagged `moved` taken out of each kernel and put back just
/// before (or after) that kernel's line tagged `anchor`: how the hazard tests plant a
/// misplaced instruction in an otherwise correct kernel.
pub fn move_tagged(text: &str, moved: &str, anchor: &str, before: bool) -> String {
    let mut out = String::new();
    for (i, kernel) in text.split(".visible .entry").enumerate() {
        if i > 0 {
            out.push_str(".visible .entry");
        }
        let lines: Vec<&str> = kernel.split_inclusive('\n').collect();
        let taken: Vec<&str> = lines
            .iter()
            .copied()
            .filter(|l| l.contains(moved))
            .collect();
        for line in lines.iter().filter(|l| !l.contains(moved)) {
            let at_anchor = line.contains(anchor);
            if at_anchor && before {
                out.extend(taken.iter().copied());
            }
            out.push_str(line);
            if at_anchor && !before {
                out.extend(taken.iter().copied());
            }
        }
    }
    out
}

/// `x` rounded to TF32 (10 mantissa bits) to nearest, ties away from zero, as
/// `cvt.rna.tf32.f32` does; computed in f64 from the spacing of TF32 values around `x`.
pub fn tf32_rna(x: f32) -> f32 {
    if !x.is_finite() || x == 0.0 {
        return x;
    }
    let exponent = ((x.to_bits() >> 23 & 0xff) as i32 - 127).max(-126);
    let spacing = 2f64.powi(exponent - 10);
    let q = x.abs() as f64 / spacing;
    let units = if q - q.floor() >= 0.5 {
        q.floor() + 1.0
    } else {
        q.floor()
    };
    (x.signum() as f64 * units * spacing) as f32
}

/// A device pointer argument.
pub fn ptr(p: u64) -> KernelArg {
    KernelArg::U64(p)
}

/// Small deterministic pseudo-random inputs (xorshift64*).
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed.max(1))
    }

    pub fn next_u32(&mut self) -> u32 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 32) as u32
    }

    /// Uniform in `[lo, hi)`.
    pub fn f32_in(&mut self, lo: f32, hi: f32) -> f32 {
        lo + (hi - lo) * (self.next_u32() >> 8) as f32 / (1u32 << 24) as f32
    }

    pub fn f32s(&mut self, n: usize, lo: f32, hi: f32) -> Vec<f32> {
        (0..n).map(|_| self.f32_in(lo, hi)).collect()
    }
}
