//! Splitting a graph into regions that saturate separately.
//!
//! A whole SCNet-50 training step is about ten thousand nodes; one e-graph over it
//! would blow every limit, while fusion opportunities are local to a block. So a graph
//! of up to [`MAX_REGION`] nodes is one region, and a bigger one is cut by module: a
//! node inside a block (`layer2.3...`) goes to that block's region, any other module
//! (the stem, the head, the loss) to one `top` region. Backward nodes
//! carry their forward node's scope, so a block's forward and backward pass share a
//! region and backward kernels can recompute forward values instead of reading them.
//! Nodes without a module of their own (the optimizer's `sgd` update, autodiff's
//! gradient seeds, data parallelism's gradient buckets) join the region of their first
//! operand that has one, so a parameter's update lands beside its gradient; those whose
//! operands have none either join their first reader's.
//!
//! Constants, and broadcasts and reshapes of constants, belong to no region: every
//! region that reads one gets its own copy. Graph inputs and parameters are leaves.

use calib_ir::{Graph, Op};
use std::collections::HashMap;

/// The largest region; bigger ones (graphs without module scopes) are cut in
/// topological order.
pub const MAX_REGION: usize = 2500;

/// One region: original node ids in graph order, and those whose values are needed
/// outside it.
#[derive(Clone, Debug)]
pub struct Region {
    pub name: String,
    pub nodes: Vec<usize>,
    pub roots: Vec<usize>,
}

pub struct Partition {
    pub regions: Vec<Region>,
    /// The region of each computed node; `None` for sources and replicated constants.
    pub region_of: Vec<Option<usize>>,
    /// Constants and views of constants, copied into each reader's region.
    pub replicated: Vec<bool>,
    /// Whether a value depends on parameters and constants only.
    pub params_only: Vec<bool>,
}

impl Partition {
    pub fn new(graph: &Graph) -> Partition {
        let n = graph.nodes.len();
        let mut replicated = vec![false; n];
        let mut params_only = vec![false; n];
        let mut key: Vec<Option<String>> = vec![None; n];
        for (i, node) in graph.nodes.iter().enumerate() {
            let operands = || node.inputs.iter().map(|v| v.0);
            replicated[i] = match node.op {
                Op::Constant { .. } => true,
                Op::Broadcast { .. } | Op::Reshape { .. } => replicated[node.inputs[0].0],
                _ => false,
            };
            params_only[i] = match node.op {
                Op::Param { .. } | Op::Constant { .. } => true,
                Op::Input { .. } => false,
                _ => operands().all(|v| params_only[v]),
            };
            key[i] = module_key(&node.scope).or_else(|| operands().find_map(|v| key[v].clone()));
        }
        // A node of no module whose operands have none either (the update's `wd * p`
        // and `momentum * m`, read from parameters and inputs only) joins its first
        // reader's region, so that it can fuse into the update instead of becoming a
        // kernel of its own in a catch-all region.
        let mut readers: Vec<Vec<usize>> = vec![vec![]; n];
        for (i, node) in graph.nodes.iter().enumerate() {
            for v in &node.inputs {
                readers[v.0].push(i);
            }
        }
        for i in (0..n).rev() {
            if key[i].is_none() && !replicated[i] && graph.nodes[i].op.arity() != Some(0) {
                key[i] = readers[i].iter().find_map(|&r| key[r].clone());
            }
        }
        let computed = (0..n)
            .filter(|&i| !replicated[i] && graph.nodes[i].op.arity() != Some(0))
            .count();
        if computed <= MAX_REGION {
            key.iter_mut().for_each(|k| *k = None);
        }
        let mut regions: Vec<Region> = vec![];
        let mut by_name: HashMap<String, usize> = HashMap::new();
        let mut region_of = vec![None; n];
        for (i, node) in graph.nodes.iter().enumerate() {
            if replicated[i] || node.op.arity() == Some(0) {
                continue;
            }
            let name = key[i].clone().unwrap_or_else(|| "graph".to_string());
            let r = match by_name.get(&name) {
                Some(&r) if regions[r].nodes.len() < MAX_REGION => r,
                _ => {
                    let part = regions
                        .iter()
                        .filter(|r| r.name == name || r.name.starts_with(&format!("{name}#")))
                        .count();
                    let label = if part == 0 {
                        name.clone()
                    } else {
                        format!("{name}#{part}")
                    };
                    regions.push(Region {
                        name: label,
                        nodes: vec![],
                        roots: vec![],
                    });
                    by_name.insert(name, regions.len() - 1);
                    regions.len() - 1
                }
            };
            regions[r].nodes.push(i);
            region_of[i] = Some(r);
        }
        let mut needed_outside = vec![false; n];
        for (i, node) in graph.nodes.iter().enumerate() {
            for v in &node.inputs {
                if region_of[v.0].is_some() && region_of[v.0] != region_of[i] {
                    needed_outside[v.0] = true;
                }
            }
        }
        for o in &graph.outputs {
            needed_outside[o.value.0] = true;
        }
        for r in &mut regions {
            r.roots = r
                .nodes
                .iter()
                .copied()
                .filter(|&i| needed_outside[i])
                .collect();
        }
        Partition {
            regions,
            region_of,
            replicated,
            params_only,
        }
    }

