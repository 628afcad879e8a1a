//! PTX code generation for calib's kernel plans.
//!
//! [`compile`] lowers every kernel of a [`Program`] to a standalone PTX module for
//! sm_80 (which also assembles for sm_90), with static shapes baked in, and returns
//! each with its launch geometry, parameters and shared-memory size
//! ([`CompiledKernel`]). f32 and i64 values, and the precision policy's bf16 and tf32
//! (`docs/precision.md`): those are held in f32 registers, always rounded to their
//! precision (a `cast` to tf32 is `cvt.rna.tf32.f32`, to bf16 `cvt.rn.bf16x2.f32`; a
//! bf16 buffer is loaded 16 bits at a time and widened, stored rounded). Products run on
//! FMA units here; tensor-core GEMMs are `gemm/`'s.
//!
//! ```text
//!  Kernel { anchor, body } ──► launch.rs: family ──► loop nest around the anchor
//!                                                    (pointwise.rs, reduction/, gemm/)
//!                                                          │ calls
//!                                                          ▼
//!  eval/, the emitter core: any body value at any index (memory.rs: loads, stores)
//!      elementwise ops ─► op table       (render.rs)
//!      index maps      ─► addresses      (index.rs)
//!      windows, contractions, reductions ─► the NestedLoop it is handed
//!                                           (families.rs: pool/, conv.rs, matmul.rs,
//!                                            reduction/)
//! ```
//!
//! Imports go one way (down the picture, and never from `eval/` to a family):
//! `tests/module_graph.rs` fails on a cycle.
//!
//! The family follows the kernel's anchor: convolutions and matmul become tiled GEMMs,
//! reductions get a warp or block per reduced element, everything else (pointwise maps,
//! pooling, resizing) one thread per output element. Outputs in the anchor's iteration
//! space are stored from its epilogue, cheap ones outside it by a grid-stride pass after;
//! outputs that reduce over the anchor's whole result (BatchNorm statistics of a
//! convolution) get a second launch that reads the first one's result. A split
//! reduction's few results are combined by the last block of its own launch instead
//! (`serial_combine.rs`).

mod conv;
mod error;
mod eval;
mod families;
mod flow;
mod gemm;
mod index;
mod kernel;
mod launch;
mod matmul;
mod pointwise;
mod pool;
mod ptx;
mod reduction;
mod render;
mod runs;
mod scope;
mod serial_combine;
mod stationary;
mod window;

pub use error::CodegenError;
pub use kernel::{CompiledKernel, CompiledProgram, Family, Param, ParamRole};
pub use ptx::{InstructionMix, TARGET, VERSION};

use calib_ir::{text, Anchor, Kernel, Program};
use eval::Emitter;
use launch::Launch;

/// Tensors must have fewer elements than this: indices are 32-bit.
const MAX_ELEMENTS: usize = 1 << 31;

/// Compiles every kernel of `program`, in order. Collective kernels (all-reduces between
/// replicas) are transfers, not PTX: they are skipped here and performed by the executor.
pub fn compile(program: &Program) -> std::result::Result<CompiledProgram, CodegenError> {
    program.validate()?;
    let mut kernels = vec![];
    for k in program
        .kernels
        .iter()
        .filter(|k| k.anchor != Anchor::Collective)
    {
        kernels.extend(compile_kernel(program, k)?);
    }
    Ok(CompiledProgram { kernels })
}

