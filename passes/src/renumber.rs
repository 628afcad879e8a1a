//! Dropping and merging nodes while keeping the node list dense and topological.

use calib_ir::{Graph, Output, Value};

/// What a rewrite decided for one node of the old graph.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Fate {
    Keep,
    Drop,
    /// Replaced by an earlier node, which must itself be kept.
    SameAs(Value),
}

/// Where the values of a graph went when a pass dropped or merged nodes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Renumbering {
    map: Vec<Option<Value>>,
}

impl Renumbering {
    /// The new handle of an old value; `None` if the node was dropped (or never existed).
    pub fn get(&self, old: Value) -> Option<Value> {
        self.map.get(old.0).copied().flatten()
    }

    /// Renumberings applied one after the other.
    pub fn then(&self, next: &Renumbering) -> Renumbering {
        Renumbering {
            map: self
                .map
                .iter()
                .map(|v| v.and_then(|v| next.get(v)))
                .collect(),
        }
    }
}

/// Rebuilds `graph` with every node's fate applied. Kept nodes keep their relative
/// order, so the result is still topological; operands and outputs follow merges. A
/// dropped node must not be read by a kept node or an output (the callers guarantee it).
pub(crate) fn compact(graph: &Graph, fates: &[Fate]) -> (Graph, Renumbering) {
    let mut map: Vec<Option<Value>> = Vec::with_capacity(graph.nodes.len());
    let mut nodes = Vec::new();
    for (node, fate) in graph.nodes.iter().zip(fates) {
        let new = match *fate {
            Fate::Keep => {
                let mut node = node.clone();
                for v in &mut node.inputs {
                    *v = map[v.0].expect("kept nodes read only kept nodes");
                }
                nodes.push(node);
                Some(Value(nodes.len() - 1))
            }
            Fate::Drop => None,
            Fate::SameAs(earlier) => map[earlier.0],
        };
        map.push(new);
    }
    let outputs = graph
        .outputs
        .iter()
        .map(|o| Output {
            name: o.name.clone(),
            value: map[o.value.0].expect("outputs are kept"),
        })
        .collect();
    (Graph { nodes, outputs }, Renumbering { map })
}

/// Checks what passes index by: every operand precedes its node and every output names a
/// node. (Types are the IR's business: see [`Graph::validate`].)
pub(crate) fn check_structure(graph: &Graph) -> crate::Result<()> {
    let len = graph.nodes.len();
    for (id, node) in graph.nodes.iter().enumerate() {
        if let Some(v) = node.inputs.iter().find(|v| v.0 >= id) {
            return Err(crate::PassError::UnknownValue {
                what: "operand",
                value: v.0,
                len: id,
            });
        }
    }
    match graph.outputs.iter().find(|o| o.value.0 >= len) {
        Some(o) => Err(crate::PassError::UnknownValue {
            what: "output",
            value: o.value.0,
            len,
        }),
        None => Ok(()),
    }
}
