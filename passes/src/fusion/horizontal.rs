//! Plan-level fusions that no single value's extraction sees: tiny kernels folded into
//! a neighbour as side outputs, and concatenation as a view.
//!
//! * **Side outputs.** A train-mode BatchNorm leaves three per-channel updates (the
//!   running mean, the running variance, the batch counter) that nothing in the step
//!   reads; as kernels of their own they would cost a launch each for a few hundred
//!   bytes. Each such tiny pointwise kernel moves into a big kernel that runs after
//!   its inputs are ready and before anything reads its results, preferably one that
//!   already reads the same statistics.
//! * **Concat as a view.** A kernel that only concatenates buffers disappears: the
//!   kernels that wrote its operands write into channel slices of its buffer instead.

use calib_ir::kernel::Slice;
use calib_ir::{Anchor, BufferId, Kernel, KernelOutput, Op, OpClass, Program, Role, Value};
use std::collections::HashMap;

/// The most elements any value of a kernel may have for it to ride along elsewhere.
pub const SIDE_OUTPUT_MAX: usize = 4096;

/// Moves tiny pointwise kernels into hosts; returns how many moved.
pub fn merge_side_outputs(program: &mut Program) -> usize {
    let mut moved = 0;
    let mut k = 0;
    while k < program.kernels.len() {
        if !is_tiny(&program.kernels[k]) {
            k += 1;
            continue;
        }
        match host_for(program, k) {
            Some(h) => {
                let tiny = program.kernels.remove(k);
                let h = if h > k { h - 1 } else { h };
                append(&mut program.kernels[h], tiny);
                moved += 1;
                // The host may sit before `k`; kernels after it did not move.
            }
            None => k += 1,
        }
    }
    moved
}

fn is_tiny(k: &Kernel) -> bool {
    k.anchor == Anchor::Pointwise && extent(k) <= SIDE_OUTPUT_MAX
}

/// The most elements any value of a kernel computes or stores. Inputs and index maps
/// of them are only read where something needs them: a BatchNorm's running mean reads
/// one element per channel of the convolution's result (its shift). Code generation
/// evaluates a value only at the indices its readers ask for, so an elementwise value
/// read only through slices costs what the slices take: under the bf16 policy the
/// shift is `slice(cast(cast(y)))`, one rounding per channel, not one per element.
fn extent(k: &Kernel) -> usize {
    let nodes = &k.body.nodes;
    // Elements of each value evaluated: all of an output; for other values the most any
    // reader asks for, which an elementwise op or an index map passes on (clamped to
    // the value's own size) and any other op (a reduction, a window) takes whole.
    let mut demand = vec![0usize; nodes.len()];
    for o in &k.body.outputs {
        demand[o.value.0] = nodes[o.value.0].ty.numel();
    }
    for (i, n) in nodes.iter().enumerate().rev() {
        let passes = matches!(n.op.class(), OpClass::Elementwise | OpClass::Layout);
        for v in &n.inputs {
            let own = nodes[v.0].ty.numel();
            let asked = if passes { demand[i].min(own) } else { own };
            demand[v.0] = demand[v.0].max(asked);
        }
    }
    nodes
        .iter()
        .enumerate()
        .filter(|(_, n)| !matches!(n.op.class(), OpClass::Source | OpClass::Layout))
        .map(|(i, _)| demand[i])
        .chain(k.body.outputs.iter().map(|o| demand[o.value.0]))
        .max()
        .unwrap_or(0)
}

/// The kernel to host tiny kernel `t`: after every producer of what `t` reads, before
/// every reader of what `t` writes, over a larger domain; one that reads a buffer `t` reads
/// if possible, else one of the same module, else the nearest one after `t`'s
/// producers.
fn host_for(p: &Program, t: usize) -> Option<usize> {
    let writes = |k: usize, b: BufferId| p.kernels[k].outputs.iter().any(|o| o.buffer == b);
    let tiny = &p.kernels[t];
    let after = tiny
        .inputs
        .iter()
        .filter_map(|&b| (0..p.kernels.len()).find(|&k| writes(k, b)))
        .max()
        .map_or(0, |k| k + 1);
    let before = tiny
        .outputs
        .iter()
        .filter_map(|o| (0..p.kernels.len()).find(|&k| p.kernels[k].inputs.contains(&o.buffer)))
        .min()
        .unwrap_or(p.kernels.len());
    // A collective is a transfer between replicas, not a kernel anything can ride on.
    let eligible = (after..before).filter(|&h| {
        h != t && p.kernels[h].anchor != Anchor::Collective && extent(&p.kernels[h]) > extent(tiny)
    });
    let shares = |h: &usize| {
        p.kernels[*h]
            .inputs
            .iter()
            .any(|b| tiny.inputs.contains(b) && p.buffers[b.0].role != Role::Param)
    };
    let module = |k: &Kernel| {
        k.label
            .split('@')
            .nth(1)
            .map(|s| s.split('.').take(2).collect::<Vec<_>>().join("."))
    };
    let same_module =
        |h: &usize| module(&p.kernels[*h]).is_some() && module(&p.kernels[*h]) == module(tiny);
    eligible
        .clone()
        .find(shares)
        .or_else(|| eligible.clone().find(same_module))
        .or_else(|| eligible.clone().next())
}

/// Appends `extra`'s body, inputs and outputs to `host`.
pub(super) fn append(host: &mut Kernel, extra: Kernel) {
    append_reading(host, extra, &HashMap::new());
}

