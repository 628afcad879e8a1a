//! Device memory planning for a kernel [`Program`]: one arena for every buffer, with
//! temporaries whose lifetimes do not overlap sharing bytes.
//!
//! Lifetimes are in kernel positions: a temporary lives from the first kernel that
//! writes it to the last kernel that reads it. Bound buffers (inputs, params) and
//! program outputs live for the whole program, and so do the temporaries no kernel
//! lists among its inputs or outputs: workspaces, and semaphores, whose zero must
//! survive from one run of the program to the next. Placement is greedy by size, largest
//! first, at the lowest offset that does not overlap a live neighbour, which is what
//! deep-learning planners commonly do and lands close to the lower bound (the peak of
//! live bytes) on layer-by-layer networks.
//!
//! An all-reduce may run on a communication stream while later kernels run (see
//! `DeviceProgram::schedule` in calib-runtime): it may read its input and write its output
//! at any moment up to the first kernel that reads its output. So both stay alive until
//! that kernel, and nothing launched meanwhile is placed on their bytes.

use calib_ir::{Anchor, BufferId, Program, Role};
use serde::Serialize;

/// Byte alignment of every placement (enough for vector loads and cache lines).
pub const ALIGN: usize = 256;

/// Where each buffer lives in one arena.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ArenaPlan {
    /// Byte offset of each buffer, indexed like [`Program::buffers`].
    pub offsets: Vec<usize>,
    /// Arena size: what the program needs at most at once, after sharing.
    pub arena_bytes: usize,
    /// Sum of all buffer sizes: what it would need without sharing.
    pub unshared_bytes: usize,
    /// The most bytes live at any kernel: no plan can be smaller.
    pub peak_live_bytes: usize,
}

/// Where an all-reduce of a plan may run concurrently with other kernels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct AllReduceWindow {
    /// The collective kernel's position in the plan.
    pub kernel: usize,
    /// The first later kernel that reads its result (the plan's length if none): the
    /// kernels strictly between run while it is in flight.
    pub join: usize,
    /// The bytes it reduces.
    pub bytes: usize,
}

/// The overlap window of every all-reduce of `program`, in plan order.
pub fn all_reduce_windows(program: &Program) -> Vec<AllReduceWindow> {
    let kernels = &program.kernels;
    (0..kernels.len())
        .filter(|&k| kernels[k].anchor == Anchor::Collective)
        .map(|k| {
            let reads = |later: &calib_ir::Kernel| {
                kernels[k]
                    .outputs
                    .iter()
                    .any(|o| later.inputs.contains(&o.buffer))
            };
            AllReduceWindow {
                kernel: k,
                join: (k + 1..kernels.len())
                    .find(|&j| reads(&kernels[j]))
                    .unwrap_or(kernels.len()),
                bytes: kernels[k]
                    .inputs
                    .iter()
                    .map(|b| program.buffer(*b).ty.size_bytes())
                    .sum(),
            }
        })
        .collect()
}

/// Plans the arena of `program` (which should have passed `Program::validate`).
pub fn plan_arena(program: &Program) -> ArenaPlan {
    let n = program.buffers.len();
    let last = program.kernels.len().saturating_sub(1);
    let mut first_use = vec![usize::MAX; n];
    let mut last_use = vec![0usize; n];
    for (k, kernel) in program.kernels.iter().enumerate() {
        let touched = kernel
            .inputs
            .iter()
            .chain(kernel.outputs.iter().map(|o| &o.buffer));
        for &BufferId(b) in touched {
            first_use[b] = first_use[b].min(k);
            last_use[b] = last_use[b].max(k);
        }
    }
    for window in all_reduce_windows(program) {
        let kernel = &program.kernels[window.kernel];
        let touched = kernel
            .inputs
            .iter()
            .chain(kernel.outputs.iter().map(|o| &o.buffer));
        for &BufferId(b) in touched {
            last_use[b] = last_use[b].max(window.join);
        }
    }
    let lifetime: Vec<(usize, usize)> = program
        .buffers
        .iter()
        .enumerate()
        .map(|(b, buf)| match buf.role {
            Role::Temp if first_use[b] != usize::MAX => (first_use[b], last_use[b]),
            _ => (0, last),
        })
        .collect();
    let size = |b: usize| program.buffers[b].ty.size_bytes().div_ceil(ALIGN) * ALIGN;

    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by_key(|&b| (std::cmp::Reverse(size(b)), b));
    let mut offsets = vec![0usize; n];
    let mut placed: Vec<usize> = Vec::with_capacity(n);
    let mut arena_bytes = 0;
    for b in order {
        let (start, end) = lifetime[b];
        let mut taken: Vec<(usize, usize)> = placed
            .iter()
            .filter(|&&p| lifetime[p].0 <= end && start <= lifetime[p].1)
            .map(|&p| (offsets[p], offsets[p] + size(p)))
            .collect();
        taken.sort_unstable();
        let mut at = 0;
        for (lo, hi) in taken {
            if at + size(b) <= lo {
                break;
            }
            at = at.max(hi);
        }
        offsets[b] = at;
        arena_bytes = arena_bytes.max(at + size(b));
        placed.push(b);
    }
    let peak_live_bytes = (0..=last)
        .map(|k| {
            (0..n)
                .filter(|&b| lifetime[b].0 <= k && k <= lifetime[b].1)
                .map(size)
                .sum()
        })
        .max()
        .unwrap_or(0);
    ArenaPlan {
        offsets,
        arena_bytes,
        unshared_bytes: (0..n).map(size).sum(),
        peak_live_bytes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fusion::unfused;
    use calib_ir::{DType, GraphBuilder, Mode};

    /// A chain of pointwise ops: each temporary dies right after its reader.
    fn chain(len: usize) -> Program {
        let mut g = GraphBuilder::new(Mode::Eval, DType::F32);
        let mut x = g.input("x", DType::F32, vec![1024]).unwrap();
        for _ in 0..len {
            x = g.relu(x).unwrap();
            x = g.neg(x).unwrap();
        }
        g.output("y", x).unwrap();
        unfused(&g.finish()).unwrap()
    }

    fn overlaps(plan: &ArenaPlan, program: &Program, a: usize, b: usize) -> bool {
        let size = |x: usize| program.buffers[x].ty.size_bytes();
        plan.offsets[a] < plan.offsets[b] + size(b) && plan.offsets[b] < plan.offsets[a] + size(a)
    }

    #[test]
    fn temporaries_of_a_chain_share_memory_and_live_ones_never_do() {
        let program = chain(8);
        let plan = plan_arena(&program);
        assert!(plan.arena_bytes < plan.unshared_bytes / 4, "{plan:?}");
        assert!(plan.arena_bytes >= plan.peak_live_bytes);
        // No two buffers that are live at the same kernel overlap.
        for (k, kernel) in program.kernels.iter().enumerate() {
            let live: Vec<usize> = kernel
                .inputs
                .iter()
                .chain(kernel.outputs.iter().map(|o| &o.buffer))
                .map(|b| b.0)
                .collect();
            for &a in &live {
                for &b in &live {
                    assert!(
                        a == b || !overlaps(&plan, &program, a, b),
                        "kernel {k}: {a} and {b} overlap"
                    );
                }
            }
        }
    }

    #[test]
    fn offsets_are_aligned() {
        let plan = plan_arena(&chain(3));
        assert!(plan.offsets.iter().all(|o| o % ALIGN == 0));
    }
}
