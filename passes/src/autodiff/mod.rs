//! Reverse-mode automatic differentiation as a graph-to-graph pass.
//!
//! The backward pass is appended to a copy of the forward graph as ordinary IR, so every
//! later pass (CSE, pruning, fusion, codegen) treats it like any other computation. The
//! sweep visits the forward nodes in reverse order and applies one vector-Jacobian
//! product (VJP) rule per node; the rules live one file per op family and read like the
//! calculus they encode. Only nodes on a path from a differentiated input to the
//! differentiated output are visited, so labels, BatchNorm running-stat updates and the
//! like cost nothing. Backward nodes carry the scope of the forward node they
//! differentiate, so per-module reports cover both passes.

mod collective;
mod elementwise;
mod layout;
mod matmul;
mod reduce;
mod spatial;

use crate::emit::{Emitter, Expr};
use crate::prune::{retain, PruneOptions};
use crate::{PassError, Result};
use calib_ir::{Graph, Op, OpClass, Value};

/// The gradient a VJP rule sends to each operand; `None` where there is none (labels,
/// conditions, comparisons).
type Grads<'e> = Vec<Option<Expr<'e>>>;

/// Every operand receives a gradient.
fn each<'e, const N: usize>(grads: [Expr<'e>; N]) -> Grads<'e> {
    grads.into_iter().map(Some).collect()
}

/// The VJP rule of one node: `op` applied to `x` gave `y`, whose adjoint is `g`. `None`
/// when the op has no rule (the adjoint ops themselves: no second derivatives here).
fn rule<'e>(op: &Op, x: &[Expr<'e>], y: Expr<'e>, g: Expr<'e>) -> Option<Grads<'e>> {
    match op.class() {
        OpClass::Source => Some(vec![]),
        OpClass::Elementwise => elementwise::vjp(op, x, y, g),
        OpClass::Layout => layout::vjp(op, x, g),
        OpClass::Reduction => reduce::vjp(op, x, y, g),
        OpClass::MatMul => matmul::vjp(op, x, g),
        OpClass::Convolution | OpClass::Pool | OpClass::Resize => spatial::vjp(op, x, g),
        OpClass::Collective => collective::vjp(op, g),
    }
}

/// The gradient of `sum(of)` with respect to each of `wrt`: a copy of `graph` with the
/// backward pass appended, and the gradient values in the order of `wrt`. A value that
/// `of` does not depend on gets a zero gradient.
pub fn grad(graph: &Graph, of: Value, wrt: &[Value]) -> Result<(Graph, Vec<Value>)> {
    let ty = graph
        .nodes
        .get(of.0)
        .map(|n| n.ty.clone())
        .ok_or(PassError::UnknownValue {
            what: "differentiated value",
            value: of.0,
            len: graph.nodes.len(),
        })?;
    let mut graph = graph.clone();
    let ones = graph.push_source(Op::Constant { value: 1.0 }, ty, "")?;
    vjp(&graph, of, ones, wrt)
}

/// The vector-Jacobian product `d sum(of * seed) / d wrt`, where `seed` is a value of
/// `graph` with the type of `of` (a `grad_output` input, say). Returns the extended copy
/// of `graph` and the gradients in the order of `wrt`; the original nodes keep their
/// numbers.
pub fn vjp(graph: &Graph, of: Value, seed: Value, wrt: &[Value]) -> Result<(Graph, Vec<Value>)> {
    graph.validate()?;
    check_request(graph, of, seed, wrt)?;
    let n = graph.nodes.len();
    let active = on_a_path(graph, of, wrt);
    let em = Emitter::new(graph.clone());
    let mut adjoint: Vec<Option<Expr<'_>>> = vec![None; n];
    adjoint[of.0] = Some(em.expr(seed));
    for i in (0..n).rev() {
        let Some(g) = adjoint[i].filter(|_| active[i]) else {
            continue;
        };
        let node = &graph.nodes[i];
        em.set_scope(&node.scope);
        let x: Vec<Expr<'_>> = node.inputs.iter().map(|&v| em.expr(v)).collect();
        let grads = rule(&node.op, &x, em.expr(Value(i)), g).ok_or_else(|| {
            PassError::NotDifferentiable {
                what: "node",
                value: i,
                reason: format!("`{}` has no VJP rule", node.op.name()),
            }
        })?;
        for (v, dx) in node.inputs.iter().zip(grads) {
            if let (true, Some(dx)) = (active[v.0], dx) {
                // A value read several times collects the sum of its readers' gradients.
                adjoint[v.0] = Some(adjoint[v.0].map_or(dx, |acc| acc + dx));
            }
        }
        em.finish_rule()?;
    }
    em.set_scope("");
    let grads: Vec<Expr<'_>> = wrt
        .iter()
        .map(|&v| adjoint[v.0].unwrap_or_else(|| em.expr(v).zeros_like()))
        .collect();
    em.finish_rule()?;
    let grads: Vec<Value> = grads
        .iter()
        .map(|e| e.value().expect("no rule failed, so no value is inert"))
        .collect();
    drop(adjoint);
    // Rules also emit gradients for operands nobody asked about (the input image of the
    // first convolution, say); drop those, keeping every forward node where it was.
    let roots: Vec<Value> = (0..n).map(Value).chain(grads.iter().copied()).collect();
    let (graph, renumbering) = retain(&em.into_graph(), &roots, PruneOptions::default())?;
    let grads = grads
        .iter()
        .map(|&v| renumbering.get(v).expect("roots survive"))
        .collect();
    Ok((graph, grads))
}

fn check_request(graph: &Graph, of: Value, seed: Value, wrt: &[Value]) -> Result<()> {
    let len = graph.nodes.len();
    let known = |what, v: Value| {
        if v.0 < len {
            Ok(())
        } else {
            Err(PassError::UnknownValue {
                what,
                value: v.0,
                len,
            })
        }
    };
    let float = |what, v: Value| {
        if graph.ty(v).dtype.is_float() {
            Ok(())
        } else {
            let reason = format!("its type {} is not floating-point", graph.ty(v));
            Err(PassError::NotDifferentiable {
                what,
                value: v.0,
                reason,
            })
        }
    };
    known("differentiated value", of)?;
    known("seed", seed)?;
    float("value", of)?;
    for &v in wrt {
        known("gradient target", v)?;
        float("with respect to", v)?;
    }
    if graph.ty(seed) != graph.ty(of) {
        return Err(PassError::SeedType {
            seed: seed.0,
            seed_type: graph.ty(seed).to_string(),
            of_type: graph.ty(of).to_string(),
        });
    }
    Ok(())
}

/// Which nodes lie on a path from one of `wrt` to `of`: those both reachable from `wrt`
/// and read (transitively) by `of`. Integer values never carry gradients.
fn on_a_path(graph: &Graph, of: Value, wrt: &[Value]) -> Vec<bool> {
    let n = graph.nodes.len();
    let mut from_wrt = vec![false; n];
    for &v in wrt {
        from_wrt[v.0] = true;
    }
    for (i, node) in graph.nodes.iter().enumerate() {
        from_wrt[i] |= node.inputs.iter().any(|v| from_wrt[v.0]);
    }
    let mut to_of = vec![false; n];
    to_of[of.0] = true;
    for i in (0..n).rev() {
        if to_of[i] {
            for v in &graph.nodes[i].inputs {
                to_of[v.0] = true;
            }
        }
    }
    (0..n)
        .map(|i| from_wrt[i] && to_of[i] && graph.nodes[i].ty.dtype.is_float())
        .collect()
}
