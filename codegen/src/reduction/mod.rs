//! Reductions (`reduce_sum`, `reduce_mean`, `reduce_max`): per-channel batch statistics,
//! global average pooling, the loss, bias and BatchNorm-parameter gradients.
//!
//! As a kernel's anchor, each reduced element gets a team of threads: a warp when the
//! reduction is short, the whole block when it is long. The team strides through the
//! reduced elements (evaluating the prologue on each; a lane takes runs of adjacent
//! elements, loaded as vectors, where the reduced axes end the shape), combines its
//! partial results with butterfly shuffles, and for a block, once more through shared
//! memory; then one thread finishes the element: the mean's division, the epilogue, the
//! stores. Sibling reductions over the same elements and axes (a sum and a sum of
//! squares) share the loop. Elsewhere in a body a reduction is a plain loop ([`serial`]).

use crate::error::Result;
use crate::eval::{Emitter, Run, Slices};
use crate::index::Index;
use crate::kernel::Geometry;
use crate::ptx::{ins, Operand, Reg, Ty, SHARED};
use crate::runs::Runs;
use calib_ir::{numel, Layout, Op, Value, BLOCK_TEAM_FROM, MAX_TEAMS};

mod channels_last;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Combine {
    Sum,
    Mean,
    Max,
}

/// One reduction node of a body.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Reduce {
    pub node: Value,
    combine: Combine,
    input: Value,
    axes: Vec<usize>,
}

impl Reduce {
    /// The f32 reduction at body node `v`, if it is one.
    pub fn of(cx: &Emitter, v: Value) -> Option<Reduce> {
        let node = cx.node(v);
        let (combine, axes) = match &node.op {
            Op::ReduceSum { axes, .. } => (Combine::Sum, axes),
            Op::ReduceMean { axes, .. } => (Combine::Mean, axes),
            Op::ReduceMax { axes, .. } => (Combine::Max, axes),
            _ => return None,
        };
        Some(Reduce {
            node: v,
            combine,
            input: node.inputs[0],
            axes: axes.clone(),
        })
    }

    fn identity(&self) -> Operand {
        match self.combine {
            Combine::Max => Operand::F32(f32::NEG_INFINITY.to_bits()),
            _ => Operand::f32(0.0),
        }
    }

    fn fold(&self, cx: &mut Emitter, acc: Reg, v: Operand) {
        match self.combine {
            Combine::Max => ins!(cx.b, "max.NaN.f32 {acc}, {acc}, {v}"),
            _ => ins!(cx.b, "add.rn.f32 {acc}, {acc}, {v}"),
        }
    }

    /// The mean's division, in place.
    fn finish(&self, cx: &mut Emitter, acc: Reg, count: usize) {
        if self.combine == Combine::Mean {
            ins!(
                cx.b,
                "div.rn.f32 {acc}, {acc}, {}",
                Operand::f32(count as f32)
            );
        }
    }

    /// The input's extents along the kept and along the reduced axes.
    fn split_shape(&self, shape: &[usize]) -> (Vec<usize>, Vec<usize>) {
        let (mut kept, mut reduced) = (vec![], vec![]);
        for (a, &d) in shape.iter().enumerate() {
            if self.axes.contains(&a) {
                reduced.push(d);
            } else {
                kept.push(d);
            }
        }
        (kept, reduced)
    }

    /// Input coordinates from coordinates along the kept and the reduced axes.
    fn merge(&self, rank: usize, kept: &[Operand], reduced: &[Operand]) -> Vec<Operand> {
        let (mut k, mut r) = (kept.iter(), reduced.iter());
        (0..rank)
            .map(|a| {
                *if self.axes.contains(&a) {
                    r.next()
                } else {
                    k.next()
                }
                .expect("ranks agree")
            })
            .collect()
    }
}

