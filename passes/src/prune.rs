//! Dead-value elimination: drop every node that no output (or chosen root) depends on.

use crate::renumber::{check_structure, compact, Fate};
use crate::{Renumbering, Result};
use calib_ir::{Graph, Op, Value};

/// What survives [`prune`] besides the values the outputs need.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PruneOptions {
    /// Keep every `input` and `param` node even when nothing reads it, so that the graph
    /// keeps its signature: a training step must still accept (and return) a parameter
    /// that the loss happens not to use.
    pub keep_sources: bool,
}

/// `graph` without the nodes that no output depends on, renumbered densely.
pub fn prune(graph: &Graph, options: PruneOptions) -> Result<Graph> {
    Ok(retain(graph, &[], options)?.0)
}

/// Like [`prune`], but `roots` survive too (with what they read), and the result says
/// where every surviving value went.
pub fn retain(
    graph: &Graph,
    roots: &[Value],
    options: PruneOptions,
) -> Result<(Graph, Renumbering)> {
    check_structure(graph)?;
    let len = graph.nodes.len();
    if let Some(r) = roots.iter().find(|r| r.0 >= len) {
        return Err(crate::PassError::UnknownValue {
            what: "root",
            value: r.0,
            len,
        });
    }
    let mut live = vec![false; len];
    for v in roots.iter().chain(graph.outputs.iter().map(|o| &o.value)) {
        live[v.0] = true;
    }
    for (i, node) in graph.nodes.iter().enumerate() {
        let source = matches!(node.op, Op::Input { .. } | Op::Param { .. });
        live[i] |= options.keep_sources && source;
    }
    // Operands precede their readers, so one backward sweep closes the set.
    for i in (0..len).rev() {
        if live[i] {
            for v in &graph.nodes[i].inputs {
                live[v.0] = true;
            }
        }
    }
    let fates: Vec<Fate> = live
        .iter()
        .map(|&l| if l { Fate::Keep } else { Fate::Drop })
        .collect();
    Ok(compact(graph, &fates))
}

#[cfg(test)]
mod tests {
    use super::*;
    use calib_ir::{DType, GraphBuilder, Mode};

    /// `y = relu(x) + 1` with an unused param `w`, an unused input `z` and a dead `exp(x)`.
    fn sample() -> Graph {
        let mut b = GraphBuilder::new(Mode::Eval, DType::F32);
        let x = b.input("x", DType::F32, vec![4]).unwrap();
        let _w = b.param("w", DType::F32, vec![4]).unwrap();
        let _z = b.input("z", DType::F32, vec![2]).unwrap();
        let _dead = b.exp(x).unwrap();
        let r = b.relu(x).unwrap();
        let y = b.add_scalar(r, 1.0).unwrap();
        b.output("y", y).unwrap();
        b.finish()
    }

    fn op_names(g: &Graph) -> Vec<&'static str> {
        g.nodes.iter().map(|n| n.op.name()).collect()
    }

    #[test]
    fn drops_everything_the_outputs_do_not_read() {
        let g = prune(&sample(), PruneOptions::default()).unwrap();
        assert_eq!(
            op_names(&g),
            ["input", "relu", "constant", "broadcast", "add"]
        );
        g.validate().unwrap();
        assert_eq!(g.output("y"), Some(Value(4)));
        assert_eq!(g.nodes[4].inputs, [Value(1), Value(3)]);
    }

    #[test]
    fn can_keep_unused_inputs_and_params() {
        let g = prune(&sample(), PruneOptions { keep_sources: true }).unwrap();
        assert_eq!(
            op_names(&g),
            [
                "input",
                "param",
                "input",
                "relu",
                "constant",
                "broadcast",
                "add"
            ]
        );
        g.validate().unwrap();
    }

    #[test]
    fn roots_survive_and_are_renumbered() {
        let g = sample();
        let dead_exp = Value(3);
        let (pruned, renumbering) = retain(&g, &[dead_exp], PruneOptions::default()).unwrap();
        assert_eq!(
            op_names(&pruned),
            ["input", "exp", "relu", "constant", "broadcast", "add"]
        );
        assert_eq!(renumbering.get(dead_exp), Some(Value(1)));
        assert_eq!(renumbering.get(Value(1)), None, "the unused param is gone");
    }

    #[test]
    fn malformed_graphs_are_errors() {
        let mut g = sample();
        g.outputs[0].value = Value(99);
        assert!(prune(&g, PruneOptions::default()).is_err());
        let mut g = sample();
        g.nodes[4].inputs[0] = Value(4);
        assert!(prune(&g, PruneOptions::default()).is_err());
        assert!(retain(&sample(), &[Value(8)], PruneOptions::default()).is_err());
    }
}
