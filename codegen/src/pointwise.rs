//! The pointwise family: one thread per output element, the whole body evaluated at
//! that element. It is also what every other family uses for outputs outside its anchor's
//! iteration space (side outputs), and the fallback for any body without a specialized
//! anchor: correct for every op the evaluator knows, fast for maps.

use crate::error::Result;
use crate::eval::Emitter;
use crate::index::Index;
use crate::kernel::Geometry;
use crate::ptx::Operand;
use calib_ir::{numel, Layout};

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

/// The shape of runs of four, in memory order, when every output of a group has one
/// shape whose innermost extent in `layout` four divides (and there are enough
/// elements to keep the GPU busy): that shape with that extent divided by four.
fn runs_of_four(cx: &Emitter, members: &[usize], n: usize, layout: Layout) -> Option<Vec<usize>> {
    let mut runs = layout.to_memory(common_shape(cx, members)?);
    let last = *runs.last()?;
    (last % RUN == 0 && n >= 1 << 16).then(|| {
        *runs.last_mut().expect("a rank") = last / RUN;
        runs
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
                let value = cx.value(out, at)?;
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
                let mut memory = cx.coords(&Index::flat(r), &runs);
                let last = memory.len() - 1;
                let first = cx.b.mul_u32(memory[last], Operand::Int(RUN as i64));
                let lasts: Vec<Operand> = (0..RUN)
                    .map(|u| cx.b.add_u32(first, Operand::Int(u as i64)))
                    .collect();
                memory[last] = first;
                let mut coords = layout.to_logical(&memory);
                // Inputs stored like the outputs and read where the outputs are (no
                // index map between) come in with one 128-bit load per run.
                for v in same_shape_inputs(cx, &shape, layout) {
                    cx.load_run(v, &coords, &lasts)?;
                }
                let innermost = layout.innermost(coords.len());
                cx.b.parallel_chains(RUN);
                // Each output's four values, then one vector store of them where the
                // run is aligned.
                let mut runs = vec![vec![]; members.len()];
                for &l in &lasts {
                    coords[innermost] = l;
                    for (run, &i) in runs.iter_mut().zip(&members) {
                        let out = cx.kernel.body.outputs[i].value;
                        run.push(cx.value(out, &Index::coords(coords.clone()))?);
                    }
                }
                cx.b.parallel_chains(1);
                coords[innermost] = first;
                for (run, &i) in runs.iter().zip(&members) {
                    if !cx.store_run(i, &coords, run)? {
                        for (&l, &value) in lasts.iter().zip(run) {
                            coords[innermost] = l;
                            cx.store(i, &Index::coords(coords.clone()), value)?;
                        }
                    }
                }
                Ok(())
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

/// The f32, tf32 and bf16 body inputs of `shape` stored in `layout`, which elementwise
/// outputs of that shape walked in that layout read at their own coordinates.
fn same_shape_inputs(cx: &Emitter, shape: &[usize], layout: Layout) -> Vec<calib_ir::Value> {
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