/// Compiles one kernel of `program` (which must be valid) to its launches: usually one,
/// more when outputs reduce over the whole result of an earlier one (`launch.rs`).
pub fn compile_kernel(
    program: &Program,
    kernel: &Kernel,
) -> std::result::Result<Vec<CompiledKernel>, CodegenError> {
    if let Some(n) = kernel
        .body
        .nodes
        .iter()
        .find(|n| n.ty.numel() >= MAX_ELEMENTS)
    {
        return Err(CodegenError::Kernel {
            kernel: kernel.name.clone(),
            detail: format!("{} has 2^31 elements or more (indices are 32-bit)", n.ty),
        });
    }
    // bf16/tf32 values are rounded where elementwise ops and casts make them; a window,
    // contraction or reduction producing one would need rounding inside its loop nest,
    // which no precision policy asks for (their results are f32).
    if let Some(n) = kernel.body.nodes.iter().find(|n| {
        matches!(n.ty.dtype, calib_ir::DType::BF16 | calib_ir::DType::TF32)
            && !matches!(
                n.op.class(),
                calib_ir::OpClass::Elementwise
                    | calib_ir::OpClass::Source
                    | calib_ir::OpClass::Layout
            )
            && !matches!(n.op, calib_ir::Op::ResizeNearest { .. })
    }) {
        return Err(CodegenError::Kernel {
            kernel: kernel.name.clone(),
            detail: format!(
                "`{}` makes {}: only elementwise ops and index maps are generated in bf16 or tf32",
                n.op.name(),
                n.ty
            ),
        });
    }
    let mut remaining: Vec<usize> = (0..kernel.outputs.len()).collect();
    let mut stored: Vec<usize> = vec![];
    let mut split: Option<std::rc::Rc<dyn eval::Slices>> = None;
    let mut reduced = false;
    let mut compiled = vec![];
    while !remaining.is_empty() {
        let mut cx = Emitter::new(program, kernel, families::nested);
        cx.read_back(&stored);
        if let Some(s) = &split {
            cx.read_split(s.clone());
        }
        cx.first_reduction = !reduced;
        let mut launch = launch::emit(&mut cx, &remaining, compiled.is_empty())?;
        if launch.stores.is_empty() && launch.split.is_none() {
            return Err(CodegenError::Kernel {
                kernel: kernel.name.clone(),
                detail: "a launch stored nothing (a bug in launch planning)".into(),
            });
        }
        let writes_workspace = launch.split.is_some();
        remaining.retain(|i| !launch.stores.contains(i));
        let tail = match compiled.is_empty() {
            true => serial_combine::fold(&mut cx, &launch, &stored, &remaining)?,
            false => None,
        };
        if tail.is_some() {
            // The last block stored the rest, from slices no later launch reads.
            launch.stores.append(&mut remaining);
            launch.split = None;
            launch.geometry.shared_bytes = launch.geometry.shared_bytes.max(4);
        }
        let name = match compiled.len() {
            0 => kernel.name.clone(),
            part => format!("{}_part{part}", kernel.name),
        };
        let header = header(kernel, &name, &launch, &stored, tail.is_some());
        stored.extend(&launch.stores);
        reduced |= launch.family == Family::Reduction;
        if split.is_none() {
            split = launch.split.clone();
        }
        let params = cx.param_names();
        let mix = cx.b.mix();
        let unique_bytes = cx.unique_bytes();
        let g = &launch.geometry;
        if g.threads > kernel::MAX_THREADS {
            return Err(CodegenError::Kernel {
                kernel: kernel.name.clone(),
                detail: format!(
                    "a block of {} threads exceeds the {} index arithmetic assumes",
                    g.threads,
                    kernel::MAX_THREADS
                ),
            });
        }
        let entry = ptx::Entry {
            name: &name,
            params: &params,
            threads: g.threads as u32,
            max_registers: match launch.gemm {
                Some(s) => gemm_register_cap(&s, &name)?,
                None => g
                    .max_registers
                    .or((kernel.anchor == Anchor::Pool).then_some(WINDOW_REGISTER_CAP)),
            },
            shared: g.shared_bytes > 0,
            header: &header,
        };
        let roles = kernel
            .inputs
            .iter()
            .map(|&buffer| Param {
                buffer,
                role: ParamRole::Read,
            })
            .chain(kernel.outputs.iter().map(|o| Param {
                buffer: o.buffer,
                role: ParamRole::Write,
            }))
            .chain(kernel.workspace.map(|buffer| Param {
                buffer,
                role: if writes_workspace {
                    ParamRole::Write
                } else {
                    ParamRole::Read
                },
            }))
            .chain(kernel.semaphore.map(|buffer| Param {
                buffer,
                role: ParamRole::Write,
            }));
        compiled.push(CompiledKernel {
            ptx: entry.module(&cx.b),
            name,
            kernel: kernel.name.clone(),
            family: launch.family,
            grid: [g.blocks as u32, 1, 1],
            block: [g.threads as u32, 1, 1],
            shared_bytes: g.shared_bytes,
            params: roles.collect(),
            mix,
            tail,
            unique_bytes,
            gemm: launch.gemm,
        });
    }
    Ok(compiled)
}

