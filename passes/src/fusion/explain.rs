//! Why a kernel computes what the nodes it replaces computed, in egg's words.
//!
//! The kernel's covered nodes are saturated again on their own, with egg's
//! explanations on (a small e-graph, so the proof terms stay readable). The kernel's
//! body is then added as a term over the original values it reads; where it reads a
//! value that only a rewrite created (a merged or folded convolution), the body of the
//! kernel that wrote it is spliced in, and its nodes join the e-graph too. egg then
//! explains, rewrite by rewrite, why each output equals the original node it stands for.

use super::algebra;
use super::analysis::{add_constant, add_op_uncanonical};
use super::limits::Limits;
use super::partition::{Partition, Region};
use super::region::RegionGraph;
use super::rules::{rules, Phase};
use crate::{PassError, Result};
use calib_ir::{BufferId, Graph, Op, Program, Role};
use egg::Id;
use std::collections::HashMap;
use std::fmt::Write;

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
    let writer: HashMap<BufferId, (usize, usize)> = program
        .kernels
        .iter()
        .enumerate()
        .flat_map(|(p, q)| {
            q.outputs
                .iter()
                .enumerate()
                .map(move |(j, o)| (o.buffer, (p, j)))
        })
        .collect();

    // The kernel and the writers of the rewrite-made values it reads, transitively.
    let mut spliced = vec![k];
    let mut i = 0;
    while i < spliced.len() {
        for &b in &program.kernels[spliced[i]].inputs {
            if let (None, Some(&(p, _))) = (original(b), writer.get(&b)) {
                if !spliced.contains(&p) {
                    spliced.push(p);
                }
            }
        }
        i += 1;
    }
    let mut part = Partition::new(graph);
    let mut nodes: Vec<usize> = spliced
        .iter()
        .flat_map(|&p| program.kernels[p].covers.iter().copied())
        .filter(|&c| {
            c < graph.nodes.len() && graph.nodes[c].op.arity() != Some(0) && !part.replicated[c]
        })
        .collect();
    nodes.sort();
    nodes.dedup();
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
    rg.egraph.rebuild();

    // Each class by the first original node it holds, to name operands in the algebra.
    let mut names: HashMap<Id, usize> = HashMap::new();
    let mut originals: Vec<(&usize, &Id)> = rg.class_of.iter().collect();
    originals.sort();
    for (&v, &id) in originals {
        names.entry(rg.egraph.find(id)).or_insert(v);
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
        let target =
            original(kernel.outputs[j].buffer).and_then(|v| rg.class_of.get(&v).map(|&id| (v, id)));
        let (Some((v, orig)), Some(body)) = (target, body) else {
            writeln!(
                out,
                "out{j}: a value that rewriting introduced (no original node computes it alone)"
            )
            .unwrap();
            continue;
        };
        if rg.egraph.find(orig) != rg.egraph.find(body) {
            writeln!(
                out,
                "out{j} = {}: egg did not re-derive this body from the covered nodes alone",
                algebra::node_name(graph, v)
            )
            .unwrap();
            continue;
        }
        let mut explanation = rg.egraph.explain_id_equivalence(orig, body);
        let flat = explanation.make_flat_explanation().clone();
        let steps = algebra::steps(&rg.egraph, graph, &names, &flat);
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

/// Kernel bodies as e-graph terms over original values.
struct Terms<'a> {
    graph: &'a Graph,
    program: &'a Program,
    part: &'a Partition,
    original: &'a dyn Fn(BufferId) -> Option<usize>,
    writer: &'a HashMap<BufferId, (usize, usize)>,
    memo: HashMap<(usize, usize), Option<Id>>,
}

impl Terms<'_> {
    /// Output `j` of kernel `k`.
    fn output(&mut self, rg: &mut RegionGraph, k: usize, j: usize) -> Result<Option<Id>> {
        let v = self.program.kernels[k].body.outputs[j].value.0;
        self.node(rg, k, v)
    }

    /// Body node `i` of kernel `k`; `None` if it reads something no term reaches.
    fn node(&mut self, rg: &mut RegionGraph, k: usize, i: usize) -> Result<Option<Id>> {
        if let Some(&t) = self.memo.get(&(k, i)) {
            return Ok(t);
        }
        let kernel = &self.program.kernels[k];
        let node = &kernel.body.nodes[i];
        let term = match &node.op {
            Op::Input { name } => {
                let slot: usize = name
                    .strip_prefix("in")
                    .and_then(|s| s.parse().ok())
                    .ok_or_else(|| {
                        PassError::Fusion(format!("body input `{name}` is not named in<k>"))
                    })?;
                let b = kernel.inputs[slot];
                match ((self.original)(b), self.writer.get(&b)) {
                    (Some(v), _) => Some(rg.operand(self.graph, self.part, v)?),
                    (None, Some(&(p, j))) => self.output(rg, p, j)?,
                    (None, None) => None,
                }
            }
            Op::Constant { value } => Some(add_constant(&mut rg.egraph, *value, node.ty.clone())),
            op => {
                let mut children = vec![];
                for v in &node.inputs {
                    match self.node(rg, k, v.0)? {
                        Some(c) => children.push(c),
                        None => {
                            self.memo.insert((k, i), None);
                            return Ok(None);
                        }
                    }
                }
                Some(
                    add_op_uncanonical(&mut rg.egraph, op.clone(), &children).ok_or_else(|| {
                        PassError::Fusion(format!(
                            "kernel {} body node %{i} does not type-check",
                            kernel.name
                        ))
                    })?,
                )
            }
        };
        self.memo.insert((k, i), term);
        Ok(term)
    }
}
