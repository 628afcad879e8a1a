//! Fused groups: the ops one kernel computes, grown around a seed of the chosen DAG.
//!
//! A group has at most one *anchor*, the loop nest it is built around (a convolution,
//! matmul or pooling op, or the seed reduction). Around it grow
//! * a *prologue*: producers of its operands that are cheap to recompute as they are
//!   loaded: elementwise ops, index maps (broadcast, resize, slice, concat), and for a
//!   convolution the pooling that feeds it;
//! * an *epilogue*: elementwise consumers of its result, over the same domain, and
//!   reductions of that domain, which become extra outputs;
//! * *views*: index maps of members that an epilogue op reads at other indices (a
//!   BatchNorm shift, each channel's first element of the result). Code generation
//!   evaluates them by loading the stored result, in the launch after the anchor's.
//!
//! A group writes its anchor and epilogue values that something outside needs, and
//! every reduction; prologue values are recomputed, never written. A group is valid
//! only if no value it reads depends on a value it writes.

use super::dag::{Dag, Kind};
use calib_ir::{Anchor, Graph, Kernel, Op, Value};
use std::collections::BTreeMap;

/// The most ops one kernel body may hold.
pub const MAX_MEMBERS: usize = 200;

/// How a member joined its group.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Join {
    Seed,
    Prologue,
    Epilogue,
    Reduction,
    View,
}

/// Which operand producers a group takes in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Producers {
    /// Constants and views only (an unfused op).
    FreeOnly,
    /// Also elementwise ops and index maps read by nothing outside the group.
    Exclusive,
    /// Also elementwise ops and index maps read elsewhere (they are recomputed here).
    Recompute,
}

#[derive(Clone, Debug)]
pub struct Group {
    /// DAG index → how it joined; the index order is topological.
    pub members: BTreeMap<usize, Join>,
    pub anchor: Option<usize>,
    member_bits: Vec<u64>,
    pooled: bool,
}

impl Group {
    /// The group of `seed` alone (the anchor, if it is a loop nest).
    pub fn seed(dag: &Dag, seed: usize) -> Group {
        let mut g = Group {
            members: BTreeMap::new(),
            anchor: None,
            member_bits: vec![0; dag.len().div_ceil(64)],
            pooled: false,
        };
        g.insert(seed, Join::Seed);
        if matches!(dag.kind(seed), Kind::Heavy | Kind::Reduction) {
            g.anchor = Some(seed);
        }
        g
    }

    pub fn contains(&self, i: usize) -> bool {
        self.member_bits[i / 64] >> (i % 64) & 1 == 1
    }

    fn insert(&mut self, i: usize, join: Join) {
        self.members.insert(i, join);
        self.member_bits[i / 64] |= 1 << (i % 64);
    }

    /// Takes in the producers of `from`'s operands, transitively, as `mode` allows.
    /// Loop nests never join as producers (but for the pooling before a convolution):
    /// a kernel that recomputed one would duplicate its work, so a loop nest only ever
    /// anchors the groups grown from it.
    pub fn absorb(&mut self, dag: &Dag, from: usize, mode: Producers) {
        let mut stack = vec![from];
        while let Some(v) = stack.pop() {
            for (k, &c) in dag.inputs[v].iter().enumerate() {
                // Constants and views always come along (a kernel never reads one from
                // memory); the size cap holds for everything else.
                let full = self.members.len() >= MAX_MEMBERS;
                if self.contains(c) || (full && dag.kind(c) != Kind::Free) {
                    continue;
                }
                let join = match dag.kind(c) {
                    Kind::Free => Some(Join::Prologue),
                    Kind::Elementwise | Kind::IndexMap => match mode {
                        Producers::FreeOnly => None,
                        Producers::Recompute => Some(Join::Prologue),
                        Producers::Exclusive => (!dag.root[c]
                            && dag.users[c].iter().all(|&u| u == v || self.contains(u)))
                        .then_some(Join::Prologue),
                    },
                    Kind::Heavy if mode != Producers::FreeOnly && self.pools_into(dag, v, k, c) => {
                        Some(Join::Prologue)
                    }
                    _ => None,
                };
                if let Some(join) = join {
                    self.insert(c, join);
                    stack.push(c);
                }
            }
        }
    }

