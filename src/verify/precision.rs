//! Tolerances for checking a reduced-precision run against the f32 fixtures.
//!
//! The derivation is `docs/precision.md`; this file is its formulas, nothing more.
//!
//! *Smooth error.* A GEMM whose two operands are rounded to unit roundoff `u` (tf32
//! 2^-11, bf16 2^-8) makes each product `a·b·(1 + δa + δb)`, the `δ` independent and
//! uniform in `[-u, u]` (variance `u²/3` each); with random weights the result's error
//! relative to the spread `σ` of the result is `u·sqrt(2/3)` rms, and storing a bf16
//! activation adds `u·sqrt(1/3)`, once for the GEMM's result and at most twice more for
//! the module outputs between it and the next GEMM that its operand rounding does not
//! already cover. BatchNorm rescales value and error alike, ReLU and the weights keep
//! their ratio, independent errors add in quadrature: after `D` GEMMs the error is
//! `ε = u·sqrt(D·v)` times the spread (rms; `v` = 2/3 tf32, 5/3 bf16), and the
//! largest over a tensor `Z = 5` times that. Forward outputs, the loss and BatchNorm
//! statistics are checked by their largest error against that.
//!
//! *Decisions.* A gradient is not continuous in the forward values: a ReLU input within
//! the forward error of zero flips its decision, and the gradient at that element
//! changes by its whole value. With inputs of density `p0 = 1/sqrt(2π)` at zero (a
//! BatchNorm output) and errors of rms `ε`, a fraction `f = 2·p0·sqrt(2/π)·ε` of every
//! ReLU (and max-pool) layer flips, which perturbs the gradient flowing back by a
//! relative `sqrt(f)` in norm; over `R` such layers `sqrt(R·f)`. Gradients (and the SGD
//! state made of them) are checked by the norm of their error against that fraction of
//! the norm of their whole file (the gradient SGD sees), with the smooth error of the
//! `2D + 1` GEMMs of the backward pass added in quadrature.

use super::Tolerance;
use calib_ir::{Graph, Op, Precision};
use calib_passes::LOSS;

/// Standard deviations of the largest error over a tensor: a normal variable exceeds 5
/// standard deviations with probability 5.7e-7, i.e. about once in the 10^6 elements
/// of the largest tensor a fixture checks.
pub const Z: f64 = 5.0;

/// Unit roundoff (half an ulp of 1) of the format GEMM operands are rounded to.
pub fn unit_roundoff(p: Precision) -> f64 {
    match p {
        Precision::F32 => f64::from(f32::EPSILON) / 2.0,
        // 10 explicit mantissa bits.
        Precision::Tf32 => 2f64.powi(-11),
        // 7 explicit mantissa bits.
        Precision::Bf16 => 2f64.powi(-8),
    }
}

/// The error variance one GEMM adds, in units of `u²` times its result's spread:
/// two rounded operands (`1/3` each), and for bf16 the rounded activation it stores and
/// up to two rounded module outputs before the next GEMM (a BatchNorm output entering a
/// residual sum or a gate, a gate's input; `docs/precision.md` counts them).
pub fn variance_per_gemm(p: Precision) -> f64 {
    match p {
        Precision::F32 => 0.0,
        Precision::Tf32 => 2.0 / 3.0,
        Precision::Bf16 => 2.0 / 3.0 + 1.0 / 3.0 + 2.0 / 3.0,
    }
}

/// The longest chain of GEMM-shaped nodes (convolutions, matmuls) from any source to
/// any output of `graph`: how many roundings an output's error has passed through.
pub fn gemm_depth(graph: &Graph) -> usize {
    let mut depth = vec![0usize; graph.nodes.len()];
    for (i, node) in graph.nodes.iter().enumerate() {
        let before = node.inputs.iter().map(|v| depth[v.0]).max().unwrap_or(0);
        let gemm = matches!(node.op, Op::Conv2d { .. } | Op::MatMul { .. });
        depth[i] = before + usize::from(gemm);
    }
    graph
        .outputs
        .iter()
        .map(|o| depth[o.value.0])
        .max()
        .unwrap_or(0)
}

/// How many decisions (ReLU, max pooling) a gradient passes back through: every such
/// node of `graph`.
pub fn decision_layers(graph: &Graph) -> usize {
    graph
        .nodes
        .iter()
        .filter(|n| matches!(n.op, Op::Relu | Op::MaxPool2d { .. }))
        .count()
}

/// The density at zero of a BatchNorm output (standard normal), where ReLUs decide.
const P0: f64 = 0.398_942_280_401_432_7; // 1/sqrt(2π)

