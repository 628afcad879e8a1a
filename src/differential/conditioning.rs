//! Which cases f32 can answer: no ReLU input and no max-pool runner-up may lie within
//! f32 noise of its decision.
//!
//! A network's gradient is piecewise smooth: where a ReLU input sits within rounding
//! noise of zero (or two entries of a max-pool window within noise of each other), an
//! f32 backend and the f64 oracle may take different sides, and every gradient
//! upstream of that element moves by the element's incoming gradient, far beyond the
//! fixtures' tolerances, with no bug anywhere. (The first deep-stem network tried here
//! had one: an element of `layer2.1.bn1_a`'s output, 1.95e-6 in f32 and -1.60e-6 in
//! f64 at the same parameters, moved `conv1.0.weight`'s step-2 gradient by 1.5e-3.)
//! Comparing gradients is meaningful only away from such kinks, so a case is checked
//! first: its decision inputs are recorded in the f64 oracle and in the f32 reference,
//! the band around each decision is [`BAND_FACTOR`] times the measured f32 noise of that
//! tensor (root mean square over its elements), and a case with any decision inside its
//! band is redrawn.

use anyhow::{bail, Result};
use calib_ir::{Graph, Op, Value};
use calib_runtime::{Backend, Bindings, HostTensor, Outputs, Reference, RuntimeError};
use std::sync::Mutex;

/// The band is this many times the tensor's root-mean-square f32 noise: backends other
/// than the f32 reference sum in other orders (split-K, tiled reductions), and one
/// element's noise is rarely far above the tensor's typical noise.
pub const BAND_FACTOR: f64 = 8.0;

/// The band never shrinks below this fraction of the tensor's largest magnitude (about
/// one f32 ulp), nor grows past the upper one (a grossly wrong reference must not
/// declare every case ill-conditioned and so hide its own bug).
const BAND_MIN: f64 = 1e-7;
const BAND_MAX: f64 = 1e-4;

const PREFIX: &str = "__decision.";

/// A decision too close to call in f32.
#[derive(Clone, Debug, PartialEq)]
pub struct Kink {
    /// The op and its layer scope.
    pub at: String,
    /// Distance to the decision boundary in the f64 oracle, and the band it fell in.
    pub margin: f64,
    pub band: f64,
}

impl std::fmt::Display for Kink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} decides on a value {:.2e} from its kink, inside the f32 noise band {:.2e}",
            self.at, self.margin, self.band
        )
    }
}

/// A backend that also returns the input of every decision op (ReLU, max pooling) of
/// each graph it runs, in call order.
pub struct Recording<'a> {
    inner: &'a dyn Backend,
    pub log: Mutex<Vec<Vec<Decision>>>,
}

/// One decision op's input, as one run computed it.
#[derive(Clone, Debug)]
pub struct Decision {
    pub op: Op,
    pub scope: String,
    pub input: HostTensor,
}

impl<'a> Recording<'a> {
    pub fn new(inner: &'a dyn Backend) -> Self {
        Recording {
            inner,
            log: Mutex::new(vec![]),
        }
    }
}

impl Backend for Recording<'_> {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn run(&self, graph: &Graph, bindings: &Bindings) -> Result<Outputs, RuntimeError> {
        let decisions: Vec<usize> = (0..graph.nodes.len())
            .filter(|&i| matches!(graph.nodes[i].op, Op::Relu | Op::MaxPool2d { .. }))
            .collect();
        let mut probed = graph.clone();
        probed.add_outputs(
            decisions
                .iter()
                .map(|&i| (format!("{PREFIX}{i}"), graph.nodes[i].inputs[0])),
        )?;
        let mut out = self.inner.run(&probed, bindings)?;
        let record = decisions
            .into_iter()
            .filter_map(|i| {
                let input = out.remove(&format!("{PREFIX}{i}"))?;
                let node = graph.node(Value(i));
                Some(Decision {
                    op: node.op.clone(),
                    scope: node.scope.clone(),
                    input,
                })
            })
            .collect();
        self.log
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(record);
        Ok(out)
    }
}

