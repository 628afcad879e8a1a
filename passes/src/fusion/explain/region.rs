//! Which original nodes an explanation saturates: the kernel's own covered nodes are
//! not enough when it reads values rewriting made (a merged convolution and its merged
//! statistics), since then the originals those values stand for are covered by no
//! kernel at all. They are found by the cone of what the kernel computes, the sibling
//! convolutions a merge needs, and a small neighbourhood for rules over several outputs.

use super::super::partition::Partition;
use calib_ir::{BufferId, Graph, Kernel, Op, OpClass, Program};
use std::collections::{HashMap, HashSet};

/// The original nodes to saturate for explaining kernel `k`, which reads the values
/// of the `spliced` kernels (itself first); `original` maps a buffer to the original
/// node it holds.
pub(super) fn nodes(
    graph: &Graph,
    program: &Program,
    part: &Partition,
    spliced: &[usize],
    original: &dyn Fn(BufferId) -> Option<usize>,
    k: usize,
) -> Vec<usize> {
    let kernel = &program.kernels[k];
    let computed = |c: usize| {
        c < graph.nodes.len() && graph.nodes[c].op.arity() != Some(0) && !part.replicated[c]
    };
    let mut nodes: Vec<usize> = spliced
        .iter()
        .flat_map(|&p| program.kernels[p].covers.iter().copied())
        .filter(|&c| computed(c))
        .collect();
    // A rewrite-made value (a merged convolution, say) stands in for original nodes no
    // kernel covers; the cone of the outputs and covered nodes back to what the kernels
    // read from elsewhere brings them in.
    let covered: HashSet<usize> = nodes.iter().copied().collect();
    let read: HashSet<usize> = spliced
        .iter()
        .flat_map(|&p| {
            program.kernels[p]
                .inputs
                .iter()
                .filter_map(|&b| original(b))
        })
        .filter(|v| !covered.contains(v))
        .collect();
    let targets = kernel.outputs.iter().filter_map(|o| original(o.buffer));
    let starts: Vec<usize> = targets.chain(covered.iter().copied()).collect();
    nodes.extend(
        cone(graph, starts, &read)
            .into_iter()
            .filter(|&c| computed(c)),
    );
    nodes.extend(definitions(graph, &read, computed));
    let body_keys = spliced
        .iter()
        .flat_map(|&p| body_convolutions(&program.kernels[p], &original));
    let keys: Vec<(&str, usize)> = body_keys.collect();
    nodes.extend(siblings(graph, &nodes, &keys));
    if spliced.len() > 1 {
        let more = neighbourhood(graph, &nodes, &read, computed);
        nodes.extend(more);
    }
    nodes.sort();
    nodes.dedup();
    nodes
}

/// How many ops deep [`definitions`] looks behind a value the kernels read.
const DEFINITION_DEPTH: usize = 3;

/// The definitions of the values the kernels read, a few ops deep: rewrites look into
/// values other kernels stored. The BatchNorm gradient's mean term is rebuilt as
/// `s * sum(dy)` over the stored bias gradient `sum(dy)`, and recognized through the
/// stored `x - mean(x)`; as opaque leaves, neither would meet its rewrite. Elementwise
/// ops, views and reductions only: a convolution would bring its siblings along.
fn definitions(
    graph: &Graph,
    read: &HashSet<usize>,
    computed: impl Fn(usize) -> bool,
) -> Vec<usize> {
    let shallow = |v: usize| {
        computed(v)
            && matches!(
                graph.nodes[v].op.class(),
                OpClass::Elementwise | OpClass::Layout | OpClass::Reduction
            )
    };
    let mut seen: HashSet<usize> = HashSet::new();
    let mut frontier: Vec<usize> = read.iter().copied().filter(|&v| shallow(v)).collect();
    for _ in 0..DEFINITION_DEPTH {
        let mut next = vec![];
        for v in frontier {
            if seen.insert(v) {
                next.extend(
                    graph.nodes[v]
                        .inputs
                        .iter()
                        .map(|i| i.0)
                        .filter(|&u| shallow(u)),
                );
            }
        }
        frontier = next;
    }
    seen.into_iter().collect()
}

/// Most nodes an output's cone may bring in; past it, only the covered nodes are used.
const MAX_CONE: usize = 4096;

