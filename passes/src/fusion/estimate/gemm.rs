//! GEMM kernels: the tiled GEMM's launches under a schedule (the loader's elements and
//! their prologues, the products, the epilogue or the split's partial tiles and their
//! sum, the statistics over the result), and the planner's search over schedules.

use super::reduction::{candidate_splits, pointwise, reduction_over, siblings};
use super::work::{issue, work_of, Work};
use super::{census, seconds, seconds_besides_memory, touched_bytes, unique_bytes, THREADS};
use calib_cost::{Device, Launch};
use calib_ir::{
    bf16_input, bf16_run_along_k, copy_source, gemm_anchor, gemm_operands, taps_outer,
    tile_run_along_k, walks_width, GemmDims, GemmInstruction, GemmSchedule, Graph, InputLayouts,
    Op, OpClass, Precision, ReductionSchedule, Schedule, Value,
};

/// What a GEMM kernel's launches execute under `schedule`.
pub struct GemmEstimate {
    pub launches: Vec<Launch>,
}

/// The operands' per-element work for GEMM anchor `anchor`: `A` and `B` as the tile
/// loader evaluates them, with the index arithmetic of a tile position.
pub(super) fn operand_work(
    body: &Graph,
    anchor: Value,
    dims: &GemmDims,
    layouts: InputLayouts,
) -> (Work, Work) {
    let node = &body.nodes[anchor.0];
    let [a, b] = gemm_operands(body, anchor);
    // A window whose taps are outside its channels (`calib_ir::window_k`) gives the rows
    // of a step one tap: its position, checks and `k` decomposition are once a step,
    // and a row's channel is the step's plus a constant.
    let taps_outer = match node.op {
        Op::Conv2d { .. } | Op::Conv2dBackwardData { .. } => {
            let w = &body.ty(b).shape;
            let kernel = [w[2], w[3]];
            // A phased data gradient's `k` is its phases' taps, then the channels.
            let channels = match dims.phases {
                Some(_) => dims.k[2],
                None => dims.k.iter().product::<usize>() / (kernel[0] * kernel[1]).max(1),
            };
            taps_outer(channels, kernel)
        }
        _ => false,
    };
    let [a_along_k, b_along_k] = walks_width(body, anchor, layouts).map(|w| !w);
    // Axes of extent 1 cost nothing: their coordinate is 0 (a 1x1 window's).
    let decompose = |d: &[usize]| match taps_outer {
        true => 1.0,
        false => 7.0 * d.iter().filter(|&&e| e > 1).count().saturating_sub(1) as f64,
    };
    let k_cost = |along_k: bool| if along_k { 0.0 } else { decompose(&dims.k) };
    // The shared store, and the element's share of its row's address: code generation
    // addresses the elements of a thread's share from one address with immediate
    // offsets, and folds the bounds checks of a `k` range that cannot pass the end
    // (a padded image's window keeps its clamps: `image` below).
    let fixed = 4.0;
    let padded = matches!(node.op, Op::Conv2d { padding, .. } | Op::Conv2dBackwardWeight { padding, .. } if padding != [0, 0]);
    // A weight gradient's image shares its taps along `n` (`(kh, kw, c)`) as a forward
    // one does along `k`: a thread's columns of one tap share its position and checks.
    let image_taps = match node.op {
        Op::Conv2dBackwardWeight { kernel, .. } => {
            let channels = dims.n.iter().product::<usize>() / (kernel[0] * kernel[1]).max(1);
            calib_ir::taps_outer(channels, kernel)
        }
        _ => taps_outer,
    };
    let image = if padded && !image_taps { 8.0 } else { 0.0 };
    // The weight `[O, C, KH, KW]` walked along its channels is a window apart: each
    // lane of a warp in a sector of its own, 28 more than its 32 words fill, priced
    // as the cost model prices extra sectors (an issue slot each).
    let scattered = if taps_outer { 28.0 } else { 0.0 };
    let wa = work_of(body, &[a], &[]) + issue(fixed + k_cost(a_along_k) + image);
    let wb = work_of(body, &[b], &[]) + issue(fixed + k_cost(b_along_k) + image + scattered);
    (wa, wb)
}

