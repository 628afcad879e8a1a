//! The lowering phase: kernel-forming rules add fused kernels to the e-graph.
//!
//! Each rule grows a [`Group`] around a seed of the region's chosen DAG and adds a
//! `kernel` e-node (its body interned, its inputs as children) plus one `outN`
//! projection per output, unioned with the class it computes and justified by the
//! rule's name. Extraction then picks, class by class, between the primitive op and
//! the kernels that compute it. The rules:
//!
//! | rule | seed | group |
//! |---|---|---|
//! | `fuse-prologue` | convolution, matmul, pooling | the anchor and its recomputed operand producers (BN apply, ReLU, the SCConv gate, concat as an index map, the average pool before `k2`) |
//! | `fuse-epilogue` | same | also elementwise consumers and reductions of its result (BN statistics, BN apply, residual add, ReLU, the gate, BN-backward sums), and disjoint poolings of its prologue values as extra outputs |
//! | `fuse-epilogue-only` | same | the epilogue without the recomputed prologue, for operands cheaper to read than to recompute per tile |
//! | `fuse-reduction` | reduction | the reduction and its recomputed producers |
//! | `fuse-pointwise` | elementwise op or index map | its recomputed producers, taking in a loop nest it reads element for element (so the gate becomes the `k3` convolution's epilogue) |
//! | `fuse-pointwise-exclusive` | same | only producers nothing else reads |
//! | `fuse-pointwise-reductions` | same | `fuse-pointwise` plus reductions of its domain (BN backward: the masked gradient and its sums) |
//!
//! Kernel rules are applied once per seed: their right-hand sides contain no new
//! matches for one another, so one pass is the whole saturation.

use super::analysis::KernelBody;
use super::dag::{Dag, Kind};
use super::group::{Group, Producers};
use super::language::{ENode, Head};
use super::region::{PhaseStats, RegionGraph};
use super::rule_set::RuleSet;
use calib_ir::{text, Graph};
use egg::Symbol;
use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

/// The kernel-forming rules, by name (see the table above).
pub const KERNEL_RULES: &[&str] = &[
    "fuse-prologue",
    "fuse-epilogue",
    "fuse-epilogue-only",
    "fuse-reduction",
    "fuse-pointwise",
    "fuse-pointwise-exclusive",
    "fuse-pointwise-reductions",
];

/// Adds the kernels of every rule `rules` leaves on for `dag` to the region's e-graph,
/// stopping early (with the stop reason saying so) at `node_limit` e-nodes or after
/// `time`.
pub fn form_kernels(
    rg: &mut RegionGraph,
    dag: &Dag,
    graph: &Graph,
    rules: &RuleSet,
    node_limit: usize,
    time: Duration,
) -> PhaseStats {
    let start = Instant::now();
    let scope = |i: usize| {
        dag.originals[i]
            .first()
            .map_or(String::new(), |&o| graph.nodes[o].scope.clone())
    };
    let mut seen: HashSet<Vec<usize>> = HashSet::new();
    let mut applied: BTreeMap<String, usize> = BTreeMap::new();
    let mut stop = "saturated".to_string();
    for seed in 0..dag.len() {
        if rg.egraph.total_number_of_nodes() >= node_limit {
            stop = format!("node limit ({node_limit} e-nodes)");
            break;
        }
        if start.elapsed() > time {
            stop = format!("time limit ({} s)", time.as_secs_f64());
            break;
        }
        for (rule, group) in candidates(dag, seed) {
            if !rules.enabled(rule) {
                continue;
            }
            let key: Vec<usize> = group.members.keys().copied().collect();
            if key.len() < 2 || !group.is_valid(dag) || !seen.insert(key) {
                continue;
            }
            if add_kernel(rg, dag, &group, rule, &scope) {
                *applied.entry(rule.to_string()).or_insert(0) += 1;
            }
        }
    }
    rg.egraph.rebuild();
    PhaseStats {
        iterations: 1,
        stop,
        seconds: start.elapsed().as_secs_f64(),
        applied,
        nodes: rg.egraph.total_number_of_nodes(),
        classes: rg.egraph.number_of_classes(),
    }
}

/// The groups each rule grows around `seed`.
fn candidates(dag: &Dag, seed: usize) -> Vec<(&'static str, Group)> {
    let grown = |mode| {
        let mut g = Group::seed(dag, seed);
        g.absorb(dag, seed, mode);
        g
    };
    let with_epilogue = |mut g: Group| {
        g.grow_epilogue(dag);
        if dag.kind(seed) == Kind::Heavy {
            g.grow_side_pools(dag);
        }
        g
    };
    match dag.kind(seed) {
        Kind::Heavy => {
            let prologue = grown(Producers::Recompute);
            vec![
                ("fuse-prologue", prologue.clone()),
                ("fuse-epilogue", with_epilogue(prologue)),
                // When recomputing the prologue for every tile costs more than reading
                // its result, the epilogue still fuses.
                (
                    "fuse-epilogue-only",
                    with_epilogue(grown(Producers::FreeOnly)),
                ),
            ]
        }
        Kind::Reduction => vec![("fuse-reduction", grown(Producers::Recompute))],
        Kind::Elementwise | Kind::IndexMap => {
            let cone = grown(Producers::Recompute);
            vec![
                ("fuse-pointwise", cone.clone()),
                ("fuse-pointwise-exclusive", grown(Producers::Exclusive)),
                ("fuse-pointwise-reductions", with_epilogue(cone)),
            ]
        }
        Kind::Leaf | Kind::Free | Kind::Opaque => vec![],
    }
}

/// Adds `group` as a kernel e-node and unions each output's projection with the class
/// it computes. False if the body could not be built.
fn add_kernel(
    rg: &mut RegionGraph,
    dag: &Dag,
    group: &Group,
    rule: &str,
    scope: &dyn Fn(usize) -> String,
) -> bool {
    let outputs = group.outputs(dag);
    let Some((body, inputs, _)) = group.body(dag, &outputs, scope) else {
        return false;
    };
    let children: Vec<egg::Id> = inputs
        .iter()
        .map(|&c| rg.egraph.find(dag.class[c]))
        .collect();
    let key = format!("{}{children:?}", text::print(&body));
    let rule = Symbol::from(rule);
    let info = KernelBody {
        body,
        anchor: group.anchor_kind(dag),
        group: group.clone(),
    };
    let k = rg.egraph.analysis.intern_kernel(key, info);
    let kernel = rg.egraph.add(ENode::new(Head::Kernel(k), children));
    for (i, &o) in outputs.iter().enumerate() {
        let proj = rg
            .egraph
            .add(ENode::new(Head::Proj(i as u32), vec![kernel]));
        rg.egraph.union_trusted(dag.class[o], proj, rule);
    }
    true
}
