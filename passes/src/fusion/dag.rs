//! The primitive program a region's saturation settled on: one op per e-class,
//! chosen by DAG-aware extraction with every op priced as its own kernel, and laid
//! out as an indexed DAG (operands first) for kernel formation.

use super::analysis::{find_op, EGraph};
use super::cost::{op_flops, roofline_seconds, KernelCost};
use super::extract::{solve, Candidate, Problem};
use super::language::{ENode, Head};
use super::region::RegionGraph;
use calib_cost::Device;
use calib_ir::{DType, Op, TensorType};
use egg::Id;
use std::collections::HashMap;

/// A region's chosen primitive program.
pub struct Dag {
    /// The e-class of each index (canonical when the DAG was built).
    pub class: Vec<Id>,
    pub index: HashMap<Id, usize>,
    /// The op, or `None` for a leaf.
    pub op: Vec<Option<Op>>,
    /// The original node id of a leaf.
    pub leaf: Vec<Option<usize>>,
    pub inputs: Vec<Vec<usize>>,
    pub users: Vec<Vec<usize>>,
    pub ty: Vec<TensorType>,
    /// Needed outside the region.
    pub root: Vec<bool>,
    /// Original nodes whose value this is.
    pub originals: Vec<Vec<usize>>,
    /// Whether the value depends on parameters and constants only.
    pub params_only: Vec<bool>,
    /// The indices each value depends on, through other regions too (a bit set).
    deps: Vec<Vec<u64>>,
}

/// What kernel formation needs to know about an op.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Leaf,
    /// Constants, broadcasts and reshapes: folded into whatever reads them.
    Free,
    /// Elementwise arithmetic.
    Elementwise,
    /// Index maps that move elements (`slice`, `concat`, `resize_nearest`, `one_hot`).
    IndexMap,
    /// Loop nests a kernel is built around: convolutions, matmuls, pooling.
    Heavy,
    Reduction,
    /// Ops no kernel takes in: collectives (communication between replicas).
    Opaque,
}

pub fn kind_of(op: Option<&Op>) -> Kind {
    use calib_ir::OpClass;
    let Some(op) = op else { return Kind::Leaf };
    match op {
        Op::Constant { .. } | Op::Broadcast { .. } | Op::Reshape { .. } => Kind::Free,
        Op::Slice { .. } | Op::Concat { .. } | Op::ResizeNearest { .. } | Op::OneHot { .. } => {
            Kind::IndexMap
        }
        _ => match op.class() {
            OpClass::Elementwise => Kind::Elementwise,
            OpClass::Reduction => Kind::Reduction,
            OpClass::Collective => Kind::Opaque,
            _ => Kind::Heavy,
        },
    }
}

impl Dag {
    pub fn len(&self) -> usize {
        self.class.len()
    }

    /// [`kind_of`] its op, but for the widening of a bf16 leaf (a bf16 weight copy read
    /// as f32) and the TF32 rounding of an f32 parameter (a master weight under the tf32
    /// policy, [`Dag::rounds_leaf`]): free, since each reader converts as it loads (a TF32 tile rounds its
    /// words as they land anyway), where a kernel of its own would store a copy for
    /// readers to load back, one more launch for every weight.
    pub fn kind(&self, i: usize) -> Kind {
        match self.widens_leaf(i) || self.rounds_leaf(i) {
            true => Kind::Free,
            false => kind_of(self.op[i].as_ref()),
        }
    }

    /// Whether value `i` is `cast(u, tf32)` of an f32 parameter `u`, or `cast` of that to
    /// f32 (the tf32 policy's round trip of a weight). Activations keep their rounding
    /// where they are computed: stored rounded, read as they are.
    pub fn rounds_leaf(&self, i: usize) -> bool {
        let leaf = |u: usize| {
            self.op[u].is_none() && self.params_only[u] && self.ty[u].dtype == DType::F32
        };
        let rounding = |j: usize| {
            self.op[j] == Some(Op::Cast { to: DType::TF32 })
                && matches!(self.inputs[j][..], [u] if leaf(u))
        };
        rounding(i)
            || (self.op[i] == Some(Op::Cast { to: DType::F32 })
                && matches!(self.inputs[i][..], [u] if rounding(u)))
    }

