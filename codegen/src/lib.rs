//! PTX code generation for calib's kernel plans.
//!
//! [`compile`] lowers every kernel of a [`Program`] to a standalone PTX module for
//! sm_80 (which also assembles for sm_90), with static shapes baked in, and returns
//! each with its launch geometry, parameters and shared-memory size
//! ([`CompiledKernel`]). f32 and i64 values; f16/bf16 and tensor cores come later.
//!
//! ```text
//!  Kernel { anchor, body } ──► family ──► loop nest around the anchor   (pointwise.rs,
//!                                │                                       reduction.rs,
//!                                │                                       gemm.rs)
//!                                └─► eval: any body value at any index (eval.rs)
//!                                      elementwise ops ─► op table     (render.rs)
//!                                      index maps      ─► addresses    (index.rs)
//!                                      windows, contractions ─► loops (pool.rs, conv.rs,
//!                                                                      matmul.rs, ...)
//! ```
//!
//! The family follows the kernel's anchor: convolutions and matmul become tiled GEMMs,
//! reductions get a warp or block per reduced element, everything else (pointwise maps,
//! pooling, resizing) one thread per output element. Outputs in the anchor's iteration
//! space are stored from its epilogue; any other output gets a grid-stride pass after.

mod conv;
mod error;
mod eval;
mod gemm;
mod index;
mod kernel;
mod matmul;
mod pointwise;
mod pool;
pub mod ptx;
mod reduction;
mod render;
mod window;

pub use error::CodegenError;
pub use kernel::{CompiledKernel, CompiledProgram, Family, Param, ParamRole};

use calib_ir::{text, Anchor, Kernel, OpClass, Program, Value};
use error::Result;
use eval::Emitter;
use gemm::Operands;
use kernel::Geometry;

/// Tensors must have fewer elements than this: indices are 32-bit.
const MAX_ELEMENTS: usize = 1 << 31;

/// Compiles every kernel of `program`, in order.
pub fn compile(program: &Program) -> std::result::Result<CompiledProgram, CodegenError> {
    program.validate()?;
    let kernels = program
        .kernels
        .iter()
        .map(|k| compile_kernel(program, k))
        .collect::<Result<_>>()?;
    Ok(CompiledProgram { kernels })
}

/// Compiles one kernel of `program` (which must be valid).
pub fn compile_kernel(
    program: &Program,
    kernel: &Kernel,
) -> std::result::Result<CompiledKernel, CodegenError> {
    if let Some(n) = kernel.body.nodes.iter().find(|n| n.ty.numel() >= MAX_ELEMENTS) {
        return Err(CodegenError::Kernel {
            kernel: kernel.name.clone(),
            detail: format!("{} has 2^31 elements or more (indices are 32-bit)", n.ty),
        });
    }
    let mut cx = Emitter::new(program, kernel);
    let (family, geometry) = emit(&mut cx)?;
    let header = header(kernel, family, &geometry);
    let params = cx.param_names();
    let entry = ptx::Entry {
        name: &kernel.name,
        params: &params,
        threads: geometry.threads as u32,
        shared: geometry.shared_bytes > 0,
        header: &header,
    };
    let roles = kernel
        .inputs
        .iter()
        .map(|&buffer| Param { buffer, role: ParamRole::Read })
        .chain(kernel.outputs.iter().map(|o| Param { buffer: o.buffer, role: ParamRole::Write }));
    Ok(CompiledKernel {
        name: kernel.name.clone(),
        ptx: entry.module(&cx.b),
        family,
        grid: [geometry.blocks as u32, 1, 1],
        block: [geometry.threads as u32, 1, 1],
        shared_bytes: geometry.shared_bytes,
        params: roles.collect(),
    })
}

/// Picks the family from the anchor and emits the kernel.
fn emit(cx: &mut Emitter) -> Result<(Family, Geometry)> {
    let kernel = cx.kernel;
    let outputs: Vec<usize> = (0..kernel.outputs.len()).collect();
    // The last node of the anchor's class is the anchor; earlier ones are prologue.
    let last = |class: OpClass| {
        (0..kernel.body.nodes.len())
            .rev()
            .map(Value)
            .find(|&v| kernel.body.nodes[v.0].op.class() == class)
    };
    let split = |cx: &Emitter, anchor: Value| -> (Vec<usize>, Vec<usize>) {
        let n = cx.ty(anchor).numel();
        outputs
            .iter()
            .partition(|&&i| cx.ty(kernel.body.outputs[i].value).numel() == n)
    };
    let gemm = |cx: &mut Emitter, anchor: Value, ops: &dyn Operands| {
        let (aligned, rest) = split(cx, anchor);
        let geometry = gemm::emit(cx, ops, anchor, &aligned)?;
        pointwise::passes(cx, &rest, &geometry)?;
        Ok((Family::Gemm, geometry))
    };
    match kernel.anchor {
        Anchor::Convolution => {
            if let Some(conv) = last(OpClass::Convolution).and_then(|v| Some((v, conv::Conv::of(cx, v)?))) {
                return gemm(cx, conv.0, &conv.1);
            }
        }
        Anchor::MatMul => {
            if let Some(mm) = last(OpClass::MatMul).and_then(|v| Some((v, matmul::MatMul::of(cx, v)?))) {
                return gemm(cx, mm.0, &mm.1);
            }
        }
        Anchor::Reduction => {
            let group = reduction::anchors(cx);
            if let Some(first) = group.first() {
                let (aligned, rest) = split(cx, first.node);
                let geometry = reduction::emit(cx, &group, &aligned)?;
                pointwise::passes(cx, &rest, &geometry)?;
                return Ok((Family::Reduction, geometry));
            }
        }
        Anchor::Collective => {
            return Err(CodegenError::Kernel {
                kernel: kernel.name.clone(),
                detail: "a collective is a transfer between replicas, not a PTX kernel".into(),
            })
        }
        Anchor::Pool | Anchor::Pointwise => {}
    }
    Ok((Family::Pointwise, pointwise::emit(cx, &outputs)?))
}

/// The comment lines heading a kernel's module: what it is, how it launches, and the
/// IR it implements.
fn header(kernel: &Kernel, family: Family, g: &Geometry) -> Vec<String> {
    let covers: Vec<String> = kernel.covers.iter().map(|c| format!("%{c}")).collect();
    let mut lines = vec![
        format!("kernel {} ({} anchor, {:?}), emitted by calib-codegen", kernel.name, kernel.anchor.name(), kernel.label),
        format!(
            "family {}: grid [{},1,1], block [{},1,1], {} bytes of dynamic shared memory",
            family.name(),
            g.blocks,
            g.threads,
            g.shared_bytes
        ),
        format!("implements graph nodes {}", covers.join(", ")),
        "body:".to_string(),
    ];
    lines.extend(text::print(&kernel.body).lines().map(|l| format!("  {l}")));
    lines
}
