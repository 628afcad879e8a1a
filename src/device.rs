//! From a graph to a [`DeviceProgram`], what device executors (the PTX simulator, CUDA)
//! load: the kernel plan (fused, or one kernel per op), PTX for every kernel, and where
//! each buffer sits in one arena.

use calib_codegen::{compile, CodegenError, CompiledProgram};
use calib_cost::{predict, Device};
use calib_ir::{Graph, Program, ProgramError};
use calib_passes::fusion::{fuse, layout, prepare, unfused, FusionOptions, LayoutPolicy};
use calib_passes::plan_arena;
use calib_runtime::{DeviceKernel, DeviceProgram, LaunchInfo, RuntimeError};

/// Plans `graph` (fused with `fusion`, after the graph passes its layout asks for,
/// `fusion::prepare`; or one kernel per op when `None`) and compiles every kernel.
pub fn compile_graph(
    graph: &Graph,
    fusion: Option<&FusionOptions>,
) -> Result<DeviceProgram, RuntimeError> {
    let fusion_error = |e: calib_passes::PassError| ProgramError::Fusion(e.to_string());
    let codegen_error = |e: CodegenError| RuntimeError::Codegen(e.to_string());
    let (program, options) = match fusion {
        Some(options) => {
            let graph = prepare(graph, options).map_err(fusion_error)?;
            (
                fuse(&graph, options).map_err(fusion_error)?.program,
                options.clone(),
            )
        }
        None => (
            unfused(graph).map_err(fusion_error)?,
            FusionOptions::default(),
        ),
    };
    let estimated = |_: &CompiledProgram| Default::default();
    let plan = choose_layout(program, &options, estimated).map_err(codegen_error)?;
    device_program(plan.program, &plan.compiled, &options.device)
}

/// The layout `LayoutPolicy::Auto` picked and the predicted steps it chose between.
#[derive(Clone, Debug, PartialEq)]
pub struct LayoutChoice {
    pub chosen: calib_ir::Layout,
    /// Predicted step in milliseconds (launches as emitted, registers as the caller's
    /// `registers` gave them), row-major then channels-last.
    pub row_major_ms: f64,
    pub channels_last_ms: f64,
}

/// A plan as compiled: its program (layout and schedules final) and code, the layout
/// choice `LayoutPolicy::Auto` made, and how many GEMM kernels changed schedule when
/// their emitted code was priced ([`crate::schedules::refine`]).
pub struct CompiledPlan {
    pub program: Program,
    pub compiled: CompiledProgram,
    pub layout: Option<LayoutChoice>,
    pub refined_schedules: usize,
}

/// Compiles `program` (planned by fusion under `options`, row-major under `Auto`), its
/// GEMM schedules checked against the code they emit ([`crate::schedules::refine`]);
/// under [`LayoutPolicy::Auto`], also with image-shaped temporaries channels-last and
/// every kernel scheduled for that ([`layout::relayout`]), and keeps whichever step
/// the cost model predicts faster on the options' device (row-major on a tie), each
/// plan's kernels given the registers `registers` says (ptxas's, or none: estimated).
pub fn choose_layout(
    program: Program,
    options: &FusionOptions,
    registers: impl Fn(&CompiledProgram) -> std::collections::HashMap<String, u32> + Sync,
) -> Result<CompiledPlan, CodegenError> {
    let finish = |mut program: Program| -> Result<CompiledPlan, CodegenError> {
        let refined_schedules = crate::schedules::refine(&mut program, options);
        let compiled = compile(&program)?;
        Ok(CompiledPlan {
            program,
            compiled,
            layout: None,
            refined_schedules,
        })
    };
    if options.layout != LayoutPolicy::Auto {
        return finish(program);
    }
    // `relayout` schedules every kernel afresh, so the two plans are independent.
    let mut other = program.clone();
    if layout::relayout(&mut other, calib_ir::Layout::ChannelsLast, options) == 0 {
        return finish(program);
    }
    let priced = |program: Program| {
        let plan = finish(program)?;
        let registers = registers(&plan.compiled);
        let step = crate::predict::predict_step(
            &plan.program,
            &plan.compiled,
            &options.device,
            &registers,
        );
        Ok::<_, CodegenError>((step.step_ms, plan))
    };
    let (row_major, channels_last) = rayon::join(|| priced(program), || priced(other));
    let ((row_major_ms, row_major), (channels_last_ms, channels_last)) =
        (row_major?, channels_last?);
    let (chosen, plan) = match channels_last_ms < row_major_ms {
        true => (calib_ir::Layout::ChannelsLast, channels_last),
        false => (calib_ir::Layout::RowMajor, row_major),
    };
    Ok(CompiledPlan {
        layout: Some(LayoutChoice {
            chosen,
            row_major_ms,
            channels_last_ms,
        }),
        ..plan
    })
}

/// Compiles every kernel of `program`; launch estimates are for `device`.
pub fn compile_program(program: Program, device: &Device) -> Result<DeviceProgram, RuntimeError> {
    let compiled = compile(&program).map_err(|e| RuntimeError::Codegen(e.to_string()))?;
    device_program(program, &compiled, device)
}

/// `program` with its compiled kernels and an arena plan.
pub fn device_program(
    program: Program,
    compiled: &CompiledProgram,
    device: &Device,
) -> Result<DeviceProgram, RuntimeError> {
    let arena = plan_arena(&program);
    let kernels = compiled
        .kernels
        .iter()
        .map(|k| DeviceKernel {
            name: k.name.clone(),
            kernel: k.kernel.clone(),
            ptx: k.ptx.clone(),
            grid: k.grid,
            block: k.block,
            shared_bytes: k.shared_bytes as u32,
            params: k.params.iter().map(|p| p.buffer).collect(),
            info: launch_info(&program, k, device),
        })
        .collect();
    DeviceProgram::new(program, kernels, arena.offsets, arena.arena_bytes)
}

/// The label, work and predicted time of one launch (flops and bytes on a plan
/// kernel's first launch only, so that a table's columns sum to the plan's). The time
/// is the cost model's for the code as emitted, with registers estimated (ptxas is not
/// run here).
fn launch_info(
    program: &Program,
    launch: &calib_codegen::CompiledKernel,
    device: &Device,
) -> LaunchInfo {
    let Some(kernel) = program.kernel(&launch.kernel) else {
        return LaunchInfo::default();
    };
    let first = launch.name == launch.kernel;
    let cost = calib_passes::fusion::kernel_cost(&kernel.body);
    LaunchInfo {
        label: kernel.label.clone(),
        flops: if first { cost.flops } else { 0.0 },
        bytes: if first { cost.bytes } else { 0.0 },
        estimated_us: predict(&launch.launch(launch.estimated_registers()), device).seconds * 1e6,
    }
}