    /// Whether value `i` is `cast(u, f32)` of a bf16 leaf `u`.
    pub fn widens_leaf(&self, i: usize) -> bool {
        self.op[i] == Some(Op::Cast { to: DType::F32 })
            && matches!(self.inputs[i][..], [u] if self.op[u].is_none() && self.ty[u].dtype == DType::BF16)
    }

    /// Whether value `i` depends on value `j`.
    pub fn depends_on(&self, i: usize, j: usize) -> bool {
        self.deps[i][j / 64] >> (j % 64) & 1 == 1
    }

    /// Chooses one primitive op per class of the saturated region (each priced as its
    /// own kernel, shared values once) and lays out what the roots need.
    /// `external` maps a leaf to the region's nodes it depends on elsewhere.
    pub fn choose(rg: &RegionGraph, device: &Device, external: &HashMap<usize, Vec<usize>>) -> Dag {
        let eg = &rg.egraph;
        let mut ids: Vec<Id> = eg.classes().map(|c| c.id).collect();
        ids.sort();
        let at: HashMap<Id, usize> = ids.iter().enumerate().map(|(k, &id)| (id, k)).collect();
        let superseded: Vec<ENode> = eg
            .analysis
            .superseded
            .iter()
            .map(|n| canonical(eg, n))
            .collect();
        let mut problem = Problem::default();
        let mut nodes: Vec<Vec<&ENode>> = vec![];
        for &id in &ids {
            let mut cands = vec![];
            let mut kept = vec![];
            for n in &eg[id].nodes {
                let op = eg.analysis.op_of(n);
                if !matches!(n.head, Head::Op { .. } | Head::Leaf(_)) {
                    continue;
                }
                let children = n.children.iter().map(|c| at[&eg.find(*c)]).collect();
                let item = match kind_of(op) {
                    Kind::Leaf | Kind::Free => None,
                    kind => {
                        let cost = singleton_cost(eg, id, n);
                        // Elementwise ops and index maps end up inside some kernel: price
                        // their arithmetic only, so that a rewrite is judged by the loop
                        // nests and memory traffic it leaves, not by launches that fusion
                        // removes anyway.
                        let mut secs = match kind {
                            Kind::Elementwise | Kind::IndexMap => {
                                roofline_seconds(&KernelCost { bytes: 0.0, ..cost }, device)
                                    - device.timing.kernel_floor_us * 1e-6
                            }
                            _ => roofline_seconds(&cost, device),
                        };
                        if superseded.contains(n) {
                            secs += SUPERSEDED_PENALTY;
                        }
                        problem.item_cost.push(secs);
                        Some(problem.item_cost.len() as u32 - 1)
                    }
                };
                cands.push(Candidate { item, children });
                kept.push(n);
            }
            problem.candidates.push(cands);
            nodes.push(kept);
        }
        let roots: Vec<usize> = rg
            .roots
            .iter()
            .map(|o| at[&eg.find(rg.class_of[o])])
            .collect();
        let choice = solve(&problem, &roots);
        // Depth-first from the roots, operands first: a topological order.
        let mut order: Vec<usize> = vec![];
        let mut seen = vec![false; ids.len()];
        let mut stack: Vec<(usize, bool)> = roots.iter().rev().map(|&r| (r, false)).collect();
        while let Some((c, done)) = stack.pop() {
            if done {
                order.push(c);
                continue;
            }
            if std::mem::replace(&mut seen[c], true) {
                continue;
            }
            stack.push((c, true));
            let k = choice[c].expect("every class holds an original, finitely priced node");
            stack.extend(
                problem.candidates[c][k]
                    .children
                    .iter()
                    .rev()
                    .filter(|&&ch| !seen[ch])
                    .map(|&ch| (ch, false)),
            );
        }
        let pos: HashMap<usize, usize> = order.iter().enumerate().map(|(i, &c)| (c, i)).collect();
        let mut originals: HashMap<Id, Vec<usize>> = HashMap::new();
        for (&orig, &id) in &rg.class_of {
            originals.entry(eg.find(id)).or_default().push(orig);
        }
        let mut dag = Dag {
            class: vec![],
            index: HashMap::new(),
            op: vec![],
            leaf: vec![],
            inputs: vec![],
            users: vec![vec![]; order.len()],
            ty: vec![],
            root: vec![false; order.len()],
            originals: vec![],
            params_only: vec![],
            deps: vec![],
        };
        for (i, &c) in order.iter().enumerate() {
            let n = nodes[c][choice[c].expect("ordered classes are chosen")];
            let id = ids[c];
            dag.class.push(id);
            dag.index.insert(id, i);
            dag.op.push(eg.analysis.op_of(n).cloned());
            dag.leaf.push(match n.head {
                Head::Leaf(v) => Some(v as usize),
                _ => None,
            });
            let inputs: Vec<usize> = n
                .children
                .iter()
                .map(|ch| pos[&at[&eg.find(*ch)]])
                .collect();
            for &j in &inputs {
                dag.users[j].push(i);
            }
            dag.inputs.push(inputs);
            dag.ty.push(eg[id].data.ty().clone());
            dag.params_only.push(eg[id].data.params_only);
            let mut o = originals.remove(&id).unwrap_or_default();
            o.sort();
            dag.originals.push(o);
        }
        for r in &roots {
            dag.root[pos[r]] = true;
        }
        dag.deps = dependencies(&dag, rg, external);
        dag
    }
}