/// The original nodes between `starts` and the values in `read`, `read` excluded
/// (empty if that cone is larger than [`MAX_CONE`]).
fn cone(graph: &Graph, starts: Vec<usize>, read: &HashSet<usize>) -> Vec<usize> {
    let mut seen: HashSet<usize> = HashSet::new();
    let mut stack = starts;
    while let Some(v) = stack.pop() {
        if !seen.insert(v) {
            continue;
        }
        if seen.len() > MAX_CONE {
            return vec![];
        }
        if !read.contains(&v) {
            stack.extend(graph.nodes[v].inputs.iter().map(|i| i.0));
        }
    }
    seen.into_iter().filter(|v| !read.contains(v)).collect()
}

/// The convolutions that share an operand with a convolution in `nodes`: a merged
/// convolution is derived only from all of its siblings, so they come in together. A
/// data gradient brings in the forward convolution of its weight, whose merged weights
/// the merged gradient reuses.
fn siblings(graph: &Graph, nodes: &[usize], keys: &[(&str, usize)]) -> Vec<usize> {
    let input = |v: usize, i: usize| graph.nodes[v].inputs[i].0;
    let weights: HashSet<usize> = nodes
        .iter()
        .filter(|&&v| matches!(graph.nodes[v].op, Op::Conv2dBackwardData { .. }))
        .map(|&v| input(v, 1))
        .collect();
    let forward = |v: usize| matches!(graph.nodes[v].op, Op::Conv2d { .. });
    let key = |v: usize| match graph.nodes[v].op {
        Op::Conv2d { .. } | Op::Conv2dBackwardWeight { .. } => {
            Some((graph.nodes[v].op.name(), input(v, 0)))
        }
        _ => None,
    };
    let wanted: HashSet<_> = nodes
        .iter()
        .copied()
        .chain((0..graph.nodes.len()).filter(|&v| forward(v) && weights.contains(&input(v, 1))))
        .filter_map(key)
        .chain(keys.iter().copied())
        .collect();
    if wanted.is_empty() {
        return vec![];
    }
    (0..graph.nodes.len())
        .filter(|&v| key(v).is_some_and(|k| wanted.contains(&k)))
        .collect()
}

/// The convolutions of a kernel's body that read an original value, keyed as in
/// [`siblings`]: a merged convolution stands for the original ones over that value.
fn body_convolutions(
    kernel: &Kernel,
    original: &dyn Fn(BufferId) -> Option<usize>,
) -> Vec<(&'static str, usize)> {
    let body = &kernel.body.nodes;
    body.iter()
        .filter(|n| matches!(n.op, Op::Conv2d { .. } | Op::Conv2dBackwardWeight { .. }))
        .filter_map(|n| {
            let Op::Input { name } = &body[n.inputs[0].0].op else {
                return None;
            };
            let slot: usize = name.strip_prefix("in")?.parse().ok()?;
            let v = original(*kernel.inputs.get(slot)?)?;
            Some((n.op.name(), v))
        })
        .collect()
}

/// How many steps past the cone [`neighbourhood`] looks.
const NEIGHBOURHOOD_DEPTH: usize = 4;
/// Most nodes [`neighbourhood`] adds.
const MAX_NEIGHBOURS: usize = 1024;

/// The original nodes a few steps downstream of `nodes` that read nothing else:
/// rewrites over several outputs at once (a batch's mean and variance rewritten
/// together) fire only when the region holds all of them.
fn neighbourhood(
    graph: &Graph,
    nodes: &[usize],
    read: &HashSet<usize>,
    computed: impl Fn(usize) -> bool,
) -> Vec<usize> {
    let mut consumers: HashMap<usize, Vec<usize>> = HashMap::new();
    for (u, node) in graph.nodes.iter().enumerate() {
        for i in &node.inputs {
            consumers.entry(i.0).or_default().push(u);
        }
    }
    let mut have: HashSet<usize> = nodes.iter().chain(read).copied().collect();
    let available = |have: &HashSet<usize>, v: usize| have.contains(&v) || !computed(v);
    let mut added = vec![];
    let mut frontier: Vec<usize> = nodes.to_vec();
    for _ in 0..NEIGHBOURHOOD_DEPTH {
        let mut next = vec![];
        for v in frontier {
            for &u in consumers.get(&v).into_iter().flatten() {
                let inputs = &graph.nodes[u].inputs;
                if !have.contains(&u) && inputs.iter().all(|i| available(&have, i.0)) {
                    have.insert(u);
                    next.push(u);
                }
            }
        }
        added.extend(next.iter().copied());
        if added.len() > MAX_NEIGHBOURS {
            break;
        }
        frontier = next;
    }
    added.into_iter().filter(|&u| computed(u)).collect()
}
