//! Maps and reductions as their families run: one thread per element (runs of eight or
//! four along the innermost axes where shapes allow), a team per reduced element and
//! slice.

use super::work::{issue, run_invariant_work, work_of, Work};
use super::{census, seconds, touched_bytes, MAX_POINTWISE_BLOCKS, THREADS};
use calib_cost::{Census, Device, Launch};
use calib_ir::{numel, Graph, InputLayouts, Layout, Op, OpClass, ReductionSchedule, Value};

/// One thread per element of the largest output, each evaluating `roots` at its
/// elements (not looking past `stop`).
pub(super) fn pointwise(body: &Graph, roots: &[Value], stop: &[Value]) -> Launch {
    let n = roots
        .iter()
        .map(|&v| body.ty(v).numel())
        .max()
        .unwrap_or(1)
        .max(1);
    // Outputs smaller than the largest (merged parameter updates) are computed by the
    // few threads their elements need, behind a guard: the rest skip them.
    let (full, side): (Vec<Value>, Vec<Value>) =
        roots.iter().partition(|&&v| body.ty(v).numel() == n);
    // Runs of eight or four neighbours in memory, where shapes allow, share their
    // outer coordinates and load together (as code generation emits them); a run over
    // several innermost axes splits each element's position into them (a division).
    let (run, walked) = match calib_ir::pointwise_run(body, &full, Layout::RowMajor) {
        Some(r) => (r.len, r.walked),
        None => (1, 0),
    };
    let blocks = (n / run)
        .div_ceil(THREADS as usize)
        .clamp(1, MAX_POINTWISE_BLOCKS);
    let per_thread = (n / run) as f64 / (blocks * THREADS as usize) as f64;
    let element = work_of(body, &full, stop) + issue(4.0 * full.len() as f64);
    // Per-channel values are the same along a run.
    let once = run_invariant_work(body, &full, stop, n / 64);
    let mut chains = (element - once) * run as f64 + once;
    for &v in &side {
        let share = (body.ty(v).numel() * run) as f64 / n as f64;
        chains += (work_of(body, &[v], stop) + issue(6.0)) * share;
    }
    chains.independent += chains.issue * (1.0 - 1.0 / run as f64);
    let mut w = chains + issue(6.0 + 14.0);
    w.issue -= 10.0 * (run - 1) as f64;
    if walked >= 2 {
        w += issue(3.0 * run as f64);
    }
    w.rounds = if w.loads > 0.0 { 1.0 } else { 0.0 };
    let mut c = census(w * per_thread, 0.0, 0.0, 0.0);
    c.global_stores = per_thread * (run * roots.len()) as f64;
    c.global_store_bytes = 4.0 * c.global_stores;
    Launch {
        blocks: blocks as u64,
        threads: THREADS,
        shared_bytes: 0,
        registers: 32,
        census: c,
        unique_bytes: touched_bytes(body, roots, stop),
        tail: None,
    }
}

/// The sibling reductions code generation folds in one loop with `r`: those of the
/// same input shape over the same axes.
pub(super) fn siblings(body: &Graph, r: Value) -> Vec<Value> {
    let axes = |v: Value| reduced_axes(body, v);
    let input = |v: Value| body.ty(body.nodes[v.0].inputs[0]).shape.clone();
    (0..body.nodes.len())
        .map(Value)
        .filter(|&v| axes(v).is_some() && axes(v) == axes(r) && input(v) == input(r))
        .collect()
}

/// The reduction family around `r` and its siblings: a team of threads (a warp, or a
/// block for long slices) per reduced element and slice, each lane folding four
/// elements per loop iteration. Split, the teams write partial results and a second
/// launch combines them and runs the epilogue.
pub(super) fn reduction(body: &Graph, r: Value, roots: &[Value], split: usize) -> Vec<Launch> {
    reduction_over(body, r, roots, split, &[], 0.0)
}

