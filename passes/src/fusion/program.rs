//! Stitching the regions' kernels into one [`Program`]: buffers for every value that
//! crosses a kernel boundary, kernels in an order that respects their dataflow, and
//! every original node attributed to a kernel.

use super::partition::Partition;
use super::plan::{PlannedKernel, RegionPlan, Val};
use calib_ir::{
    Anchor, Buffer, BufferId, Graph, Kernel, KernelOutput, Op, Program, ProgramOutput, Role,
    TensorType,
};
use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap};

/// The program of `plans`; `Err` names the regions whose kernels form a cycle (which
/// multi-output kernels of different regions can do), to be planned again without.
pub fn assemble(
    graph: &Graph,
    part: &Partition,
    plans: &[RegionPlan],
) -> Result<Program, Vec<usize>> {
    let resolve: HashMap<usize, Val> = plans.iter().flat_map(|p| p.roots.iter().copied()).collect();
    let canon = |mut v: Val| {
        for _ in 0..plans.len() + 1 {
            match v {
                Val::Orig(o)
                    if part.region_of[o].is_some() && resolve.get(&o).is_some_and(|&w| w != v) =>
                {
                    v = resolve[&o]
                }
                _ => break,
            }
        }
        v
    };
    let mut kernels: Vec<(usize, PlannedKernel)> = vec![];
    for (r, p) in plans.iter().enumerate() {
        for k in &p.kernels {
            let mut k = k.clone();
            k.inputs.iter_mut().for_each(|v| *v = canon(*v));
            k.outputs.iter_mut().for_each(|v| *v = canon(*v));
            kernels.push((r, k));
        }
    }
    for o in &graph.outputs {
        if part.replicated[o.value.0] {
            kernels.push((usize::MAX, constant_kernel(graph, o.value.0)));
        }
    }

    // Buffers: sources by name, then every kernel output.
    let mut buffers: Vec<Buffer> = vec![];
    let mut buffer_of: HashMap<Val, BufferId> = HashMap::new();
    let mut producer: HashMap<BufferId, usize> = HashMap::new();
    for (k, (_, kernel)) in kernels.iter().enumerate() {
        for (i, v) in kernel.outputs.iter().enumerate() {
            let ty = kernel.body.ty(kernel.body.outputs[i].value).clone();
            let b = buffer(&mut buffers, &mut buffer_of, graph, *v, Some(ty));
            producer.insert(b, k);
        }
    }
    let mut inputs_of: Vec<Vec<BufferId>> = vec![];
    for (_, kernel) in &kernels {
        inputs_of.push(
            kernel
                .inputs
                .iter()
                .map(|v| buffer(&mut buffers, &mut buffer_of, graph, *v, None))
                .collect(),
        );
    }
    let mut outputs = vec![];
    for o in &graph.outputs {
        let b = buffer(
            &mut buffers,
            &mut buffer_of,
            graph,
            canon(Val::Orig(o.value.0)),
            None,
        );
        if buffers[b.0].role == Role::Temp {
            buffers[b.0].role = Role::Output;
        }
        outputs.push(ProgramOutput {
            name: o.name.clone(),
            buffer: b,
        });
    }

    let order = topological(&kernels, &inputs_of, &producer).map_err(|stuck| {
        let mut regions: Vec<usize> = stuck
            .iter()
            .map(|&k| kernels[k].0)
            .filter(|&r| r != usize::MAX)
            .collect();
        regions.sort();
        regions.dedup();
        regions
    })?;
    let mut program = Program {
        buffers,
        kernels: vec![],
        outputs,
    };
    for (n, &k) in order.iter().enumerate() {
        let (_, pk) = &kernels[k];
        let outputs = pk
            .outputs
            .iter()
            .map(|v| KernelOutput {
                buffer: buffer_of[v],
                slice: None,
            })
            .collect();
        program.kernels.push(Kernel {
            name: format!("k{n}"),
            label: pk.label.clone(),
            anchor: pk.anchor,
            inputs: inputs_of[k].clone(),
            outputs,
            body: pk.body.clone(),
            covers: pk.covers.clone(),
            schedule: None,
            workspace: None,
            semaphore: None,
        });
    }
    attribute_uncovered(graph, &mut program);
    Ok(program)
}

/// The buffer holding `v`, created on first use (`ty` for values a kernel writes).
fn buffer(
    buffers: &mut Vec<Buffer>,
    buffer_of: &mut HashMap<Val, BufferId>,
    graph: &Graph,
    v: Val,
    ty: Option<TensorType>,
) -> BufferId {
    if let Some(&b) = buffer_of.get(&v) {
        return b;
    }
    let (name, role, ty) = match v {
        Val::Orig(o) => match &graph.nodes[o].op {
            Op::Input { name } => (name.clone(), Role::Input, graph.nodes[o].ty.clone()),
            Op::Param { name } => (name.clone(), Role::Param, graph.nodes[o].ty.clone()),
            _ => (
                format!("v{o}"),
                Role::Temp,
                ty.unwrap_or_else(|| graph.nodes[o].ty.clone()),
            ),
        },
        Val::New(r, i) => (
            format!("r{r}.n{i}"),
            Role::Temp,
            ty.expect("new values are read only after a kernel writes them"),
        ),
    };
    buffers.push(Buffer::new(name, ty, role));
    let b = BufferId(buffers.len() - 1);
    buffer_of.insert(v, b);
    b
}

