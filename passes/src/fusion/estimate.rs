//! What a kernel will execute, estimated from its body before code generation writes
//! it: the launches code generation will make (their geometry and each thread's
//! instruction mix, as a [`Census`]), priced by the cost model ([`calib_cost::predict`]).
//!
//! The estimate mirrors the kernel families of `calib-codegen`: a GEMM evaluates each
//! operand's prologue once for every element of every tile that loads it (so a prologue
//! feeding a weight gradient runs once per output-channel tile of the gradient, and its
//! cost grows with it), a reduction gives each reduced element a team of threads, a
//! pointwise kernel one thread per element. Per-op costs are issue slots of the machine
//! code each op becomes; a test keeps the estimates close to what the cost model says of
//! the kernels code generation really emits.

use calib_cost::{predict, Census, Device, Launch};
use calib_ir::{
    gemm_anchor, GemmDims, GemmSchedule, Graph, Op, OpClass, ReductionSchedule, Schedule, Value,
};
use std::ops::{Add, AddAssign, Mul};

/// Per-element work: what evaluating one element of a value costs a thread.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
struct Work {
    issue: f64,
    fp32: f64,
    sfu: f64,
    loads: f64,
    /// Loop iterations that wait for loads (windows evaluated in a prologue).
    rounds: f64,
    /// Instructions that wait for none of their neighbours (a GEMM's products).
    independent: f64,
}

impl Add for Work {
    type Output = Work;
    fn add(self, o: Work) -> Work {
        Work {
            issue: self.issue + o.issue,
            fp32: self.fp32 + o.fp32,
            sfu: self.sfu + o.sfu,
            loads: self.loads + o.loads,
            rounds: self.rounds + o.rounds,
            independent: self.independent + o.independent,
        }
    }
}

impl AddAssign for Work {
    fn add_assign(&mut self, o: Work) {
        *self = *self + o;
    }
}

impl Mul<f64> for Work {
    type Output = Work;
    fn mul(self, k: f64) -> Work {
        Work {
            issue: self.issue * k,
            fp32: self.fp32 * k,
            sfu: self.sfu * k,
            loads: self.loads * k,
            rounds: self.rounds * k,
            independent: self.independent * k,
        }
    }
}

fn issue(n: f64) -> Work {
    Work {
        issue: n,
        ..Work::default()
    }
}

/// The work of one op on one element, not counting its operands.
fn op_work(op: &Op, body: &Graph, inputs: &[Value]) -> Work {
    let f = |issue: f64, fp32: f64, sfu: f64| Work {
        issue,
        fp32,
        sfu,
        ..Work::default()
    };
    match op {
        // A global load: the address from the coordinates, then the load.
        Op::Input { .. } => Work {
            issue: 5.0,
            loads: 1.0,
            ..Work::default()
        },
        Op::Constant { .. } | Op::Param { .. } => Work::default(),
        Op::Neg | Op::Relu | Op::Add | Op::Sub | Op::Mul | Op::Max => f(1.0, 1.0, 0.0),
        Op::Div => f(12.0, 8.0, 1.0),
        Op::Sqrt => f(9.0, 6.0, 1.0),
        Op::Exp | Op::Log => f(3.0, 1.0, 1.0),
        Op::Rsqrt => f(2.0, 0.0, 1.0),
        Op::Sigmoid => f(13.0, 8.0, 2.0),
        Op::CmpGt | Op::CmpGe | Op::CmpEq | Op::Select => f(2.0, 0.0, 0.0),
        Op::Cast { .. } => f(1.0, 0.0, 1.0),
        Op::Broadcast { .. } => issue(0.5),
        Op::Slice { .. } => issue(1.0),
        // A flat index and its coordinates again: a divide and a remainder per axis.
        Op::Reshape { .. } => issue(7.0 * body.ty(inputs[0]).rank().saturating_sub(1) as f64),
        Op::Concat { .. } => issue(4.0),
        Op::OneHot { .. } => issue(5.0),
        Op::ResizeNearest { .. } => f(10.0, 2.0, 4.0),
        _ => issue(2.0),
    }
}

