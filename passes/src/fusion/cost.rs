//! What a kernel does, counted from its body: FLOPs and the bytes it must move.
//!
//! Bytes are what the kernel reads (each input buffer once; a value read through a
//! broadcast or resize costs its own size, not the expanded one) plus what it writes.
//! FLOPs count the body's arithmetic, with a prologue counted once per time its
//! anchor reads each element: `kh * kw` times for a convolution's input, once per
//! output tile for its weights.

use calib_cost::Device;
use calib_ir::{Anchor, DType, Graph, Op, OpClass, TensorType};

/// Seconds for a kernel of this cost on `device` as an ideal roofline: its arithmetic at
/// the f32 (or tensor-core) peak or its bytes at the memory bandwidth, whichever is
/// slower, plus the shortest kernel. For comparing single ops, where the shape of the
/// loop nest is not known yet; whole kernels are priced by [`super::estimate`].
pub fn roofline_seconds(c: &KernelCost, device: &Device) -> f64 {
    let peak = match c.dtype {
        DType::F16 | DType::BF16 => device.peak_flops_f16,
        _ => device.peak_flops_f32,
    };
    (c.flops / peak).max(c.bytes / device.effective_dram_bandwidth())
        + device.timing.kernel_floor_us * 1e-6
}

/// What one kernel does.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct KernelCost {
    pub flops: f64,
    pub bytes: f64,
    /// The dtype its arithmetic runs in (the widest float it computes).
    pub dtype: DType,
}

/// The cost of a kernel whose body is `body`: its inputs are the buffers it reads, its
/// outputs the buffers it writes.
pub fn kernel_cost(body: &Graph) -> KernelCost {
    let mut bytes = 0.0;
    for (_, v) in body.inputs() {
        bytes += body.ty(v).size_bytes() as f64;
    }
    for o in &body.outputs {
        bytes += body.ty(o.value).size_bytes() as f64;
    }
    let reuse = prologue_reuse(body, anchor_node(body));
    let mut flops = 0.0;
    let mut dtype = DType::F32;
    for (i, node) in body.nodes.iter().enumerate() {
        let inputs: Vec<&TensorType> = node.inputs.iter().map(|v| body.ty(*v)).collect();
        flops += op_flops(&node.op, &inputs, &node.ty) * reuse[i];
        if matches!(node.ty.dtype, DType::F16 | DType::BF16) {
            dtype = node.ty.dtype;
        }
    }
    KernelCost {
        flops,
        bytes,
        dtype,
    }
}

/// The body node a kernel's loop nest is built around: its convolution or matmul if it
/// has one (a pooling prologue may precede it), else its first non-pointwise op.
pub fn anchor_node(body: &Graph) -> Option<usize> {
    let of = |n: &calib_ir::Node| Anchor::of(&n.op);
    body.nodes
        .iter()
        .position(|n| matches!(of(n), Anchor::Convolution | Anchor::MatMul))
        .or_else(|| body.nodes.iter().position(|n| of(n) != Anchor::Pointwise))
}

/// How many times each body node is evaluated per element of its result: prologue
/// nodes feeding a convolution or matmul are recomputed for every window or tile that
/// loads them.
fn prologue_reuse(body: &Graph, anchor: Option<usize>) -> Vec<f64> {
    let mut reuse = vec![1.0; body.nodes.len()];
    let Some(a) = anchor else { return reuse };
    let node = &body.nodes[a];
    let per_operand: Vec<f64> = match &node.op {
        Op::Conv2d { .. } | Op::Conv2dBackwardData { .. } => {
            let w = body.ty(node.inputs[1]);
            let window = (w.shape[2] * w.shape[3]) as f64;
            let tiles = (node.ty.numel() as f64 / (node.ty.shape[1].max(1) as f64) / TILE).max(1.0);
            vec![window, tiles]
        }
        Op::MatMul { .. } => {
            let (m, n) = (node.ty.shape[0] as f64, node.ty.shape[1] as f64);
            vec![(n / TILE).max(1.0), (m / TILE).max(1.0)]
        }
        _ => return reuse,
    };
    // Walk each operand's prologue backwards; a node feeding several operands takes
    // the larger factor.
    for (k, v) in node.inputs.iter().enumerate() {
        let mut stack = vec![v.0];
        while let Some(i) = stack.pop() {
            if reuse[i] < per_operand[k] {
                reuse[i] = per_operand[k];
            }
            stack.extend(
                body.nodes[i]
                    .inputs
                    .iter()
                    .map(|v| v.0)
                    .filter(|&j| reuse[j] < per_operand[k]),
            );
        }
    }
    reuse
}

/// The output tile a GEMM-shaped kernel computes per thread block, along each side.
const TILE: f64 = 128.0;

/// FLOPs of one op (its multiply-adds count two).
pub fn op_flops(op: &Op, inputs: &[&TensorType], out: &TensorType) -> f64 {
    let n = out.numel() as f64;
    match op {
        Op::Conv2d { .. } => 2.0 * n * window(inputs[1]),
        Op::Conv2dBackwardData { .. } => 2.0 * inputs[0].numel() as f64 * window(inputs[1]),
        Op::Conv2dBackwardWeight { .. } => 2.0 * inputs[1].numel() as f64 * window(out),
        Op::MatMul { .. } => {
            let k = inputs[0].numel() as f64 / out.shape[0].max(1) as f64;
            2.0 * n * k
        }
        Op::AvgPool2d { kernel, .. } | Op::MaxPool2d { kernel, .. } => {
            n * (kernel[0] * kernel[1]) as f64
        }
        Op::AvgPool2dBackward { kernel, .. } | Op::MaxPool2dBackward { kernel, .. } => {
            inputs[inputs.len() - 1].numel() as f64 * (kernel[0] * kernel[1]) as f64
        }
        Op::ResizeNearestBackward { .. }
        | Op::ReduceSum { .. }
        | Op::ReduceMean { .. }
        | Op::ReduceMax { .. } => inputs[0].numel() as f64,
        Op::Exp | Op::Log | Op::Sqrt | Op::Rsqrt | Op::Sigmoid | Op::Div => 4.0 * n,
        _ if op.class() == OpClass::Elementwise => n,
        _ => 0.0,
    }
}

/// Multiply-adds per output element of a convolution with weight `w`: `C/g * kh * kw`.
fn window(w: &TensorType) -> f64 {
    (w.shape[1] * w.shape[2] * w.shape[3]) as f64
}