/// [`reduction`], not looking past `stop` (values read from memory, each costing
/// `stop_loads` loads per element).
pub(super) fn reduction_over(
    body: &Graph,
    r: Value,
    roots: &[Value],
    split: usize,
    stop: &[Value],
    stop_loads: f64,
) -> Vec<Launch> {
    let group = siblings(body, r);
    let touched = touched_bytes(body, roots, stop);
    let input = body.nodes[r.0].inputs[0];
    let outputs = body.ty(r).numel().max(1);
    // Outputs of another size that reduce nothing are stored by grid-stride passes of
    // this launch's own threads (however few a reduction into few elements has); the
    // rest wait for the epilogue, or the launch that combines the slices.
    let (passes, roots): (Vec<Value>, Vec<Value>) = roots
        .iter()
        .partition(|&&v| body.ty(v).numel() != outputs && !reduces(body, v, stop));
    let roots = if roots.is_empty() {
        group.clone()
    } else {
        roots
    };
    let roots = &roots[..];
    let length = (body.ty(input).numel() / outputs).max(1);
    let split = split.clamp(1, length);
    let chunk = length.div_ceil(split);
    let block_team = chunk >= calib_ir::BLOCK_TEAM_FROM;
    let (team, per_block) = if block_team { (256, 1) } else { (32, 8) };
    let teams = outputs * split;
    let blocks = teams.min(1 << 16).div_ceil(per_block);
    let turns = teams as f64 / (blocks * per_block) as f64;
    let roots_of_group: Vec<Value> = group.iter().map(|&g| body.nodes[g.0].inputs[0]).collect();
    let read = Work {
        issue: 6.0 * stop_loads,
        loads: stop_loads,
        ..Work::default()
    };
    // Lanes take runs of adjacent elements where the reduced axes end the shape (as
    // code generation does): the position's arithmetic is shared along a run.
    let axes = reduced_axes(body, r).unwrap_or_default();
    let runs = calib_ir::reduction_run(&body.ty(input).shape, &axes).is_some();
    let position = if runs { 3.0 } else { 10.0 };
    let element = work_of(body, &roots_of_group, stop) + read + issue(position);
    let iterations = (chunk as f64 / (team * 4) as f64).ceil();
    let mut fold = element * 4.0 + issue(4.0);
    fold.independent += fold.issue * 0.75;
    fold.rounds = 1.0;
    let combine = issue(12.0 * group.len() as f64 + if block_team { 20.0 } else { 0.0 });
    let epilogue = if split > 1 {
        issue(6.0 * group.len() as f64)
    } else {
        let mut stops = group.clone();
        stops.extend(stop);
        work_of(body, roots, &stops) + issue(14.0)
    };
    let per_thread = (fold * iterations + combine + epilogue) * turns;
    let barriers = if block_team { 2.0 * turns } else { 0.0 };
    let mut first = Launch {
        blocks: blocks as u64,
        threads: THREADS,
        shared_bytes: if block_team { 32 } else { 0 },
        registers: 40,
        census: census(
            per_thread + issue(2.0 * barriers),
            2.0 * barriers,
            2.0 * barriers,
            barriers,
        ),
        unique_bytes: touched,
        tail: None,
    };
    if !passes.is_empty() {
        // The passes' elements spread over this launch's threads instead of one each.
        let pass = pointwise(body, &passes, stop);
        let share = pass.blocks as f64 / first.blocks as f64;
        first.census.add_scaled(&pass.census, share);
    }
    let mut launches = vec![first];
    if split > 1 {
        let mut stops = group.clone();
        stops.extend(stop);
        let mut combine = pointwise(body, roots, &stops);
        let per_element = (split * group.len()) as f64;
        let elements = outputs as f64 / (combine.blocks as f64 * THREADS as f64);
        combine.census.issue += 3.0 * per_element * elements;
        combine.census.global_loads += per_element * elements;
        combine.census.global_load_bytes += 4.0 * per_element * elements;
        combine.unique_bytes = (4 * (split + 1) * group.len() * outputs) as f64;
        let serial = combine.blocks <= calib_ir::SERIAL_COMBINE_BLOCKS as u64
            && outputs <= calib_ir::SERIAL_COMBINE_ELEMENTS;
        if serial {
            // The last block of the split launch combines, one block wide.
            let mut tail = Census::default();
            tail.add_scaled(&combine.census, combine.blocks as f64);
            launches[0].tail = Some(tail);
            launches[0].unique_bytes += combine.unique_bytes;
        } else {
            launches.push(combine);
        }
    }
    launches
}

/// The axes `v` reduces, if it is a reduction.
fn reduced_axes(body: &Graph, v: Value) -> Option<Vec<usize>> {
    match &body.nodes[v.0].op {
        Op::ReduceSum { axes, .. } | Op::ReduceMean { axes, .. } | Op::ReduceMax { axes, .. } => {
            Some(axes.clone())
        }
        _ => None,
    }
}

/// Whether evaluating `v` (not looking past `stop`) needs a reduction, a convolution or
/// a matmul: an output code generation cannot store by a pass beside the anchor.
fn reduces(body: &Graph, v: Value, stop: &[Value]) -> bool {
    let mut seen = vec![false; body.nodes.len()];
    let mut stack = vec![v];
    while let Some(u) = stack.pop() {
        if std::mem::replace(&mut seen[u.0], true) || stop.contains(&u) {
            continue;
        }
        let node = &body.nodes[u.0];
        if matches!(
            node.op.class(),
            OpClass::Reduction | OpClass::Convolution | OpClass::MatMul
        ) {
            return true;
        }
        stack.extend(&node.inputs);
    }
    false
}

