//! Schedules for a fused plan: every GEMM kernel gets the tile and split of `k`, and
//! every reduction kernel the split of its reduced elements, that the cost model
//! predicts fastest on the target device (on tensor cores where the precision policy
//! allows them), or that `calib tune` measured fastest ([`super::tuning`]) ([`super::estimate`]); a split kernel gets a
//! workspace buffer for its partial results, and a split reduction a semaphore, on
//! which its last block to finish combines them where they are few
//! ([`calib_ir::Kernel::semaphore`]).

use super::estimate::{best_reduction_split, best_schedule};
use super::FusionOptions;
use calib_ir::{
    gemm_anchor, Anchor, GemmDims, Graph, OpClass, Program, ReductionSchedule, Schedule,
};
use std::collections::HashMap;

/// Schedules `program` afresh, as [`assign`] after fusion, dropping the schedules and
/// workspaces it had (its layouts changed since). `false`, and nothing changed, where
/// the workspaces are not the program's last buffers, as `assign` leaves them.
pub fn reassign(program: &mut Program, options: &FusionOptions) -> bool {
    reassign_with(program, options, &HashMap::new())
}

/// Schedules `program` afresh, dropping the schedules and workspaces it had (as after
/// a change of layout), with the schedules `chosen` (by kernel name) in place of the
/// estimate's for GEMM and reduction kernels: schedules found faster in the code they
/// emit (`calib::schedules`). `false`, and nothing changed, where the workspaces are
/// not the program's last buffers.
pub fn reassign_with(
    program: &mut Program,
    options: &FusionOptions,
    chosen: &HashMap<String, Schedule>,
) -> bool {
    let workspaces: Vec<usize> = program
        .kernels
        .iter()
        .flat_map(|k| [k.workspace, k.semaphore])
        .flatten()
        .map(|b| b.0)
        .collect();
    let first = workspaces
        .iter()
        .copied()
        .min()
        .unwrap_or(program.buffers.len());
    let trailing = program.buffers.len() - first;
    if trailing != workspaces.len() {
        return false;
    }
    program.buffers.truncate(first);
    for k in &mut program.kernels {
        (k.schedule, k.workspace, k.semaphore) = (None, None, None);
    }
    assign_with(program, options, chosen);
    true
}

/// Assigns schedules in place; returns how many GEMMs and how many reductions split.
pub fn assign(program: &mut Program, options: &FusionOptions) -> (usize, usize) {
    assign_with(program, options, &HashMap::new())
}

fn assign_with(
    program: &mut Program,
    options: &FusionOptions,
    chosen: &HashMap<String, Schedule>,
) -> (usize, usize) {
    let (device, precision) = (&options.device, options.precision);
    let (mut gemms, mut reductions) = (0, 0);
    for k in 0..program.kernels.len() {
        let kernel = &program.kernels[k];
        if kernel.anchor == Anchor::Collective {
            continue;
        }
        let body = &kernel.body;
        let layouts = program.input_layouts(kernel);
        let dims = gemm_anchor(body).and_then(|a| GemmDims::of(body, a));
        let schedule = match dims {
            Some(_) => best_schedule(body, device, precision, &layouts).map(|(mut s, _)| {
                // A measured schedule beats a predicted one.
                let tuned = options.tuning.as_ref();
                if let Some(t) = tuned.and_then(|c| c.lookup(body, device, precision, &layouts)) {
                    s.gemm = Some(t.schedule);
                } else if let Some(&c) = chosen.get(&kernel.name) {
                    s = c;
                }
                s
            }),
            None => chosen.get(&kernel.name).copied().or_else(|| {
                best_reduction_split(body, device, &layouts)
                    .map(|(split, _, _)| Schedule::reduction(ReductionSchedule { split }))
            }),
        };
        let Some(schedule) = schedule else { continue };
        let bytes = workspace_bytes(body, &schedule);
        gemms += usize::from(schedule.gemm.is_some_and(|g| g.split_k > 1));
        reductions += usize::from(schedule.reduction.is_some_and(|r| r.split > 1));
        let combines_in_place = serial_combine(&schedule);
        program.kernels[k].schedule = Some(schedule);
        program.add_workspace(k, bytes);
        if combines_in_place {
            program.add_semaphore(k);
        }
    }
    (gemms, reductions)
}

/// Whether `kernel`, split as `schedule` says, gets a semaphore on which its last block
/// can combine the slices ([`calib_ir::Kernel::semaphore`]): a kernel whose first
/// launch is a split reduction. Code generation uses it where the combine is small; a
/// semaphore is four bytes.
fn serial_combine(schedule: &Schedule) -> bool {
    schedule.reduction.is_some_and(|r| r.split > 1) && schedule.gemm.is_none()
}

/// Bytes of workspace a kernel with this body needs under `schedule`: a split GEMM's
/// partial tiles, then a split reduction's partial results.
pub fn workspace_bytes(body: &Graph, schedule: &Schedule) -> usize {
    let dims = gemm_anchor(body).and_then(|a| GemmDims::of(body, a));
    let gemm_bytes = schedule.reduction_offset_bytes(dims.as_ref());
    // Room for any group of sibling reductions code generation may fold together:
    // every reduction of the body, at the largest output.
    let reduction_nodes = body
        .nodes
        .iter()
        .filter(|n| n.op.class() == OpClass::Reduction);
    let outputs = reduction_nodes
        .clone()
        .map(|n| n.ty.numel())
        .max()
        .unwrap_or(1);
    let reduction_bytes = schedule
        .reduction
        .map_or(0, |r| r.workspace_bytes(reduction_nodes.count(), outputs));
    gemm_bytes + reduction_bytes
}
