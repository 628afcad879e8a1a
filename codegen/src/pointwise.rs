//! The pointwise family: one thread per output element, the whole body evaluated at
//! that element. It is also what every other family uses for outputs outside its anchor's
//! iteration space (side outputs), and the fallback for any body without a specialized
//! anchor: correct for every op the evaluator knows, fast for maps.

use crate::error::Result;
use crate::eval::{Emitter, Run};
use crate::index::Index;
use crate::kernel::Geometry;
use crate::ptx::Operand;
use calib_ir::{numel, Layout, Op, Value};

pub(crate) const THREADS: usize = 256;
/// Blocks of a pointwise launch; larger outputs are covered by grid-stride loops.
const MAX_BLOCKS: usize = 1 << 16;

/// The pointwise kernel computing body outputs `outputs`.
pub(crate) fn emit(cx: &mut Emitter, outputs: &[usize]) -> Result<Geometry> {
    // Threads the largest group of outputs needs (a quarter of its elements when each
    // thread takes runs of four).
    let threads_needed = groups(cx, outputs)
        .iter()
        .map(
            |(n, members)| match runs_of_four(cx, members, *n, walk_layout(cx, members)) {
                Some(_) => n / RUN,
                None => *n,
            },
        )
        .max()
        .unwrap_or(1);
    let geometry = Geometry {
        blocks: threads_needed.div_ceil(THREADS).clamp(1, MAX_BLOCKS),
        threads: THREADS,
        shared_bytes: 0,
    };
    passes(cx, outputs, &geometry)?;
    Ok(geometry)
}

/// Elements a thread takes at once along the innermost axis, when shapes allow.
const RUN: usize = 4;

/// `outputs` grouped by element count: outputs of one count are computed together.
fn groups(cx: &Emitter, outputs: &[usize]) -> Vec<(usize, Vec<usize>)> {
    let mut groups: Vec<(usize, Vec<usize>)> = vec![];
    for &i in outputs {
        let n = numel(&cx.ty(cx.kernel.body.outputs[i].value).shape);
        match groups.iter_mut().find(|g| g.0 == n) {
            Some(g) => g.1.push(i),
            None => groups.push((n, vec![i])),
        }
    }
    groups
}

/// The one shape of a group's outputs, if they have one.
fn common_shape<'e>(cx: &'e Emitter, members: &[usize]) -> Option<&'e [usize]> {
    let shape = &cx.ty(cx.kernel.body.outputs[members[0]].value).shape;
    members
        .iter()
        .all(|&i| &cx.ty(cx.kernel.body.outputs[i].value).shape == shape)
        .then_some(shape)
}

/// The order a group's threads walk its elements in: the memory order of the outputs'
/// buffers when they share one shape and one layout (so that consecutive threads store
/// to consecutive addresses), else row-major.
fn walk_layout(cx: &Emitter, members: &[usize]) -> Layout {
    let layout = cx.output_layout(members[0]);
    let shared = common_shape(cx, members).is_some()
        && members.iter().all(|&i| cx.output_layout(i) == layout);
    if shared {
        layout
    } else {
        Layout::RowMajor
    }
}

/// How a group's threads walk runs of four elements adjacent in memory: over the
/// innermost axis when four divides it, else over the innermost two axes taken as one
/// (a 14x14 plane: the run's four elements may span two rows, and still share their
/// channel and batch coordinates and a 128-bit load).
struct Runs {
    /// The memory-order shape with the walked axes merged and divided by four: one
    /// element per run.
    shape: Vec<usize>,
    /// The memory-order extents of the walked (innermost) axes.
    walked: Vec<usize>,
}

/// The runs of four of a group, when every output has one shape whose innermost one or
/// two extents (in `layout`) have a product four divides, and there are enough elements
/// to keep the GPU busy.
fn runs_of_four(cx: &Emitter, members: &[usize], n: usize, layout: Layout) -> Option<Runs> {
    let memory = layout.to_memory(common_shape(cx, members)?);
    let rank = memory.len();
    let walked = calib_ir::run_axes(&memory, RUN)?;
    if n < 1 << 16 {
        return None;
    }
    let mut shape = memory[..rank - walked].to_vec();
    shape.push(memory[rank - walked..].iter().product::<usize>() / RUN);
    Some(Runs {
        shape,
        walked: memory[rank - walked..].to_vec(),
    })
}

/// Grid-stride loops over every thread of a launch of shape `geometry`, one per distinct
/// element count among `outputs`: outputs of one count are computed together, sharing
/// their common subexpressions.
pub(crate) fn passes(cx: &mut Emitter, outputs: &[usize], geometry: &Geometry) -> Result<()> {
    let groups = groups(cx, outputs);
    if groups.is_empty() {
        return Ok(());
    }
    let (tid, ctaid) = (cx.tid(), cx.ctaid());
    let thread =
        cx.b.mad_u32(ctaid, Operand::Int(geometry.threads as i64), tid);
    let stride = geometry.blocks * geometry.threads;
    for (n, members) in groups {
        let store_all = |cx: &mut Emitter, at: &Index| -> Result<()> {
            for &i in &members {
                let out = cx.kernel.body.outputs[i].value;
                let value = cx.value(cx.stored(out), at)?;
                cx.store(i, at, value)?;
            }
            Ok(())
        };
        let layout = walk_layout(cx, &members);
        let shape = cx
            .ty(cx.kernel.body.outputs[members[0]].value)
            .shape
            .clone();
        match runs_of_four(cx, &members, n, layout) {
            // Four neighbours in memory share their coordinates (and everything that
            // does not depend on the innermost axis), and their loads go out together.
            Some(runs) => cx.for_strided(thread, n / RUN, stride, |cx, r| {
                run_of_four(cx, &members, &shape, layout, &runs, r)
            })?,
            None if layout.is_row_major() => {
                cx.for_strided(thread, n, stride, |cx, e| store_all(cx, &Index::flat(e)))?
            }
            None => cx.for_strided(thread, n, stride, |cx, e| {
                let memory = cx.coords(&Index::flat(e), &layout.to_memory(&shape));
                store_all(cx, &Index::coords(layout.to_logical(&memory)))
            })?,
        }
    }
    Ok(())
}

