//! The pointwise family: one thread per output element, the whole body evaluated at
//! that element. It is also what every other family uses for outputs outside its anchor's
//! iteration space (side outputs), and the fallback for any body without a specialized
//! anchor: correct for every op the evaluator knows, fast for maps.

use crate::error::Result;
use crate::eval::{Emitter, Run};
use crate::index::Index;
use crate::kernel::Geometry;
use crate::ptx::Operand;
use crate::runs::Runs;
use crate::stationary::{channel_stationary, runs_a_pixel, Stationary};
use calib_ir::{numel, Layout, Op, Value};

pub(crate) const THREADS: usize = 256;
/// Blocks of a pointwise launch; larger outputs are covered by grid-stride loops.
const MAX_BLOCKS: usize = 1 << 16;
/// The register cap of a pooling kernel whose runs walk `channels` of a channels-last
/// image, every tap holding a value per channel: at 64, other window kernels' cap, the
/// SCNet-50 step's max-pooling adjoint spilled at four channels; at 128, at eight.
fn channel_window_register_cap(channels: usize) -> u32 {
    match channels {
        0..=4 => 128,
        _ => 168,
    }
}
/// Runs a thread that keeps its channels takes, about ([`channel_stationary`]).
const STATIONARY_RUNS: usize = 8;
/// Blocks a window kernel whose threads keep their channels keeps at least, taking
/// fewer runs a thread where the map is small: two for each multiprocessor of an H100
/// or H200. A resize's adjoint over 73,728 outputs, each a window of 25 taps, had nine
/// blocks. (Maps without windows keep eight runs a thread: their per-channel terms
/// cost more than the parallelism gains, in the cost model's predictions.)
const MIN_STATIONARY_BLOCKS: usize = 264;

/// The pointwise kernel computing body outputs `outputs`.
pub(crate) fn emit(cx: &mut Emitter, outputs: &[usize]) -> Result<Geometry> {
    // Threads the largest group of outputs needs (one per run where threads take runs),
    // and what its blocks must be a multiple of: where its threads can keep their
    // channels, the stride must be a whole number of pixels.
    // A window over a run of channels keeps every tap of each channel live.
    let windows = cx.kernel.body.nodes.iter().any(|n| n.op.reads_windows());
    // (threads, what blocks are a multiple of, channels a run walks at a pixel)
    let (threads_needed, multiple, channel_run) = groups(cx, outputs)
        .iter()
        .map(|(n, members)| {
            let layout = walk_layout(cx, members);
            match runs(cx, members, layout) {
                Some(runs) => match runs_a_pixel(layout, &runs) {
                    Some(q) => (
                        stationary_threads(n / runs.len, windows),
                        q / greatest_common_divisor(q, THREADS),
                        runs.len,
                    ),
                    None => (n / runs.len, 1, 0),
                },
                None => (*n, 1, 0),
            }
        })
        .max()
        .unwrap_or((1, 1, 0));
    let blocks = threads_needed.div_ceil(THREADS).next_multiple_of(multiple);
    let geometry = Geometry {
        blocks: blocks.clamp(1, MAX_BLOCKS),
        threads: THREADS,
        shared_bytes: 0,
        max_registers: (windows && channel_run > 0)
            .then(|| channel_window_register_cap(channel_run)),
    };
    passes(cx, outputs, &geometry)?;
    Ok(geometry)
}

/// Threads for `runs` runs whose threads keep their channels: [`STATIONARY_RUNS`] a
/// thread, or in window kernels fewer where that leaves fewer than
/// [`MIN_STATIONARY_BLOCKS`] blocks.
fn stationary_threads(runs: usize, windows: bool) -> usize {
    let per_thread = match windows {
        true => (runs / (MIN_STATIONARY_BLOCKS * THREADS)).clamp(1, STATIONARY_RUNS),
        false => STATIONARY_RUNS,
    };
    runs.div_ceil(per_thread)
}

fn greatest_common_divisor(a: usize, b: usize) -> usize {
    match b {
        0 => a,
        _ => greatest_common_divisor(b, a % b),
    }
}

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

/// The runs a group's threads take ([`calib_ir::pointwise_run`]).
fn runs(cx: &Emitter, members: &[usize], layout: Layout) -> Option<Runs> {
    let outputs: Vec<Value> = members
        .iter()
        .map(|&i| cx.kernel.body.outputs[i].value)
        .collect();
    let run = calib_ir::pointwise_run(&cx.kernel.body, &outputs, layout)?;
    let memory = layout.to_memory(&cx.ty(outputs[0]).shape);
    Runs::over(&memory, run.len, run.walked)
}

/// Grid-stride loops over every thread of a launch of shape `geometry`, one per distinct
/// element count among `outputs`: outputs of one count are computed together, sharing
/// their common subexpressions.
pub(crate) fn passes(cx: &mut Emitter, outputs: &[usize], geometry: &Geometry) -> Result<()> {
    if outputs.is_empty() {
        return Ok(());
    }
    let (tid, ctaid) = (cx.tid(), cx.ctaid());
    let thread =
        cx.b.mad_u32(ctaid, Operand::Int(geometry.threads as i64), tid);
    passes_by(cx, outputs, thread, geometry.blocks * geometry.threads)
}

