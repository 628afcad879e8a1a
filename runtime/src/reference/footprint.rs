//! The reference interpreter's peak memory for a graph, found by replaying its schedule
//! without data: it frees each value after its last reader, so the peak is the largest
//! set of values live at once, plus the value being computed and that op's workspace.

use super::{conv, live_uses};
use crate::memory::Need;
use crate::Precision;
use calib_ir::{DType, Graph, Op, TensorType};

/// What running a graph holds at its peak, in bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Footprint {
    /// The bound inputs and params, as held in the run's precision.
    pub sources: u64,
    /// The most that computed values (outputs included) and the workspace of the op
    /// being computed take at once.
    pub values: u64,
}

impl Footprint {
    /// The peak of `replicas` runs at once whose inputs and params are still to be put
    /// in memory (sessions before their state is loaded, each replica with a copy of
    /// its own): `what` names the run.
    pub fn with_sources(&self, what: &str, replicas: usize) -> Need {
        let r = replicas as u64;
        let what = match replicas {
            1 => what.to_string(),
            n => format!("{n} replicas of {what}"),
        };
        Need {
            what,
            parts: vec![
                ("inputs and params", self.sources.saturating_mul(r)),
                ("values and workspaces", self.values.saturating_mul(r)),
            ],
        }
    }
}

/// Bytes a value of `ty` takes when floats are held in `precision` (f16 and bf16 are
/// held widened).
pub fn held_bytes(ty: &TensorType, precision: Precision) -> u64 {
    let element: u64 = match (ty.dtype, precision) {
        (DType::I64, _) | (_, Precision::F64) => 8,
        _ => 4,
    };
    (ty.numel() as u64).saturating_mul(element)
}

/// The peak of running `graph` with floats in `precision` on this machine's threads.
pub fn footprint(graph: &Graph, precision: Precision) -> Footprint {
    let threads = rayon::current_num_threads();
    let mut uses = live_uses(graph);
    let held = |id: usize| held_bytes(&graph.nodes[id].ty, precision);
    let is_bound = |id: usize| matches!(graph.nodes[id].op, Op::Input { .. } | Op::Param { .. });
    let (mut sources, mut live, mut peak) = (0u64, 0u64, 0u64);
    for (id, node) in graph.nodes.iter().enumerate() {
        match node.op {
            // Bound whether read or not, and the caller's until the run ends.
            Op::Input { .. } | Op::Param { .. } => {
                sources = sources.saturating_add(held(id));
                continue;
            }
            _ if uses[id] == 0 => continue,
            _ => {}
        }
        let shape = |i: usize| {
            node.inputs
                .get(i)
                .map_or(&[][..], |v| graph.ty(*v).shape.as_slice())
        };
        let element = held_bytes(&TensorType::new(node.ty.dtype, vec![]), precision);
        let workspace =
            conv::workspace_elements(&node.op, shape(0), shape(1), &node.ty.shape, threads) as u64;
        let value = held(id);
        peak = peak.max(
            live.saturating_add(value)
                .saturating_add(workspace.saturating_mul(element)),
        );
        live = live.saturating_add(value);
        for v in &node.inputs {
            uses[v.0] -= 1;
            if uses[v.0] == 0 && !is_bound(v.0) {
                live -= held(v.0);
            }
        }
    }
    Footprint {
        sources,
        values: peak,
    }
}
