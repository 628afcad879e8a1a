//! Each SCBottleneck before and after fusion, side by side. Before: the block's forward
//! pass as the model builder wrote it, one node per op except that each BatchNorm
//! (a dozen ops in training) is drawn as one node; every node is filled with the colour
//! of the kernel that computes it. After: those kernels, joined where one reads a
//! buffer another writes, in the same colours. The self-calibration branch (the `k2`
//! average pool, convolution and BatchNorm, then upsampling, the residual add, the
//! sigmoid and the gate's product, scope `scconv`) is outlined in both.

use super::body::kind;
use super::layout::{DrawGraph, DrawNode};
use super::model::CompileOutput;
use calib_ir::{Graph, Op};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

/// Fill colours of fused groups, light enough for dark text, distinct side by side.
const PALETTE: [&str; 12] = [
    "#cfe3f7", "#fde2c4", "#d4edd0", "#f7d0d6", "#e2d7f2", "#f9efb8", "#cdebea", "#ead9cc",
    "#dfe8c6", "#f3d5ec", "#d9dcf5", "#e8e4da",
];

/// One block's two drawings.
pub struct BlockView {
    /// The block's scope (`layer1.0`).
    pub scope: String,
    pub before_svg: String,
    pub after_svg: String,
    /// Kernels covering the block's forward pass.
    pub kernels: usize,
    /// Ops of the forward pass drawn (BatchNorms as one).
    pub ops: usize,
}

/// Every SCBottleneck of the compile (blocks with an `scconv` child), in model order.
pub fn blocks(out: &CompileOutput) -> Vec<BlockView> {
    let forward = forward_len(&out.graph);
    let mut scopes: Vec<String> = vec![];
    for n in &out.graph.nodes[..forward] {
        if let Some((block, _)) = n.scope.split_once(".scconv") {
            if scopes.last().map(String::as_str) != Some(block)
                && !scopes.iter().any(|s| s == block)
            {
                scopes.push(block.to_string());
            }
        }
    }
    let covered_by: HashMap<usize, usize> = out
        .program
        .kernels
        .iter()
        .enumerate()
        .flat_map(|(k, kernel)| kernel.covers.iter().map(move |&n| (n, k)))
        .collect();
    scopes
        .iter()
        .map(|s| block_view(out, s, forward, &covered_by))
        .collect()
}

/// Nodes of the forward pass: up to the loss of a training step, before the seed of a
/// module's backward pass, or all of an eval graph.
fn forward_len(g: &Graph) -> usize {
    if let Some(loss) = g.output("loss") {
        return loss.0 + 1;
    }
    g.nodes
        .iter()
        .position(|n| matches!(&n.op, Op::Input { name } if name == "grad_output"))
        .unwrap_or(g.nodes.len())
}

fn in_block(scope: &str, block: &str) -> bool {
    scope == block
        || scope
            .strip_prefix(block)
            .is_some_and(|r| r.starts_with('.'))
}

/// The self-calibration branch of `block`.
fn calibration(scope: &str, block: &str) -> bool {
    let branch = format!("{block}.scconv");
    scope == branch || in_block(scope, &format!("{branch}.k2"))
}

