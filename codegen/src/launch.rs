//! A plan kernel as a chain of launches.
//!
//! Each launch is built around one anchor and stores the outputs in its iteration space
//! (same element count) from the anchor's epilogue, plus any output that needs no
//! reduction or contraction, by grid-stride passes. Outputs that need a reduction of
//! values only complete when the whole grid has run (BatchNorm statistics of a
//! convolution's result) are left to the next launch, which reads what earlier launches
//! stored instead of recomputing it: launch 0 is the convolution, launch 1 the
//! statistics over its stored result.

use crate::error::Result;
use crate::eval::{Emitter, Slices};
use crate::gemm::{self, Operands};
use crate::kernel::{Family, Geometry};
use crate::{conv, matmul, pointwise, reduction};
use calib_ir::{gemm_anchor, Anchor, GemmSchedule, Op, OpClass, Schedule, Value};
use std::rc::Rc;

/// What one launch does.
pub(crate) struct Launch {
    pub family: Family,
    pub geometry: Geometry,
    /// Body outputs this launch stores.
    pub stores: Vec<usize>,
    /// Reductions and contractions besides the anchor, evaluated per element as loops.
    pub loops: Vec<Value>,
    /// Set when a split GEMM or reduction left its results in the workspace as slices,
    /// for later launches to combine.
    pub split: Option<Rc<dyn Slices>>,
    /// The schedule of a GEMM launch.
    pub gemm: Option<GemmSchedule>,
}

/// Emits the launch computing (some of) `remaining` body outputs. The first launch of
/// a convolution, matmul or reduction kernel is built around the plan's anchor; other
/// launches store the outputs that need no reduction or contraction first, then follow
/// the heaviest op the rest still needs.
pub(crate) fn emit(cx: &mut Emitter, remaining: &[usize], first: bool) -> Result<Launch> {
    let kernel = cx.kernel;
    if kernel.anchor == Anchor::Collective {
        return Err(crate::CodegenError::Kernel {
            kernel: kernel.name.clone(),
            detail: "a collective is a transfer between replicas, not a PTX kernel".into(),
        });
    }
    let needed = needed_by(cx, remaining, &[]);
    let cheap: Vec<usize> = remaining
        .iter()
        .copied()
        .filter(|&i| !heavy(cx, &needed_by(cx, &[i], &[]), &[]))
        .collect();
    let specialized = matches!(
        kernel.anchor,
        Anchor::Convolution | Anchor::MatMul | Anchor::Reduction
    );
    let anchor = if first && specialized {
        kernel.anchor
    } else if first && !cheap.is_empty() {
        Anchor::Pointwise
    } else if needs(&needed, cx, OpClass::Reduction) {
        Anchor::Reduction
    } else if needs(&needed, cx, OpClass::Convolution) {
        Anchor::Convolution
    } else if needs(&needed, cx, OpClass::MatMul) {
        Anchor::MatMul
    } else {
        Anchor::Pointwise
    };
    // The last needed node of the anchor's class is the anchor; earlier ones are prologue.
    let last = |class: OpClass| {
        (0..needed.len()).rev().map(Value).find(|&v| {
            needed[v.0] && !cx.is_stored(v) && kernel.body.nodes[v.0].op.class() == class
        })
    };
    let family = match anchor {
        Anchor::Convolution => last(OpClass::Convolution)
            .and_then(|v| Some(Anchored::Gemm(v, Rc::new(conv::Conv::anchor(cx, v)?)))),
        Anchor::MatMul => last(OpClass::MatMul)
            .and_then(|v| Some(Anchored::Gemm(v, Rc::new(matmul::MatMul::of(cx, v)?)))),
        Anchor::Reduction => {
            let group = reduction::anchors(cx, &needed);
            (!group.is_empty()).then_some(Anchored::Reduction(group))
        }
        _ => None,
    };
    let anchors: Vec<Value> = match &family {
        Some(Anchored::Gemm(v, _)) => vec![*v],
        Some(Anchored::Reduction(group)) => group.iter().map(|r| r.node).collect(),
        None => vec![],
    };
    // The epilogue stores outputs of the anchor's size that need nothing heavy beyond
    // the anchor itself.
    let aligned: Vec<usize> = match anchors.first() {
        Some(&a) => {
            let n = cx.ty(a).numel();
            remaining
                .iter()
                .copied()
                .filter(|&i| cx.ty(output(cx, i)).numel() == n)
                .filter(|&i| !heavy(cx, &needed_by(cx, &[i], &anchors), &anchors))
                .filter(|&i| !reads_elsewhere(cx, output(cx, i), &anchors))
                .collect()
        }
        None => vec![],
    };
    let (Some(family), false) = (family, aligned.is_empty()) else {
        // One thread per element: the cheap outputs if there are any (the others wait
        // for a launch that stores what they reduce over), else everything.
        let stores = if cheap.is_empty() {
            remaining.to_vec()
        } else {
            cheap
        };
        let geometry = pointwise::emit(cx, &stores)?;
        let loops = loops(cx, &stores, &[]);
        return Ok(Launch {
            family: Family::Pointwise,
            geometry,
            stores,
            loops,
            split: None,
            gemm: None,
        });
    };
    let cheap: Vec<usize> = cheap.into_iter().filter(|i| !aligned.contains(i)).collect();
    let mut gemm_schedule = None;
    let (family, geometry, split) = match family {
        Anchored::Gemm(v, ops) => {
            // The plan's schedule is for its anchor, the first launch's GEMM.
            let schedule = match (first, kernel.schedule) {
                (true, Some(Schedule { gemm: Some(s), .. })) => s,
                _ => GemmSchedule::default_for(&ops.dims()),
            };
            gemm_schedule = Some(schedule);
            let emitted = gemm::emit(cx, &ops, v, &aligned, schedule)?;
            let split = emitted.split.map(|s| Rc::new(s) as Rc<dyn Slices>);
            (Family::Gemm, emitted.geometry, split)
        }
        Anchored::Reduction(group) => {
            // The plan's reduction schedule is for the kernel's first reduction launch.
            let (split, offset) = match (cx.first_reduction, kernel.schedule) {
                (
                    true,
                    Some(
                        s @ Schedule {
                            reduction: Some(r), ..
                        },
                    ),
                ) => {
                    let dims = gemm_anchor(&kernel.body)
                        .and_then(|a| calib_ir::GemmDims::of(&kernel.body, a));
                    (r.split, s.reduction_offset_bytes(dims.as_ref()) / 4)
                }
                _ => (1, 0),
            };
            let (geometry, split) = reduction::emit(cx, &group, &aligned, split, offset)?;
            let split = split.map(|s| Rc::new(s) as Rc<dyn Slices>);
            (Family::Reduction, geometry, split)
        }
    };
    pointwise::passes(cx, &cheap, &geometry)?;
    // A split GEMM stores its partial tiles, not the epilogue: the next launch does.
    let epilogue = if split.is_some() { vec![] } else { aligned };
    let stores: Vec<usize> = epilogue.into_iter().chain(cheap).collect();
    let loops = loops(cx, &stores, &anchors);
    Ok(Launch {
        split,
        gemm: gemm_schedule,
        family,
        geometry,
        stores,
        loops,
    })
}