/// The comment lines heading a launch's module: what it is, how it launches, and the
/// IR it implements.
fn header(
    kernel: &Kernel,
    name: &str,
    launch: &Launch,
    read_back: &[usize],
    combines_in_place: bool,
) -> Vec<String> {
    let g = &launch.geometry;
    let covers: Vec<String> = kernel.covers.iter().map(|c| format!("%{c}")).collect();
    let outputs = |list: &[usize]| {
        list.iter()
            .map(|i| format!("out{i}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut lines = vec![
        format!(
            "{name}: kernel {} ({} anchor, {:?}), emitted by calib-codegen",
            kernel.name,
            kernel.anchor.name(),
            kernel.label
        ),
        format!(
            "family {}: grid [{},1,1], block [{},1,1], {} bytes of dynamic shared memory",
            launch.family.name(),
            g.blocks,
            g.threads,
            g.shared_bytes
        ),
        format!("implements graph nodes {}", covers.join(", ")),
        format!("stores {}", outputs(&launch.stores)),
    ];
    if let Some(s) = &kernel.schedule {
        lines.push(format!("schedule {s}"));
    }
    if let Some(s) = &launch.split {
        lines.push(format!(
            "writes {} partial sums of its anchor to the workspace; the next launch adds them",
            s.count()
        ));
    }
    if combines_in_place {
        lines.push(
            "writes partial sums of its anchor to the workspace; the last block to finish \
             (counted on the semaphore) adds them and stores the rest"
                .to_string(),
        );
    }
    if !read_back.is_empty() {
        lines.push(format!(
            "reads back {} (stored by earlier launches)",
            outputs(read_back)
        ));
    }
    if !launch.loops.is_empty() {
        let nodes: Vec<String> = launch
            .loops
            .iter()
            .map(|v| format!("%{} {}", v.0, kernel.body.nodes[v.0].op.name()))
            .collect();
        lines.push(format!(
            "evaluates per element, as loops: {}",
            nodes.join(", ")
        ));
    }
    lines.push("body:".to_string());
    lines.extend(text::print(&kernel.body).lines().map(|l| format!("  {l}")));
    lines
}

/// The register cap (`.maxnreg`) of a window kernel's launches (pooling and its
/// adjoints). Without a cap ptxas picks a register budget for occupancy, and for the
/// max-pooling adjoint, whose overlapping windows keep many values live, it picked 40 and
/// spilled; with the cap it takes the 48 it needs. Other kernels keep ptxas's choice:
/// given room, it spends registers that cost them occupancy.
const WINDOW_REGISTER_CAP: u32 = 64;

/// The register cap (`.maxnreg`) of a GEMM launch: the schedule's
/// ([`calib_ir::GemmSchedule::register_cap`]), or `CALIB_GEMM_MAX_REGISTERS` (24 to 255)
/// in its place. The variable is for measuring: a GPU run can time the same plan with a
/// different cap (255: no spills, one block of 256 threads per SM) without a rebuild.
/// The planner and the cost model are not told, so what they predict stays the plan's.
fn gemm_register_cap(
    schedule: &calib_ir::GemmSchedule,
    launch: &str,
) -> std::result::Result<Option<u32>, CodegenError> {
    const VAR: &str = "CALIB_GEMM_MAX_REGISTERS";
    let Ok(text) = std::env::var(VAR) else {
        return Ok(schedule.register_cap());
    };
    match text.trim().parse::<u32>() {
        Ok(cap) if (24..=255).contains(&cap) => Ok(Some(cap)),
        _ => Err(CodegenError::Kernel {
            kernel: launch.to_string(),
            detail: format!("{VAR}={text:?}: expected a register count from 24 to 255"),
        }),
    }
}