/// The launches of GEMM kernel `body` (anchor `anchor`) under `schedule`: the tiled
/// GEMM (partial tiles when split), the pass that sums the slices and runs the
/// epilogue, and a pass over the result for outputs that reduce it.
pub fn gemm(
    body: &Graph,
    anchor: Value,
    dims: &GemmDims,
    schedule: &Schedule,
    layouts: InputLayouts,
) -> GemmEstimate {
    let (wa, wb) = operand_work(body, anchor, dims, layouts);
    let gemm = schedule
        .gemm
        .unwrap_or_else(|| GemmSchedule::default_for(dims));
    let split = schedule.reduction.map_or(1, |r| r.split);
    gemm_with(body, anchor, dims, &gemm, (wa, wb), split, layouts)
}

pub(super) fn gemm_with(
    body: &Graph,
    anchor: Value,
    dims: &GemmDims,
    s: &GemmSchedule,
    (wa, wb): (Work, Work),
    statistics_split: usize,
    layouts: InputLayouts,
) -> GemmEstimate {
    let (tm, tn) = (s.block_m / 16, s.block_n / 16);
    let (ea, eb) = (
        (s.block_k * s.block_m) as f64 / 256.0,
        (s.block_k * s.block_n) as f64 / 256.0,
    );
    let (_, steps) = s.k_steps(dims);
    // With three or more stages, operands read straight from a buffer arrive by
    // `cp.async` (the same index arithmetic, no select or store, and no register
    // holding the element): the thread waits for them `stages - 1` steps after issuing
    // them, so they add no load round of their own.
    // A copy moves a run of elements (`CopySource::grain`) along the side the loader
    // walks (the width, or `k`): one slot's address, check and shared store for all of
    // them.
    let along_k = walks_width(body, anchor, layouts).map(|w| !w);
    let copies = [(0, s.block_m), (1, s.block_n)].map(|(i, width)| {
        let copy = copy_source(body, anchor, i, s.instruction, layouts)
            .filter(|c| s.stages > 2 && (c.run == 1 || c.along_k == along_k[i]))?;
        Some((
            copy.grain(s.block_k, width, THREADS as usize)?,
            copy.along_k,
        ))
    });
    let grains = copies.map(|c| c.map(|(grain, _)| grain));
    let k_inner = copies.map(|c| c.is_some_and(|(_, along_k)| along_k));
    let copied = grains.map(|g| g.is_some());
    let [ga, gb] = grains.map(|g| g.unwrap_or(1) as f64);
    // Shared loads and stores of the runs a TF32 tile rounds in place, per step.
    let tf32 = s.instruction == GemmInstruction::MmaTf32;
    let rounded_in_place = [(ea, ga), (eb, gb)]
        .into_iter()
        .filter(|&(_, g)| tf32 && g > 1.0);
    let in_place = rounded_in_place
        .clone()
        .map(|(elements, g)| 2.0 * elements / g)
        .sum::<f64>();
    // A run of `g` words a lane reads or writes at once takes `g` wavefronts.
    let in_place_wavefronts = rounded_in_place
        .map(|(elements, _)| 2.0 * elements)
        .sum::<f64>();
    // A bf16 input loaded through registers along `k` in runs (`bf16_run_along_k`):
    // one address and vector load per run, each element still its own shared store
    // (rows of the tile), every second after a shift.
    let runs = [(0, s.block_m), (1, s.block_n)].map(|(i, width)| {
        let bf16 = s.instruction == GemmInstruction::MmaBf16;
        match bf16_run_along_k(body, anchor, i, layouts) {
            Some(run) if bf16 && !copied[i] && along_k[i] => {
                tile_run_along_k(run, s.block_k, width, THREADS as usize) as f64
            }
            _ => 1.0,
        }
    });
    // Per step: the products, the fragments' shared loads and their wavefronts, and
    // the epilogue's bands.
    let (products, fragment_loads, fragment_wavefronts, bands) = match (s.instruction, s.warps()) {
        (GemmInstruction::Fma, _) | (_, None) => {
            let fragments = (tm / 4 + tn / 4) as f64;
            let products = Work {
                issue: s.block_k as f64 * ((tm * tn) as f64 + 3.0 * fragments),
                fp32: (s.block_k * tm * tn) as f64,
                independent: (s.block_k * tm * tn) as f64,
                ..Work::default()
            };
            // 16-byte fragment loads take four wavefronts each.
            let loads = s.block_k as f64 * fragments;
            (products, loads, 4.0 * loads, tm / 4)
        }
        (instruction, Some((wm, wn))) => {
            // Per instruction's k: each lane's A and B fragment words (4 fm + 2 fn, a
            // wavefront each), then every pair of fragments is one `mma`. TF32 words are
            // scalar loads; bf16 fragments are one `ldmatrix` each (four matrices for A,
            // two for B, a wavefront per matrix).
            let (fm, fn_) = (s.block_m / (16 * wm), s.block_n / (8 * wn));
            let slices = (s.block_k / instruction.k_per_instruction()) as f64;
            let words = (4 * fm + 2 * fn_) as f64;
            // A TF32 tile that keeps its `k` adjacent and is rounded in place is read
            // by `ldmatrix` too.
            let bf16 = instruction == GemmInstruction::MmaBf16;
            let matrices = [0, 1].map(|i| bf16 || (k_inner[i] && grains[i] > Some(1)));
            let loads = match matrices {
                [true, true] => (fm + fn_) as f64,
                [true, false] => (fm + 2 * fn_) as f64,
                [false, true] => (4 * fm + fn_) as f64,
                [false, false] => words,
            };
            let mmas = (fm * fn_) as f64;
            let flops = 2.0 * (s.block_m * s.block_n * s.block_k) as f64 / 256.0;
            // Elements are rounded as they are stored (bf16 into 16-bit tiles, TF32
            // into words); TF32 tiles that arrive by `cp.async` as each fragment word is
            // read (a word per warp lane and fragment, which is more conversions than
            // elements); bf16 tiles that arrive by `cp.async` are bf16 already.
            // A bf16 input loaded through registers is stored as loaded
            // (`calib_ir::bf16_input`): nothing to round.
            // A TF32 tile copied in runs is rounded where it landed instead: a
            // conversion per element, and a vector load and store per run.
            let raw = [0, 1].map(|i| bf16 && bf16_input(body, anchor, i).is_some());
            let rounding = |copied: bool, raw: bool, elements: f64, words: usize, grain: f64| match (
                copied, bf16,
            ) {
                (false, _) if raw => 0.0,
                (false, _) => elements,
                (true, false) if grain > 1.0 => elements,
                (true, false) => slices * words as f64,
                (true, true) => 0.0,
            };
            let rounding = rounding(copied[0], raw[0], ea, 4 * fm, ga)
                + rounding(copied[1], raw[1], eb, 2 * fn_, gb);
            let products = Work {
                issue: slices * (mmas + loads) + rounding + in_place,
                // Conversions (`cvt`) are special-function operations.
                sfu: rounding,
                independent: slices * mmas,
                tensor_tf32_flops: if bf16 { 0.0 } else { flops },
                tensor_f16_flops: if bf16 { flops } else { 0.0 },
                ..Work::default()
            };
            (
                products,
                slices * loads,
                slices * words,
                s.block_m / (16 * wm),
            )
        }
    };
    // The elements of a step load as independent chains, one per element.
    let [ra, rb] = runs;
    let (sa, sb) = (ea / (ga * ra), eb / (gb * rb));
    let run_stores = |elements: f64, run: f64| issue(1.5 * (elements - elements / run));
    let mut loads = wa * sa + wb * sb + run_stores(ea, ra) + run_stores(eb, rb);
    loads.independent += (loads.issue - loads.independent) * (1.0 - 1.0 / (sa + sb).max(1.0));
    // A ring of three or more stages finds the stage it refills and the one it reads
    // by remainders of the step, and branches around the refill of the last steps: a
    // dozen instructions a step that double-buffering spends in two.
    let ring = if s.stages > 2 { 12.0 } else { 0.0 };
    let mut step = loads + products + issue(10.0 + ring);
    let waits = if copied == [true, true] { 0.0 } else { 1.0 };
    step.rounds = waits + (wa.rounds * sa + wb.rounds * sb);
    let (stores_a, stores_b) = (ea / ga, eb / gb);
    let shared_per_step = stores_a + stores_b + fragment_loads + in_place;
    let wavefronts_per_step = ea + eb + fragment_wavefronts + in_place_wavefronts;
    let load_bytes_per_step = 4.0 * (wa.loads * ea + wb.loads * eb);
    // A phase of a strided data gradient steps through the taps it meets: on average
    // that share of the `k` laid out for the phase with the most.
    let steps = steps as f64 * dims.share_of_k();
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
    let per_thread_outputs = (s.block_m * s.block_n) as f64 / 256.0;
    // The epilogue walks a thread's outputs in runs of four neighbours where all of
    // them have the anchor's shape (one address, one vector load or store per run),
    // band by band; a thread's few runs of a band are written out one after another,
    // so their loads are waited for together, and only a longer walk is a loop that
    // waits once per run.
    let run = match aligned
        .iter()
        .all(|&v| body.ty(v).shape == body.ty(anchor).shape)
    {
        true => 4.0,
        false => 1.0,
    };
    let mut epilogue = work_of(body, &aligned, &[anchor]) + issue(12.0 / run);
    let unrolled = per_thread_outputs / (bands.max(1) as f64 * run) <= 16.0;
    epilogue.rounds = match (epilogue.loads > 0.0, unrolled) {
        (false, _) => 0.0,
        (true, true) => 1.0 / per_thread_outputs,
        (true, false) => 1.0 / run,
    };
    let (mut shared, mut wavefronts) = (
        shared_per_step * (steps + 1.0),
        wavefronts_per_step * (steps + 1.0),
    );
    let tiles = s.tiles(dims);
    let mut launches = vec![];
    let registers = s.estimated_registers();
    let operand_bytes = s.operand_bytes_with(k_inner);
    if s.split_k == 1 {
        let main_epilogue_loads = epilogue.loads * per_thread_outputs;
        main += epilogue * per_thread_outputs;
        if let Some([sh, sw]) = dims.lattice {
            // The positions off the lattice: the epilogue at zero, a grid-stride pass.
            let off = anchor_numel as f64 * (1.0 - 1.0 / (sh * sw) as f64);
            main += (epilogue + issue(12.0)) * (off / (tiles * 256) as f64);
        }
        // The accumulators staged through shared memory: written, then read back.
        shared += 2.0 * per_thread_outputs;
        wavefronts += 2.0 * per_thread_outputs;
        main += issue(2.0 * per_thread_outputs);
        let mut c = census(main, shared, wavefronts, steps + 2.0 * bands as f64);
        c.global_load_bytes = load_bytes_per_step * (steps + 1.0) + 4.0 * main_epilogue_loads;
        c.global_stores = per_thread_outputs * aligned.len() as f64;
        c.global_store_bytes = 4.0 * c.global_stores;
        launches.push(Launch {
            blocks: tiles as u64,
            threads: THREADS,
            shared_bytes: operand_bytes.max(64 * (s.block_n + 4) * 4) as u32,
            registers,
            census: c,
            unique_bytes: unique_bytes(body),
            tail: None,
        });
    } else {
        main += issue(8.0 * (tm * tn) as f64 / 4.0);
        let mut c = census(main, shared, wavefronts, steps);
        c.global_load_bytes = load_bytes_per_step * (steps + 1.0);
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
            tail: None,
        });
        // The next launch: every anchor element as the sum of its slices, then the
        // epilogue, one thread per element.
        // A kernel whose every output reduces the GEMM (statistics alone) still sums
        // the anchor's slices.
        let roots = if aligned.is_empty() {
            vec![anchor]
        } else {
            aligned.clone()
        };
        let mut sum = pointwise(body, &roots, &[anchor]);
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
    // Code generation reads back what an earlier launch stored (an output that is the
    // anchor itself, or the split's partial tiles); an anchor no launch stored is
    // computed again, one product at a time, wherever the statistics need it.
    let stored = s.split_k > 1 || aligned.contains(&anchor);
    let (m, n, k) = dims.mnk();
    let anchor_loads = if stored { 1.0 } else { 2.0 * k as f64 };
    // What the statistics read of the anchor: the split's partial tiles, the stored
    // anchor, or (computed again) the GEMM's operands.
    let anchor_bytes = match (s.split_k > 1, stored) {
        (true, _) => (s.split_k * dims.groups * m * n * 4) as f64,
        (false, true) => body.ty(anchor).size_bytes() as f64,
        (false, false) => touched_bytes(body, &[anchor], &[]),
    };
    for (i, (_, red, roots)) in groups.into_iter().enumerate() {
        let split = if i == 0 { statistics_split } else { 1 };
        let mut pass = reduction_over(body, red, &roots, split, &[anchor], anchor_loads);
        pass[0].unique_bytes += anchor_bytes;
        launches.extend(pass);
    }
    GemmEstimate { launches }
}

