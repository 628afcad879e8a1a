//! Which values the bf16 policy stores in bf16: activations and activation gradients.
//!
//! Under PyTorch's autocast every module hands the next one a bf16 tensor: the
//! convolution's result, BatchNorm's, the ReLU's, the residual sum, the gate product;
//! and autograd sums the gradients of a bf16 tensor in bf16. Inside a module (cuDNN's
//! BatchNorm, a fused kernel) the arithmetic is f32. The IR keeps the module as each
//! node's scope, so the policy rounds at the same places: a value is stored rounded
//! when it is
//!
//! * the result of a convolution or of its data gradient (always, as before), or
//! * a spatial per-sample tensor (`[N, C, H, W]`, computed from the batch's samples
//!   and not reduced over them) that a node of another scope reads.
//!
//! Weight gradients, BatchNorm statistics, parameters, optimizer state, logits and the
//! loss are not per-sample spatial tensors and stay f32. Masks of comparisons and the
//! casts themselves are never rounded (a mask is exact, a cast is a rounding already).
//! Rounding at a module's boundary rather than after each op keeps the error to one
//! rounding per stored tensor (`docs/precision.md` counts them), and makes the rounded
//! values a function of the model, not of which kernels fusion later forms.

use calib_ir::{Graph, Op};

/// Whether the node producing `op` makes an activation or an activation gradient
/// whatever its readers: the GEMMs whose results are per-sample tensors.
pub(super) fn always_stored(op: &Op) -> bool {
    matches!(op, Op::Conv2d { .. } | Op::Conv2dBackwardData { .. })
}

/// For each node of `graph`: whether the bf16 policy stores its result in bf16 (see the
/// module documentation).
pub(super) fn stored_in_bf16(graph: &Graph) -> Vec<bool> {
    let per_sample = per_sample(graph);
    let mut crosses = vec![false; graph.nodes.len()];
    for node in &graph.nodes {
        for v in &node.inputs {
            if graph.nodes[v.0].scope != node.scope {
                crosses[v.0] = true;
            }
        }
    }
    graph
        .nodes
        .iter()
        .enumerate()
        .map(|(i, node)| {
            always_stored(&node.op)
                || (per_sample[i]
                    && crosses[i]
                    && node.ty.dtype == calib_ir::DType::F32
                    && node.ty.shape.len() == 4
                    && !matches!(node.op, Op::Cast { .. } | Op::CmpGt | Op::CmpGe | Op::CmpEq))
        })
        .collect()
}

/// For each node: whether its value is computed from the batch's samples and keeps
/// them apart. Inputs are; params and constants are not; a reduction over the batch
/// axis and a weight gradient (a contraction over the batch) are not; every other op
/// is when one of its operands is.
fn per_sample(graph: &Graph) -> Vec<bool> {
    let mut out: Vec<bool> = Vec::with_capacity(graph.nodes.len());
    for node in &graph.nodes {
        let p = match &node.op {
            Op::Input { .. } => true,
            Op::Param { .. } | Op::Constant { .. } => false,
            Op::ReduceSum { axes, .. }
            | Op::ReduceMean { axes, .. }
            | Op::ReduceMax { axes, .. } => {
                !axes.contains(&0) && node.inputs.iter().any(|v| out[v.0])
            }
            Op::Conv2dBackwardWeight { .. } => false,
            _ => node.inputs.iter().any(|v| out[v.0]),
        };
        out.push(p);
    }
    out
}
