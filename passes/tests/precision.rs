//! The precision policy on the SCNet-50 training step: which nodes read through a
//! round trip, how many casts that makes, and that fusion keeps every one of them.

use calib_ir::{DType, Graph, Kernel, Mode, Op, Precision, Program, Value};
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

/// Whether every element of body value `v` of kernel `k` is a round trip's: a round
/// trip itself, or an index map of round trips (merged sibling convolutions read the
/// concatenation of their weights). A body input holds what the kernel that stored its
/// buffer computed there (a plan may round a value once and store it for its readers;
/// TF32 storage is f32, so only the producer shows the rounding); a bf16 one is rounded
/// by its type.
fn holds_rounded(plan: &Program, k: &Kernel, v: Value, narrow: DType) -> bool {
    let g = &k.body;
    let n = g.node(v);
    match n.op {
        Op::Concat { .. } | Op::Slice { .. } | Op::Reshape { .. } | Op::Broadcast { .. } => {
            n.inputs.iter().all(|&x| holds_rounded(plan, k, x, narrow))
        }
        Op::Cast { to: DType::F32 } if g.ty(n.inputs[0]).dtype == narrow => true,
        Op::Input { .. } => {
            let slot = g.inputs().position(|(_, u)| u == v).expect("a body input");
            let buffer = k.inputs[slot];
            plan.kernels.iter().any(|p| {
                p.outputs.iter().enumerate().any(|(i, o)| {
                    let value = p.body.outputs[i].value;
                    o.buffer == buffer && o.slice.is_none() && holds_rounded(plan, p, value, narrow)
                })
            })
        }
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
            // An activation's rounding also serves the GEMMs that read it; the values
            // that leave their module are rounded besides (the next test says which).
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
                let gemm_values = operands.len() + activations - read_activations;
                assert_eq!(casts - gemm_values, 378, "{p}: module outputs rounded");
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
fn bf16_rounds_per_sample_tensors_where_they_leave_their_module() {
    let step = scnet50_step();
    let g = apply(&step, Precision::Bf16).unwrap();
    let rounded = |v: Value| {
        g.nodes
            .iter()
            .any(|n| n.inputs.contains(&v) && n.op == Op::Cast { to: DType::BF16 })
    };
    let mut residual_sums = 0;
    for (i, n) in g.nodes.iter().enumerate() {
        let v = Value(i);
        let readers: Vec<_> = g.nodes.iter().filter(|r| r.inputs.contains(&v)).collect();
        // The readers of `v`, or of its rounding where it has one.
        let users: Vec<_> = g
            .nodes
            .iter()
            .enumerate()
            .filter(|(_, r)| r.op == Op::Cast { to: DType::BF16 } && r.inputs == [v])
            .flat_map(|(low, _)| {
                let back = g.nodes.iter().position(|r| r.inputs == [Value(low)]);
                g.nodes
                    .iter()
                    .filter(move |r| back.is_some_and(|b| r.inputs.contains(&Value(b))))
            })
            .chain(
                readers
                    .iter()
                    .copied()
                    .filter(|r| !matches!(r.op, Op::Cast { .. })),
            )
            .collect();
        // A bottleneck's residual sum `out += identity` (its block's scope; not a
        // BatchNorm's `+ bias`) goes to the ReLU module: stored rounded, as autocast
        // stores it.
        if n.op == Op::Add
            && n.ty.shape.len() == 4
            && n.inputs
                .iter()
                .all(|x| !matches!(g.node(*x).op, Op::Broadcast { .. }))
            && users.iter().any(|r| r.op == Op::Relu && r.scope != n.scope)
        {
            assert!(rounded(v), "%{i} = {:?} @{}", n.op, n.scope);
            residual_sums += 1;
        }
        if !rounded(v) {
            continue;
        }
        // A value rounded although no GEMM reads it and it is no GEMM's result is a
        // per-sample tensor leaving its module: some reader of it or of its rounding
        // has another scope.
        if !n.op.is_gemm() && !users.iter().any(|r| r.op.is_gemm()) {
            // Nothing but per-sample tensors is rounded: no statistic, parameter or update.
            assert_eq!(n.ty.shape[0], 2, "%{i} @{}: not a batch of 2", n.scope);
            assert!(
                !matches!(
                    n.op,
                    Op::ReduceSum { .. } | Op::ReduceMean { .. } | Op::Conv2dBackwardWeight { .. }
                ),
                "%{i} @{}",
                n.scope
            );
            assert!(
                users.iter().any(|r| r.scope != n.scope),
                "%{i} = {:?} @{} is read in its module only",
                n.op,
                n.scope
            );
        }
    }
    // SCNet-50: 16 bottlenecks.
    assert_eq!(residual_sums, 16);
}

#[test]
fn fusion_keeps_every_round_trip() {
    // A small network: the plan's kernels must still compute every cast the policy put
    // in (fusion may copy a cast into several kernels, or store its result once for
    // them, never drop one).
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
                        holds_rounded(&plan, k, x, narrow),
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

#[test]
fn tf32_weights_are_rounded_where_the_gemms_load_them() {
    // A weight's TF32 rounding is free in fusion (`Dag::rounds_leaf`): every GEMM that
    // reads it rounds it as its tiles land, where a kernel of its own would be one more
    // launch a weight. No kernel of the plan only rounds.
    // A training step: the forward and the data gradient read each weight.
    let spec = calib_models::presets::preset("scnet50").unwrap();
    let model = calib_models::build(&spec, &[2, 3, 128, 128], Mode::Train, DType::F32).unwrap();
    let step = train_step(&model.graph, &TrainConfig::default()).unwrap();
    let g = apply(&step.graph, Precision::Tf32).unwrap();
    let options = FusionOptions {
        precision: Precision::Tf32,
        ..FusionOptions::default()
    };
    let plan = fuse(&g, &options).unwrap().program;
    let only_rounds = |k: &&Kernel| {
        let ops = k.body.nodes.iter().map(|n| &n.op);
        ops.clone().any(|op| matches!(op, Op::Cast { .. }))
            && ops
                .clone()
                .all(|op| matches!(op, Op::Input { .. } | Op::Cast { .. }))
    };
    let rounding: Vec<&str> = plan
        .kernels
        .iter()
        .filter(only_rounds)
        .map(|k| k.name.as_str())
        .collect();
    assert!(rounding.is_empty(), "kernels that only round: {rounding:?}");
    let gemms = plan
        .kernels
        .iter()
        .filter(|k| k.body.nodes.iter().any(|n| n.op.is_gemm()));
    assert!(gemms.count() >= 150);
}