/// Reduction node `v` at `at`, as a loop over the reduced elements.
pub(crate) fn serial(cx: &mut Emitter, v: Value, at: &Index) -> Result<Operand> {
    let r = Reduce::of(cx, v).ok_or_else(|| cx.unsupported(v, "not a reduction"))?;
    // bf16/tf32 results would need rounding after the fold; no policy makes them.
    if cx.ty(v).dtype != calib_ir::DType::F32 {
        return Err(cx.unsupported(v, "only f32 reductions are generated"));
    }
    let shape = cx.ty(r.input).shape.clone();
    let (kept_dims, reduced_dims) = r.split_shape(&shape);
    // `keepdims` only adds axes of extent 1: the result's flat index is the flat index
    // among the kept coordinates.
    let out_shape = cx.ty(v).shape.clone();
    let flat = cx.flat(at, &out_shape);
    let kept = cx.coords(&Index::flat(flat), &kept_dims);
    let acc = cx.b.materialize(r.identity(), Ty::F32);
    cx.for_each(&reduced_dims, &mut |cx, red| {
        let x = cx.value(r.input, &Index::coords(r.merge(shape.len(), &kept, red)))?;
        r.fold(cx, acc, x);
        Ok(())
    })?;
    r.finish(cx, acc, numel(&reduced_dims));
    Ok(acc.into())
}

/// The reductions a launch can be built around: among the `needed` nodes not read
/// back from memory, the largest set of f32 reductions of one input shape over the
/// same axes, preferring the last such set.
pub(crate) fn anchors(cx: &Emitter, needed: &[bool]) -> Vec<Reduce> {
    let all: Vec<Reduce> = (0..cx.kernel.body.nodes.len())
        .filter(|&i| needed[i] && !cx.is_stored(Value(i)))
        .filter_map(|i| Reduce::of(cx, Value(i)))
        .filter(|r| cx.ty(r.node).dtype == calib_ir::DType::F32)
        .collect();
    let same =
        |a: &Reduce, b: &Reduce| a.axes == b.axes && cx.ty(a.input).shape == cx.ty(b.input).shape;
    let mut best: Vec<Reduce> = vec![];
    for r in all.iter().rev() {
        let group: Vec<Reduce> = all.iter().filter(|o| same(o, r)).cloned().collect();
        if group.len() > best.len() {
            best = group;
        }
    }
    best
}

const THREADS: usize = 256;
const WARP: usize = 32;
/// Elements a lane folds per loop iteration, each into an accumulator of its own: their
/// loads go out together, and the partial sums stay short.
const UNROLL: usize = 4;

/// Where a split reduction left its partial results, for the launches after it:
/// `workspace[(slot * slices + s) * outputs + j]` is slice `s` of output `j` of the
/// group's reduction `slot`, not yet finished (a mean is still a sum).
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct SplitResult {
    pub group: Vec<Reduce>,
    pub slices: usize,
    pub outputs: usize,
    pub length: usize,
    /// Where the partial results start in the workspace, in elements.
    pub offset: usize,
}

/// How a launch around a group lays out its work, whichever way its threads go.
pub(super) struct Teams {
    kept_dims: Vec<usize>,
    reduced_dims: Vec<usize>,
    /// Reduced elements (the results), and the inputs each one folds.
    outputs: usize,
    length: usize,
    split: usize,
    runs: Option<Runs>,
    /// Each slice's inputs, in elements (whole runs where there are runs).
    chunk: usize,
    /// Lanes a team: a warp, or for long slices the whole block.
    team_size: usize,
    /// Where split partial results go: the workspace, from element `offset` on.
    workspace: Option<Reg>,
    offset: usize,
}

impl Teams {
    fn block_team(&self) -> bool {
        self.team_size == THREADS
    }
}

