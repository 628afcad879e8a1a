//! Extraction: the cheapest set of kernels that computes a region's roots.
//!
//! Every class of the region's DAG may be computed by its primitive op as a kernel of
//! its own, or by any fused kernel that lists it as an output. Extraction is DAG-aware
//! ([`super::extract`]): a kernel that several classes take counts once. The chosen
//! kernels are then rebuilt for exactly the outputs that are used.

use super::analysis::KernelBody;
use super::dag::{Dag, Kind};
use super::estimate::kernel_seconds;
use super::extract::{solve, Candidate, Problem};
use super::group::{Group, Producers};
use super::language::Head;
use super::narrow::as_stored;
use super::region::RegionGraph;
use calib_cost::Device;
use calib_ir::{Anchor, DType, Graph, Op, Precision};
use egg::Id;
use std::collections::{BTreeMap, HashMap};

/// A value of the plan: an original node's, or one only a rewrite created (a merged
/// convolution's output), by region and DAG index.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Val {
    Orig(usize),
    New(usize, usize),
}

/// A kernel of a region's plan, over plan values.
#[derive(Clone, Debug)]
pub struct PlannedKernel {
    pub body: Graph,
    pub anchor: Anchor,
    pub label: String,
    pub inputs: Vec<Val>,
    pub outputs: Vec<Val>,
    pub covers: Vec<usize>,
}

/// A region's kernels, and the value that holds each of its roots.
#[derive(Clone, Debug, Default)]
pub struct RegionPlan {
    pub kernels: Vec<PlannedKernel>,
    pub roots: Vec<(usize, Val)>,
}

/// What extraction charges for a kernel: its predicted time, plus a token amount per
/// kernel so that between plans the cost model cannot tell apart (a convolution whose
/// statistics are a second launch of its own kernel, or of a kernel of their own) the
/// one with fewer kernels, buffers and launches to schedule wins.
/// The body is priced as it will be stored (`narrow.rs`): bf16 round trips it writes
/// cost two bytes an element, and so do the round trips it reads (its inputs that are
/// `cast(_, f32)` of a bf16 value), so that extraction sees what a kernel that rounds
/// its result before storing it saves its readers.
fn planned_seconds(
    body: &Graph,
    inputs: &[usize],
    dag: &Dag,
    device: &Device,
    precision: Precision,
) -> f64 {
    const PER_KERNEL: f64 = 0.2e-6;
    let narrow: Vec<usize> = (0..inputs.len())
        .filter(|&k| is_round_trip(dag, inputs[k]))
        .collect();
    kernel_seconds(&as_stored(body, &narrow), device, precision) + PER_KERNEL
}

/// Whether DAG value `c` is `cast(u, f32)` of a bf16 value `u`, or a concatenation or
/// slice of such: a round trip, which the kernel computing it stores as bf16. Inside a
/// view, the widening of a bf16 leaf counts too (merged siblings' concatenated weight
/// copies, stored as one bf16 buffer).
fn is_round_trip(dag: &Dag, c: usize) -> bool {
    let viewed = |x: usize| is_round_trip(dag, x) || dag.widens_leaf(x);
    match &dag.op[c] {
        Some(Op::Cast { to: DType::F32 }) => dag.inputs[c]
            .first()
            .is_some_and(|&u| dag.ty[u].dtype == DType::BF16 && dag.kind(u) != Kind::Leaf),
        Some(Op::Concat { .. }) => dag.inputs[c].iter().all(|&x| viewed(x)),
        Some(Op::Slice { .. }) => viewed(dag.inputs[c][0]),
        _ => false,
    }
}

/// An op as its own kernel: its group, body, inputs and covered nodes.
type Single = (Group, Graph, Vec<usize>, Vec<usize>);

