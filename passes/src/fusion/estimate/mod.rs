//! What a kernel will execute, estimated from its body before code generation writes
//! it: the launches code generation will make (their geometry and each thread's
//! instruction mix, as a [`Census`]), priced by the cost model ([`calib_cost::predict`]).
//!
//! The estimate mirrors the kernel families of `calib-codegen`: a GEMM evaluates each
//! operand's prologue once for every element of every tile that loads it (so a prologue
//! feeding a weight gradient runs once per output-channel tile of the gradient, and its
//! cost grows with it), a reduction gives each reduced element a team of threads, a
//! pointwise kernel one thread per element. Per-op costs are issue slots of the machine
//! code each op becomes; a test keeps the estimates close to what the cost model says of
//! the kernels code generation really emits.

mod gemm;
mod reduction;
mod work;

pub use gemm::{best_schedule, candidate_schedules, fastest_per_instruction, gemm, GemmEstimate};
pub use reduction::{best_reduction_split, ranked_reduction_splits};

use calib_cost::{predict, Census, Device, Launch};
use calib_ir::{gemm_anchor, GemmDims, Graph, InputLayouts, Op, Precision, Schedule, Value};
use reduction::{pointwise, reduction, reduction_anchor};
use work::Work;

/// Bytes of the buffers a kernel with this body reads and writes, each once.
fn unique_bytes(body: &Graph) -> f64 {
    let inputs: usize = body.inputs().map(|(_, v)| body.ty(v).size_bytes()).sum();
    let outputs: usize = body
        .outputs
        .iter()
        .map(|o| body.ty(o.value).size_bytes())
        .sum();
    (inputs + outputs) as f64
}

/// Bytes a launch that evaluates `roots` (not looking past `stop`, values another
/// launch left in memory) moves: the body inputs they read and the body outputs among
/// them, each once, as code generation counts the buffers a launch touches.
fn touched_bytes(body: &Graph, roots: &[Value], stop: &[Value]) -> f64 {
    let mut seen = vec![false; body.nodes.len()];
    let mut stack = roots.to_vec();
    let mut bytes = 0.0;
    while let Some(v) = stack.pop() {
        if std::mem::replace(&mut seen[v.0], true) || stop.contains(&v) {
            continue;
        }
        let node = &body.nodes[v.0];
        match node.op {
            Op::Input { .. } => bytes += body.ty(v).size_bytes() as f64,
            _ => stack.extend(&node.inputs),
        }
    }
    let written: f64 = body
        .outputs
        .iter()
        .filter(|o| roots.contains(&o.value))
        .map(|o| body.ty(o.value).size_bytes() as f64)
        .sum();
    bytes + written
}

const THREADS: u32 = 256;
const MAX_POINTWISE_BLOCKS: usize = 1 << 16;

/// A thread's census from its work: `shared` accesses (their issue slots are part of
/// `per_thread`, as the instructions they are), their wavefronts, and `barriers`.
fn census(per_thread: Work, shared: f64, shared_wavefronts: f64, barriers: f64) -> Census {
    Census {
        issue: per_thread.issue + barriers,
        fp32: per_thread.fp32,
        sfu: per_thread.sfu,
        global_loads: per_thread.loads,
        global_load_bytes: 4.0 * per_thread.loads,
        shared,
        shared_wavefronts,
        barriers,
        load_rounds: per_thread.rounds,
        independent: per_thread.independent,
        tensor_tf32_flops: per_thread.tensor_tf32_flops,
        tensor_f16_flops: per_thread.tensor_f16_flops,
        ..Census::default()
    }
}

/// The predicted seconds of a set of launches.
pub fn seconds(launches: &[Launch], device: &Device) -> f64 {
    launches
        .iter()
        .map(|l| predict(l, device).seconds + device.timing.launch_gap_us * 1e-6)
        .sum()
}

/// The predicted seconds of `launches` had their bytes no cost in device memory: what
/// tells apart schedules that move the same bytes, and so tie where device memory
/// bounds them all (the one whose threads work least leaves the most slack).
pub fn seconds_besides_memory(launches: &[Launch], device: &Device) -> f64 {
    let unbound: Vec<Launch> = launches
        .iter()
        .map(|l| Launch {
            unique_bytes: 0.0,
            ..l.clone()
        })
        .collect();
    seconds(&unbound, device)
}

/// The predicted seconds of a kernel with this body: GEMM kernels under their best
/// schedule, reductions and maps as their families run them.
pub fn kernel_seconds(body: &Graph, device: &Device, precision: Precision) -> f64 {
    if let Some((_, t)) = best_schedule(body, device, precision, &[]) {
        return t;
    }
    if let Some((_, t, _)) = best_reduction_split(body, device, &[]) {
        return t;
    }
    let roots: Vec<Value> = body.outputs.iter().map(|o| o.value).collect();
    seconds(&[pointwise(body, &roots, &[])], device)
}

/// The predicted seconds of plan kernel `kernel`: under its schedule when it has one.
pub fn program_kernel_seconds(
    kernel: &calib_ir::Kernel,
    layouts: InputLayouts,
    device: &Device,
) -> f64 {
    let gemm_under = |s: &Schedule| {
        let anchor = gemm_anchor(&kernel.body)?;
        let dims = GemmDims::of(&kernel.body, anchor)?;
        Some(seconds(
            &gemm(&kernel.body, anchor, &dims, s, layouts).launches,
            device,
        ))
    };
    let reduction_under = |split: usize| {
        let r = reduction_anchor(&kernel.body)?;
        let roots: Vec<Value> = kernel.body.outputs.iter().map(|o| o.value).collect();
        Some(seconds(&reduction(&kernel.body, r, &roots, split), device))
    };
    let scheduled = match &kernel.schedule {
        Some(s @ Schedule { gemm: Some(_), .. }) => gemm_under(s),
        Some(Schedule {
            reduction: Some(r), ..
        }) => reduction_under(r.split),
        _ => None,
    };
    scheduled.unwrap_or_else(|| kernel_seconds(&kernel.body, device, Precision::F32))
}
