//! The precision policy as IR: casts that say where a graph rounds.
//!
//! [`apply`] rewrites a graph (usually a whole training step, after autodiff, so that
//! the backward GEMMs are rounded too) so that running it in f32 computes what the
//! policy means (`docs/precision.md`):
//!
//! * `tf32` and `bf16`: every GEMM-shaped node (`conv2d`, `conv2d_backward_data`,
//!   `conv2d_backward_weight`, `matmul`) reads each of its two operands through a round
//!   trip `cast(cast(x, P), f32)`: the tensor cores multiply rounded inputs exactly and
//!   accumulate in f32. One round trip per value, shared by all its readers.
//! * `bf16` also stores activations and activation gradients in bf16, rounded the same
//!   way before any reader (or graph output) sees them: the results of `conv2d` and
//!   `conv2d_backward_data`, and every per-sample `[N, C, H, W]` tensor that leaves the
//!   module (scope) that computed it (`activations.rs`). Weight gradients, the
//!   classifier's matmul (logits), the loss, BatchNorm statistics, parameters and
//!   optimizer state stay f32.
//! * `f32`: the graph unchanged.
//!
//! GEMMs keep f32 operands and f32 results, so no typing rule changes; the casts are
//! ordinary nodes that fusion fuses and never removes: no rewrite folds a round trip.
//! Where a kernel stores a round trip it stores the bf16 value `cast(x, bf16)` instead,
//! a bf16 buffer of half the bytes, and its readers widen it as they load it
//! (`fusion/narrow.rs`; exact, since widening bf16 is). Which kernel rounds a value is
//! extraction's choice, by the cost model: a convolution whose statistics are cheaper as
//! a kernel of their own stores its f32 result and its readers round it.
//!
//! A training step takes the policy through [`apply_step`] (`weight_copies.rs`): under
//! bf16 its GEMMs read carried rounded copies of the weights, which the SGD update makes.

use crate::Result;
use calib_ir::{DType, Graph, Op, Precision, TensorType, Value};
use std::collections::{HashMap, HashSet};

mod activations;
mod weight_copies;
pub use weight_copies::{apply_step, weight_copy_name};

/// The storage type a policy rounds GEMM operands to, or `None` for f32.
pub fn rounding_dtype(p: Precision) -> Option<DType> {
    match p {
        Precision::F32 => None,
        Precision::Tf32 => Some(DType::TF32),
        Precision::Bf16 => Some(DType::BF16),
    }
}

/// `graph` under precision policy `p` (see the module documentation). The result has
/// every node of `graph`, in order, with round trips inserted; outputs keep their names.
pub fn apply(graph: &Graph, p: Precision) -> Result<Graph> {
    Ok(rewrite(graph, p, &Copies::default())?.0)
}

/// Params whose rounding a graph reads from a param of its own (`weight_copies.rs`).
#[derive(Default)]
struct Copies {
    /// Param name -> the name of the new param, added right after it, that holds its
    /// rounded values: GEMMs read that param instead of rounding this one.
    new: HashMap<String, String>,
    /// Params that already hold rounded values (copies added before): read as they are.
    existing: HashSet<String>,
}

/// [`apply`], with the params in `copies` rounded by params of their own. Also returns
/// the rounded-value table (for the caller's own round trips, in the result graph).
fn rewrite(graph: &Graph, p: Precision, copies: &Copies) -> Result<(Graph, HashMap<Value, Value>)> {
    let Some(narrow) = rounding_dtype(p) else {
        return Ok((graph.clone(), HashMap::new()));
    };
    let mut out = Graph::new();
    // New value of each old value (a bf16 activation maps to its rounded round trip).
    let mut map: Vec<Value> = Vec::with_capacity(graph.nodes.len());
    // New values known to hold `narrow`-representable f32s: a value's round trip, or
    // the value itself when it already is one.
    let mut rounded: HashMap<Value, Value> = HashMap::new();
    // Values every reader of which already rounds them (the policy applied before):
    // rounding their result again would only add nodes.
    let mut only_rounded = vec![true; graph.nodes.len()];
    for node in &graph.nodes {
        if node.op != (Op::Cast { to: narrow }) {
            node.inputs.iter().for_each(|v| only_rounded[v.0] = false);
        }
    }
    graph
        .outputs
        .iter()
        .for_each(|o| only_rounded[o.value.0] = false);
    let stored = match narrow {
        DType::BF16 => activations::stored_in_bf16(graph),
        _ => vec![false; graph.nodes.len()],
    };
    for (i, node) in graph.nodes.iter().enumerate() {
        let mut inputs: Vec<Value> = node.inputs.iter().map(|v| map[v.0]).collect();
        if node.op.is_gemm() {
            for x in &mut inputs {
                if out.ty(*x).dtype == DType::F32 {
                    *x = round_trip(&mut out, &mut rounded, *x, narrow)?;
                }
            }
        }
        let v = if node.inputs.is_empty() {
            let v = out.push_source(node.op.clone(), node.ty.clone(), &node.scope)?;
            if let Op::Param { name } = &node.op {
                // The copy holds `v` rounded (the session keeps it so), so it stands for
                // `v`'s round trip; a copy already there stands for its own.
                if let Some(copy) = copies.new.get(name) {
                    let op = Op::Param { name: copy.clone() };
                    let ty = TensorType::new(narrow, node.ty.shape.clone());
                    let c = out.push_source(op, ty, &node.scope)?;
                    let wide = out.push(Op::Cast { to: DType::F32 }, vec![c], &node.scope)?;
                    rounded.insert(v, wide);
                    rounded.insert(wide, wide);
                } else if copies.existing.contains(name) {
                    rounded.insert(v, v);
                }
            }
            v
        } else {
            out.push(node.op.clone(), inputs, &node.scope)?
        };
        debug_assert_eq!(out.ty(v), &graph.nodes[i].ty, "casts change no type");
        let v = if stored[i] && !only_rounded[i] {
            round_trip(&mut out, &mut rounded, v, narrow)?
        } else {
            v
        };
        map.push(v);
    }
    out.add_outputs(
        graph
            .outputs
            .iter()
            .map(|o| (o.name.clone(), map[o.value.0])),
    )?;
    Ok((out, rounded))
}