/// Run `r` of a group whose outputs take runs of four: the elements' coordinates,
/// the loads they share, their values and the stores. Four neighbours in memory share
/// their outer coordinates (and everything that depends on nothing else), and their
/// loads go out together.
fn run_of_four(
    cx: &mut Emitter,
    members: &[usize],
    shape: &[usize],
    layout: Layout,
    runs: &Runs,
    r: Operand,
) -> Result<()> {
    let mut outer = cx.coords(&Index::flat(r), &runs.shape);
    let q = outer.pop().expect("a rank");
    let first = cx.b.mul_u32(q, Operand::Int(RUN as i64));
    let elements: Vec<Vec<Operand>> = (0..RUN)
        .map(|u| {
            let f = cx.b.add_u32(first, Operand::Int(u as i64));
            let mut memory = outer.clone();
            memory.extend(cx.coords(&Index::flat(f), &runs.walked));
            layout.to_logical(&memory)
        })
        .collect();
    let run = Run {
        elements: &elements,
        walked: runs.walked.len(),
    };
    // Inputs stored like the outputs and read where the outputs are (no index map
    // between) come in with one 128-bit load per run.
    for v in same_shape_inputs(cx, shape, layout) {
        cx.load_run(v, &run)?;
    }
    let outputs: Vec<Value> = members
        .iter()
        .map(|&i| cx.kernel.body.outputs[i].value)
        .collect();
    match concat_outside_run(cx, &outputs, layout, run.walked) {
        Some((concat, axis)) => concat_run(cx, members[0], concat, axis, &run),
        None => evaluate_and_store(cx, members, &outputs, &run, None),
    }
}

/// The output of a one-output group that is a `concat` along an axis a run does not
/// walk: the four elements of a run then read the same operand, and the run branches
/// once rather than each element.
fn concat_outside_run(
    cx: &Emitter,
    outputs: &[Value],
    layout: Layout,
    walked: usize,
) -> Option<(Value, usize)> {
    let &[v] = outputs else { return None };
    let Op::Concat { axis } = cx.node(v).op else {
        return None;
    };
    let rank = cx.ty(v).rank();
    let position = layout.order(rank).iter().position(|&a| a == axis)?;
    (position < rank - walked).then_some((v, axis))
}

/// Output `i` = `concat` `v` along `axis` over `run`: a branch per operand, taken by
/// the run's shared coordinate along `axis`, in which the four elements are that
/// operand's.
fn concat_run(cx: &mut Emitter, i: usize, v: Value, axis: usize, run: &Run) -> Result<()> {
    let at = run.elements[0][axis];
    cx.concat_branches(v, axis, at, |cx, x, start| {
        let inner = cx.b.sub_u32(at, Operand::Int(start as i64));
        evaluate_and_store(cx, &[i], &[x], run, Some((axis, inner)))
    })
}

/// Evaluates `values[j]` at each element of `run` (with coordinate `axis` replaced
/// where `shift` says) and stores the four results to body output `members[j]` at the
/// run's elements: one vector store where the run is aligned.
pub(crate) fn evaluate_and_store(
    cx: &mut Emitter,
    members: &[usize],
    values: &[Value],
    run: &Run,
    shift: Option<(usize, Operand)>,
) -> Result<()> {
    cx.b.parallel_chains(RUN);
    let mut results = vec![vec![]; members.len()];
    for at in run.elements {
        let mut at = at.clone();
        if let Some((axis, coordinate)) = shift {
            at[axis] = coordinate;
        }
        for (result, &v) in results.iter_mut().zip(values) {
            result.push(cx.value(cx.stored(v), &Index::coords(at.clone()))?);
        }
    }
    cx.b.parallel_chains(1);
    for (result, &i) in results.iter().zip(members) {
        if !cx.store_run(i, run, result)? {
            for (at, &value) in run.elements.iter().zip(result) {
                cx.store(i, &Index::coords(at.clone()), value)?;
            }
        }
    }
    Ok(())
}

/// The f32, tf32 and bf16 body inputs of `shape` stored in `layout`, which elementwise
/// outputs of that shape walked in that layout read at their own coordinates.
pub(crate) fn same_shape_inputs(
    cx: &Emitter,
    shape: &[usize],
    layout: Layout,
) -> Vec<calib_ir::Value> {
    cx.kernel
        .body
        .inputs()
        .enumerate()
        .map(|(slot, (_, v))| (slot, v))
        .filter(|&(slot, v)| {
            cx.ty(v).shape == shape
                && cx.input_layout(slot) == layout
                && matches!(
                    cx.ty(v).dtype,
                    calib_ir::DType::F32 | calib_ir::DType::TF32 | calib_ir::DType::BF16
                )
        })
        .map(|(_, v)| v)
        .collect()
}
