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
    let region = Region {
        rg,
        dag,
        graph,
        device,
        precision,
    };
    let eg = &rg.egraph;
    let at: HashMap<Id, usize> = (0..dag.len()).map(|i| (eg.find(dag.class[i]), i)).collect();
    let priced = region.price(&at, multi_output);
    let roots: Vec<usize> = (0..dag.len()).filter(|&i| dag.root[i]).collect();
    let choice = solve(&priced.problem, &roots);
    let val = |i: usize| value_of(dag, r, i);
    let mut out = RegionPlan::default();
    let used = region.walk(&priced, &choice, &roots, &val, &mut out.kernels);
    region.fused_kernels(used, &val, &mut out.kernels);
    out.roots = rg
        .roots
        .iter()
        .map(|o| (*o, val(at[&eg.find(rg.class_of[o])])))
        .collect();
    out
}

/// What planning reads of one region: its e-graph and chosen DAG, the graph its nodes
/// came from (for scopes and labels), and the device and precision kernels are priced
/// for.
struct Region<'a> {
    rg: &'a RegionGraph,
    dag: &'a Dag,
    graph: &'a Graph,
    device: &'a Device,
    precision: Precision,
}

/// Extraction's problem for a region, and what its items stand for.
struct Priced {
    problem: Problem,
    /// Per DAG index, its op as a kernel of its own, where one was built.
    singles: Vec<Option<Single>>,
    /// The items that are fused kernels of the e-graph, to their kernel number.
    item_kernel: HashMap<u32, u32>,
}