/// The reduction kernel around `group` (see [`anchors`]), storing body outputs
/// `aligned` (as many elements as a reduction's result) in its epilogue; with
/// `split > 1`, each reduced element's inputs are cut into that many slices whose
/// partial results go to the workspace instead. Over channels-last images the threads
/// keep channels ([`channels_last`]); the sums come out the same either way.
pub(crate) fn emit(
    cx: &mut Emitter,
    group: &[Reduce],
    aligned: &[usize],
    split: usize,
    offset: usize,
) -> Result<(Geometry, Option<SplitResult>)> {
    let shape = cx.ty(group[0].input).shape.clone();
    let (kept_dims, reduced_dims) = group[0].split_shape(&shape);
    let (outputs, length) = (numel(&kept_dims), numel(&reduced_dims));
    let split = split.clamp(1, length.max(1));
    let runs = runs(cx, group);
    // Slices of whole runs: the last one may come out short, or even empty.
    let chunk = calib_ir::reduction_chunk(&shape, &group[0].axes, split);
    let team_size = if chunk >= BLOCK_TEAM_FROM {
        THREADS
    } else {
        WARP
    };
    let workspace = match split {
        1 => None,
        _ => {
            let ws = cx.workspace()?;
            let needed = 4 * (offset + split * group.len() * outputs);
            let have = cx
                .kernel
                .workspace
                .map_or(0, |b| cx.program.buffer(b).ty.size_bytes());
            if have < needed {
                return Err(crate::CodegenError::Kernel {
                    kernel: cx.kernel.name.clone(),
                    detail: format!(
                        "a reduction split {split} ways needs a {needed}-byte workspace, not {have}"
                    ),
                });
            }
            Some(ws)
        }
    };
    let teams = Teams {
        kept_dims,
        reduced_dims,
        outputs,
        length,
        split,
        runs,
        chunk,
        team_size,
        workspace,
        offset,
    };
    let geometry = if channels_last::applies(cx, group, &teams) {
        channels_last::emit(cx, group, aligned, &teams)?
    } else {
        emit_lanes(cx, group, aligned, &teams)?
    };
    let split = (split > 1).then(|| SplitResult {
        group: group.to_vec(),
        slices: split,
        outputs,
        length,
        offset,
    });
    Ok((geometry, split))
}

/// A team of lanes per reduced element and slice: a lane folds runs (or elements) a
/// team apart into four accumulators, which the team combines in a fixed tree.
fn emit_lanes(
    cx: &mut Emitter,
    group: &[Reduce],
    aligned: &[usize],
    teams: &Teams,
) -> Result<Geometry> {
    let Teams {
        outputs,
        split,
        team_size,
        ..
    } = *teams;
    let block_team = teams.block_team();
    let per_block = THREADS / team_size;
    let count = outputs * split;
    let blocks = count.min(MAX_TEAMS).div_ceil(per_block);
    let (tid, ctaid) = (cx.tid(), cx.ctaid());
    let lane = cx.b.rem_u32(tid, team_size);
    let team = if block_team {
        ctaid
    } else {
        let warp = cx.b.div_u32(tid, WARP);
        cx.b.mad_u32(ctaid, Operand::Int(per_block as i64), warp)
    };
    // Lane 0 of a warp team, or thread 0 of a block team, finishes the element.
    let leader = cx.b.setp("eq", Ty::U32, lane, Operand::Int(0));
    cx.for_strided(team, count, blocks * per_block, |cx, t| {
        let (j, slice) = (cx.b.rem_u32(t, outputs), cx.b.div_u32(t, outputs));
        let kept = cx.coords(&Index::flat(j), &teams.kept_dims);
        let accs = vec![accumulators(cx, group)];
        fold_lane(cx, group, teams, &accs, &[kept], [lane, slice])?;
        let accs = lane_total(cx, group, &accs[0]);
        warp_combine(cx, group, &accs, &[16, 8, 4, 2, 1]);
        if block_team {
            block_combine(cx, group, &accs, tid);
        }
        cx.if_then(leader, true, |cx| {
            finish(cx, group, aligned, teams, &accs, [j, slice])
        })?;
        if block_team {
            // The next element's partial results reuse the shared slots.
            ins!(cx.b, "bar.sync 0");
        }
        Ok(())
    })?;
    let shared_bytes = if block_team {
        THREADS / WARP * group.len() * 4
    } else {
        0
    };
    Ok(Geometry {
        blocks,
        threads: THREADS,
        shared_bytes,
        max_registers: None,
    })
}

