//! Schedules checked against the code they emit.
//!
//! The planner chooses each GEMM kernel's tile, split of `k` and pipeline depth, and
//! each reduction kernel's split, from an estimate of the code generation would write
//! (`passes::fusion::estimate`), because it prices thousands of candidate kernels while
//! it extracts a plan. Once the plan is fixed there are a few hundred such kernels
//! left, and code generation is fast enough to write each of them under the estimate's
//! best few schedules: the cost model then prices what was really emitted, and the
//! fastest wins. Where the estimate ranks schedules right this changes nothing; where
//! it does not (pipeline depth against a split of `k`, a channels-last reduction the
//! estimate prices as a row-major one), the plan gets the schedule the census says is
//! fastest. A GEMM schedule `calib tune` measured stays: a measurement beats a
//! prediction.

use calib_codegen::{compile, CompiledProgram};
use calib_cost::{predict, Device};
use calib_ir::{Kernel, Program, ProgramOutput, ReductionSchedule, Role, Schedule};
use calib_passes::fusion::estimate::ranked_reduction_splits;
use calib_passes::fusion::tuning::ranked_candidates;
use calib_passes::fusion::{reassign_with, workspace_bytes, FusionOptions};
use rayon::prelude::*;
use std::collections::HashMap;

/// How many of the estimate's fastest schedules each kernel is emitted under.
pub const CANDIDATES: usize = 8;

/// Re-chooses the schedule of every GEMM and reduction kernel of `program` among the
/// estimate's [`CANDIDATES`] fastest (GEMM tiles, splits of `k` and pipelines, the
/// statistics' split kept; splits of a reduction) and its current one, by the cost
/// model's price of the code each emits; returns how many kernels changed schedule.
/// Workspaces are sized afresh for the new splits.
pub fn refine(program: &mut Program, options: &FusionOptions) -> usize {
    // Each kernel is emitted alone, so they are priced in parallel.
    let chosen: HashMap<String, Schedule> = (program.kernels.par_iter())
        .filter_map(|kernel| Some((kernel.name.clone(), refined(program, kernel, options)?)))
        .collect();
    if !chosen.is_empty() && !reassign_with(program, options, &chosen) {
        return 0;
    }
    chosen.len()
}

/// The schedule [`refine`] gives `kernel`, where it is not the one it has.
fn refined(program: &Program, kernel: &Kernel, options: &FusionOptions) -> Option<Schedule> {
    let (device, precision) = (&options.device, options.precision);
    let current = kernel.schedule?;
    let layouts = program.input_layouts(kernel);
    let candidates: Vec<Schedule> = match (current.gemm, current.reduction) {
        (Some(_), _) => {
            let tuned = options
                .tuning
                .as_ref()
                .and_then(|cache| cache.lookup(&kernel.body, device, precision, &layouts));
            if tuned.is_some() {
                return None;
            }
            ranked_candidates(&kernel.body, device, precision, CANDIDATES, &layouts)
                .into_iter()
                .map(|gemm| Schedule {
                    gemm: Some(gemm),
                    ..current
                })
                .collect()
        }
        (None, Some(_)) => ranked_reduction_splits(&kernel.body, device, &layouts)
            .into_iter()
            .take(CANDIDATES)
            .map(|split| Schedule::reduction(ReductionSchedule { split }))
            .collect(),
        (None, None) => return None,
    };
    let mut alone = alone(program, kernel);
    let mut price = |schedule: Schedule| {
        alone.kernels[0].schedule = Some(schedule);
        // Its own workspace: a launch's price counts the bytes it touches.
        alone.add_workspace(0, workspace_bytes(&kernel.body, &schedule));
        compile(&alone).ok().map(|c| seconds(&c, device))
    };
    let mut best = price(current).map(|t| (t, current))?;
    for candidate in candidates {
        if let Some(t) = price(candidate).filter(|&t| t < best.0) {
            best = (t, candidate);
        }
    }
    (best.1 != current).then_some(best.1)
}

/// `kernel` as a program of its own: what it reads bound as inputs, what it writes as
/// outputs (enough for code generation, which compiles a kernel at a time).
fn alone(program: &Program, kernel: &Kernel) -> Program {
    let mut buffers = program.buffers.clone();
    for b in &kernel.inputs {
        if matches!(buffers[b.0].role, Role::Output | Role::Temp) {
            buffers[b.0].role = Role::Input;
        }
    }
    let outputs = kernel
        .outputs
        .iter()
        .enumerate()
        .map(|(i, o)| {
            buffers[o.buffer.0].role = Role::Output;
            ProgramOutput {
                name: format!("{}_out{i}", kernel.name),
                buffer: o.buffer,
            }
        })
        .collect();
    Program {
        buffers,
        kernels: vec![kernel.clone()],
        outputs,
    }
}

/// The predicted seconds of a compiled kernel's launches on `device`, registers
/// estimated, with the gap between launches.
fn seconds(compiled: &CompiledProgram, device: &Device) -> f64 {
    compiled
        .kernels
        .iter()
        .map(|k| {
            predict(&k.launch(k.estimated_registers()), device).seconds
                + device.timing.launch_gap_us * 1e-6
        })
        .sum()
}