    /// Whether `c`, operand `k` of member `v`, is a pooling that a convolution anchor
    /// can apply while loading its input (SCConv's average pool before `k2`). One per
    /// group; the pooled value is recomputed, so only for pools without overlap.
    fn pools_into(&mut self, dag: &Dag, v: usize, k: usize, c: usize) -> bool {
        let convolves = matches!(
            dag.op[v],
            Some(Op::Conv2d { .. } | Op::Conv2dBackwardWeight { .. })
        );
        let disjoint = matches!(dag.op[c], Some(Op::AvgPool2d { kernel, stride, .. } | Op::MaxPool2d { kernel, stride, .. }) if kernel == stride);
        let fits = self.anchor == Some(v) && convolves && k == 0 && disjoint && !self.pooled;
        self.pooled |= fits;
        fits
    }

    /// Takes in elementwise consumers over the anchor's (or seed's) domain whose other
    /// operands do not depend on the group, and reductions of members, repeatedly.
    pub fn grow_epilogue(&mut self, dag: &Dag) {
        let seed = self
            .members
            .iter()
            .find(|(_, j)| **j == Join::Seed)
            .map(|(&i, _)| i);
        let Some(base) = self.anchor.or(seed) else {
            return;
        };
        if dag.kind(base) == Kind::Reduction {
            return;
        }
        let domain = dag.ty[base].shape.clone();
        loop {
            let frontier: Vec<usize> = self
                .members
                .iter()
                .filter(|(_, j)| matches!(j, Join::Seed | Join::Epilogue))
                .map(|(&i, _)| i)
                .collect();
            let mut grew = false;
            for m in frontier {
                for &u in &dag.users[m] {
                    if self.contains(u) || self.members.len() >= MAX_MEMBERS {
                        continue;
                    }
                    let mut views = vec![];
                    let operands_ok = dag.inputs[u].iter().all(|&c| {
                        self.contains(c) || !self.reaches(dag, c) || self.view(dag, c, &mut views)
                    });
                    let join = match dag.kind(u) {
                        Kind::Reduction if dag.inputs[u].iter().all(|&c| self.contains(c)) => {
                            Join::Reduction
                        }
                        Kind::Elementwise if dag.ty[u].shape == domain && operands_ok => {
                            Join::Epilogue
                        }
                        _ => continue,
                    };
                    for v in views {
                        self.insert(v, Join::View);
                    }
                    self.insert(u, join);
                    if join == Join::Epilogue {
                        self.absorb(dag, u, Producers::Exclusive);
                    }
                    grew = true;
                }
            }
            if !grew {
                break;
            }
        }
    }

    /// Takes in, as extra outputs, disjoint poolings of prologue values (the average
    /// pool before SCConv's `k2`, computed while the `k3` convolution loads the same
    /// input): the pooled map is written once instead of re-reading the full one.
    pub fn grow_side_pools(&mut self, dag: &Dag) {
        let prologue: Vec<usize> = self
            .members
            .iter()
            .filter(|(_, j)| **j == Join::Prologue)
            .map(|(&i, _)| i)
            .collect();
        for p in prologue {
            for &u in &dag.users[p] {
                let disjoint = matches!(dag.op[u], Some(Op::AvgPool2d { kernel, stride, .. } | Op::MaxPool2d { kernel, stride, .. }) if kernel == stride);
                // Not if the kernel reads something computed from the pooled map (the
                // `k4` convolution's gate is, through `k2`).
                let acyclic = || !self.inputs(dag).iter().any(|&c| dag.depends_on(c, u));
                if disjoint && !self.contains(u) && self.members.len() < MAX_MEMBERS && acyclic() {
                    self.insert(u, Join::Reduction);
                }
            }
        }
    }

    /// Whether `c` is a slice, broadcast or reshape of members (through those alone),
    /// collecting the maps to take in into `views`: maps that read a member at other
    /// indices, never ones that compute anything.
    fn view(&self, dag: &Dag, c: usize, views: &mut Vec<usize>) -> bool {
        // Not of a reduction: an epilogue reading one (`y - mean(y)`) could only be
        // computed by a launch after the reduction's, which would have to recompute
        // the anchor for every element unless the group also stored it.
        if self.contains(c) {
            return self.members[&c] != Join::Reduction;
        }
        if views.contains(&c) {
            return true;
        }
        let sampling = matches!(
            dag.op[c],
            Some(Op::Slice { .. } | Op::Broadcast { .. } | Op::Reshape { .. })
        );
        if !sampling || views.len() >= 8 {
            return false;
        }
        views.push(c);
        dag.inputs[c].iter().all(|&i| self.view(dag, i, views))
    }