/// The reduction a reduction kernel is built around: the last of the largest group of
/// siblings, as code generation picks it.
pub(super) fn reduction_anchor(body: &Graph) -> Option<Value> {
    let mut best: Option<(usize, Value)> = None;
    for (i, n) in body.nodes.iter().enumerate() {
        if n.op.class() != OpClass::Reduction {
            continue;
        }
        let size = siblings(body, Value(i)).len();
        if best.is_none_or(|(s, _)| size >= s) {
            best = Some((size, Value(i)));
        }
    }
    best.map(|(_, v)| v)
}

/// Splits the planner tries for a reduction of `length` elements into `outputs`: for one,
/// two, four and eight waves of eight blocks per SM, the largest split within them and
/// the smallest that fills them.
pub(super) fn reduction_splits(outputs: usize, length: usize, device: &Device) -> Vec<usize> {
    let mut splits = vec![1];
    for waves in [1, 2, 4, 8] {
        let slots = waves * device.sms as usize * 8;
        for want in [slots / outputs.max(1), slots.div_ceil(outputs.max(1))] {
            let split = want.min(length / 2048).min(256);
            if split > 1 && !splits.contains(&split) {
                splits.push(split);
            }
        }
    }
    splits
}

/// The splits the planner considers for reduction `r` of `body`, whose kernel's inputs
/// lie as `layouts` say ([`reduction_splits`], raised by [`channel_team_splits`] over
/// channels-last images): for a reduction kernel, and for a GEMM kernel's statistics
/// over its result (stored as its images are).
pub(super) fn candidate_splits(
    body: &Graph,
    r: Value,
    device: &Device,
    layouts: InputLayouts,
) -> Vec<usize> {
    let outputs = body.ty(r).numel().max(1);
    let shape = &body.ty(body.nodes[r.0].inputs[0]).shape;
    let splits = reduction_splits(outputs, numel(shape) / outputs, device);
    match layouts.contains(&Layout::ChannelsLast) {
        true => channel_team_splits(splits, shape, &reduced_axes(body, r).unwrap_or_default()),
        false => splits,
    }
}

/// `splits` raised, where the reduction reads channels-last images and a launch would
/// keep a warp's channels ([`calib_ir::channel_team_blocks`]), to the fewest slices
/// that give it enough blocks, as far as the largest of them reaches. A row-major plan
/// keeps its own: another split sums in another order, as a GEMM's split of `k` may
/// differ per layout.
fn channel_team_splits(splits: Vec<usize>, shape: &[usize], axes: &[usize]) -> Vec<usize> {
    let most = splits.iter().copied().max().unwrap_or(1);
    let floor = calib_ir::channel_team_split(shape, axes, most).unwrap_or(1);
    let mut raised: Vec<usize> = splits.into_iter().map(|s| s.max(floor)).collect();
    raised.dedup();
    raised
}

/// The splits the planner considers for reduction kernel `body`, whose inputs are
/// stored in `layouts`, fastest first by the estimate.
pub fn ranked_reduction_splits(body: &Graph, device: &Device, layouts: InputLayouts) -> Vec<usize> {
    let mut priced = priced_splits(body, device, layouts);
    priced.sort_by(|a, b| a.1.total_cmp(&b.1));
    priced.into_iter().map(|(split, _)| split).collect()
}

/// Every split the planner considers for reduction kernel `body`, with its estimated
/// seconds.
fn priced_splits(body: &Graph, device: &Device, layouts: InputLayouts) -> Vec<(usize, f64)> {
    let Some(r) = reduction_anchor(body) else {
        return vec![];
    };
    let roots: Vec<Value> = body.outputs.iter().map(|o| o.value).collect();
    (candidate_splits(body, r, device, layouts).into_iter())
        .map(|split| (split, seconds(&reduction(body, r, &roots, split), device)))
        .collect()
}

/// The fastest split for reduction kernel `body` (around `anchor`), whose inputs are
/// stored in `layouts`, with its predicted seconds and the workspace bytes it needs.
pub fn best_reduction_split(
    body: &Graph,
    device: &Device,
    layouts: InputLayouts,
) -> Option<(usize, f64, usize)> {
    let r = reduction_anchor(body)?;
    let outputs = body.ty(r).numel().max(1);
    let group = siblings(body, r).len();
    let (split, t) =
        (priced_splits(body, device, layouts).into_iter()).min_by(|a, b| a.1.total_cmp(&b.1))?;
    let bytes = ReductionSchedule { split }.workspace_bytes(group, outputs);
    Some((split, t, bytes))
}