/// The error budgets of a reduced-precision run of a network `depth` GEMMs deep with
/// `decisions` ReLU and max-pool layers.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Budget {
    /// The largest error of a forward output, logit or statistic, as a fraction of
    /// `max(1, max |ref|)`: `Z·u·sqrt(D·v)`.
    pub forward: f64,
    /// The norm of a gradient's error as a fraction of the norm of its file:
    /// `sqrt(R·f + (2D + 1)·v·u²)` with `f = 2·p0·sqrt(2/π)·u·sqrt(D·v)`.
    pub gradient: f64,
}

impl Budget {
    pub fn new(p: Precision, depth: usize, decisions: usize) -> Budget {
        let (u, v) = (unit_roundoff(p), variance_per_gemm(p));
        let rms = u * (depth as f64 * v).sqrt();
        let flipped = 2.0 * P0 * (2.0 / std::f64::consts::PI).sqrt() * rms;
        let smooth = u * u * (2 * depth + 1) as f64 * v;
        Budget {
            forward: Z * rms,
            gradient: (decisions as f64 * flipped + smooth).sqrt(),
        }
    }
}

/// What the tolerances of a reduced-precision check depend on.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Shape {
    pub precision: Precision,
    pub depth: usize,
    pub decisions: usize,
}

/// The tolerance for stored tensor `file/name` of a run under `shape.precision` (the
/// README's for f32). `file_norm` is the norm of every float tensor of the file.
pub fn tolerance_at(file: &str, name: &str, shape: Shape, file_norm: f64) -> Tolerance {
    let f32 = super::tolerance_for(file, name);
    if shape.precision == Precision::F32 || f32 == Tolerance::Exact {
        return f32;
    }
    let b = Budget::new(shape.precision, shape.depth, shape.decisions);
    let scaled = |bound: f64| Tolerance::Scaled(bound);
    if name == LOSS {
        // |δloss| = |Σ (softmax - onehot)·δz| / batch <= 2 max |δz|.
        scaled(2.0 * b.forward)
    } else if file.contains("grads")
        || name == "grad_input"
        || file.starts_with("sgd_momentum")
        || file.starts_with("state_after")
    {
        // Gradients, momentum (a gradient plus weight decay), and the parameters SGD
        // moved by them (lr·δgrad: far inside this bound, which is loose for them).
        Tolerance::NormL2(b.gradient * file_norm)
    } else if file.starts_with("step2") {
        // Step 2's forward, from parameters that moved by lr·δgrad: its error is the
        // forward one of a deeper chain (the backward pass and the update before it).
        scaled(Budget::new(shape.precision, 2 * shape.depth + 1, 0).forward)
    } else if file.starts_with("train_buffers") {
        // running_mean moves by 0.1·δmean(y), running_var by 0.1·2σ²·(δy/σ); scaled by
        // max(1, max |ref|) with ref >= 0.9 + 0.1σ², 2·forward covers both while the
        // pre-BN spread σ is at most 10 (docs/precision.md).
        scaled(2.0 * b.forward)
    } else {
        // Outputs and logits.
        scaled(b.forward)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budgets_follow_the_derivation() {
        let b = Budget::new(Precision::Bf16, 10, 11);
        let rms = (10.0 * 5.0 / 3.0f64).sqrt() / 256.0;
        assert!((b.forward - 5.0 * rms).abs() < 1e-12);
        let f = 2.0 * P0 * (2.0 / std::f64::consts::PI).sqrt() * rms;
        let smooth = 21.0 * 5.0 / 3.0 / 65536.0;
        assert!((b.gradient - (11.0 * f + smooth).sqrt()).abs() < 1e-12);
        // Without decisions only the smooth error of the backward chain remains.
        let t = Budget::new(Precision::Tf32, 2, 0);
        assert!((t.gradient - (5.0 * 2.0 / 3.0f64).sqrt() / 2048.0).abs() < 1e-12);
        let shape = |precision| Shape {
            precision,
            depth: 10,
            decisions: 11,
        };
        assert_eq!(
            tolerance_at("eval_io", "output", shape(Precision::F32), 1.0),
            Tolerance::OUTPUT
        );
        assert_eq!(
            tolerance_at(
                "train_buffers_after",
                "bn1.num_batches_tracked",
                shape(Precision::Bf16),
                1.0
            ),
            Tolerance::Exact
        );
        assert_eq!(
            tolerance_at("train_grads", "conv1.weight", shape(Precision::Bf16), 2.0),
            Tolerance::NormL2(2.0 * b.gradient)
        );
        assert_eq!(
            tolerance_at("train_io", "loss", shape(Precision::Bf16), 1.0),
            Tolerance::Scaled(2.0 * b.forward)
        );
    }
}