impl Region<'_> {
    /// The scope of DAG index `i`'s first original node.
    fn scope(&self, i: usize) -> String {
        self.dag.originals[i]
            .first()
            .map_or(String::new(), |&o| self.graph.nodes[o].scope.clone())
    }

    fn seconds(&self, body: &Graph, inputs: &[usize]) -> f64 {
        planned_seconds(body, inputs, self.dag, self.device, self.precision)
    }

    /// DAG index `i`'s op as a kernel of its own, with the free producers it absorbs.
    fn single(&self, i: usize) -> Option<Single> {
        let mut g = Group::seed(self.dag, i);
        g.absorb(self.dag, i, Producers::FreeOnly);
        let (body, inputs, covers) = g.body(self.dag, &[i], &|i| self.scope(i))?;
        Some((g, body, inputs, covers))
    }

    /// Every class's candidates, priced: a leaf or a free view as it is, an op as a
    /// kernel of its own, and every fused kernel with an output there (`at`: a class's
    /// DAG index).
    fn price(&self, at: &HashMap<Id, usize>, multi_output: bool) -> Priced {
        let mut priced = Priced {
            problem: Problem::default(),
            singles: vec![],
            item_kernel: HashMap::new(),
        };
        let mut kernel_item: HashMap<Id, u32> = HashMap::new();
        for i in 0..self.dag.len() {
            let mut cands = vec![];
            let mut single = None;
            match self.dag.kind(i) {
                Kind::Leaf => cands.push(Candidate {
                    item: None,
                    children: vec![],
                }),
                Kind::Free => cands.push(Candidate {
                    item: None,
                    children: self.dag.inputs[i].clone(),
                }),
                _ => {
                    if let Some(s) = self.single(i) {
                        let item = priced.add_item(self.seconds(&s.1, &s.2));
                        cands.push(Candidate {
                            item: Some(item),
                            children: s.2.clone(),
                        });
                        single = Some(s);
                    }
                }
            }
            priced.singles.push(single);
            for (kc, k, children) in self.fused_kernels_at(i, at, multi_output) {
                let item = *kernel_item.entry(kc).or_insert_with(|| {
                    let body = &self.rg.egraph.analysis.kernel(k).body;
                    let item = priced.add_item(self.seconds(body, &children));
                    priced.item_kernel.insert(item, k);
                    item
                });
                cands.push(Candidate {
                    item: Some(item),
                    children,
                });
            }
            priced.problem.candidates.push(cands);
        }
        priced
    }

    /// The fused kernels with an output in DAG index `i`'s class: each one's class,
    /// kernel number and inputs (as DAG indices); with one output only unless
    /// `multi_output`.
    fn fused_kernels_at(
        &self,
        i: usize,
        at: &HashMap<Id, usize>,
        multi_output: bool,
    ) -> Vec<(Id, u32, Vec<usize>)> {
        let eg = &self.rg.egraph;
        let mut found = vec![];
        for n in &eg[eg.find(self.dag.class[i])].nodes {
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
            if !multi_output && eg.analysis.kernel(k).body.outputs.len() > 1 {
                continue;
            }
            let children = kn
                .children
                .iter()
                .map(|c| at.get(&eg.find(*c)).copied())
                .collect::<Option<Vec<_>>>();
            if let Some(children) = children {
                found.push((kc, k, children));
            }
        }
        found
    }

    /// Walks what the roots need under `choice`: pushes the ops chosen as kernels of
    /// their own to `kernels`, and returns each chosen fused kernel's used outputs.
    fn walk(
        &self,
        priced: &Priced,
        choice: &[Option<usize>],
        roots: &[usize],
        val: &dyn Fn(usize) -> Val,
        kernels: &mut Vec<PlannedKernel>,
    ) -> BTreeMap<u32, Vec<usize>> {
        let dag = self.dag;
        let mut used: BTreeMap<u32, Vec<usize>> = BTreeMap::new();
        let mut seen = vec![false; dag.len()];
        let mut stack = roots.to_vec();
        while let Some(i) = stack.pop() {
            if std::mem::replace(&mut seen[i], true) {
                continue;
            }
            let Some(k) = choice[i] else { continue };
            let cand = &priced.problem.candidates[i][k];
            stack.extend(&cand.children);
            let fused = cand.item.and_then(|item| priced.item_kernel.get(&item));
            let single = match (dag.kind(i), fused) {
                (_, Some(&kid)) => {
                    used.entry(kid).or_default().push(i);
                    continue;
                }
                (Kind::Leaf, _) => continue,
                (Kind::Free, _) if !dag.root[i] => continue,
                // A root that is only a view of another value still needs a buffer.
                (Kind::Free, _) => match self.single(i) {
                    Some((_, body, inputs, covers)) => (Anchor::Pointwise, body, inputs, covers),
                    None => continue,
                },
                _ => {
                    let (g, body, inputs, covers) = priced.singles[i]
                        .clone()
                        .expect("a chosen op kernel was built");
                    (g.anchor_kind(dag), body, inputs, covers)
                }
            };
            let (anchor, body, inputs, covers) = single;
            let label = label(dag, self.graph, i);
            kernels.push(planned(body, anchor, label, &inputs, &[i], covers, val));
        }
        used
    }

    /// The chosen fused kernels, each rebuilt for the outputs `used` lists.
    fn fused_kernels(
        &self,
        used: BTreeMap<u32, Vec<usize>>,
        val: &dyn Fn(usize) -> Val,
        kernels: &mut Vec<PlannedKernel>,
    ) {
        for (kid, mut outputs) in used {
            let info: &KernelBody = self.rg.egraph.analysis.kernel(kid);
            outputs.sort();
            let scope = |i: usize| self.scope(i);
            let Some((body, inputs, covers)) = info.group.body(self.dag, &outputs, &scope) else {
                continue;
            };
            let seed = info
                .group
                .anchor
                .or_else(|| info.group.members.keys().next_back().copied())
                .unwrap_or(outputs[0]);
            let label = label(self.dag, self.graph, seed);
            kernels.push(planned(
                body,
                info.anchor,
                label,
                &inputs,
                &outputs,
                covers,
                val,
            ));
        }
    }
}

impl Priced {
    /// A new extraction item costing `seconds`.
    fn add_item(&mut self, seconds: f64) -> u32 {
        self.problem.item_cost.push(seconds);
        self.problem.item_cost.len() as u32 - 1
    }
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