/// Picks the kernels for region `region` (index `r`); `multi_output` false keeps to
/// kernels with one output, which can never form a cycle.
pub fn plan(
    rg: &RegionGraph,
    dag: &Dag,
    graph: &Graph,
    device: &Device,
    precision: Precision,
    r: usize,
    multi_output: bool,
) -> RegionPlan {
    let eg = &rg.egraph;
    let at: HashMap<Id, usize> = (0..dag.len()).map(|i| (eg.find(dag.class[i]), i)).collect();
    let scope = |i: usize| {
        dag.originals[i]
            .first()
            .map_or(String::new(), |&o| graph.nodes[o].scope.clone())
    };
    let mut problem = Problem::default();
    let mut singles: Vec<Option<Single>> = vec![];
    let mut kernel_item: HashMap<Id, u32> = HashMap::new();
    let mut item_kernel: HashMap<u32, u32> = HashMap::new();
    for i in 0..dag.len() {
        let mut cands = vec![];
        match dag.kind(i) {
            Kind::Leaf => cands.push(Candidate {
                item: None,
                children: vec![],
            }),
            Kind::Free => cands.push(Candidate {
                item: None,
                children: dag.inputs[i].clone(),
            }),
            _ => {
                let mut g = Group::seed(dag, i);
                g.absorb(dag, i, Producers::FreeOnly);
                if let Some((body, inputs, covers)) = g.body(dag, &[i], &scope) {
                    problem
                        .item_cost
                        .push(planned_seconds(&body, &inputs, dag, device, precision));
                    cands.push(Candidate {
                        item: Some(problem.item_cost.len() as u32 - 1),
                        children: inputs.clone(),
                    });
                    singles.push(Some((g, body, inputs, covers)));
                }
            }
        }
        if singles.len() <= i {
            singles.push(None);
        }
        for n in &eg[eg.find(dag.class[i])].nodes {
            let Head::Proj(_) = n.head else { continue };
            let kc = eg.find(n.children[0]);
            let Some(kn) = eg[kc]
                .nodes
                .iter()
                .find(|k| matches!(k.head, Head::Kernel(_)))
            else {
                continue;
            };
            let Head::Kernel(k) = kn.head else { continue };
            let info = eg.analysis.kernel(k);
            if !multi_output && info.body.outputs.len() > 1 {
                continue;
            }
            let Some(children) = kn
                .children
                .iter()
                .map(|c| at.get(&eg.find(*c)).copied())
                .collect::<Option<Vec<_>>>()
            else {
                continue;
            };
            let item = *kernel_item.entry(kc).or_insert_with(|| {
                problem.item_cost.push(planned_seconds(
                    &info.body, &children, dag, device, precision,
                ));
                let item = problem.item_cost.len() as u32 - 1;
                item_kernel.insert(item, k);
                item
            });
            cands.push(Candidate {
                item: Some(item),
                children,
            });
        }
        problem.candidates.push(cands);
    }
    let roots: Vec<usize> = (0..dag.len()).filter(|&i| dag.root[i]).collect();
    let choice = solve(&problem, &roots);

    // Walk what the roots need; collect each chosen kernel's used outputs.
    let val = |i: usize| value_of(dag, r, i);
    let mut out = RegionPlan::default();
    let mut used: BTreeMap<u32, Vec<usize>> = BTreeMap::new();
    let mut seen = vec![false; dag.len()];
    let mut stack = roots.clone();
    while let Some(i) = stack.pop() {
        if std::mem::replace(&mut seen[i], true) {
            continue;
        }
        let Some(k) = choice[i] else { continue };
        let cand = &problem.candidates[i][k];
        stack.extend(&cand.children);
        let fused = cand.item.and_then(|item| item_kernel.get(&item));
        match (dag.kind(i), fused) {
            (_, Some(&kid)) => used.entry(kid).or_default().push(i),
            (Kind::Leaf, _) => {}
            (Kind::Free, _) if !dag.root[i] => {}
            (Kind::Free, _) => {
                // A root that is only a view of another value still needs a buffer.
                let mut g = Group::seed(dag, i);
                g.absorb(dag, i, Producers::FreeOnly);
                if let Some((body, inputs, covers)) = g.body(dag, &[i], &scope) {
                    out.kernels.push(planned(
                        body,
                        Anchor::Pointwise,
                        label(dag, graph, i),
                        &inputs,
                        &[i],
                        covers,
                        &val,
                    ));
                }
            }
            _ => {
                let (g, body, inputs, covers) =
                    singles[i].clone().expect("a chosen op kernel was built");
                out.kernels.push(planned(
                    body,
                    g.anchor_kind(dag),
                    label(dag, graph, i),
                    &inputs,
                    &[i],
                    covers,
                    &val,
                ));
            }
        }
    }
    for (kid, mut outputs) in used {
        let info: &KernelBody = eg.analysis.kernel(kid);
        outputs.sort();
        let Some((body, inputs, covers)) = info.group.body(dag, &outputs, &scope) else {
            continue;
        };
        let seed = info
            .group
            .anchor
            .or_else(|| info.group.members.keys().next_back().copied())
            .unwrap_or(outputs[0]);
        out.kernels.push(planned(
            body,
            info.anchor,
            label(dag, graph, seed),
            &inputs,
            &outputs,
            covers,
            &val,
        ));
    }
    out.roots = rg
        .roots
        .iter()
        .map(|o| (*o, val(at[&eg.find(rg.class_of[o])])))
        .collect();
    out
}

fn planned(
    body: Graph,
    anchor: Anchor,
    label: String,
    inputs: &[usize],
    outputs: &[usize],
    covers: Vec<usize>,
    val: &dyn Fn(usize) -> Val,
) -> PlannedKernel {
    PlannedKernel {
        body,
        anchor,
        label,
        inputs: inputs.iter().map(|&i| val(i)).collect(),
        outputs: outputs.iter().map(|&i| val(i)).collect(),
        covers,
    }
}

/// The plan value of DAG index `i` of region `r`: a leaf's own node, else the first
/// original node of its class, else a new value.
fn value_of(dag: &Dag, r: usize, i: usize) -> Val {
    match (dag.leaf[i], dag.originals[i].first()) {
        (Some(l), _) => Val::Orig(l),
        (None, Some(&o)) => Val::Orig(o),
        (None, None) => Val::New(r, i),
    }
}

/// `op@scope` of the node a kernel is built around (the scope of the nearest value
/// with an original node, for values rewrites created).
fn label(dag: &Dag, graph: &Graph, i: usize) -> String {
    let op = dag.op[i].as_ref().map_or("value", |o| o.name());
    let mut near = vec![i];
    let mut k = 0;
    while k < near.len() && k < 64 {
        let j = near[k];
        if let Some(&o) = dag.originals[j]
            .iter()
            .find(|&&o| !graph.nodes[o].scope.is_empty())
        {
            return format!("{op}@{}", graph.nodes[o].scope);
        }
        near.extend(
            dag.users[j]
                .iter()
                .chain(&dag.inputs[j])
                .filter(|&&n| dag.op[n].is_some()),
        );
        k += 1;
    }
    op.to_string()
}