    /// Whether value `c` may depend on a member. A value of parameters and constants
    /// alone never does, even when it shares a member's parameter inputs (a folded
    /// BatchNorm's bias and its scaled weights).
    fn reaches(&self, dag: &Dag, c: usize) -> bool {
        !dag.params_only[c] && self.members.keys().any(|&m| dag.depends_on(c, m))
    }

    /// The members the group writes, in order.
    pub fn outputs(&self, dag: &Dag) -> Vec<usize> {
        self.members
            .iter()
            .filter(|(&i, &j)| match j {
                Join::Prologue | Join::View => false,
                Join::Reduction => true,
                _ => dag.root[i] || dag.users[i].iter().any(|&u| !self.contains(u)),
            })
            .map(|(&i, _)| i)
            .collect()
    }

    /// The values it reads, in order of first use.
    pub fn inputs(&self, dag: &Dag) -> Vec<usize> {
        let mut out: Vec<usize> = vec![];
        for &m in self.members.keys() {
            for &c in &dag.inputs[m] {
                if !self.contains(c) && !out.contains(&c) {
                    out.push(c);
                }
            }
        }
        out
    }

    /// Whether the group can be one kernel: it writes something, and nothing it reads
    /// depends on what it writes.
    pub fn is_valid(&self, dag: &Dag) -> bool {
        let outputs = self.outputs(dag);
        !outputs.is_empty()
            && self
                .inputs(dag)
                .iter()
                .all(|&c| outputs.iter().all(|&o| !dag.depends_on(c, o)))
    }

    /// The anchor the plan reports.
    pub fn anchor_kind(&self, dag: &Dag) -> Anchor {
        // A collective is never fused with anything, so it is its group's only node.
        if self.members.keys().any(|&m| dag.kind(m) == Kind::Opaque) {
            return Anchor::Collective;
        }
        let pointwise = || {
            if self.members.values().any(|j| *j == Join::Reduction) {
                Anchor::Reduction
            } else {
                Anchor::Pointwise
            }
        };
        self.anchor
            .and_then(|a| dag.op[a].as_ref())
            .map_or_else(pointwise, Anchor::of)
    }

    /// The kernel body computing `outputs` (some of [`Group::outputs`]), the values it
    /// reads in input order, and the original nodes it covers; each node's scope comes
    /// from `scope`. Members that none of `outputs` needs are left out.
    pub fn body(
        &self,
        dag: &Dag,
        outputs: &[usize],
        scope: &dyn Fn(usize) -> String,
    ) -> Option<(Graph, Vec<usize>, Vec<usize>)> {
        let mut needed = Group {
            members: BTreeMap::new(),
            anchor: self.anchor,
            member_bits: vec![0; self.member_bits.len()],
            pooled: self.pooled,
        };
        let mut stack = outputs.to_vec();
        while let Some(m) = stack.pop() {
            if self.contains(m) && !needed.contains(m) {
                needed.insert(m, self.members[&m]);
                stack.extend(&dag.inputs[m]);
            }
        }
        let inputs = needed.inputs(dag);
        let mut g = Graph::new();
        let mut val: BTreeMap<usize, Value> = BTreeMap::new();
        for (k, &c) in inputs.iter().enumerate() {
            let v = g
                .push_source(
                    Op::Input {
                        name: Kernel::input_name(k),
                    },
                    dag.ty[c].clone(),
                    "",
                )
                .ok()?;
            val.insert(c, v);
        }
        for &m in needed.members.keys() {
            let op = dag.op[m].clone()?;
            let v = match op {
                Op::Constant { .. } => g.push_source(op, dag.ty[m].clone(), &scope(m)).ok()?,
                op => {
                    let operands = dag.inputs[m]
                        .iter()
                        .map(|c| val.get(c).copied())
                        .collect::<Option<Vec<_>>>()?;
                    g.push(op, operands, &scope(m)).ok()?
                }
            };
            val.insert(m, v);
        }
        for (k, o) in outputs.iter().enumerate() {
            g.add_output(Kernel::output_name(k), *val.get(o)?).ok()?;
        }
        let mut covers: Vec<usize> = needed
            .members
            .keys()
            .flat_map(|&m| dag.originals[m].iter().copied())
            .collect();
        covers.sort();
        covers.dedup();
        Some((g, inputs, covers))
    }
}