/// [`append`], where `extra` reads each buffer of `produced` as the host's value there
/// (a result the host computes) instead of loading it.
pub(super) fn append_reading(
    host: &mut Kernel,
    extra: Kernel,
    produced: &HashMap<BufferId, Value>,
) {
    let mut body = host.body.clone();
    let mut map: HashMap<usize, Value> = HashMap::new();
    for (i, node) in extra.body.nodes.iter().enumerate() {
        let v = match &node.op {
            Op::Input { name } => {
                let k: usize = name[2..].parse().expect("body inputs are named in<k>");
                let buf = extra.inputs[k];
                if let Some(&v) = produced.get(&buf) {
                    map.insert(i, v);
                    continue;
                }
                match host.inputs.iter().position(|&b| b == buf) {
                    Some(j) => body
                        .inputs()
                        .nth(j)
                        .map(|(_, v)| v)
                        .expect("host inputs match its body"),
                    None => {
                        host.inputs.push(buf);
                        let name = Kernel::input_name(host.inputs.len() - 1);
                        body.push_source(Op::Input { name }, node.ty.clone(), "")
                            .expect("a fresh input name")
                    }
                }
            }
            op if op.arity() == Some(0) => body
                .push_source(op.clone(), node.ty.clone(), &node.scope)
                .expect("sources re-check"),
            op => body
                .push(
                    op.clone(),
                    node.inputs.iter().map(|v| map[&v.0]).collect(),
                    &node.scope,
                )
                .expect("a valid body re-checks"),
        };
        map.insert(i, v);
    }
    for (o, out) in extra.body.outputs.iter().zip(extra.outputs) {
        body.add_output(Kernel::output_name(host.outputs.len()), map[&o.value.0])
            .expect("fresh output names");
        host.outputs.push(out);
    }
    host.body = body;
    host.covers.extend(extra.covers);
    host.covers.sort();
    host.covers.dedup();
}

/// Turns concat-only kernels into slices of their output buffer; returns how many.
pub fn concat_views(program: &mut Program) -> usize {
    let mut turned = 0;
    let mut k = 0;
    while k < program.kernels.len() {
        match view_plan(program, k) {
            Some(writes) => {
                let concat = program.kernels.remove(k);
                for (producer, out, slice) in writes {
                    let p = if producer > k { producer - 1 } else { producer };
                    program.kernels[p].outputs[out] = KernelOutput {
                        buffer: concat.outputs[0].buffer,
                        slice: Some(slice),
                    };
                    program.kernels[p].covers.extend(&concat.covers);
                    program.kernels[p].covers.sort();
                    program.kernels[p].covers.dedup();
                }
                turned += 1;
            }
            None => k += 1,
        }
    }
    drop_unused_buffers(program);
    turned
}

/// For a kernel that is one concat of its inputs, each input's producer, output and
/// slice, if every input is a temporary written whole by one kernel and read by no
/// other.
fn view_plan(p: &Program, k: usize) -> Option<Vec<(usize, usize, Slice)>> {
    let kernel = &p.kernels[k];
    let [.., last] = kernel.body.nodes.as_slice() else {
        return None;
    };
    let Op::Concat { axis } = last.op else {
        return None;
    };
    let direct = kernel.body.nodes.len() == kernel.inputs.len() + 1
        && last.inputs.iter().enumerate().all(|(i, v)| v.0 == i);
    if !direct
        || kernel.outputs.len() != 1
        || kernel.outputs[0].slice.is_some()
        || kernel.inputs.len() != last.inputs.len()
    {
        return None;
    }
    let mut at = 0;
    let mut writes = vec![];
    for &b in &kernel.inputs {
        let read_elsewhere = p
            .kernels
            .iter()
            .enumerate()
            .any(|(j, q)| j != k && q.inputs.contains(&b));
        if p.buffers[b.0].role != Role::Temp
            || read_elsewhere
            || kernel.inputs.iter().filter(|&&x| x == b).count() > 1
        {
            return None;
        }
        let (producer, out) = p.kernels.iter().enumerate().find_map(|(j, q)| {
            q.outputs
                .iter()
                .position(|o| o.buffer == b && o.slice.is_none())
                .map(|o| (j, o))
        })?;
        let len = p.buffers[b.0].ty.shape[axis];
        writes.push((
            producer,
            out,
            Slice {
                axis,
                start: at,
                end: at + len,
            },
        ));
        at += len;
    }
    Some(writes)
}

/// Removes buffers nothing reads or writes, renumbering the rest.
pub(super) fn drop_unused_buffers(p: &mut Program) {
    let mut used = vec![false; p.buffers.len()];
    for k in &p.kernels {
        k.inputs
            .iter()
            .chain(k.outputs.iter().map(|o| &o.buffer))
            .for_each(|b| used[b.0] = true);
    }
    p.outputs.iter().for_each(|o| used[o.buffer.0] = true);
    let mut new_id = vec![None; p.buffers.len()];
    let mut kept = vec![];
    for (i, b) in p.buffers.drain(..).enumerate() {
        if used[i] {
            new_id[i] = Some(BufferId(kept.len()));
            kept.push(b);
        }
    }
    p.buffers = kept;
    let id = |b: &mut BufferId| *b = new_id[b.0].expect("used buffers are kept");
    for k in &mut p.kernels {
        k.inputs.iter_mut().for_each(id);
        k.outputs.iter_mut().for_each(|o| id(&mut o.buffer));
    }
    p.outputs.iter_mut().for_each(|o| id(&mut o.buffer));
}