/// Whether output `v` needs a reduction over the anchor's whole result.
pub(super) fn reduces(body: &Graph, v: Value, anchor: Value) -> bool {
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

pub(super) fn depends_on(body: &Graph, v: Value, target: Value) -> bool {
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

pub(super) fn first_reduction(body: &Graph, v: Value) -> Option<Value> {
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
/// one to eight times, or that just fit them (a few blocks spilling into one more wave
/// cost a whole wave); on tensor cores each also with three and four shared stages
/// (`cp.async` rings) where the device's shared memory holds them.
pub fn candidate_schedules(
    dims: &GemmDims,
    device: &Device,
    precision: Precision,
) -> Vec<GemmSchedule> {
    let mut out = vec![];
    let instructions: &[GemmInstruction] = match precision {
        Precision::F32 => &[GemmInstruction::Fma],
        // Operands are rounded by the policy's casts, so FMA units compute the same
        // products: they stay a candidate (a GEMM too thin for tensor cores).
        Precision::Tf32 => &[GemmInstruction::Fma, GemmInstruction::MmaTf32],
        Precision::Bf16 => &[GemmInstruction::Fma, GemmInstruction::MmaBf16],
    };
    for (&instruction, (bm, bn)) in instructions
        .iter()
        .flat_map(|i| GemmSchedule::TILES.into_iter().map(move |t| (i, t)))
    {
        // The tile's shallowest step and one twice as deep (fewer barriers per
        // product, more elements in flight per load round); a multiple of the
        // instruction's k.
        let per = instruction.k_per_instruction();
        let depth = GemmSchedule::depth(bm, bn).max(per).next_multiple_of(per);
        for block_k in [depth, 2 * depth].into_iter().filter(|&d| d <= 32) {
            let base = GemmSchedule {
                block_m: bm,
                block_n: bn,
                block_k,
                split_k: 1,
                instruction,
                stages: 2,
            };
            if !instruction.is_fma() && base.check(dims).is_err() {
                continue;
            }
            let (steps, _) = base.k_steps(dims);
            let tiles = base.tiles(dims);
            // Tensor-core schedules also as rings of three and four stages, where the
            // device's shared memory holds them.
            let fits = |s: &GemmSchedule| {
                s.largest_operand_bytes() + device.shared_bytes_reserved_per_block as usize
                    <= device.shared_bytes_per_sm as usize
            };
            let stages: &[usize] = match instruction {
                GemmInstruction::Fma => &[2],
                _ => &GemmSchedule::STAGES,
            };
            for &stages in stages {
                let s = GemmSchedule { stages, ..base };
                if fits(&s) {
                    push_with_splits(&mut out, s, steps, tiles, device);
                }
            }
        }
    }
    out
}

/// `base` (unsplit), and with the splits that bring the grid to one, two, four or eight
/// waves of one block per SM, each slice keeping at least eight k steps: for each, the
/// largest split within the waves and the smallest that fills them. (Sixteen tiles on
/// 132 SMs: 8 slices make one wave of 128 blocks, 9 make 144, and the twelve of the
/// second wave take as long as the first wave.)
fn push_with_splits(
    out: &mut Vec<GemmSchedule>,
    base: GemmSchedule,
    steps: usize,
    tiles: usize,
    device: &Device,
) {
    out.push(base);
    for waves in [1, 2, 4, 8] {
        let slots = waves * device.sms as usize;
        let tiles = tiles.max(1);
        for want in [slots / tiles, slots.div_ceil(tiles)] {
            let split = want.min(steps / 8).min(1024);
            let s = GemmSchedule {
                split_k: split,
                ..base
            };
            if split > 1 && !out.contains(&s) {
                out.push(s);
            }
        }
    }
}

/// For each instruction the precision allows, the fastest GEMM schedule of kernel
/// `body` on it and its predicted seconds (the statistics unsplit): what a report
/// gives as the reason for the planner's choice.
pub fn fastest_per_instruction(
    body: &Graph,
    device: &Device,
    precision: Precision,
    layouts: InputLayouts,
) -> Vec<(GemmSchedule, f64)> {
    let Some((anchor, dims)) = gemm_anchor(body).and_then(|a| Some((a, GemmDims::of(body, a)?)))
    else {
        return vec![];
    };
    let work = operand_work(body, anchor, &dims, layouts);
    let mut best: Vec<(GemmSchedule, f64)> = vec![];
    for s in candidate_schedules(&dims, device, precision) {
        let t = seconds(
            &gemm_with(body, anchor, &dims, &s, work, 1, layouts).launches,
            device,
        );
        match best.iter_mut().find(|b| b.0.instruction == s.instruction) {
            Some(b) if t < b.1 => *b = (s, t),
            Some(_) => {}
            None => best.push((s, t)),
        }
    }
    best
}

/// The fastest schedule for GEMM kernel `body`, with its predicted seconds: the tile
/// and split of `k`, and for statistics over the result, the split of that reduction.
pub fn best_schedule(
    body: &Graph,
    device: &Device,
    precision: Precision,
    layouts: InputLayouts,
) -> Option<(Schedule, f64)> {
    let anchor = gemm_anchor(body)?;
    let dims = GemmDims::of(body, anchor)?;
    let work = operand_work(body, anchor, &dims, layouts);
    let time = |s: &GemmSchedule, split: usize| {
        seconds(
            &gemm_with(body, anchor, &dims, s, work, split, layouts).launches,
            device,
        )
    };
    // Ties (schedules that device memory bounds alike) go to the least other work.
    let besides_memory = |s: &GemmSchedule| {
        seconds_besides_memory(
            &gemm_with(body, anchor, &dims, s, work, 1, layouts).launches,
            device,
        )
    };
    let (gemm, t) = candidate_schedules(&dims, device, precision)
        .into_iter()
        .map(|s| (s, time(&s, 1)))
        .min_by(|a, b| {
            a.1.total_cmp(&b.1)
                .then_with(|| besides_memory(&a.0).total_cmp(&besides_memory(&b.0)))
        })?;
    let statistics = body
        .outputs
        .iter()
        .find(|o| reduces(body, o.value, anchor))
        .and_then(|o| first_reduction(body, o.value));
    let Some(red) = statistics else {
        return Some((Schedule::gemm(gemm), t));
    };
    let (split, t) = candidate_splits(body, red, device, layouts)
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