/// [`passes`] by `stride` threads, this one at index `thread` among them: the threads
/// of one block where the last block of a launch stores what the others left it
/// ([`crate::serial_combine`]).
pub(crate) fn passes_by(
    cx: &mut Emitter,
    outputs: &[usize],
    thread: Operand,
    stride: usize,
) -> Result<()> {
    for (n, members) in groups(cx, outputs) {
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
        match runs(cx, &members, layout) {
            Some(runs) => match channel_stationary(layout, &runs, stride) {
                Some(per_pixel) => {
                    let outputs: Vec<Value> = (members.iter())
                        .map(|&i| cx.kernel.body.outputs[i].value)
                        .collect();
                    let walk = Stationary {
                        members: &members,
                        shape: &shape,
                        runs: &runs,
                        per_pixel,
                        column_stride: crate::pool::branching_column_stride(cx, &outputs),
                    };
                    match concat_of_channel_runs(cx, &members, &runs) {
                        Some(concat) => walk.emit_concat(
                            cx,
                            thread,
                            stride,
                            concat,
                            |cx, x, within, elements| {
                                concat_channels(cx, members[0], (concat, x), within, &elements)
                            },
                        )?,
                        None => walk.emit(cx, thread, stride, |cx, elements| {
                            run(cx, &members, &shape, layout, elements, 1)
                        })?,
                    }
                }
                None => cx.for_strided(thread, n / runs.len, stride, |cx, r| {
                    let elements: Vec<Vec<Operand>> = runs
                        .elements(cx, r)
                        .iter()
                        .map(|memory| layout.to_logical(memory))
                        .collect();
                    run(cx, &members, &shape, layout, elements, runs.walked.len())
                })?,
            },
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

/// A run of a group whose outputs take runs, at `elements` (logical coordinates): the
/// loads they share, their values and the stores. Neighbours in memory share their
/// outer coordinates (and everything that depends on nothing else), and their loads go
/// out together.
fn run(
    cx: &mut Emitter,
    members: &[usize],
    shape: &[usize],
    layout: Layout,
    elements: Vec<Vec<Operand>>,
    walked: usize,
) -> Result<()> {
    // Along an NHWC image's channels, whatever the run reads at its pixel comes in as
    // vectors too (`Emitter::load`).
    if layout == Layout::ChannelsLast && walked == 1 && shape.len() == 4 {
        let channels = elements.iter().map(|e| e[1]).collect();
        return cx.with_channel_run(channels, |cx| {
            evaluate_run(cx, members, shape, layout, &elements, walked)
        });
    }
    evaluate_run(cx, members, shape, layout, &elements, walked)
}

fn evaluate_run(
    cx: &mut Emitter,
    members: &[usize],
    shape: &[usize],
    layout: Layout,
    elements: &[Vec<Operand>],
    walked: usize,
) -> Result<()> {
    let run = Run { elements, walked };
    let outputs: Vec<Value> = members
        .iter()
        .map(|&i| cx.kernel.body.outputs[i].value)
        .collect();
    // What the outputs read stored like them (where no index map lies between, that
    // is where they read it) comes in with vector loads, a run at a time.
    cx.load_runs(&outputs, shape, layout, &run)?;
    crate::pool::bind_runs(cx, &outputs, shape, layout, &run)?;
    match concat_outside_run(cx, &outputs, layout, run.walked) {
        Some((concat, axis)) => concat_run(cx, members[0], concat, axis, layout, &run),
        None => evaluate_and_store(cx, members, &outputs, &run, None),
    }
}

/// The `concat` body value `v` is, or rounds: `v` itself, or the precision policy's
/// casts of it (`cast(cast(c, tf32), f32)`, `cast(c, bf16)`), which each element
/// computes from that element of the concatenation alone.
fn concat_under_casts(cx: &Emitter, v: Value) -> Option<Value> {
    let node = cx.node(v);
    match node.op {
        Op::Concat { .. } => Some(v),
        Op::Cast { .. } => concat_under_casts(cx, node.inputs[0]),
        _ => None,
    }
}

/// The `concat` that the output of a one-output group is (or rounds,
/// [`concat_under_casts`]) along an axis a run does not walk: the elements of a run
/// then read the same operand, and the run branches once rather than each element.
fn concat_outside_run(
    cx: &Emitter,
    outputs: &[Value],
    layout: Layout,
    walked: usize,
) -> Option<(Value, usize)> {
    let &[v] = outputs else { return None };
    let concat = concat_under_casts(cx, v)?;
    let Op::Concat { axis } = cx.node(concat).op else {
        return None;
    };
    let rank = cx.ty(v).rank();
    let position = layout.order(rank).iter().position(|&a| a == axis)?;
    (position < rank - walked).then_some((concat, axis))
}

/// The `concat` along the channels that the output of a one-output group is (or
/// rounds, [`concat_under_casts`]), of operands that each hold whole runs of `runs` (a
/// run along a channels-last image's channels then lies within one operand).
fn concat_of_channel_runs(cx: &Emitter, members: &[usize], runs: &Runs) -> Option<Value> {
    let &[i] = members else { return None };
    let concat = concat_under_casts(cx, cx.kernel.body.outputs[i].value)?;
    let node = cx.node(concat);
    let whole_runs = |x: &Value| cx.ty(*x).shape[1].is_multiple_of(runs.len);
    (node.op == Op::Concat { axis: 1 } && node.inputs.iter().all(whole_runs)).then_some(concat)
}

/// Output `i`, a `concat` along the channels (or its rounding), at `elements` (a run
/// of its channels at one pixel) from operand `x`, where the run's channels are
/// `within`: the run's inputs come in as vectors at its pixel, and its results go out
/// as one.
fn concat_channels(
    cx: &mut Emitter,
    i: usize,
    (concat, x): (Value, Value),
    within: &[Operand],
    elements: &[Vec<Operand>],
) -> Result<()> {
    let shifted: Vec<Vec<Operand>> = (elements.iter().zip(within))
        .map(|(e, &c)| {
            let mut e = e.clone();
            e[1] = c;
            e
        })
        .collect();
    cx.with_channel_run(within.to_vec(), |cx| {
        let shape = cx.ty(x).shape.clone();
        let inner = Run {
            elements: &shifted,
            walked: 1,
        };
        cx.load_runs(&[x], &shape, Layout::ChannelsLast, &inner)?;
        let run = Run {
            elements,
            walked: 1,
        };
        store_from_operand(cx, i, (concat, x), &run, (1, within))
    })
}

/// Output `i` = `concat` `v` (or its rounding) along `axis` over `run`: a branch per
/// operand, taken by the run's shared coordinate along `axis`, in which the run's
/// elements are that operand's, and the inputs it reads stored like it come in as runs
/// too.
fn concat_run(
    cx: &mut Emitter,
    i: usize,
    v: Value,
    axis: usize,
    layout: Layout,
    run: &Run,
) -> Result<()> {
    let at = run.elements[0][axis];
    cx.concat_branches(v, axis, at, |cx, x, start| {
        let inner = cx.b.sub_u32(at, Operand::Int(start as i64));
        let elements: Vec<Vec<Operand>> = run
            .elements
            .iter()
            .map(|e| {
                let mut e = e.clone();
                e[axis] = inner;
                e
            })
            .collect();
        let shifted = Run {
            elements: &elements,
            walked: run.walked,
        };
        let shape = cx.ty(x).shape.clone();
        cx.load_runs(&[x], &shape, layout, &shifted)?;
        let inner = vec![inner; run.elements.len()];
        store_from_operand(cx, i, (v, x), run, (axis, &inner))
    })
}

/// Stores output `i` over `run` inside the branch of `concat`'s operand `x`, where
/// each element's coordinate along `axis` is `within`'s (the operand's own). The
/// concatenation itself stores the operand's values (as the store evaluates them: a
/// bf16 operand's f32 value, rounded once by the store); a rounding of it has the
/// concatenation's elements bound to the operand's, so that it evaluates without
/// branching again.
fn store_from_operand(
    cx: &mut Emitter,
    i: usize,
    (concat, x): (Value, Value),
    run: &Run,
    (axis, within): (usize, &[Operand]),
) -> Result<()> {
    let output = cx.kernel.body.outputs[i].value;
    if output == concat {
        return evaluate_and_store(cx, &[i], &[x], run, Some((axis, within)));
    }
    cx.b.parallel_chains(run.elements.len());
    for (at, &c) in run.elements.iter().zip(within) {
        let mut inner = at.clone();
        inner[axis] = c;
        let value = cx.value(x, &Index::coords(inner))?;
        cx.bind(concat, &Index::coords(at.clone()), value);
    }
    cx.b.parallel_chains(1);
    evaluate_and_store(cx, &[i], &[output], run, None)
}

/// Evaluates `values[j]` at each element of `run` (with coordinate `axis` replaced
/// where `shift` says: the `u`-th element's by the `u`-th coordinate) and stores the
/// results to body output `members[j]` at the run's elements: one vector store where
/// the run is aligned.
pub(crate) fn evaluate_and_store(
    cx: &mut Emitter,
    members: &[usize],
    values: &[Value],
    run: &Run,
    shift: Option<(usize, &[Operand])>,
) -> Result<()> {
    cx.b.parallel_chains(run.elements.len());
    let mut results = vec![vec![]; members.len()];
    for (u, at) in run.elements.iter().enumerate() {
        let mut at = at.clone();
        if let Some((axis, coordinates)) = shift {
            at[axis] = coordinates[u];
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
