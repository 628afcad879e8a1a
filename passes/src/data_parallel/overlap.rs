//! Placing each bucket's all-reduce where its gradients are complete.
//!
//! The bucket nodes are appended after the whole backward pass; a backend that runs a
//! graph in node order, launching each all-reduce on a communication stream and waiting
//! for it only where its result is read, overlaps communication with the rest of the
//! backward pass exactly when the all-reduce comes right after the bucket's last
//! gradient. So the packing and the all-reduce move up there; the unpacking stays where
//! it was, just before the update reads it, so that nothing waits for the network early.

use super::buckets::SCOPE;
use calib_ir::{Graph, Op, Output, Value};

/// `graph` with every data-parallel packing node and all-reduce moved to just after its
/// latest operand; all other nodes keep their relative order.
pub(super) fn issue_early(graph: &Graph) -> Graph {
    let n = graph.nodes.len();
    // Nodes that read a reduced bucket (directly or through unpacking) stay put.
    let mut reads_reduced = vec![false; n];
    // after[k]: the moved nodes that come right after node k.
    let mut after: Vec<Vec<usize>> = vec![vec![]; n];
    // Where a node ends up: itself, or the node it follows.
    let mut anchor: Vec<usize> = (0..n).collect();
    for (i, node) in graph.nodes.iter().enumerate() {
        let ours = node.scope == SCOPE;
        let downstream = node.inputs.iter().any(|v| reads_reduced[v.0]);
        reads_reduced[i] = ours && (downstream || matches!(node.op, Op::AllReduce { .. }));
        if ours && !downstream && !node.inputs.is_empty() {
            let k = node
                .inputs
                .iter()
                .map(|v| anchor[v.0])
                .max()
                .expect("has inputs");
            anchor[i] = k;
            after[k].push(i);
        }
    }
    let mut order = Vec::with_capacity(n);
    for i in 0..n {
        if anchor[i] == i {
            order.push(i);
            order.extend(&after[i]);
        }
    }
    let mut new_of = vec![0; n];
    for (new, &old) in order.iter().enumerate() {
        new_of[old] = new;
    }
    let renumber = |v: &Value| Value(new_of[v.0]);
    Graph {
        nodes: order
            .iter()
            .map(|&old| {
                let mut node = graph.nodes[old].clone();
                node.inputs = node.inputs.iter().map(renumber).collect();
                node
            })
            .collect(),
        outputs: graph
            .outputs
            .iter()
            .map(|o| Output {
                name: o.name.clone(),
                value: renumber(&o.value),
            })
            .collect(),
    }
}
