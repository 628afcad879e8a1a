//! Why a kernel computes what the nodes it replaces computed, in egg's words.
//!
//! The kernel's covered nodes are saturated again on their own, with egg's
//! explanations on (a small e-graph, so the proof terms stay readable); the kernel's
//! body is then added as a term over the same inputs, and egg explains, rewrite by
//! rewrite, why each output equals the original node it stands for.

use super::analysis::{add_constant, add_op};
use super::limits::Limits;
use super::partition::{Partition, Region};
use super::region::RegionGraph;
use super::rules::{rules, Phase};
use crate::{PassError, Result};
use calib_ir::{Graph, Op, Program, Role};
use egg::Id;
use std::collections::HashMap;
use std::fmt::Write;

/// egg's explanation for each output of kernel `name` of `program`, a fusion of `graph`.
pub fn explain(graph: &Graph, program: &Program, name: &str) -> Result<String> {
    let kernel = program.kernel(name).ok_or_else(|| {
        let names: Vec<&str> = program.kernels.iter().take(8).map(|k| k.name.as_str()).collect();
        PassError::Fusion(format!("the program has no kernel `{name}` (kernels are {}, ...)", names.join(", ")))
    })?;
    if let Some(&c) = kernel.covers.iter().find(|&&c| c >= graph.nodes.len()) {
        return Err(PassError::Fusion(format!("kernel {name} covers node %{c}, which the graph does not have: is it the graph that was fused?")));
    }
    let mut part = Partition::new(graph);
    let nodes: Vec<usize> = kernel.covers.iter().copied().filter(|&c| graph.nodes[c].op.arity() != Some(0) && !part.replicated[c]).collect();
    let inside = |i: usize| nodes.binary_search(&i).is_ok();
    let mut used_outside: Vec<usize> = graph.outputs.iter().map(|o| o.value.0).filter(|&v| inside(v)).collect();
    for (_, n) in graph.nodes.iter().enumerate().filter(|(i, _)| !inside(*i)) {
        used_outside.extend(n.inputs.iter().map(|v| v.0).filter(|&v| inside(v)));
    }
    used_outside.sort();
    used_outside.dedup();
    part.regions = vec![Region { name: name.to_string(), nodes: nodes.clone(), roots: used_outside }];
    let mut rg = RegionGraph::build(graph, &part, 0, true)?;
    for phase in [Phase::Simplify, Phase::Explore] {
        let limits = Limits::default();
        rg.saturate(&rules(phase), &limits, limits.nodes);
    }

    // The body as a term over the kernel's inputs.
    let source = |b: &calib_ir::Buffer| -> Option<usize> {
        match b.role {
            Role::Input => graph.inputs().find(|(n, _)| *n == b.name).map(|(_, v)| v.0),
            Role::Param => graph.params().find(|(n, _)| *n == b.name).map(|(_, v)| v.0),
            _ => b.name.strip_prefix('v').and_then(|s| s.parse().ok()),
        }
    };
    let mut out = String::new();
    let mut ids: HashMap<usize, Id> = HashMap::new();
    let mut missing = vec![];
    for (i, node) in kernel.body.nodes.iter().enumerate() {
        let id = match &node.op {
            Op::Input { name: input } => {
                let k: usize = input[2..].parse().map_err(|_| PassError::Fusion(format!("body input `{input}` is not named in<k>")))?;
                let b = program.buffer(kernel.inputs[k]);
                match source(b).and_then(|o| rg.class_of.get(&o).copied()) {
                    Some(id) => id,
                    None => {
                        missing.push(b.name.clone());
                        continue;
                    }
                }
            }
            Op::Constant { value } => add_constant(&mut rg.egraph, *value, node.ty.clone()),
            op => {
                let Some(children) = node.inputs.iter().map(|v| ids.get(&v.0).copied()).collect::<Option<Vec<_>>>() else { continue };
                add_op(&mut rg.egraph, op.clone(), &children).ok_or_else(|| PassError::Fusion(format!("body node %{i} does not type-check")))?
            }
        };
        ids.insert(i, id);
    }
    rg.egraph.rebuild();
    writeln!(out, "kernel {} ({}, {}): covers {} original nodes", kernel.name, kernel.anchor.name(), kernel.label, kernel.covers.len()).unwrap();
    if !missing.is_empty() {
        writeln!(out, "  reads values that rewrites created ({}); outputs computed from them are not explained", missing.join(", ")).unwrap();
    }
    for (k, o) in kernel.body.outputs.iter().enumerate() {
        let target = source(program.buffer(kernel.outputs[k].buffer)).and_then(|v| rg.class_of.get(&v).map(|&id| (v, id)));
        let (Some((v, orig)), Some(&body)) = (target, ids.get(&o.value.0)) else {
            writeln!(out, "out{k}: not an original node's value; nothing to explain").unwrap();
            continue;
        };
        if rg.egraph.find(orig) != rg.egraph.find(body) {
            writeln!(out, "out{k} = %{v}: egg did not re-derive this body from the covered nodes alone").unwrap();
            continue;
        }
        let explanation = rg.egraph.explain_id_equivalence(orig, body).get_flat_string();
        let steps = explanation.lines().count();
        writeln!(out, "out{k} = %{v} ({} rewrite{}):", steps.saturating_sub(1), if steps == 2 { "" } else { "s" }).unwrap();
        for line in explanation.lines() {
            writeln!(out, "  {line}").unwrap();
        }
    }
    Ok(out)
}
