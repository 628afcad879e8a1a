//! A region's e-graph: building it from the original nodes, and saturating it one
//! phase at a time under the limits.

use super::analysis::{add_constant, add_op, EGraph, LeafInfo};
use super::language::{ENode, Head};
use super::limits::{stop_reason, Limits};
use super::partition::Partition;
use super::rules::Rule;
use crate::{PassError, Result};
use calib_ir::{Graph, IrError, Op};
use egg::{Id, Runner};
use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

/// A region's e-graph and where the original nodes went.
pub struct RegionGraph {
    pub egraph: EGraph,
    /// The class of every original node the region holds: its own nodes, its copies
    /// of constants, and its leaves.
    pub class_of: HashMap<usize, Id>,
    /// Its nodes that other regions or the graph's outputs read.
    pub roots: Vec<usize>,
}

/// What one phase did in one region.
#[derive(Clone, Debug, Default)]
pub struct PhaseStats {
    pub iterations: usize,
    pub stop: String,
    pub seconds: f64,
    pub applied: BTreeMap<String, usize>,
    pub nodes: usize,
    pub classes: usize,
}

impl RegionGraph {
    /// The e-graph of region `r` of `part` (explanations on when `explain`; egg needs
    /// them on before the first node is added).
    pub fn build(graph: &Graph, part: &Partition, r: usize, explain: bool) -> Result<RegionGraph> {
        let mut egraph = EGraph::default();
        if explain {
            egraph = egraph.with_explanations_enabled();
        }
        let region = &part.regions[r];
        let mut rg = RegionGraph {
            egraph,
            class_of: HashMap::new(),
            roots: region.roots.clone(),
        };
        for &i in &region.nodes {
            let node = &graph.nodes[i];
            let children = node
                .inputs
                .iter()
                .map(|v| rg.operand(graph, part, v.0))
                .collect::<Result<Vec<_>>>()?;
            let id = rg.add(graph, i, node.op.clone(), &children)?;
            rg.class_of.insert(i, id);
        }
        Ok(rg)
    }

    /// The class of original value `v`: the region's own node, a copy of a replicated
    /// constant, or a leaf (added on first use).
    pub fn operand(&mut self, graph: &Graph, part: &Partition, v: usize) -> Result<Id> {
        if let Some(&id) = self.class_of.get(&v) {
            return Ok(id);
        }
        let node = &graph.nodes[v];
        let id = if part.replicated[v] {
            match node.op {
                Op::Constant { value } => add_constant(&mut self.egraph, value, node.ty.clone()),
                _ => {
                    let x = self.operand(graph, part, node.inputs[0].0)?;
                    self.add(graph, v, node.op.clone(), &[x])?
                }
            }
        } else {
            let info = LeafInfo {
                ty: node.ty.clone(),
                params_only: part.params_only[v],
            };
            self.egraph.analysis.leaves.insert(v as u32, info);
            self.egraph.add(ENode::new(Head::Leaf(v as u32), vec![]))
        };
        self.class_of.insert(v, id);
        Ok(id)
    }

    fn add(&mut self, graph: &Graph, i: usize, op: Op, children: &[Id]) -> Result<Id> {
        let node = &graph.nodes[i];
        add_op(&mut self.egraph, op, children).ok_or_else(|| {
            PassError::Ir(IrError::TypeMismatch {
                node: i,
                op: node.op.name().into(),
                declared: node.ty.to_string(),
                inferred: "no type (operands do not type-check)".into(),
            })
        })
    }

    /// Runs `rules` to saturation or to a limit.
    pub fn saturate(&mut self, rules: &[Rule], limits: &Limits, node_limit: usize) -> PhaseStats {
        let start = Instant::now();
        let egraph = std::mem::take(&mut self.egraph);
        let runner = Runner::default()
            .with_egraph(egraph)
            .with_node_limit(node_limit)
            .with_iter_limit(limits.iterations)
            .with_time_limit(limits.phase_time())
            .run(rules);
        let mut applied = BTreeMap::new();
        for it in &runner.iterations {
            for (rule, n) in &it.applied {
                *applied.entry(rule.to_string()).or_insert(0) += n;
            }
        }
        let stop = stop_reason(runner.stop_reason.as_ref());
        let iterations = runner.iterations.len();
        self.egraph = runner.egraph;
        self.egraph.rebuild();
        PhaseStats {
            iterations,
            stop,
            seconds: start.elapsed().as_secs_f64(),
            applied,
            nodes: self.egraph.total_number_of_nodes(),
            classes: self.egraph.number_of_classes(),
        }
    }
}