    /// For each value outside region `r` that depends on one of its nodes: those
    /// nodes. A kernel of `r` that reads such a value must not write any of them,
    /// or the plan would have a cycle through the other regions.
    pub fn external_deps(&self, graph: &Graph, r: usize) -> HashMap<usize, Vec<usize>> {
        let nodes = &self.regions[r].nodes;
        let local: HashMap<usize, usize> = nodes.iter().enumerate().map(|(k, &i)| (i, k)).collect();
        let words = nodes.len().div_ceil(64);
        let read: std::collections::HashSet<usize> = nodes
            .iter()
            .flat_map(|&i| graph.nodes[i].inputs.iter().map(|v| v.0))
            .filter(|v| !local.contains_key(v))
            .collect();
        let mut deps: Vec<Option<Vec<u64>>> = vec![None; graph.nodes.len()];
        let mut out = HashMap::new();
        for i in nodes.first().copied().unwrap_or(0)..graph.nodes.len() {
            if let Some(&k) = local.get(&i) {
                let mut bits = vec![0u64; words];
                bits[k / 64] |= 1 << (k % 64);
                deps[i] = Some(bits);
                continue;
            }
            let mut acc: Option<Vec<u64>> = None;
            for v in &graph.nodes[i].inputs {
                if let Some(d) = &deps[v.0] {
                    let a = acc.get_or_insert_with(|| vec![0u64; words]);
                    a.iter_mut().zip(d).for_each(|(x, y)| *x |= y);
                }
            }
            if let Some(bits) = acc.as_ref().filter(|_| read.contains(&i)) {
                let on: Vec<usize> = (0..nodes.len())
                    .filter(|&k| bits[k / 64] >> (k % 64) & 1 == 1)
                    .map(|k| nodes[k])
                    .collect();
                out.insert(i, on);
            }
            deps[i] = acc;
        }
        out
    }
}

/// The region a scope belongs to: `layer2.3` for anything inside that block, `top`
/// for other modules; `None` for nodes that take their operand's region: the
/// optimizer's (`sgd`) and data parallelism's gradient packing and unpacking (`ddp`),
/// so that a parameter's update lands beside its gradient.
fn module_key(scope: &str) -> Option<String> {
    let mut parts = scope.split('.');
    let first = parts
        .next()
        .filter(|p| !p.is_empty() && *p != "sgd" && *p != "ddp")?;
    match parts.next() {
        Some(block) if first.starts_with("layer") => Some(format!("{first}.{block}")),
        _ => Some("top".to_string()),
    }
}