/// How many elements of its operands one element of a windowed op reads, and the loop
/// overhead of each.
fn window(op: &Op, body: &Graph, inputs: &[Value], out: Value) -> Option<f64> {
    let area = |k: &[usize; 2]| (k[0] * k[1]) as f64;
    Some(match op {
        Op::AvgPool2d { kernel, .. } | Op::MaxPool2d { kernel, .. } => area(kernel),
        Op::AvgPool2dBackward { kernel, stride, .. }
        | Op::MaxPool2dBackward { kernel, stride, .. } => {
            (kernel[0].div_ceil(stride[0]) * kernel[1].div_ceil(stride[1])) as f64
        }
        Op::ResizeNearestBackward { .. } => {
            let (dy, x) = (&body.ty(inputs[0]).shape, &body.ty(out).shape);
            ((dy[2].div_ceil(x[2]) + 2) * (dy[3].div_ceil(x[3]) + 2)) as f64
        }
        Op::ReduceSum { .. } | Op::ReduceMean { .. } | Op::ReduceMax { .. } => {
            (body.ty(inputs[0]).numel() / body.ty(out).numel().max(1)) as f64
        }
        Op::Conv2d { .. } | Op::Conv2dBackwardData { .. } | Op::Conv2dBackwardWeight { .. } => {
            GemmDims::of(body, out)?.mnk().2 as f64
        }
        Op::MatMul { .. } => GemmDims::of(body, out)?.mnk().2 as f64,
        _ => return None,
    })
}

/// The work of evaluating `roots` at one element each, every node once (code generation
/// memoizes shared subexpressions), not looking past `stop`. A windowed op evaluates its
/// operands once per window position, in a loop that waits for its loads each time.
fn work_of(body: &Graph, roots: &[Value], stop: &[Value]) -> Work {
    let mut seen = vec![false; body.nodes.len()];
    let mut total = Work::default();
    for &r in roots {
        total += walk(body, r, stop, &mut seen);
    }
    total
}

fn walk(body: &Graph, v: Value, stop: &[Value], seen: &mut [bool]) -> Work {
    if std::mem::replace(&mut seen[v.0], true) || stop.contains(&v) {
        return Work::default();
    }
    let node = &body.nodes[v.0];
    let own = op_work(&node.op, body, &node.inputs);
    match window(&node.op, body, &node.inputs, v) {
        Some(n) => {
            // Operands are evaluated afresh at every window position.
            let mut fresh = vec![false; body.nodes.len()];
            let mut inner = issue(6.0);
            for &x in &node.inputs {
                inner += walk(body, x, stop, &mut fresh);
            }
            if let Op::MaxPool2dBackward { kernel, .. } = &node.op {
                // Each window containing the position finds its first maximum again.
                let mut fresh = vec![false; body.nodes.len()];
                let mut tap = walk(body, node.inputs[0], stop, &mut fresh) + issue(10.0);
                tap.rounds += 1.0;
                inner += tap * (kernel[0] * kernel[1]) as f64;
            }
            let rounds = if inner.loads > 0.0 { 1.0 } else { 0.0 };
            inner.rounds += rounds;
            let mut total = inner * n + own;
            // Small pooling windows are written out in full: their loads go together.
            let pooling = matches!(node.op.class(), OpClass::Pool);
            if pooling && n <= 16.0 {
                total.rounds = total.rounds.min(rounds);
            }
            total
        }
        None => node
            .inputs
            .iter()
            .fold(own, |acc, &x| acc + walk(body, x, stop, seen)),
    }
}

/// Bytes of the buffers a kernel with this body reads and writes, each once.
fn unique_bytes(body: &Graph) -> f64 {
    let inputs: usize = body.inputs().map(|(_, v)| body.ty(v).size_bytes()).sum();
    let outputs: usize = body
        .outputs
        .iter()
        .map(|o| body.ty(o.value).size_bytes())
        .sum();
    (inputs + outputs) as f64
}