/// A kernel that materializes a constant graph output (and its views).
fn constant_kernel(graph: &Graph, out: usize) -> PlannedKernel {
    let mut chain = vec![out];
    while let Some(&v) = chain.last() {
        match graph.nodes[v].inputs.first() {
            Some(x) => chain.push(x.0),
            None => break,
        }
    }
    let mut body = Graph::new();
    let mut last = None;
    for &v in chain.iter().rev() {
        let node = &graph.nodes[v];
        last = Some(
            match last {
                None => body.push_source(node.op.clone(), node.ty.clone(), &node.scope),
                Some(x) => body.push(node.op.clone(), vec![x], &node.scope),
            }
            .expect("a validated chain of constant views re-checks"),
        );
    }
    body.add_output(
        Kernel::output_name(0),
        last.expect("the chain holds the output"),
    )
    .expect("a fresh body has no outputs");
    PlannedKernel {
        body,
        anchor: Anchor::Pointwise,
        label: format!("constant@{}", graph.nodes[out].scope),
        inputs: vec![],
        outputs: vec![Val::Orig(out)],
        covers: chain,
    }
}

/// Kernels ordered so that each runs after the producers of what it reads, earliest
/// original node first among the ready ones; `Err` with the kernels left in a cycle.
fn topological(
    kernels: &[(usize, PlannedKernel)],
    inputs_of: &[Vec<BufferId>],
    producer: &HashMap<BufferId, usize>,
) -> Result<Vec<usize>, Vec<usize>> {
    let n = kernels.len();
    let mut waiting = vec![0usize; n];
    let mut readers: Vec<Vec<usize>> = vec![vec![]; n];
    for (k, ins) in inputs_of.iter().enumerate() {
        let mut from: Vec<usize> = ins
            .iter()
            .filter_map(|b| producer.get(b).copied())
            .filter(|&p| p != k)
            .collect();
        from.sort();
        from.dedup();
        waiting[k] = from.len();
        from.into_iter().for_each(|p| readers[p].push(k));
        if ins.iter().any(|b| producer.get(b) == Some(&k)) {
            waiting[k] = usize::MAX;
        }
    }
    // A collective, and whatever only it waits for (its bucket's gradients packed into
    // one buffer), goes as soon as it is ready: its transfer then overlaps the rest of
    // the backward pass. (By original node alone it would come last, since data
    // parallelism's nodes are appended after the whole step.)
    let collective = |k: usize| kernels[k].1.anchor == Anchor::Collective;
    let urgent: Vec<bool> = (0..n)
        .map(|k| collective(k) || readers[k].iter().any(|&r| collective(r)))
        .collect();
    let key = |k: usize| {
        let first = kernels[k].1.covers.first().copied().unwrap_or(usize::MAX);
        (if urgent[k] { 0 } else { first }, k)
    };
    let mut ready: BinaryHeap<Reverse<(usize, usize)>> = (0..n)
        .filter(|&k| waiting[k] == 0)
        .map(|k| Reverse(key(k)))
        .collect();
    let mut order = Vec::with_capacity(n);
    while let Some(Reverse((_, k))) = ready.pop() {
        order.push(k);
        for &r in &readers[k] {
            if waiting[r] != usize::MAX {
                waiting[r] -= 1;
                if waiting[r] == 0 {
                    ready.push(Reverse(key(r)));
                }
            }
        }
    }
    if order.len() == n {
        Ok(order)
    } else {
        let mut placed = vec![false; n];
        order.iter().for_each(|&k| placed[k] = true);
        Err((0..n).filter(|&k| !placed[k]).collect())
    }
}

/// Gives every computed original node a kernel: one that a rewrite removed (a folded
/// BatchNorm's subtraction) is covered by the kernel that covers its first reader.
fn attribute_uncovered(graph: &Graph, program: &mut Program) {
    let mut owner: BTreeMap<usize, usize> = BTreeMap::new();
    for (k, kernel) in program.kernels.iter().enumerate() {
        for &c in &kernel.covers {
            owner.entry(c).or_insert(k);
        }
    }
    let mut readers: Vec<Vec<usize>> = vec![vec![]; graph.nodes.len()];
    for (i, node) in graph.nodes.iter().enumerate() {
        node.inputs.iter().for_each(|v| readers[v.0].push(i));
    }
    for i in (0..graph.nodes.len()).rev() {
        if owner.contains_key(&i)
            || graph.nodes[i].op.arity() == Some(0)
                && !matches!(graph.nodes[i].op, Op::Constant { .. })
        {
            continue;
        }
        if let Some(k) = readers[i].iter().find_map(|r| owner.get(r).copied()) {
            owner.insert(i, k);
            program.kernels[k].covers.push(i);
        }
    }
    program.kernels.iter_mut().for_each(|k| k.covers.sort());
}
