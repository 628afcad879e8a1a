//! The bf16 policy on a training step: the rounded weights as carried state.
//!
//! Applied to a step graph as to any graph, the policy rounds every weight a GEMM reads
//! once per step, `cast(cast(w, bf16), f32)` of the f32 master weight: in the SCNet-50
//! plan a kernel of its own for nearly every weight (84 of them), each reading the whole
//! master weight to round it. But the step itself computes every weight it will read
//! next: the SGD update. So [`apply_step`] gives each weight
//! `w` that a GEMM reads a param `bf16.w` holding `w` rounded, which the GEMMs read in
//! place of the round trip, and an output `bf16.w`, the updated `w` rounded,
//! which fusion computes in the update's kernel from the value it has just computed.
//! A session carries output `bf16.w` into param `bf16.w`; before the first step the
//! caller rounds the master weights itself (`train::SgdState` in the facade).
//!
//! Exact: rounding is a function of the bits, so a copy made by the last step's update
//! (or by the caller from the same master weight) is the very value the round trip
//! computes now; the GEMMs multiply the same operands, bit for bit. The copies are bf16
//! tensors (param `bf16.w`, read as `cast(bf16.w, f32)`; output `cast(w', bf16)`), half
//! the bytes of the master weight, which a GEMM's tiles take as they are;
//! checkpoints never hold them, they are the weights' function.
//!
//! f32 and tf32 steps, and graphs that are not training steps, get [`super::apply`].

use super::{rewrite, round_trip, Copies};
use crate::{Result, TrainStep};
use calib_ir::{DType, Graph, Precision};

/// The name of the rounded copy of trained parameter `param`: a param of a bf16 step
/// graph and the output the session carries into it.
pub fn weight_copy_name(param: &str) -> String {
    format!("bf16.{param}")
}

/// `step` under precision policy `p`: [`super::apply`] on its graph, and under bf16 a
/// carried rounded copy for every trained parameter a GEMM reads (module docs), listed
/// in [`TrainStep::copies`]. Applying it twice adds nothing.
pub fn apply_step(step: &TrainStep, p: Precision) -> Result<TrainStep> {
    if p != Precision::Bf16 {
        return Ok(TrainStep {
            graph: super::apply(&step.graph, p)?,
            ..step.clone()
        });
    }
    let fresh: Vec<String> = gemm_operand_params(&step.graph)
        .into_iter()
        .filter(|name| step.params.contains(name) && !step.copies.contains(name))
        .collect();
    let copies = Copies {
        new: fresh
            .iter()
            .map(|name| (name.clone(), weight_copy_name(name)))
            .collect(),
        existing: step.copies.iter().map(|n| weight_copy_name(n)).collect(),
    };
    let (mut graph, mut rounded) = rewrite(&step.graph, p, &copies)?;
    // The next step's copy: the updated weight rounded, in the update's scope.
    for name in &fresh {
        let updated = graph
            .output(name)
            .expect("a step graph outputs every trained parameter's update");
        let copy = round_trip(&mut graph, &mut rounded, updated, DType::BF16)?;
        // The round trip's bf16 half: what the next step's param holds.
        let bf16 = graph.node(copy).inputs[0];
        graph.add_output(weight_copy_name(name), bf16)?;
    }
    let mut all = step.copies.clone();
    all.extend(fresh);
    Ok(TrainStep {
        graph,
        copies: all,
        ..step.clone()
    })
}

/// The params some GEMM of `graph` reads directly, by name, in graph order.
fn gemm_operand_params(graph: &Graph) -> Vec<String> {
    let mut read = vec![false; graph.nodes.len()];
    for node in graph.nodes.iter().filter(|n| n.op.is_gemm()) {
        node.inputs.iter().for_each(|v| read[v.0] = true);
    }
    graph
        .params()
        .filter(|(_, v)| read[v.0])
        .map(|(name, _)| name.to_string())
        .collect()
}