/// The closest decision of a protocol run, given the f64 oracle's and the f32
/// reference's records of the same runs; `None` when every decision is clear.
pub fn closest_kink(exact: &[Vec<Decision>], f32_run: &[Vec<Decision>]) -> Result<Option<Kink>> {
    if exact.len() != f32_run.len() {
        bail!("the f32 reference ran a different protocol than the oracle");
    }
    let mut worst: Option<(f64, Kink)> = None;
    for (a, b) in exact.iter().zip(f32_run).flat_map(|(a, b)| a.iter().zip(b)) {
        let (x, y) = (a.input.to_f64_vec(), b.input.to_f64_vec());
        let scale = x.iter().fold(0.0f64, |m, v| m.max(v.abs()));
        let squares: f64 = x.iter().zip(&y).map(|(p, q)| (p - q) * (p - q)).sum();
        let noise = (squares / x.len().max(1) as f64).sqrt();
        let band = (BAND_FACTOR * noise).clamp(BAND_MIN * scale, BAND_MAX * scale);
        let margin = match &a.op {
            Op::MaxPool2d {
                kernel,
                stride,
                padding,
                ..
            } => runner_up_gap(&x, a.input.shape(), *kernel, *stride, *padding),
            _ => x.iter().fold(f64::INFINITY, |m, v| m.min(v.abs())),
        };
        let ratio = margin / band;
        if band > 0.0 && ratio < 1.0 && worst.as_ref().is_none_or(|(r, _)| ratio < *r) {
            let kink = Kink {
                at: format!("{} in {}", a.op.name(), a.scope),
                margin,
                band,
            };
            worst = Some((ratio, kink));
        }
    }
    Ok(worst.map(|(_, k)| k))
}

/// The smallest gap between the largest entry of any max-pool window and the largest
/// entry below it (padding is -inf and never wins).
fn runner_up_gap(
    x: &[f64],
    shape: &[usize],
    kernel: [usize; 2],
    stride: [usize; 2],
    padding: [usize; 2],
) -> f64 {
    let [n, c, h, w] = shape[..] else {
        return f64::INFINITY;
    };
    let out =
        |size: usize, a: usize| (size + 2 * padding[a]).saturating_sub(kernel[a]) / stride[a] + 1;
    let (oh, ow) = (out(h, 0), out(w, 1));
    let mut gap = f64::INFINITY;
    for plane in x.chunks_exact(h * w).take(n * c) {
        for i in 0..oh {
            for j in 0..ow {
                let (mut best, mut second) = (f64::NEG_INFINITY, f64::NEG_INFINITY);
                for di in 0..kernel[0] {
                    for dj in 0..kernel[1] {
                        let (r, s) = (i * stride[0] + di, j * stride[1] + dj);
                        if r < padding[0] || s < padding[1] {
                            continue;
                        }
                        let (r, s) = (r - padding[0], s - padding[1]);
                        if r >= h || s >= w {
                            continue;
                        }
                        // Entries equal to the maximum tie exactly in f32 too (ReLU's zeros
                        // are the common case): every backend takes the first, as PyTorch.
                        let v = plane[r * w + s];
                        if v > best {
                            second = best;
                            best = v;
                        } else if v > second && v < best {
                            second = v;
                        }
                    }
                }
                if second.is_finite() {
                    gap = gap.min(best - second);
                }
            }
        }
    }
    gap
}

/// Runs `run` on the f64 oracle and on the f32 reference, both recorded; returns the
/// oracle's result and the closest kink, if any is too close to call.
pub fn with_kinks<T>(run: impl Fn(&dyn Backend) -> Result<T>) -> Result<(T, Option<Kink>)> {
    let exact = Reference::f64();
    let exact = Recording::new(&exact);
    let result = run(&exact)?;
    let reference = Reference::new();
    let reference = Recording::new(&reference);
    run(&reference)?;
    let take = |r: Recording| r.log.into_inner().unwrap_or_else(|e| e.into_inner());
    let kink = closest_kink(&take(exact), &take(reference))?;
    Ok((result, kink))
}