/// [`UNROLL`] fresh accumulators for each reduction of the group.
fn accumulators(cx: &mut Emitter, group: &[Reduce]) -> Vec<Vec<Reg>> {
    group
        .iter()
        .map(|r| {
            (0..UNROLL)
                .map(|_| cx.b.materialize(r.identity(), Ty::F32))
                .collect()
        })
        .collect()
}

/// Folds lane `lane`'s share of `slice` into `accs` (per kept element `kept`, per
/// reduction, [`UNROLL`] registers): the runs, or elements, a team apart.
fn fold_lane(
    cx: &mut Emitter,
    group: &[Reduce],
    teams: &Teams,
    accs: &[Vec<Vec<Reg>>],
    kept: &[Vec<Operand>],
    [lane, slice]: [Operand; 2],
) -> Result<()> {
    let (chunk, team_size) = (teams.chunk, teams.team_size);
    match &teams.runs {
        Some(runs) => {
            let first = cx.b.mul_u32(slice, Operand::Int((chunk / runs.len) as i64));
            cx.for_strided(lane, chunk / runs.len, team_size, |cx, i| {
                let run = cx.b.add_u32(first, i);
                fold_run(cx, group, accs, kept, runs, run)
            })
        }
        None => {
            let start = cx.b.mul_u32(slice, Operand::Int(chunk as i64));
            cx.for_strided(lane, chunk, team_size * UNROLL, |cx, i| {
                fold_elements(cx, group, accs, kept, [start, i], teams)
            })
        }
    }
}

/// A lane's accumulators in a fixed tree, (a0 + a1) + (a2 + a3), one total a reduction.
fn lane_total(cx: &mut Emitter, group: &[Reduce], accs: &[Vec<Reg>]) -> Vec<Reg> {
    group
        .iter()
        .zip(accs)
        .map(|(r, a)| {
            r.fold(cx, a[0], a[1].into());
            r.fold(cx, a[2], a[3].into());
            r.fold(cx, a[0], a[2].into());
            a[0]
        })
        .collect()
}

/// Finishes kept element `j` of `slice` from the team's totals `accs`: into the
/// workspace when split, else the mean's division, then the epilogue's stores.
fn finish(
    cx: &mut Emitter,
    group: &[Reduce],
    aligned: &[usize],
    teams: &Teams,
    accs: &[Reg],
    [j, slice]: [Operand; 2],
) -> Result<()> {
    let Teams {
        outputs,
        split,
        length,
        offset,
        ..
    } = *teams;
    match teams.workspace {
        Some(ws) => {
            for (slot, &acc) in accs.iter().enumerate() {
                let row = cx.b.add_u32(slice, Operand::Int((slot * split) as i64));
                let at = cx.b.mad_u32(row, Operand::Int(outputs as i64), j);
                let at = cx.b.add_u32(at, Operand::Int(offset as i64));
                let addr = cx.b.address(ws, at, 4);
                ins!(cx.b, "st.global.f32 [{addr}], {acc}");
            }
            Ok(())
        }
        None => {
            let at = Index::flat(j);
            for (r, &acc) in group.iter().zip(accs) {
                r.finish(cx, acc, length);
                cx.bind(r.node, &at, acc.into());
            }
            let anchor_shape = cx.ty(group[0].node).shape.clone();
            cx.store_aligned(aligned, &anchor_shape, &at)
        }
    }
}

