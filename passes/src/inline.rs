//! Calling one graph from another: a copy of the callee appended to the caller.

use crate::{PassError, Result};
use calib_ir::{Graph, Op, Value};

/// Appends a copy of `callee` to `graph`, binding each of the callee's inputs and params
/// to the caller's value of the same name in `bindings`; returns the callee's outputs,
/// in order, as values of `graph`. The loss of a training step is attached this way, so
/// that it is written once with the builder's composite layers.
pub fn inline(
    graph: &mut Graph,
    callee: &Graph,
    bindings: &[(&str, Value)],
) -> Result<Vec<(String, Value)>> {
    crate::renumber::check_structure(callee)?;
    let mut map: Vec<Value> = Vec::with_capacity(callee.nodes.len());
    for node in &callee.nodes {
        let new = match &node.op {
            Op::Input { name } | Op::Param { name } => {
                let bound = bindings.iter().find(|(n, _)| n == name).map(|&(_, v)| v);
                let v = bound.ok_or_else(|| PassError::Missing {
                    kind: "binding",
                    names: format!("`{name}`"),
                })?;
                let found = graph
                    .nodes
                    .get(v.0)
                    .map(|n| &n.ty)
                    .ok_or(PassError::UnknownValue {
                        what: "binding",
                        value: v.0,
                        len: graph.nodes.len(),
                    })?;
                if found != &node.ty {
                    return Err(PassError::WrongType {
                        what: format!("the value bound to `{name}`"),
                        expected: node.ty.to_string(),
                        found: found.to_string(),
                    });
                }
                v
            }
            Op::Constant { .. } => {
                graph.push_source(node.op.clone(), node.ty.clone(), &node.scope)?
            }
            op => {
                let operands = node.inputs.iter().map(|v| map[v.0]).collect();
                graph.push(op.clone(), operands, &node.scope)?
            }
        };
        map.push(new);
    }
    Ok(callee
        .outputs
        .iter()
        .map(|o| (o.name.clone(), map[o.value.0]))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use calib_ir::{DType, GraphBuilder, Mode, TensorType};

    fn doubler() -> Graph {
        let mut b = GraphBuilder::new(Mode::Eval, DType::F32);
        let t = b.input("t", DType::F32, vec![2]).unwrap();
        let k = b.param("k", DType::F32, vec![2]).unwrap();
        let y = b.mul(t, k).unwrap();
        let y = b.scale(y, 2.0).unwrap();
        b.output("y", y).unwrap();
        b.finish()
    }

    #[test]
    fn appends_the_callee_with_its_sources_bound() {
        let mut g = Graph::new();
        let ty = TensorType::new(DType::F32, vec![2]);
        let a = g
            .push_source(Op::Input { name: "a".into() }, ty.clone(), "")
            .unwrap();
        let w = g
            .push_source(Op::Param { name: "w".into() }, ty, "")
            .unwrap();
        let outs = inline(&mut g, &doubler(), &[("t", a), ("k", w)]).unwrap();
        g.validate().unwrap();
        assert_eq!(outs.len(), 1);
        assert_eq!(outs[0].0, "y");
        let mul = &g.nodes[2];
        assert_eq!((&mul.op, mul.inputs.as_slice()), (&Op::Mul, &[a, w][..]));
        assert_eq!(g.node(outs[0].1).op, Op::Mul);
        assert_eq!(g.inputs().count() + g.params().count(), 2, "no new sources");
    }

    #[test]
    fn unbound_or_mistyped_sources_are_errors() {
        let mut g = Graph::new();
        let ty = TensorType::new(DType::F32, vec![3]);
        let a = g
            .push_source(Op::Input { name: "a".into() }, ty, "")
            .unwrap();
        let err = inline(&mut g, &doubler(), &[("t", a)]).unwrap_err();
        assert!(matches!(err, PassError::WrongType { .. }), "{err}");
        let err = inline(&mut g, &doubler(), &[]).unwrap_err();
        assert!(matches!(err, PassError::Missing { .. }), "{err}");
    }
}
