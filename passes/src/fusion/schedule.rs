//! Schedules for a fused plan: every GEMM kernel gets the tile and split of `k`, and
//! every reduction kernel the split of its reduced elements, that the cost model
//! predicts fastest on the target device ([`super::estimate`]); a split kernel gets a
//! workspace buffer for its partial results.

use super::estimate::{best_reduction_split, best_schedule};
use calib_cost::Device;
use calib_ir::{
    gemm_anchor, Anchor, Buffer, BufferId, DType, GemmDims, OpClass, Program, ReductionSchedule,
    Role, Schedule, TensorType,
};

/// Assigns schedules in place; returns how many GEMMs and how many reductions split.
pub fn assign(program: &mut Program, device: &Device) -> (usize, usize) {
    let (mut gemms, mut reductions) = (0, 0);
    for k in 0..program.kernels.len() {
        let kernel = &program.kernels[k];
        let (schedule, bytes) = match kernel.anchor {
            Anchor::Convolution | Anchor::MatMul => {
                let Some((schedule, _)) = best_schedule(&kernel.body, device) else {
                    continue;
                };
                let anchor = gemm_anchor(&kernel.body).expect("a scheduled kernel has a GEMM");
                let dims = GemmDims::of(&kernel.body, anchor).expect("and its dimensions");
                gemms += usize::from(schedule.split_k > 1);
                (Schedule::Gemm(schedule), schedule.workspace_bytes(&dims))
            }
            Anchor::Collective => continue,
            _ => {
                let Some((split, _, _)) = best_reduction_split(&kernel.body, device) else {
                    continue;
                };
                reductions += usize::from(split > 1);
                // Room for any group of sibling reductions code generation may fold
                // together: every reduction of the body, at the largest output.
                let body = &kernel.body;
                let reductions_in_body = body
                    .nodes
                    .iter()
                    .filter(|n| n.op.class() == OpClass::Reduction)
                    .count();
                let outputs = body
                    .nodes
                    .iter()
                    .filter(|n| n.op.class() == OpClass::Reduction)
                    .map(|n| n.ty.numel())
                    .max()
                    .unwrap_or(1);
                let schedule = ReductionSchedule { split };
                (
                    Schedule::Reduction(schedule),
                    schedule.workspace_bytes(reductions_in_body, outputs),
                )
            }
        };
        let workspace = (bytes > 0).then(|| {
            program.buffers.push(Buffer {
                name: format!("workspace{k}"),
                ty: TensorType::new(DType::F32, vec![bytes / 4]),
                role: Role::Temp,
            });
            BufferId(program.buffers.len() - 1)
        });
        let kernel = &mut program.kernels[k];
        kernel.schedule = Some(schedule);
        kernel.workspace = workspace;
    }
    (gemms, reductions)
}