/// The runs of `group`'s reduced elements, longest first, where the reduced axes end the
/// input's shape (so that in a row-major buffer a run is adjacent); a split's slices
/// then hold whole runs. The choice never looks at how buffers are stored: it fixes the
/// order of the sums, and a step stored channels-last must give the same bits (its
/// buffers are read element by element in the same order).
fn runs(cx: &Emitter, group: &[Reduce]) -> Option<Runs> {
    let r = &group[0];
    let shape = &cx.ty(r.input).shape;
    let run = calib_ir::reduction_run(shape, &r.axes)?;
    Runs::over(&r.split_shape(shape).1, run.len, run.walked)
}

/// Folds run `run` (of all the group's runs, in order) into the accumulators of each
/// kept element of `kept`: one vector load per row-major input of the reduced shape,
/// then each element's value. Where `kept` holds several channels of a channels-last
/// image, each element's channel 0 comes first, and its load reads them all.
fn fold_run(
    cx: &mut Emitter,
    group: &[Reduce],
    accs: &[Vec<Vec<Reg>>],
    kept: &[Vec<Operand>],
    runs: &Runs,
    run: Operand,
) -> Result<()> {
    let shape = cx.ty(group[0].input).shape.clone();
    // The last slice of an uneven split ends before its loop does.
    let inside = cx.b.lt_u32(run, Operand::Int(runs.count() as i64));
    cx.when_all(vec![inside], |cx| {
        let reduced = runs.elements(cx, run);
        let at = |c: usize, u: usize| group[0].merge(shape.len(), &kept[c], &reduced[u]);
        if let [_] = kept {
            let elements: Vec<Vec<Operand>> = (0..runs.len).map(|u| at(0, u)).collect();
            let walk = Run {
                elements: &elements,
                walked: runs.walked.len(),
            };
            let inputs: Vec<Value> = group.iter().map(|r| r.input).collect();
            cx.load_runs(&inputs, &shape, Layout::RowMajor, &walk)?;
        }
        cx.b.parallel_chains(runs.len * kept.len());
        for u in 0..runs.len {
            for (c, accs) in accs.iter().enumerate() {
                for (r, accs) in group.iter().zip(accs) {
                    let x = cx.value(r.input, &Index::coords(at(c, u)))?;
                    r.fold(cx, accs[u % UNROLL], x);
                }
            }
        }
        cx.b.parallel_chains(1);
        Ok(())
    })
}

/// Folds [`UNROLL`] elements a team's width apart, from `i` into the slice starting
/// at `start`, into the accumulators of each kept element of `kept`, one each.
fn fold_elements(
    cx: &mut Emitter,
    group: &[Reduce],
    accs: &[Vec<Vec<Reg>>],
    kept: &[Vec<Operand>],
    [start, i]: [Operand; 2],
    teams: &Teams,
) -> Result<()> {
    let shape = cx.ty(group[0].input).shape.clone();
    let (length, chunk, team_size) = (teams.length, teams.chunk, teams.team_size);
    cx.b.parallel_chains(UNROLL * kept.len());
    for u in 0..UNROLL {
        let within = cx.b.add_u32(i, Operand::Int((u * team_size) as i64));
        let at = cx.b.add_u32(start, within);
        let inside = vec![
            cx.b.lt_u32(within, Operand::Int(chunk as i64)),
            cx.b.lt_u32(at, Operand::Int(length as i64)),
        ];
        let clamped = cx.clamp_index(at, length);
        let reduced = cx.coords(&Index::flat(clamped), &teams.reduced_dims);
        for (kept, accs) in kept.iter().zip(accs) {
            for (r, accs) in group.iter().zip(accs) {
                let idx = Index::coords(r.merge(shape.len(), kept, &reduced));
                let x = cx.select_or(inside.clone(), Ty::F32, r.identity(), |cx| {
                    cx.value(r.input, &idx)
                })?;
                r.fold(cx, accs[u], x);
            }
        }
    }
    cx.b.parallel_chains(1);
    Ok(())
}

impl Slices for SplitResult {
    fn holds(&self, v: Value) -> bool {
        self.group.iter().any(|r| r.node == v)
    }

    fn count(&self) -> usize {
        self.slices
    }

