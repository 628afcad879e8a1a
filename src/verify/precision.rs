//! Tolerances for checking a reduced-precision run against the f32 fixtures.
//!
//! The derivation is `docs/precision.md`; this file is its formulas, nothing more. In
//! short: a GEMM whose two operands are rounded to unit roundoff `u` (tf32 2^-11, bf16
//! 2^-8) makes each product `a·b·(1 + δa + δb)` with `δ` independent and uniform in
//! `[-u, u]` (variance `u²/3` each). With random weights the result's error relative to
//! the spread `σ` of the result is then `u·sqrt(2/3)` (rms), and storing a bf16
//! activation adds `u·sqrt(1/3)`. BatchNorm rescales value and error alike, ReLU and the
//! weights preserve the ratio, and independent errors add in quadrature, so after a
//! chain of `D` GEMMs the error of any element is at most `Z·u·sqrt(D·v)` times the
//! spread of its tensor, with `v` the variance per GEMM (2/3 tf32, 1 bf16) and `Z = 5`
//! standard deviations (the largest of up to 10^6 independent normal errors). The
//! fixtures' criteria scale with `max(1, max |ref|)`, which bounds the spread.

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
/// two rounded operands (`1/3` each), and for bf16 the rounded activation it stores.
pub fn variance_per_gemm(p: Precision) -> f64 {
    match p {
        Precision::F32 => 0.0,
        Precision::Tf32 => 2.0 / 3.0,
        Precision::Bf16 => 2.0 / 3.0 + 1.0 / 3.0,
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

/// The error budgets of a reduced-precision run of a network `depth` GEMMs deep
/// (forward), as fractions of the checked tensors' scale.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Budget {
    /// Forward outputs and logits: `Z·u·sqrt(D·v)`.
    pub forward: f64,
    /// Gradients: the forward chain, the backward-data chain back through it and the
    /// weight-gradient GEMM, `2D + 1` GEMMs.
    pub backward: f64,
}

impl Budget {
    pub fn new(p: Precision, depth: usize) -> Budget {
        let at = |d: usize| Z * unit_roundoff(p) * (d as f64 * variance_per_gemm(p)).sqrt();
        Budget {
            forward: at(depth),
            backward: at(2 * depth + 1),
        }
    }
}

/// The tolerance for stored tensor `file/name` of a run under `p` (the README's for
/// f32), for a network `depth` GEMMs deep.
pub fn tolerance_at(file: &str, name: &str, p: Precision, depth: usize) -> Tolerance {
    let f32 = super::tolerance_for(file, name);
    if p == Precision::F32 || f32 == Tolerance::Exact {
        return f32;
    }
    let b = Budget::new(p, depth);
    let scaled = |bound: f64| Tolerance::Scaled(bound);
    if name == LOSS {
        // |δloss| = |Σ (softmax - onehot)·δz| / batch <= 2 max |δz|.
        scaled(2.0 * b.forward)
    } else if file.contains("grads") || name == "grad_input" || file.starts_with("step2") {
        // Gradients; and step 2's outputs, whose parameters carry step 1's gradient
        // errors through the update.
        scaled(b.backward)
    } else if file.ends_with("_io") {
        scaled(b.forward)
    } else if file.starts_with("train_buffers") {
        // running_mean moves by 0.1·δmean(y), running_var by 0.1·2σ²·(δy/σ); scaled by
        // max(1, max |ref|) with ref >= 0.9 + 0.1σ², 2·forward covers both while the
        // pre-BN spread σ is at most 10 (docs/precision.md).
        scaled(2.0 * b.forward)
    } else {
        // SGD state: parameters move by lr·δgrad, momentum by δgrad, and the state
        // files also hold the running statistics.
        scaled(b.backward.max(2.0 * b.forward))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budgets_follow_the_derivation() {
        let b = Budget::new(Precision::Bf16, 10);
        assert!((b.forward - 5.0 / 256.0 * 10f64.sqrt()).abs() < 1e-12);
        assert!((b.backward - 5.0 / 256.0 * 21f64.sqrt()).abs() < 1e-12);
        let t = Budget::new(Precision::Tf32, 10);
        assert!((t.forward - 5.0 / 2048.0 * (20.0f64 / 3.0).sqrt()).abs() < 1e-12);
        assert_eq!(
            tolerance_at("eval_io", "output", Precision::F32, 10),
            Tolerance::OUTPUT
        );
        assert_eq!(
            tolerance_at("train_buffers_after", "bn1.num_batches_tracked", Precision::Bf16, 4),
            Tolerance::Exact
        );
        assert_eq!(
            tolerance_at("train_grads", "conv1.weight", Precision::Bf16, 10),
            Tolerance::Scaled(b.backward)
        );
        assert_eq!(
            tolerance_at("train_io", "loss", Precision::Bf16, 10),
            Tolerance::Scaled(2.0 * b.forward)
        );
    }
}
