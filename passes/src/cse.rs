//! Common-subexpression elimination: identical nodes computed once.
//!
//! Autodiff emits the same constant (`0`, `1`, a mean's divisor) and the same broadcast
//! many times; merging them keeps the training step small before fusion sees it.

use crate::renumber::{check_structure, compact, Fate};
use crate::{Renumbering, Result};
use calib_ir::{Graph, Node, Op, Value};
use std::collections::HashMap;

/// `graph` with every node that repeats an earlier one (same op and attributes, same
/// operands after merging, same type) replaced by that earlier node. Inputs and params
/// are never merged: each is a distinct name bound at run time.
pub fn cse(graph: &Graph) -> Result<(Graph, Renumbering)> {
    check_structure(graph)?;
    // Canonical old index of every node; candidates bucketed by (op name, operands).
    let mut canon: Vec<Value> = Vec::with_capacity(graph.nodes.len());
    let mut seen: HashMap<(&'static str, Vec<Value>), Vec<usize>> = HashMap::new();
    let mut fates = Vec::with_capacity(graph.nodes.len());
    for (i, node) in graph.nodes.iter().enumerate() {
        let operands: Vec<Value> = node.inputs.iter().map(|v| canon[v.0]).collect();
        let bucket = seen.entry((node.op.name(), operands)).or_default();
        let twin = match node.op {
            Op::Input { .. } | Op::Param { .. } => None,
            _ => bucket
                .iter()
                .copied()
                .find(|&j| same_computation(&graph.nodes[j], node)),
        };
        match twin {
            Some(j) => {
                canon.push(Value(j));
                fates.push(Fate::SameAs(Value(j)));
            }
            None => {
                bucket.push(i);
                canon.push(Value(i));
                fates.push(Fate::Keep);
            }
        }
    }
    Ok(compact(graph, &fates))
}

/// Whether two nodes with the same canonical operands compute the same tensor. Constants
/// compare by bit pattern: `0.0 == -0.0` in IEEE terms, but they are different values.
fn same_computation(a: &Node, b: &Node) -> bool {
    let same_op = match (&a.op, &b.op) {
        (Op::Constant { value: x }, Op::Constant { value: y }) => x.to_bits() == y.to_bits(),
        (x, y) => x == y,
    };
    same_op && a.ty == b.ty
}

#[cfg(test)]
mod tests {
    use super::*;
    use calib_ir::{DType, TensorType};

    fn f32s(shape: &[usize]) -> TensorType {
        TensorType::new(DType::F32, shape.to_vec())
    }

    #[test]
    fn merges_repeated_constants_and_the_nodes_that_read_them() {
        let mut g = Graph::new();
        let x = g
            .push_source(Op::Input { name: "x".into() }, f32s(&[3]), "")
            .unwrap();
        let one_a = g
            .push_source(Op::Constant { value: 1.0 }, f32s(&[3]), "")
            .unwrap();
        let one_b = g
            .push_source(Op::Constant { value: 1.0 }, f32s(&[3]), "")
            .unwrap();
        let sum_a = g.push(Op::Add, vec![x, one_a], "").unwrap();
        let sum_b = g.push(Op::Add, vec![x, one_b], "").unwrap();
        let prod = g.push(Op::Mul, vec![sum_a, sum_b], "").unwrap();
        g.add_output("a", sum_a).unwrap();
        g.add_output("p", prod).unwrap();
        let (out, renumbering) = cse(&g).unwrap();
        out.validate().unwrap();
        let ops: Vec<&str> = out.nodes.iter().map(|n| n.op.name()).collect();
        assert_eq!(ops, ["input", "constant", "add", "mul"]);
        assert_eq!(out.nodes[3].inputs, [Value(2), Value(2)]);
        assert_eq!(renumbering.get(sum_b), Some(Value(2)));
        assert_eq!(out.output("p"), Some(Value(3)));
    }

    #[test]
    fn keeps_what_differs_in_value_type_or_attributes() {
        let mut g = Graph::new();
        let x = g
            .push_source(Op::Input { name: "x".into() }, f32s(&[2, 3]), "")
            .unwrap();
        let _ = g
            .push_source(Op::Constant { value: 0.0 }, f32s(&[3]), "")
            .unwrap();
        let _ = g
            .push_source(Op::Constant { value: -0.0 }, f32s(&[3]), "")
            .unwrap();
        let _ = g
            .push_source(Op::Constant { value: 0.0 }, f32s(&[2]), "")
            .unwrap();
        let s0 = g
            .push(
                Op::ReduceSum {
                    axes: vec![0],
                    keepdims: false,
                },
                vec![x],
                "",
            )
            .unwrap();
        let s1 = g
            .push(
                Op::ReduceSum {
                    axes: vec![1],
                    keepdims: false,
                },
                vec![x],
                "",
            )
            .unwrap();
        let _ = g
            .push_source(Op::Input { name: "y".into() }, f32s(&[2, 3]), "")
            .unwrap();
        g.add_output("s0", s0).unwrap();
        g.add_output("s1", s1).unwrap();
        let (out, _) = cse(&g).unwrap();
        assert_eq!(out, g);
    }
}
