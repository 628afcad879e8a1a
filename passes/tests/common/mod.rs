//! Helpers shared by the test binaries: a deterministic generator and an f64 runner.

#![allow(dead_code)] // each test binary uses a different subset

use calib_ir::Graph;
use calib_runtime::{reference, Bindings, HostTensor, Outputs};
use std::collections::BTreeMap;

/// A tiny deterministic generator (SplitMix64), so every failure reproduces.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `[lo, hi)`.
    pub fn uniform(&mut self, lo: f64, hi: f64) -> f64 {
        let unit = (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        lo + (hi - lo) * unit
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    /// An f32-typed tensor held in f64 with elements uniform in `[lo, hi)`.
    pub fn tensor(&mut self, shape: &[usize], lo: f64, hi: f64) -> HostTensor {
        let n = shape.iter().product();
        let data = (0..n).map(|_| self.uniform(lo, hi)).collect();
        HostTensor::from_f64(shape.to_vec(), data).unwrap()
    }

    pub fn labels(&mut self, n: usize, classes: usize) -> HostTensor {
        let data = (0..n).map(|_| self.below(classes) as i64).collect();
        HostTensor::from_i64(vec![n], data).unwrap()
    }
}

/// Runs `graph` in f64. Every value is offered both as an input and as a param of its
/// name; the graph takes what its sources ask for.
pub fn run(graph: &Graph, values: &BTreeMap<String, HostTensor>) -> Outputs {
    let mut bindings = Bindings::new();
    for (name, t) in values {
        bindings = bindings.input(name.clone(), t).param(name.clone(), t);
    }
    reference::run_f64(graph, &bindings).expect("the reference interpreter runs the graph")
}
