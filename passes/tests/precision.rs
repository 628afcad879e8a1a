//! The precision policy on the SCNet-50 training step: which nodes read through a
//! round trip, how many casts that makes, and that fusion keeps every one of them.

use calib_ir::{DType, Graph, Mode, Op, Precision, Value};
use calib_passes::fusion::{fuse, FusionOptions};
use calib_passes::precision::apply;
use calib_passes::{train_step, TrainConfig};
use std::collections::HashSet;

fn scnet50_step() -> Graph {
    let spec = calib_models::presets::preset("scnet50").unwrap();
    let model = calib_models::build(&spec, &[2, 3, 224, 224], Mode::Train, DType::F32).unwrap();
    train_step(&model.graph, &TrainConfig::default())
        .unwrap()
        .graph
}

fn count(g: &Graph, f: impl Fn(&Op) -> bool) -> usize {
    g.nodes.iter().filter(|n| f(&n.op)).count()
}

/// Whether `v` is `cast(cast(x, narrow), f32)`.
fn is_round_trip(g: &Graph, v: Value, narrow: DType) -> bool {
    let n = g.node(v);
    n.op == (Op::Cast { to: DType::F32 })
        && g.node(n.inputs[0]).op == (Op::Cast { to: narrow })
        && g.node(n.inputs[0]).ty.dtype == narrow
}

/// Whether every element of `v` is a round trip's: a round trip itself, or an index map
/// of round trips (merged sibling convolutions read the concatenation of their
/// weights). An input of a kernel body was rounded by the kernel that stored it only if
/// its type says so, so a body input counts only as a bf16/tf32 one.
fn holds_rounded(g: &Graph, v: Value, narrow: DType) -> bool {
    let n = g.node(v);
    match n.op {
        Op::Concat { .. } | Op::Slice { .. } | Op::Reshape { .. } | Op::Broadcast { .. } => {
            n.inputs.iter().all(|&x| holds_rounded(g, x, narrow))
        }
        Op::Cast { to: DType::F32 } if g.ty(n.inputs[0]).dtype == narrow => true,
        _ => is_round_trip(g, v, narrow),
    }
}

#[test]
fn every_gemm_operand_is_rounded_once_per_value() {
    let step = scnet50_step();
    let gemms = count(&step, Op::is_gemm);
    // Distinct operand values of the GEMMs: one round trip each.
    let operands: HashSet<Value> = step
        .nodes
        .iter()
        .filter(|n| n.op.is_gemm())
        .flat_map(|n| n.inputs.iter().copied())
        .collect();
    // The step's own numbers, so that a change of the model or of autodiff shows here.
    assert_eq!(gemms, 353);
    assert_eq!(operands.len(), 334);
    for (p, narrow) in [
        (Precision::Tf32, DType::TF32),
        (Precision::Bf16, DType::BF16),
    ] {
        let g = apply(&step, p).unwrap();
        g.validate().unwrap();
        for n in g.nodes.iter().filter(|n| n.op.is_gemm()) {
            for &x in &n.inputs {
                assert!(
                    is_round_trip(&g, x, narrow),
                    "{p}: a GEMM reads %{} unrounded",
                    x.0
                );
            }
        }
        let activations = count(&step, |op| {
            matches!(op, Op::Conv2d { .. } | Op::Conv2dBackwardData { .. })
        });
        let casts = count(&g, |op| *op == Op::Cast { to: narrow });
        match p {
            Precision::Tf32 => assert_eq!(casts, operands.len(), "{p}"),
            // An activation's rounding also serves the GEMMs that read it.
            _ => {
                let read_activations = step
                    .nodes
                    .iter()
                    .enumerate()
                    .filter(|(i, n)| {
                        matches!(n.op, Op::Conv2d { .. } | Op::Conv2dBackwardData { .. })
                            && operands.contains(&Value(*i))
                    })
                    .count();
                assert_eq!(
                    casts,
                    operands.len() + activations - read_activations,
                    "{p}"
                );
            }
        }
        assert_eq!(count(&g, |op| *op == Op::Cast { to: DType::F32 }), casts);
        // Nothing else changed: every original node is still there, in order.
        assert_eq!(g.nodes.len(), step.nodes.len() + 2 * casts);
        // Outputs keep their names; parameters, momentum and the loss stay f32.
        for o in &step.outputs {
            let v = g.output(&o.name).unwrap();
            assert_eq!(g.ty(v), step.ty(o.value), "{}", o.name);
        }
    }
}

#[test]
fn bf16_rounds_activations_and_their_gradients_but_not_weight_gradients() {
    let g = apply(&scnet50_step(), Precision::Bf16).unwrap();
    let readers = |v: Value| {
        g.nodes
            .iter()
            .filter(move |n| n.inputs.contains(&v))
            .map(|n| &n.op)
            .collect::<Vec<_>>()
    };
    for (i, n) in g.nodes.iter().enumerate() {
        let r = readers(Value(i));
        match n.op {
            // Read only by its rounding.
            Op::Conv2d { .. } | Op::Conv2dBackwardData { .. } => {
                assert!(
                    r.iter().all(|op| **op == Op::Cast { to: DType::BF16 }),
                    "%{i}"
                )
            }
            // A weight gradient goes to SGD in f32.
            Op::Conv2dBackwardWeight { .. } => {
                assert!(r.iter().any(|op| !matches!(op, Op::Cast { .. })), "%{i}")
            }
            _ => {}
        }
    }
}

#[test]
fn fusion_keeps_every_round_trip() {
    // A small network: the plan's kernels must still compute every cast the policy put
    // in (fusion may copy a cast into several kernels, never drop one).
    let spec = calib_models::presets::preset("scnet50").unwrap();
    let model = calib_models::build(&spec, &[1, 3, 128, 128], Mode::Eval, DType::F32).unwrap();
    for p in [Precision::Tf32, Precision::Bf16] {
        let g = apply(&model.graph, p).unwrap();
        let narrow = calib_passes::precision::rounding_dtype(p).unwrap();
        let plan = fuse(
            &g,
            &FusionOptions {
                precision: p,
                ..FusionOptions::default()
            },
        )
        .unwrap()
        .program;
        for k in &plan.kernels {
            for n in k.body.nodes.iter().filter(|n| n.op.is_gemm()) {
                for &x in &n.inputs {
                    assert!(
                        holds_rounded(&k.body, x, narrow),
                        "{p}: kernel {} multiplies %{} unrounded:\n{}",
                        k.name,
                        x.0,
                        calib_ir::text::print(&k.body)
                    );
                }
            }
        }
    }
}