const THREADS: u32 = 256;
const MAX_POINTWISE_BLOCKS: usize = 1 << 16;

fn census(per_thread: Work, shared: f64, shared_wavefronts: f64, barriers: f64) -> Census {
    Census {
        issue: per_thread.issue + shared + barriers,
        fp32: per_thread.fp32,
        sfu: per_thread.sfu,
        global_loads: per_thread.loads,
        global_load_bytes: 4.0 * per_thread.loads,
        shared,
        shared_wavefronts,
        barriers,
        load_rounds: per_thread.rounds,
        independent: per_thread.independent,
        ..Census::default()
    }
}

/// One thread per element of the largest output, each evaluating `roots` at its
/// elements (not looking past `stop`).
fn pointwise(body: &Graph, roots: &[Value], stop: &[Value]) -> Launch {
    let n = roots
        .iter()
        .map(|&v| body.ty(v).numel())
        .max()
        .unwrap_or(1)
        .max(1);
    // Runs of four neighbours along the innermost axis, where shapes allow, share
    // their coordinates and load together (as code generation emits them).
    let shape = &body.ty(roots[0]).shape;
    let same = roots.iter().all(|&v| &body.ty(v).shape == shape);
    let run = match shape.last() {
        Some(last) if same && last % 4 == 0 && n >= 1 << 16 => 4,
        _ => 1,
    };
    let blocks = (n / run)
        .div_ceil(THREADS as usize)
        .clamp(1, MAX_POINTWISE_BLOCKS);
    let per_thread = (n / run) as f64 / (blocks * THREADS as usize) as f64;
    let element = work_of(body, roots, stop) + issue(4.0 * roots.len() as f64);
    let mut chains = element * run as f64;
    chains.independent += chains.issue * (1.0 - 1.0 / run as f64);
    let mut w = chains + issue(6.0 + 14.0);
    w.issue -= 10.0 * (run - 1) as f64;
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
        unique_bytes: unique_bytes(body),
    }
}

/// The sibling reductions code generation folds in one loop with `r`: those of the
/// same input shape over the same axes.
fn siblings(body: &Graph, r: Value) -> Vec<Value> {
    let axes = |v: Value| match &body.nodes[v.0].op {
        Op::ReduceSum { axes, .. } | Op::ReduceMean { axes, .. } | Op::ReduceMax { axes, .. } => {
            Some(axes.clone())
        }
        _ => None,
    };
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
fn reduction(body: &Graph, r: Value, roots: &[Value], split: usize) -> Vec<Launch> {
    reduction_over(body, r, roots, split, &[], 0.0)
}

/// [`reduction`], not looking past `stop` (values read from memory, each costing
/// `stop_loads` loads per element).
fn reduction_over(
    body: &Graph,
    r: Value,
    roots: &[Value],
    split: usize,
    stop: &[Value],
    stop_loads: f64,
) -> Vec<Launch> {
    let group = siblings(body, r);
    let input = body.nodes[r.0].inputs[0];
    let outputs = body.ty(r).numel().max(1);
    let length = (body.ty(input).numel() / outputs).max(1);
    let split = split.clamp(1, length);
    let chunk = length.div_ceil(split);
    let block_team = chunk >= 1024;
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
    let element = work_of(body, &roots_of_group, stop) + read + issue(10.0);
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
    let mut launches = vec![Launch {
        blocks: blocks as u64,
        threads: THREADS,
        shared_bytes: if block_team { 32 } else { 0 },
        registers: 40,
        census: census(per_thread, 2.0 * barriers, 2.0 * barriers, barriers),
        unique_bytes: unique_bytes(body),
    }];
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
        launches.push(combine);
    }
    launches
}