/// Extraction avoids a superseded node whenever anything else computes its class.
const SUPERSEDED_PENALTY: f64 = 1.0;

fn canonical(eg: &EGraph, n: &ENode) -> ENode {
    ENode::new(n.head, n.children.iter().map(|&c| eg.find(c)).collect())
}

/// Every value's dependencies as bit sets over DAG indices, following leaves through
/// the other regions back to this region's nodes.
fn dependencies(
    dag: &Dag,
    rg: &RegionGraph,
    external: &HashMap<usize, Vec<usize>>,
) -> Vec<Vec<u64>> {
    let n = dag.len();
    let words = n.div_ceil(64).max(1);
    let edges: Vec<Vec<usize>> = (0..n)
        .map(|i| {
            let mut e = dag.inputs[i].clone();
            if let Some(through) = dag.leaf[i].and_then(|v| external.get(&v)) {
                e.extend(
                    through
                        .iter()
                        .filter_map(|o| dag.index.get(&rg.egraph.find(rg.class_of[o])))
                        .copied(),
                );
            }
            e
        })
        .collect();
    let mut deps: Vec<Option<Vec<u64>>> = vec![None; n];
    for start in 0..n {
        // Iterative post-order; the original dataflow is acyclic, so no value is its
        // own dependency and the walk ends.
        let mut stack = vec![(start, false)];
        while let Some((i, done)) = stack.pop() {
            if deps[i].is_some() {
                continue;
            }
            if !done {
                stack.push((i, true));
                stack.extend(
                    edges[i]
                        .iter()
                        .filter(|&&j| deps[j].is_none() && j != i)
                        .map(|&j| (j, false)),
                );
                continue;
            }
            let mut bits = vec![0u64; words];
            for &j in &edges[i] {
                if j == i {
                    continue;
                }
                bits[j / 64] |= 1 << (j % 64);
                if let Some(d) = &deps[j] {
                    bits.iter_mut().zip(d).for_each(|(b, d)| *b |= d);
                }
            }
            deps[i] = Some(bits);
        }
    }
    deps.into_iter()
        .map(|d| d.unwrap_or_else(|| vec![0; words]))
        .collect()
}

/// An estimate of `n` run as its own kernel, reading operands through any broadcast
/// or reshape in their classes (what lowering will inline).
fn singleton_cost(eg: &EGraph, class: Id, n: &ENode) -> KernelCost {
    let out = eg[class].data.ty().clone();
    let op = eg.analysis.op_of(n).expect("priced nodes are op nodes");
    let types: Vec<&TensorType> = n.children.iter().map(|&c| eg[c].data.ty()).collect();
    let reads: f64 = n.children.iter().map(|&c| read_bytes(eg, c)).sum();
    KernelCost {
        flops: op_flops(op, &types, &out),
        bytes: reads + out.size_bytes() as f64,
        dtype: out.dtype,
    }
}

/// Bytes a kernel reads for operand class `c`: nothing for a constant, the source of a
/// view, else the value.
fn read_bytes(eg: &EGraph, c: Id) -> f64 {
    if find_op(eg, c, "constant").is_some() {
        return 0.0;
    }
    let through_view = ["broadcast", "reshape"]
        .iter()
        .find_map(|k| find_op(eg, c, k))
        .map(|(_, n)| eg[n.children[0]].data.ty().size_bytes() as f64);
    through_view.unwrap_or_else(|| eg[c].data.ty().size_bytes() as f64)
}