/// The reductions and contractions computing `stores` evaluates per element, as loops
/// (besides the launch's `anchors`): cheap when they are small windows in a prologue,
/// costly otherwise; listed in the launch's header.
fn loops(cx: &Emitter, stores: &[usize], anchors: &[Value]) -> Vec<Value> {
    let needed = needed_by(cx, stores, &[]);
    let heavy = [OpClass::Reduction, OpClass::Convolution, OpClass::MatMul];
    (0..needed.len())
        .map(Value)
        .filter(|&v| needed[v.0] && !cx.is_stored(v) && !anchors.contains(&v))
        .filter(|&v| heavy.contains(&cx.node(v).op.class()))
        .collect()
}

enum Anchored {
    Gemm(Value, Rc<dyn Operands>),
    Reduction(Vec<reduction::Reduce>),
}

fn output(cx: &Emitter, i: usize) -> Value {
    cx.kernel.body.outputs[i].value
}

/// The body nodes computing `outputs` needs, not looking past values read back from
/// earlier launches nor past the nodes in `stop`.
fn needed_by(cx: &Emitter, outputs: &[usize], stop: &[Value]) -> Vec<bool> {
    let nodes = &cx.kernel.body.nodes;
    let mut needed = vec![false; nodes.len()];
    let mut stack: Vec<Value> = outputs.iter().map(|&i| output(cx, i)).collect();
    while let Some(v) = stack.pop() {
        if std::mem::replace(&mut needed[v.0], true) || cx.is_stored(v) || stop.contains(&v) {
            continue;
        }
        stack.extend(&nodes[v.0].inputs);
    }
    needed
}

/// Whether `v` reads one of `anchors` through an index map: at indices other than the
/// epilogue's own, which only exist once the whole anchor is stored (a BatchNorm shift,
/// each channel's first element of the convolution's result). Such outputs wait for a
/// later launch, which reads the anchor back.
fn reads_elsewhere(cx: &Emitter, v: Value, anchors: &[Value]) -> bool {
    let nodes = &cx.kernel.body.nodes;
    let mut seen = [vec![false; nodes.len()], vec![false; nodes.len()]];
    // (value, whether an index map lies between it and `v`)
    let mut stack = vec![(v, false)];
    while let Some((v, mapped)) = stack.pop() {
        if anchors.contains(&v) {
            if mapped {
                return true;
            }
            continue;
        }
        if cx.is_stored(v) || std::mem::replace(&mut seen[mapped as usize][v.0], true) {
            continue;
        }
        let node = &nodes[v.0];
        // A reshape keeps the flat index: the same element.
        let moves = node.op.class() == OpClass::Layout && !matches!(node.op, Op::Reshape { .. });
        let mapped = mapped || moves;
        stack.extend(node.inputs.iter().map(|&i| (i, mapped)));
    }
    false
}

/// Whether a needed node (other than those `except`) is of `class` and must be computed.
fn needs_except(needed: &[bool], cx: &Emitter, class: OpClass, except: &[Value]) -> bool {
    needed.iter().enumerate().any(|(v, &n)| {
        n && !cx.is_stored(Value(v))
            && !except.contains(&Value(v))
            && cx.kernel.body.nodes[v].op.class() == class
    })
}

fn needs(needed: &[bool], cx: &Emitter, class: OpClass) -> bool {
    needs_except(needed, cx, class, &[])
}

/// Whether the needed nodes, besides `except`, include a reduction or a contraction:
/// too costly to recompute for every element.
fn heavy(cx: &Emitter, needed: &[bool], except: &[Value]) -> bool {
    [OpClass::Reduction, OpClass::Convolution, OpClass::MatMul]
        .into_iter()
        .any(|c| needs_except(needed, cx, c, except))
}
