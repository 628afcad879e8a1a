//! Shared by the fusion tests: random bindings, and fused-versus-unfused runs.

#![allow(dead_code)]

use calib_ir::{DType, Graph, Op, TensorType};
use calib_passes::fusion::{fuse, Fusion, FusionOptions};
use calib_runtime::{reference, Bindings, HostTensor, TensorMap};
use std::path::PathBuf;

pub fn fixture(name: &str) -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../shared/fixtures"
    ))
    .join(name)
}

/// A small deterministic generator (xorshift), uniform in `[lo, hi)`.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn uniform(&mut self, lo: f32, hi: f32) -> f32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        lo + (hi - lo) * ((self.0 >> 40) as f32 / (1u64 << 24) as f32)
    }

    /// A tensor of type `ty` named `name`: variances positive, counters and labels
    /// small non-negative integers (labels below `classes`).
    pub fn tensor(&mut self, name: &str, ty: &TensorType, classes: usize) -> HostTensor {
        let n = ty.numel();
        if ty.dtype == DType::I64 {
            let data = (0..n)
                .map(|_| {
                    (self.uniform(0.0, classes.max(1) as f32) as i64).min(classes.max(1) as i64 - 1)
                })
                .collect();
            return HostTensor::from_i64(ty.shape.clone(), data).unwrap();
        }
        let (lo, hi) = if name.ends_with("running_var") || name == "lr" {
            (0.5, 1.5)
        } else {
            (-1.0, 1.0)
        };
        HostTensor::from_f32(
            ty.shape.clone(),
            (0..n).map(|_| self.uniform(lo, hi)).collect(),
        )
        .unwrap()
    }
}

/// Random tensors for every input and parameter of `graph`.
pub fn random_bindings(graph: &Graph, seed: u64) -> (TensorMap, TensorMap) {
    let classes = graph.nodes.iter().find_map(|n| match n.op {
        Op::OneHot { classes, .. } => Some(classes),
        _ => None,
    });
    let mut rng = Rng::new(seed);
    let inputs = graph
        .inputs()
        .map(|(name, v)| {
            (
                name.to_string(),
                rng.tensor(name, graph.ty(v), classes.unwrap_or(3)),
            )
        })
        .collect();
    let params = graph
        .params()
        .map(|(name, v)| (name.to_string(), rng.tensor(name, graph.ty(v), 3)))
        .collect();
    (inputs, params)
}

/// Fuses `graph` with default options and checks the plan against the graph on
/// random inputs: every output within `1e-4 * max(1, max |reference|)` (the fixtures'
/// criterion), integer outputs exactly.
pub fn check(graph: &Graph, seed: u64) -> Fusion {
    check_with(graph, seed, &FusionOptions::default())
}

pub fn check_with(graph: &Graph, seed: u64, options: &FusionOptions) -> Fusion {
    let fusion = fuse(graph, options).expect("fusion succeeds");
    fusion.program.validate().expect("the plan is valid");
    let (inputs, params) = random_bindings(graph, seed);
    let mut b = Bindings::new().params(&params);
    for (name, t) in &inputs {
        b = b.input(name.clone(), t);
    }
    let want = reference::run(graph, &b).expect("the graph runs");
    let got = reference::run_program(&fusion.program, &b).expect("the plan runs");
    assert_eq!(want.len(), got.len());
    for (name, w) in &want {
        let g = &got[name];
        if w.dtype() == DType::I64 {
            assert_eq!(w.as_i64(), g.as_i64(), "{name}");
            continue;
        }
        let err = g.max_abs_diff(w).unwrap();
        let bound = 1e-4 * w.max_abs().max(1.0);
        assert!(
            err <= bound,
            "{name}: fused differs by {err:e} (bound {bound:e})"
        );
    }
    fusion
}

/// How often `rule` fired, over all phases.
pub fn fired(f: &Fusion, rule: &str) -> usize {
    f.report
        .phases
        .iter()
        .filter_map(|p| p.rules.get(rule))
        .sum()
}

/// The kernel covering original node `v` (the first, if several recompute it).
pub fn kernel_of(f: &Fusion, v: usize) -> Option<&calib_ir::Kernel> {
    f.program.kernels.iter().find(|k| k.covers.contains(&v))
}

/// SCNet's first block in miniature: one convolution per width reading the same
/// `x: f32[2, 4, 6, 6]`, each with a train-mode BatchNorm, the channel sums of all
/// branches added into output `y`.
pub fn sibling_convolutions(widths: &[usize]) -> Graph {
    use calib_ir::{ConvSpec, DType, GraphBuilder, Mode};
    let mut b = GraphBuilder::new(Mode::Train, DType::F32);
    let x = b.input("x", DType::F32, vec![2, 4, 6, 6]).unwrap();
    let mut sum = None;
    for (k, &c) in widths.iter().enumerate() {
        let y = b
            .conv_layer(&format!("c{k}"), x, &ConvSpec::new(c, 1))
            .unwrap();
        let y = b.batch_norm(&format!("bn{k}"), y).unwrap();
        let s = b.reduce_sum(y, &[1], true).unwrap();
        sum = Some(match sum {
            None => s,
            Some(acc) => b.add(acc, s).unwrap(),
        });
    }
    b.output("y", sum.unwrap()).unwrap();
    b.finish()
}