fn block_view(
    out: &CompileOutput,
    block: &str,
    forward: usize,
    covered_by: &HashMap<usize, usize>,
) -> BlockView {
    let g = &out.graph;
    // BatchNorm modules: the scopes of running means.
    let bn_scopes: HashSet<&str> = g.nodes[..forward]
        .iter()
        .filter(|n| matches!(&n.op, Op::Param { name } if name.ends_with(".running_mean")))
        .map(|n| n.scope.as_str())
        .collect();
    let members: Vec<usize> = (0..forward)
        .filter(|&i| {
            in_block(&g.nodes[i].scope, block)
                && !matches!(g.nodes[i].op, Op::Param { .. } | Op::Constant { .. })
        })
        .collect();
    // Keep what the block's output depends on (not the running-statistics updates).
    let last = members.last().copied().unwrap_or(0);
    let member_set: HashSet<usize> = members.iter().copied().collect();
    let mut live = HashSet::from([last]);
    for &i in members.iter().rev() {
        if live.contains(&i) {
            live.extend(
                g.nodes[i]
                    .inputs
                    .iter()
                    .map(|v| v.0)
                    .filter(|v| member_set.contains(v)),
            );
        }
    }
    // One drawn node per op, or per BatchNorm; the block's inputs first.
    let mut group_of: BTreeMap<usize, usize> = BTreeMap::new();
    let mut groups: Vec<Vec<usize>> = vec![];
    let mut bn_group: HashMap<&str, usize> = HashMap::new();
    let mut external: BTreeSet<usize> = BTreeSet::new();
    for &i in members.iter().filter(|i| live.contains(i)) {
        for v in &g.nodes[i].inputs {
            let src = &g.nodes[v.0];
            if !member_set.contains(&v.0)
                && !matches!(src.op, Op::Param { .. } | Op::Constant { .. })
            {
                external.insert(v.0);
            }
        }
    }
    for &e in &external {
        group_of.insert(e, groups.len());
        groups.push(vec![e]);
    }
    for &i in members.iter().filter(|i| live.contains(i)) {
        let scope = g.nodes[i].scope.as_str();
        let gi = match bn_scopes.contains(scope) {
            true => *bn_group.entry(scope).or_insert_with(|| {
                groups.push(vec![]);
                groups.len() - 1
            }),
            false => {
                groups.push(vec![]);
                groups.len() - 1
            }
        };
        groups[gi].push(i);
        group_of.insert(i, gi);
    }
    // Colours by kernel, in order of first appearance in the block.
    let mut colour: HashMap<usize, &str> = HashMap::new();
    for &i in members.iter().filter(|i| live.contains(i)) {
        if let Some(&k) = covered_by.get(&i) {
            let next = PALETTE[colour.len() % PALETTE.len()];
            colour.entry(k).or_insert(next);
        }
    }
    let mut before = DrawGraph::default();
    for nodes in &groups {
        let first = &g.nodes[nodes[0]];
        let kernels: BTreeSet<usize> = nodes
            .iter()
            .filter_map(|n| covered_by.get(n).copied())
            .collect();
        // The kernel holding most of the group names its colour.
        let main = kernels
            .iter()
            .max_by_key(|&&k| {
                nodes
                    .iter()
                    .filter(|n| covered_by.get(n) == Some(&k))
                    .count()
            })
            .copied();
        let names: Vec<&str> = kernels
            .iter()
            .map(|&k| out.program.kernels[k].name.as_str())
            .collect();
        let is_external = external.contains(&nodes[0]);
        let is_bn = nodes.len() > 1 || (bn_scopes.contains(first.scope.as_str()) && !is_external);
        let short = first
            .scope
            .strip_prefix(block)
            .unwrap_or(&first.scope)
            .trim_start_matches('.');
        let mut class = if is_external {
            "k-source".to_string()
        } else if is_bn {
            "k-bn".to_string()
        } else {
            kind(&first.op).to_string()
        };
        if !is_external && calibration(&first.scope, block) {
            class.push_str(" calib");
        }
        before.nodes.push(DrawNode {
            label: if is_external {
                "block input".into()
            } else if is_bn {
                "batch_norm".into()
            } else {
                first.op.name().into()
            },
            detail: if is_external {
                first.ty.to_string()
            } else {
                short.to_string()
            },
            class,
            title: format!(
                "{} ({} op{}) @{}; computed by {}",
                if is_bn { "BatchNorm" } else { first.op.name() },
                nodes.len(),
                if nodes.len() == 1 { "" } else { "s" },
                first.scope,
                if names.is_empty() {
                    "an earlier block".to_string()
                } else {
                    names.join(", ")
                }
            ),
            fill: main
                .filter(|_| !is_external)
                .and_then(|k| colour.get(&k))
                .map(|c| c.to_string()),
            kernel: main
                .filter(|_| !is_external)
                .map(|k| out.program.kernels[k].name.clone()),
        });
    }
    let mut edges = BTreeSet::new();
    for (gi, nodes) in groups.iter().enumerate() {
        for &n in nodes {
            if external.contains(&n) {
                continue;
            }
            for v in &g.nodes[n].inputs {
                if let Some(&src) = group_of.get(&v.0) {
                    if src != gi {
                        edges.insert((src, gi));
                    }
                }
            }
        }
    }
    before.edges = edges.into_iter().collect();
    let after = after_graph(out, block, &members, &live, covered_by, &colour);
    BlockView {
        scope: block.to_string(),
        before_svg: before.svg("before"),
        kernels: after.nodes.len(),
        after_svg: after.svg("after"),
        ops: live.len(),
    }
}

/// The kernels computing the block's drawn nodes, an edge where one reads what another
/// wrote.
fn after_graph(
    out: &CompileOutput,
    block: &str,
    members: &[usize],
    live: &HashSet<usize>,
    covered_by: &HashMap<usize, usize>,
    colour: &HashMap<usize, &str>,
) -> DrawGraph {
    let kernels: BTreeSet<usize> = members
        .iter()
        .filter(|i| live.contains(i))
        .filter_map(|i| covered_by.get(i).copied())
        .collect();
    let order: Vec<usize> = kernels.into_iter().collect();
    let mut writer = HashMap::new();
    let mut g = DrawGraph::default();
    for (i, &k) in order.iter().enumerate() {
        let kernel = &out.program.kernels[k];
        let calib = kernel
            .covers
            .iter()
            .any(|&n| live.contains(&n) && calibration(&out.graph.nodes[n].scope, block));
        let drawn = kernel.covers.iter().filter(|n| live.contains(n)).count();
        let label = kernel.label.replacen(&format!("@{block}."), "@", 1);
        g.nodes.push(DrawNode {
            label: kernel.name.clone(),
            detail: label,
            class: format!("k-kernel{}", if calib { " calib" } else { "" }),
            title: format!(
                "{} {} ({}): {} ops, {} of the drawn forward nodes",
                kernel.name,
                kernel.label,
                kernel.anchor.name(),
                kernel.body.nodes.len(),
                drawn
            ),
            fill: colour.get(&k).map(|c| c.to_string()),
            kernel: Some(kernel.name.clone()),
        });
        for o in &kernel.outputs {
            writer.insert(o.buffer, i);
        }
        let reads: BTreeSet<usize> = kernel
            .inputs
            .iter()
            .filter_map(|b| writer.get(b).copied())
            .filter(|&w| w != i)
            .collect();
        g.edges.extend(reads.into_iter().map(|w| (w, i)));
    }
    g
}