/// `cast(cast(x, narrow), f32)` in `g`, made once per `x` (in `x`'s scope, right before
/// its first rounded reader) and reused; `x` itself when it already is such a round
/// trip, so applying the policy twice adds nothing.
fn round_trip(
    g: &mut Graph,
    rounded: &mut HashMap<Value, Value>,
    x: Value,
    narrow: DType,
) -> Result<Value> {
    if let Some(&r) = rounded.get(&x) {
        return Ok(r);
    }
    let node = g.node(x);
    let already =
        matches!(node.op, Op::Cast { to: DType::F32 }) && g.ty(node.inputs[0]).dtype == narrow;
    let r = if already {
        x
    } else {
        let scope = node.scope.clone();
        let low = g.push(Op::Cast { to: narrow }, vec![x], &scope)?;
        g.push(Op::Cast { to: DType::F32 }, vec![low], &scope)?
    };
    rounded.insert(x, r);
    rounded.insert(r, r);
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `y = conv2d(x, w)`, `z = matmul(reshape(y), y2)` with `x` also read by a ReLU.
    fn small() -> Graph {
        let mut g = Graph::new();
        let f = |s: &[usize]| TensorType::new(DType::F32, s.to_vec());
        let x = g
            .push_source(Op::Input { name: "x".into() }, f(&[1, 2, 3, 3]), "")
            .unwrap();
        let w = g
            .push_source(Op::Param { name: "w".into() }, f(&[2, 2, 1, 1]), "c")
            .unwrap();
        let conv = Op::Conv2d {
            stride: [1, 1],
            padding: [0, 0],
            dilation: [1, 1],
            groups: 1,
        };
        let y = g.push(conv.clone(), vec![x, w], "c").unwrap();
        let y2 = g.push(conv, vec![y, w], "c2").unwrap();
        let r = g.push(Op::Relu, vec![x], "").unwrap();
        g.add_output("y2", y2).unwrap();
        g.add_output("y", y).unwrap();
        g.add_output("r", r).unwrap();
        g
    }

    fn casts(g: &Graph, to: DType) -> usize {
        g.nodes.iter().filter(|n| n.op == Op::Cast { to }).count()
    }

    #[test]
    fn f32_is_the_identity() {
        let g = small();
        assert_eq!(apply(&g, Precision::F32).unwrap(), g);
    }

    #[test]
    fn tf32_rounds_each_gemm_operand_once() {
        let g = apply(&small(), Precision::Tf32).unwrap();
        g.validate().unwrap();
        // x, w (shared by both convolutions) and y: three round trips.
        assert_eq!(casts(&g, DType::TF32), 3);
        assert_eq!(casts(&g, DType::F32), 3);
        let y2 = g.output("y2").unwrap();
        for &operand in &g.node(y2).inputs {
            let n = g.node(operand);
            assert_eq!(n.op, Op::Cast { to: DType::F32 });
            assert_eq!(g.node(n.inputs[0]).op, Op::Cast { to: DType::TF32 });
        }
        // The ReLU reads x itself, and outputs are the unrounded results.
        let r = g.output("r").unwrap();
        assert!(matches!(g.node(g.node(r).inputs[0]).op, Op::Input { .. }));
        assert!(matches!(
            g.node(g.output("y").unwrap()).op,
            Op::Conv2d { .. }
        ));
    }

    #[test]
    fn bf16_also_rounds_activations_before_any_reader() {
        let g = apply(&small(), Precision::Bf16).unwrap();
        g.validate().unwrap();
        // x and w as operands, y and y2 as activations; y's rounding also serves as
        // the second convolution's operand.
        assert_eq!(casts(&g, DType::BF16), 4);
        let y = g.output("y").unwrap();
        assert_eq!(g.node(y).op, Op::Cast { to: DType::F32 });
        let y2 = g.output("y2").unwrap();
        let conv2 = g.node(g.node(y2).inputs[0]).inputs[0];
        assert!(matches!(g.node(conv2).op, Op::Conv2d { .. }));
        assert_eq!(
            g.node(conv2).inputs[0],
            y,
            "the rounded activation is reused"
        );
    }

    #[test]
    fn applying_twice_adds_nothing() {
        for p in [Precision::Tf32, Precision::Bf16] {
            let once = apply(&small(), p).unwrap();
            let twice = apply(&once, p).unwrap();
            assert_eq!(once.nodes.len(), twice.nodes.len(), "{p}");
        }
    }
}
