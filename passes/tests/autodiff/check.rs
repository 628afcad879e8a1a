//! Gradient checking: autodiff's vector-Jacobian products against central finite
//! differences, both computed by the reference interpreter in f64.
//!
//! For a graph `y = f(sources)` and a fixed random `R` shaped like `y`, the scalar
//! `L = sum(y * R)` has gradient `vjp(f, seed = R)`, so one backward run checks the whole
//! Jacobian against `(L(s + h e_i) - L(s - h e_i)) / 2h` for every element `i` of every
//! float source.

use crate::common::{run, Rng};
use calib_ir::{DType, Graph, GraphBuilder, Mode, Op, TensorType, Value};
use calib_passes::vjp;
use calib_runtime::{HostTensor, Outputs};
use std::collections::BTreeMap;

/// Finite-difference step. In f64 the truncation error (h²) is negligible and rounding
/// (|L| · 1e-16 / h) stays below 1e-8 for the losses here.
const STEP: f64 = 1e-6;
/// Allowed error relative to the largest numeric gradient of a source...
const TOLERANCE: f64 = 1e-6;
/// ...plus this much absolute error, the rounding noise of the differences.
const NOISE: f64 = 1e-7;

/// One gradient check: a forward graph, the value to differentiate and its sources'
/// values (random unless given).
pub struct GradCheck {
    graph: Graph,
    of: Value,
    given: BTreeMap<String, HostTensor>,
    ranges: BTreeMap<String, (f64, f64)>,
    rng: Rng,
}

impl GradCheck {
    /// Builds the forward graph in train mode; `build` returns the value to check.
    pub fn new(build: impl FnOnce(&mut GraphBuilder) -> calib_ir::Result<Value>) -> GradCheck {
        let mut b = GraphBuilder::new(Mode::Train, DType::F32);
        let of = build(&mut b).expect("the forward graph builds");
        GradCheck::from_graph(b.finish(), of)
    }

    /// Checks a graph built by hand (for attributes the builder does not expose).
    pub fn from_graph(graph: Graph, of: Value) -> GradCheck {
        GradCheck {
            graph,
            of,
            given: BTreeMap::new(),
            ranges: BTreeMap::new(),
            rng: Rng::new(0x5eed),
        }
    }

    /// Binds a source (by input or param name) to a fixed tensor.
    pub fn with(mut self, name: &str, value: HostTensor) -> GradCheck {
        self.given.insert(name.into(), value);
        self
    }

    /// Draws a source's random values from `[lo, hi)` instead of `[-1, 1)`.
    pub fn range(mut self, name: &str, lo: f64, hi: f64) -> GradCheck {
        self.ranges.insert(name.into(), (lo, hi));
        self
    }

    /// Runs the check, panicking on any mismatch. Returns the largest analytic gradient
    /// magnitude per float source, so tests can also assert where gradients vanish.
    pub fn run(mut self) -> BTreeMap<String, f64> {
        let sources: Vec<(String, Value)> = self
            .graph
            .nodes
            .iter()
            .enumerate()
            .filter_map(|(i, n)| match &n.op {
                Op::Input { name } | Op::Param { name } => Some((name.clone(), Value(i))),
                _ => None,
            })
            .collect();
        let mut values = BTreeMap::new();
        for (name, v) in &sources {
            let ty = self.graph.ty(*v).clone();
            let value = match self.given.remove(name) {
                Some(t) => t,
                None if ty.dtype.is_float() => {
                    let (lo, hi) = self.ranges.get(name).copied().unwrap_or((-1.0, 1.0));
                    self.rng.tensor(&ty.shape, lo, hi)
                }
                None => HostTensor::full(&ty, 0.0, calib_runtime::Precision::F64),
            };
            values.insert(name.clone(), value);
        }
        let of_ty = self.graph.ty(self.of).clone();
        let r = self.rng.tensor(&of_ty.shape, -1.0, 1.0);
        let wrt: Vec<(String, Value)> = sources
            .into_iter()
            .filter(|(_, v)| self.graph.ty(*v).dtype.is_float())
            .collect();

        let analytic = self.backward(&wrt, &values, &r, &of_ty);
        let mut forward = self.graph.clone();
        forward.outputs.clear();
        forward.add_output("y", self.of).unwrap();
        let loss = |values: &BTreeMap<String, HostTensor>| -> f64 {
            let y = &run(&forward, values)["y"];
            y.to_f64_vec()
                .iter()
                .zip(r.to_f64_vec())
                .map(|(a, b)| a * b)
                .sum()
        };

        let mut magnitudes = BTreeMap::new();
        for (name, _) in &wrt {
            let base = values[name].to_f64_vec();
            let shape = values[name].shape().to_vec();
            let numeric: Vec<f64> = (0..base.len())
                .map(|i| {
                    let mut at = |delta: f64| {
                        let mut moved = base.clone();
                        moved[i] += delta;
                        values.insert(
                            name.clone(),
                            HostTensor::from_f64(shape.clone(), moved).unwrap(),
                        );
                        loss(&values)
                    };
                    let (plus, minus) = (at(STEP), at(-STEP));
                    (plus - minus) / (2.0 * STEP)
                })
                .collect();
            values.insert(
                name.clone(),
                HostTensor::from_f64(shape.clone(), base).unwrap(),
            );
            let got = analytic[name].to_f64_vec();
            let scale = numeric.iter().fold(0.0f64, |m, x| m.max(x.abs()));
            for (i, (a, n)) in got.iter().zip(&numeric).enumerate() {
                assert!(
                    (a - n).abs() <= TOLERANCE * scale + NOISE,
                    "d/d{name}[{i}]: autodiff {a}, finite differences {n} (scale {scale})"
                );
            }
            magnitudes.insert(name.clone(), got.iter().fold(0.0f64, |m, x| m.max(x.abs())));
        }
        assert!(
            magnitudes.values().any(|&m| m > 1e-3),
            "every gradient vanished, so the check proved nothing: {magnitudes:?}"
        );
        magnitudes
    }

    /// The autodiff gradients of `sum(y * r)` for every source in `wrt`.
    fn backward(
        &self,
        wrt: &[(String, Value)],
        values: &BTreeMap<String, HostTensor>,
        r: &HostTensor,
        of_ty: &TensorType,
    ) -> Outputs {
        let mut graph = self.graph.clone();
        graph.outputs.clear();
        let seed = graph
            .push_source(
                Op::Input {
                    name: "seed".into(),
                },
                of_ty.clone(),
                "",
            )
            .unwrap();
        let targets: Vec<Value> = wrt.iter().map(|(_, v)| *v).collect();
        let (mut graph, grads) = vjp(&graph, self.of, seed, &targets).expect("autodiff succeeds");
        for ((name, v), g) in wrt.iter().zip(grads) {
            assert_eq!(graph.ty(g), self.graph.ty(*v), "type of d/d{name}");
            graph.add_output(name.clone(), g).unwrap();
        }
        graph.validate().unwrap();
        let mut values = values.clone();
        values.insert("seed".into(), r.clone());
        run(&graph, &values)
    }
}