    /// Reduction `v`'s value at output element `at`: its slices' partial results
    /// combined in slice order, then finished.
    fn combine(&self, cx: &mut Emitter, v: Value, workspace: Reg, at: &Index) -> Result<Operand> {
        let slot = self.group.iter().position(|r| r.node == v);
        let slot = slot.ok_or_else(|| cx.unsupported(v, "not one of the split reductions"))?;
        read_split(cx, self, slot, workspace, at)
    }
}

fn read_split(
    cx: &mut Emitter,
    split: &SplitResult,
    slot: usize,
    workspace: Reg,
    at: &Index,
) -> Result<Operand> {
    let r = &split.group[slot];
    let j = cx.flat(at, &cx.ty(r.node).shape.clone());
    let acc = cx.b.materialize(r.identity(), Ty::F32);
    for s in 0..split.slices {
        let row = split.offset + (slot * split.slices + s) * split.outputs;
        let at = cx.b.add_u32(j, Operand::Int(row as i64));
        let addr = cx.b.address(workspace, at, 4);
        let v = cx.b.reg(Ty::F32);
        ins!(cx.b, "ld.global.f32 {v}, [{addr}]");
        r.fold(cx, acc, v.into());
    }
    r.finish(cx, acc, split.length);
    Ok(acc.into())
}

/// Combines each accumulator across the lanes of every warp whose indices differ in
/// `offsets`' bits, in that order (all those lanes get it): with 16, 8, 4, 2, 1, the
/// whole warp.
fn warp_combine(cx: &mut Emitter, group: &[Reduce], accs: &[Reg], offsets: &[usize]) {
    for (r, &acc) in group.iter().zip(accs) {
        let other = cx.b.reg(Ty::F32);
        for &offset in offsets {
            ins!(cx.b, "shfl.sync.bfly.b32 {other}, {acc}, {offset}, 31, -1");
            r.fold(cx, acc, other.into());
        }
    }
}

/// Combines the warps' results of a block team through shared memory: warp 0 ends up
/// with the block's result in every lane.
fn block_combine(cx: &mut Emitter, group: &[Reduce], accs: &[Reg], tid: Operand) {
    let k = group.len();
    let warp = cx.b.div_u32(tid, WARP);
    let lane = cx.b.rem_u32(tid, WARP);
    let base = cx.b.reg(Ty::U32);
    ins!(cx.b, "mov.u32 {base}, {SHARED}");
    let first_lane = cx.b.setp("eq", Ty::U32, lane, Operand::Int(0));
    for (slot, &acc) in accs.iter().enumerate() {
        let at =
            cx.b.mad_u32(warp, Operand::Int(k as i64), Operand::Int(slot as i64));
        let addr = byte_address(cx, base.into(), at);
        ins!(cx.b, "@{first_lane} st.shared.f32 [{addr}], {acc}");
    }
    ins!(cx.b, "bar.sync 0");
    let first_warp = cx.b.setp("eq", Ty::U32, warp, Operand::Int(0));
    let has_partial =
        cx.b.setp("lt", Ty::U32, lane, Operand::Int((THREADS / WARP) as i64));
    let reads = cx.b.reg(Ty::Pred);
    ins!(cx.b, "and.pred {reads}, {first_warp}, {has_partial}");
    for (slot, (r, &acc)) in group.iter().zip(accs).enumerate() {
        let at =
            cx.b.mad_u32(lane, Operand::Int(k as i64), Operand::Int(slot as i64));
        let addr = byte_address(cx, base.into(), at);
        ins!(cx.b, "mov.f32 {acc}, {}", r.identity());
        ins!(cx.b, "@{reads} ld.shared.f32 {acc}, [{addr}]");
    }
    warp_combine(cx, group, accs, &[16, 8, 4, 2, 1]);
}

fn byte_address(cx: &mut Emitter, base: Operand, index: Operand) -> Operand {
    let bytes = cx.b.mul_u32(index, Operand::Int(4));
    cx.b.add_u32(base, bytes)
}
