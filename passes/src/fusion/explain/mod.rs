//! Why a kernel computes what the nodes it replaces computed, in egg's words.
//!
//! The original nodes the kernel stands for are saturated again on their own, with
//! egg's explanations on (a small e-graph, so the proof terms stay readable; `region`
//! picks them). The kernel's body is then added as a term over the original values it
//! reads; where it reads a value that only a rewrite created (a merged or folded
//! convolution), the body of the kernel that wrote it is spliced in (`terms`). egg then
//! explains, rewrite by rewrite, why each output equals the original node it stands
//! for. An output no original node computes alone (a merged convolution, one-pass
//! statistics) is written out as algebra instead, with the original values that are
//! slices of it.

mod region;
mod terms;

use super::algebra;
use super::limits::Limits;
use super::partition::{Partition, Region};
use super::region::RegionGraph;
use super::rules::{rules, Phase};
use crate::{PassError, Result};
use calib_ir::{BufferId, DType, Graph, Op, Program, Role};
use egg::Id;
use std::collections::HashMap;
use std::fmt::Write;
use terms::Terms;

/// egg's explanation for each output of kernel `name` of `program`, a fusion of `graph`.
pub fn explain(graph: &Graph, program: &Program, name: &str) -> Result<String> {
    let k = program
        .kernels
        .iter()
        .position(|k| k.name == name)
        .ok_or_else(|| {
            let names: Vec<&str> = program
                .kernels
                .iter()
                .take(8)
                .map(|k| k.name.as_str())
                .collect();
            PassError::Fusion(format!(
                "the program has no kernel `{name}` (kernels are {}, ...)",
                names.join(", ")
            ))
        })?;
    let kernel = &program.kernels[k];
    let original = |b: BufferId| -> Option<usize> {
        let buf = program.buffer(b);
        let v = match buf.role {
            Role::Input => graph
                .inputs()
                .find(|(n, _)| *n == buf.name)
                .map(|(_, v)| v.0),
            Role::Param => graph
                .params()
                .find(|(n, _)| *n == buf.name)
                .map(|(_, v)| v.0),
            _ => buf.name.strip_prefix('v').and_then(|s| s.parse().ok()),
        };
        v.filter(|&v| v < graph.nodes.len())
    };
    // A buffer's writers: one, or several that each store a slice of it (a concat
    // view), in slice order.
    let mut writer: HashMap<BufferId, Vec<(usize, usize)>> = HashMap::new();
    for (p, q) in program.kernels.iter().enumerate() {
        for (j, o) in q.outputs.iter().enumerate() {
            writer.entry(o.buffer).or_default().push((p, j));
        }
    }
    for writes in writer.values_mut() {
        writes.sort_by_key(|&(p, j)| program.kernels[p].outputs[j].slice.map(|s| s.start));
    }

    // The kernel and the writers of the rewrite-made values it reads, transitively.
    let mut spliced = vec![k];
    let mut i = 0;
    while i < spliced.len() {
        for &b in &program.kernels[spliced[i]].inputs {
            if let (None, Some(writes)) = (original(b), writer.get(&b)) {
                for &(p, _) in writes {
                    if !spliced.contains(&p) {
                        spliced.push(p);
                    }
                }
            }
        }
        i += 1;
    }
    let mut part = Partition::new(graph);
    let nodes = region::nodes(graph, program, &part, &spliced, &original, k);
    part.regions = vec![Region {
        name: name.to_string(),
        nodes,
        roots: vec![],
    }];
    let mut rg = RegionGraph::build(graph, &part, 0, true)?;
    let limits = Limits::default();
    for phase in [Phase::Simplify, Phase::Explore] {
        rg.saturate(&rules(phase), &limits, limits.nodes);
    }
    let mut terms = Terms {
        graph,
        program,
        part: &part,
        original: &original,
        writer: &writer,
        memo: HashMap::new(),
    };
    let outputs: Vec<Option<Id>> = (0..kernel.outputs.len())
        .map(|j| terms.output(&mut rg, k, j))
        .collect::<Result<_>>()?;
    // The original value each output stands for; a buffer `narrow-stores` narrowed holds
    // the bf16 value of its f32 original.
    let targets: Vec<Option<(usize, Id)>> = (0..kernel.outputs.len())
        .map(|j| {
            let Some(v) = original(kernel.outputs[j].buffer) else {
                return Ok(None);
            };
            let stored = kernel.body.ty(kernel.body.outputs[j].value).dtype;
            if stored == DType::BF16 && graph.nodes[v].ty.dtype == DType::F32 {
                return terms.narrowed(&mut rg, v).map(|id| Some((v, id)));
            }
            Ok(rg.class_of.get(&v).map(|&id| (v, id)))
        })
        .collect::<Result<_>>()?;
    rg.egraph.rebuild();

    // Each class by the first original node it holds, to name operands in the algebra;
    // else by the kernel output that holds it, when rewriting made it.
    let mut names: HashMap<Id, String> = HashMap::new();
    let mut originals: Vec<(&usize, &Id)> = rg.class_of.iter().collect();
    originals.sort();
    for (&v, &id) in originals {
        names
            .entry(rg.egraph.find(id))
            .or_insert_with(|| algebra::node_name(graph, v));
    }
    for &p in &spliced {
        let made = &program.kernels[p];
        for (j, o) in made.outputs.iter().enumerate() {
            let value = made.body.outputs[j].value.0;
            if let (None, Some(Some(id))) = (original(o.buffer), terms.memo.get(&(p, value))) {
                names
                    .entry(rg.egraph.find(*id))
                    .or_insert_with(|| format!("{}.out{j}", made.name));
            }
        }
    }

    let mut out = String::new();
    writeln!(
        out,
        "kernel {} ({}, {}): covers {} original nodes",
        kernel.name,
        kernel.anchor.name(),
        kernel.label,
        kernel.covers.len()
    )
    .unwrap();
    if spliced.len() > 1 {
        let names: Vec<&str> = spliced[1..]
            .iter()
            .map(|&p| program.kernels[p].name.as_str())
            .collect();
        writeln!(
            out,
            "  (reads values that rewrites created; the bodies of {} are spliced in)",
            names.join(", ")
        )
        .unwrap();
    }
    for (j, body) in outputs.into_iter().enumerate() {
        let (target, body) = match (targets[j], body) {
            (Some(target), Some(body)) => (target, body),
            (None, Some(body)) => {
                let readers: Vec<&str> = program
                    .kernels
                    .iter()
                    .filter(|q| q.inputs.contains(&kernel.outputs[j].buffer))
                    .map(|q| q.name.as_str())
                    .collect();
                let explanation = rg.egraph.explain_id_equivalence(body, body);
                let term = &explanation.explanation_trees;
                writeln!(
                    out,
                    "out{j} = {}\n  a value that rewriting introduced: no original node computes it alone{}",
                    algebra::term(&rg.egraph, graph, &names, term),
                    if readers.is_empty() {
                        String::new()
                    } else {
                        format!("; read by {}", readers.join(", "))
                    }
                )
                .unwrap();
                for (v, view) in slices_of(&rg, body) {
                    writeln!(out, "  out{j}{view} = {}", algebra::node_name(graph, v)).unwrap();
                }
                continue;
            }
            (_, None) => {
                writeln!(
                    out,
                    "out{j}: its body reads a buffer that neither an original value nor a kernel of the plan provides"
                )
                .unwrap();
                continue;
            }
        };
        let (v, orig) = target;
        if rg.egraph.find(orig) != rg.egraph.find(body) {
            writeln!(
                out,
                "out{j} = {}: egg did not re-derive this body from the covered nodes alone",
                algebra::node_name(graph, v)
            )
            .unwrap();
            continue;
        }
        let explanation = rg.egraph.explain_id_equivalence(orig, body);
        let steps = algebra::steps(&rg.egraph, graph, &names, &explanation.explanation_trees);
        writeln!(
            out,
            "out{j} = {} ({} rewrite{}){}",
            algebra::node_name(graph, v),
            steps.len(),
            if steps.len() == 1 { "" } else { "s" },
            if steps.is_empty() {
                ": the body is the covered nodes as they are"
            } else {
                ":"
            }
        )
        .unwrap();
        for step in steps {
            let direction = if step.forward { "" } else { " (backwards)" };
            writeln!(out, "  {}{direction}:", step.rule).unwrap();
            writeln!(out, "      {}", step.before).unwrap();
            writeln!(out, "    = {}", step.after).unwrap();
        }
    }
    Ok(out)
}

/// The original values that are slices of class `of`, with the slice (`[1: 0..64]`),
/// in node order: what a merged value stands for.
fn slices_of(rg: &RegionGraph, of: Id) -> Vec<(usize, String)> {
    let of = rg.egraph.find(of);
    let mut found: Vec<(usize, String)> = rg
        .class_of
        .iter()
        .filter_map(|(&v, &id)| {
            rg.egraph[id]
                .nodes
                .iter()
                .find_map(|node| match rg.egraph.analysis.op_of(node) {
                    Some(Op::Slice { axis, start, end })
                        if node.children.len() == 1 && rg.egraph.find(node.children[0]) == of =>
                    {
                        Some((v, format!("[{axis}: {start}..{end}]")))
                    }
                    _ => None,
                })
        })
        .collect();
    found.sort();
    found
}