/// The reduction a reduction kernel is built around: the last of the largest group of
/// siblings, as code generation picks it.
fn reduction_anchor(body: &Graph) -> Option<Value> {
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

/// Splits the planner tries for a reduction of `length` elements into `outputs`.
fn reduction_splits(outputs: usize, length: usize, device: &Device) -> Vec<usize> {
    let mut splits = vec![1];
    for waves in [1, 2, 4, 8] {
        let want = (waves * device.sms as usize * 8).div_ceil(outputs.max(1));
        let split = want.min(length / 2048).min(256);
        if split > 1 && !splits.contains(&split) {
            splits.push(split);
        }
    }
    splits
}

/// The fastest split for reduction kernel `body` (around `anchor`), with its
/// predicted seconds and the workspace bytes it needs.
pub fn best_reduction_split(body: &Graph, device: &Device) -> Option<(usize, f64, usize)> {
    let r = reduction_anchor(body)?;
    let roots: Vec<Value> = body.outputs.iter().map(|o| o.value).collect();
    let outputs = body.ty(r).numel().max(1);
    let length = body.ty(body.nodes[r.0].inputs[0]).numel() / outputs;
    let group = siblings(body, r).len();
    reduction_splits(outputs, length, device)
        .into_iter()
        .map(|split| {
            let t = seconds(&reduction(body, r, &roots, split), device);

            let bytes = ReductionSchedule { split }.workspace_bytes(group, outputs);
            (split, t, bytes)
        })
        .min_by(|a, b| a.1.total_cmp(&b.1))
}

/// What a GEMM kernel's launches execute under `schedule`.
pub struct GemmEstimate {
    pub launches: Vec<Launch>,
}

/// The operands' per-element work for GEMM anchor `anchor`: `A` and `B` as the tile
/// loader evaluates them, with the index arithmetic of a tile position.
fn operand_work(body: &Graph, anchor: Value, dims: &GemmDims) -> (Work, Work) {
    let node = &body.nodes[anchor.0];
    let (a, b) = match node.op {
        Op::Conv2dBackwardWeight { .. } => (node.inputs[1], node.inputs[0]),
        _ => (node.inputs[0], node.inputs[1]),
    };
    // Code generation loads an operand along its contiguous side: along `m` or `n`
    // (the element's `k` changes from element to element, so each decomposes its own),
    // or along `k` (a thread's elements share one `k`, decomposed once per step). The
    // `m` and `n` coordinates are the same at every step and computed before the loop.
    let (a_along_k, b_along_k) = match node.op {
        Op::Conv2dBackwardWeight { .. } => (true, true),
        Op::MatMul {
            transpose_a,
            transpose_b,
        } => (!transpose_a, transpose_b),
        _ => (false, true),
    };
    let decompose = |d: &[usize]| 7.0 * d.len().saturating_sub(1) as f64;
    let k_cost = |along_k: bool| if along_k { 0.0 } else { decompose(&dims.k) };
    // The step's `k`, clamps, bounds, select and the shared store.
    let fixed = 12.0;
    let padded = matches!(node.op, Op::Conv2d { padding, .. } | Op::Conv2dBackwardWeight { padding, .. } if padding != [0, 0]);
    let image = if padded { 8.0 } else { 0.0 };
    let wa = work_of(body, &[a], &[]) + issue(fixed + k_cost(a_along_k) + image);
    let wb = work_of(body, &[b], &[]) + issue(fixed + k_cost(b_along_k) + image);
    (wa, wb)
}

/// The launches of GEMM kernel `body` (anchor `anchor`) under `schedule`: the tiled
/// GEMM (partial tiles when split), the pass that sums the slices and runs the
/// epilogue, and a pass over the result for outputs that reduce it.
pub fn gemm(body: &Graph, anchor: Value, dims: &GemmDims, schedule: &Schedule) -> GemmEstimate {
    let (wa, wb) = operand_work(body, anchor, dims);
    let gemm = schedule
        .gemm
        .unwrap_or_else(|| GemmSchedule::default_for(dims));
    let split = schedule.reduction.map_or(1, |r| r.split);
    gemm_with(body, anchor, dims, &gemm, (wa, wb), split)
}

fn gemm_with(
    body: &Graph,
    anchor: Value,
    dims: &GemmDims,
    s: &GemmSchedule,
    (wa, wb): (Work, Work),
    statistics_split: usize,
) -> GemmEstimate {
    let (tm, tn) = (s.block_m / 16, s.block_n / 16);
    let (ea, eb) = (
        (s.block_k * s.block_m) as f64 / 256.0,
        (s.block_k * s.block_n) as f64 / 256.0,
    );
    let (_, steps) = s.k_steps(dims);
    let fragments = (tm / 4 + tn / 4) as f64;
    let products = Work {
        issue: s.block_k as f64 * ((tm * tn) as f64 + 3.0 * fragments),
        fp32: (s.block_k * tm * tn) as f64,
        independent: (s.block_k * tm * tn) as f64,
        ..Work::default()
    };
    // The elements of a step load as independent chains, one per element.
    let mut loads = wa * ea + wb * eb;
    loads.independent += (loads.issue - loads.independent) * (1.0 - 1.0 / (ea + eb).max(1.0));
    let mut step = loads + products + issue(10.0);
    step.rounds = 1.0 + (wa.rounds * ea + wb.rounds * eb);
    let shared_per_step = ea + eb + s.block_k as f64 * fragments;
    let wavefronts_per_step = ea + eb + 4.0 * s.block_k as f64 * fragments;
    let steps = steps as f64;
    let mut main = step * (steps + 1.0);

    let anchor_numel = body.ty(anchor).numel();
    let aligned: Vec<Value> = body
        .outputs
        .iter()
        .map(|o| o.value)
        .filter(|&v| body.ty(v).numel() == anchor_numel && !reduces(body, v, anchor))
        .collect();
    let reducing: Vec<Value> = body
        .outputs
        .iter()
        .map(|o| o.value)
        .filter(|&v| reduces(body, v, anchor))
        .collect();
    let epilogue = work_of(body, &aligned, &[anchor]) + issue(25.0);
    let per_thread_outputs = (s.block_m * s.block_n) as f64 / 256.0;
    let (mut shared, mut wavefronts) = (
        shared_per_step * (steps + 1.0),
        wavefronts_per_step * (steps + 1.0),
    );
    let tiles = s.tiles(dims);
    let mut launches = vec![];
    let registers = s.estimated_registers();
    let operand_bytes = 2 * 4 * s.block_k * (s.block_m + s.block_n + 8);
    if s.split_k == 1 {
        main += epilogue * per_thread_outputs;
        if let Some([sh, sw]) = dims.lattice {
            // The positions off the lattice: the epilogue at zero, a grid-stride pass.
            let off = anchor_numel as f64 * (1.0 - 1.0 / (sh * sw) as f64);
            main += (epilogue + issue(12.0)) * (off / (tiles * 256) as f64);
        }
        shared += 2.0 * per_thread_outputs;
        wavefronts += 2.0 * per_thread_outputs;
        let mut c = census(main, shared, wavefronts, steps + 2.0 * (tm / 4) as f64);
        c.global_stores = per_thread_outputs * aligned.len() as f64;
        c.global_store_bytes = 4.0 * c.global_stores;
        launches.push(Launch {
            blocks: tiles as u64,
            threads: THREADS,
            shared_bytes: operand_bytes.max(64 * (s.block_n + 4) * 4) as u32,
            registers,
            census: c,
            unique_bytes: unique_bytes(body),
        });
    } else {
        main += issue(8.0 * (tm * tn) as f64 / 4.0);
        let mut c = census(main, shared, wavefronts, steps);
        c.global_stores = (tm * tn) as f64 / 4.0;
        c.global_store_bytes = 16.0 * c.global_stores;
        let (m, n, _) = dims.mnk();
        let partial_bytes = (s.split_k * dims.groups * m * n * 4) as f64;
        launches.push(Launch {
            blocks: (tiles * s.split_k) as u64,
            threads: THREADS,
            shared_bytes: operand_bytes as u32,
            registers,
            census: c,
            unique_bytes: unique_bytes(body) - body.ty(anchor).size_bytes() as f64 + partial_bytes,
        });
        // The next launch: every anchor element as the sum of its slices, then the
        // epilogue, one thread per element.
        let mut sum = pointwise(body, &aligned, &[anchor]);
        let slices = s.split_k as f64;
        let elements = anchor_numel as f64 / (sum.blocks as f64 * THREADS as f64);
        let extra = Work {
            issue: (2.0 * slices + 20.0) * elements,
            loads: slices * elements,
            ..Work::default()
        };
        sum.census.issue += extra.issue;
        sum.census.global_loads += extra.loads;
        sum.census.global_load_bytes += 4.0 * extra.loads;
        sum.unique_bytes += partial_bytes;
        launches.push(sum);
    }
    // Statistics over the result read it back once per element (stored whole by the
    // epilogue), the first of them under the kernel's reduction split.
    // Sibling reductions share one launch.
    let mut groups: Vec<(Vec<Value>, Value, Vec<Value>)> = vec![];
    for r in reducing {
        let Some(red) = first_reduction(body, r) else {
            continue;
        };
        let group = siblings(body, red);
        match groups.iter_mut().find(|g| g.0 == group) {
            Some(g) => g.2.push(r),
            None => groups.push((group, red, vec![r])),
        }
    }
    for (i, (_, red, roots)) in groups.into_iter().enumerate() {
        let split = if i == 0 { statistics_split } else { 1 };
        launches.extend(reduction_over(body, red, &roots, split, &[anchor], 1.0));
    }
    GemmEstimate { launches }
}

/// Whether output `v` needs a reduction over the anchor's whole result.
fn reduces(body: &Graph, v: Value, anchor: Value) -> bool {
    let mut stack = vec![v];
    let mut seen = vec![false; body.nodes.len()];
    while let Some(u) = stack.pop() {
        if u == anchor || std::mem::replace(&mut seen[u.0], true) {
            continue;
        }
        let node = &body.nodes[u.0];
        if node.op.class() == OpClass::Reduction && depends_on(body, u, anchor) {
            return true;
        }
        stack.extend(&node.inputs);
    }
    false
}

fn depends_on(body: &Graph, v: Value, target: Value) -> bool {
    let mut stack = vec![v];
    let mut seen = vec![false; body.nodes.len()];
    while let Some(u) = stack.pop() {
        if u == target {
            return true;
        }
        if !std::mem::replace(&mut seen[u.0], true) {
            stack.extend(&body.nodes[u.0].inputs);
        }
    }
    false
}

fn first_reduction(body: &Graph, v: Value) -> Option<Value> {
    let mut stack = vec![v];
    while let Some(u) = stack.pop() {
        if body.nodes[u.0].op.class() == OpClass::Reduction {
            return Some(u);
        }
        stack.extend(&body.nodes[u.0].inputs);
    }
    None
}

/// The schedules the planner considers for a GEMM of `dims`: every tile shape at two
/// step depths, with `k` unsplit and split into as many slices as fill the device's SMs
/// one to eight times.
pub fn candidate_schedules(dims: &GemmDims, device: &Device) -> Vec<GemmSchedule> {
    let mut out = vec![];
    for (bm, bn) in GemmSchedule::TILES {
        // The tile's shallowest step and one twice as deep (fewer barriers per
        // product, more elements in flight per load round).
        let depth = GemmSchedule::depth(bm, bn);
        for block_k in [depth, 2 * depth].into_iter().filter(|&d| d <= 32) {
            let base = GemmSchedule {
                block_m: bm,
                block_n: bn,
                block_k,
                split_k: 1,
            };
            let (steps, _) = base.k_steps(dims);
            let tiles = base.tiles(dims);
            out.push(base);
            // Splits that bring the grid to about one to eight waves of one block per
            // SM, each slice keeping at least eight k steps.
            for waves in [1, 2, 4, 8] {
                let want = (waves * device.sms as usize).div_ceil(tiles.max(1));
                let split = want.min(steps / 8).min(1024);
                if split > 1
                    && !out.iter().any(|s| {
                        *s == GemmSchedule {
                            split_k: split,
                            ..base
                        }
                    })
                {
                    out.push(GemmSchedule {
                        split_k: split,
                        ..base
                    });
                }
            }
        }
    }
    out
}

/// The predicted seconds of a set of launches.
pub fn seconds(launches: &[Launch], device: &Device) -> f64 {
    launches
        .iter()
        .map(|l| predict(l, device).seconds + device.timing.launch_gap_us * 1e-6)
        .sum()
}

/// The fastest schedule for GEMM kernel `body`, with its predicted seconds: the tile
/// and split of `k`, and for statistics over the result, the split of that reduction.
pub fn best_schedule(body: &Graph, device: &Device) -> Option<(Schedule, f64)> {
    let anchor = gemm_anchor(body)?;
    let dims = GemmDims::of(body, anchor)?;
    let work = operand_work(body, anchor, &dims);
    let time = |s: &GemmSchedule, split: usize| {
        seconds(
            &gemm_with(body, anchor, &dims, s, work, split).launches,
            device,
        )
    };
    let (gemm, t) = candidate_schedules(&dims, device)
        .into_iter()
        .map(|s| (s, time(&s, 1)))
        .min_by(|a, b| a.1.total_cmp(&b.1))?;
    let statistics = body
        .outputs
        .iter()
        .find(|o| reduces(body, o.value, anchor))
        .and_then(|o| first_reduction(body, o.value));
    let Some(red) = statistics else {
        return Some((Schedule::gemm(gemm), t));
    };
    let outputs = body.ty(red).numel().max(1);
    let length = body.ty(body.nodes[red.0].inputs[0]).numel() / outputs;
    let (split, t) = reduction_splits(outputs, length, device)
        .into_iter()
        .map(|split| (split, time(&gemm, split)))
        .min_by(|a, b| a.1.total_cmp(&b.1))
        .unwrap_or((1, t));
    let reduction = (split > 1).then_some(ReductionSchedule { split });
    Some((
        Schedule {
            gemm: Some(gemm),
            reduction,
        },
        t,
    ))
}

/// The predicted seconds of a kernel with this body: GEMM kernels under their best
/// schedule, reductions and maps as their families run them.
pub fn kernel_seconds(body: &Graph, device: &Device) -> f64 {
    if let Some((_, t)) = best_schedule(body, device) {
        return t;
    }
    if let Some((_, t, _)) = best_reduction_split(body, device) {
        return t;
    }
    let roots: Vec<Value> = body.outputs.iter().map(|o| o.value).collect();
    seconds(&[pointwise(body, &roots, &[])], device)
}

/// The predicted seconds of plan kernel `kernel`: under its schedule when it has one.
pub fn program_kernel_seconds(kernel: &calib_ir::Kernel, device: &Device) -> f64 {
    let gemm_under = |s: &Schedule| {
        let anchor = gemm_anchor(&kernel.body)?;
        let dims = GemmDims::of(&kernel.body, anchor)?;
        Some(seconds(
            &gemm(&kernel.body, anchor, &dims, s).launches,
            device,
        ))
    };
    let reduction_under = |split: usize| {
        let r = reduction_anchor(&kernel.body)?;
        let roots: Vec<Value> = kernel.body.outputs.iter().map(|o| o.value).collect();
        Some(seconds(&reduction(&kernel.body, r, &roots, split), device))
    };
    let scheduled = match &kernel.schedule {
        Some(s @ Schedule { gemm: Some(_), .. }) => gemm_under(s),
        Some(Schedule {
            reduction: Some(r), ..
        }) => reduction_under(r.split),
        _ => None,
    };
    scheduled.unwrap_or_else(|| kernel_seconds(&kernel.body, device))
}
