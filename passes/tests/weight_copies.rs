//! The bf16 step's carried weight copies (`precision/weight_copies.rs`): the step's
//! interface, that no GEMM rounds a master weight, and that one step computes exactly
//! what the per-step rounding computes when the copies hold the rounded weights.

mod common;

use calib_ir::{ConvSpec, DType, Graph, GraphBuilder, Mode, Op, Precision, Value};
use calib_passes::precision::{apply, apply_step, weight_copy_name};
use calib_passes::{
    data_parallel_step, train_step, DataParallel, TrainConfig, TrainStep, LABELS, LR,
};
use calib_runtime::{reference, Bindings, HostTensor};
use common::Rng;
use std::collections::BTreeMap;

/// conv → BN → ReLU → global pool → linear: two weights that GEMMs read (the
/// convolution's and the classifier's), three parameters that none reads.
fn step() -> TrainStep {
    train_step(&forward(), &TrainConfig::default()).unwrap()
}

fn forward() -> Graph {
    let mut b = GraphBuilder::new(Mode::Train, DType::F32);
    let x = b.input("input", DType::F32, vec![3, 2, 5, 5]).unwrap();
    let h = b
        .conv_layer("conv", x, &ConvSpec::new(3, 3).padding(1))
        .unwrap();
    let h = b.batch_norm("bn", h).unwrap();
    let h = b.relu(h).unwrap();
    let h = b.global_avg_pool(h).unwrap();
    let logits = b.linear("fc", h, 4, true).unwrap();
    b.output("logits", logits).unwrap();
    b.finish()
}

const COPIED: [&str; 2] = ["conv.weight", "fc.weight"];

/// `v` is `cast(cast(x, bf16), f32)`: its `x`.
fn round_trip_of(g: &Graph, v: Value) -> Option<Value> {
    let n = g.node(v);
    let low = g.node(*n.inputs.first()?);
    (n.op == Op::Cast { to: DType::F32 } && low.op == Op::Cast { to: DType::BF16 })
        .then_some(low.inputs[0])
}

/// `v` is `cast(x, bf16)`: its `x`.
fn rounding_of(g: &Graph, v: Value) -> Option<Value> {
    let n = g.node(v);
    (n.op == Op::Cast { to: DType::BF16 }).then(|| n.inputs[0])
}

/// `v` is `cast(p, f32)` of a bf16 param `p`: `p`'s name.
fn widened_param(g: &Graph, v: Value) -> Option<&str> {
    let n = g.node(v);
    let p = *n.inputs.first()?;
    (n.op == Op::Cast { to: DType::F32 } && g.ty(p).dtype == DType::BF16)
        .then(|| param_name(g, p))
        .flatten()
}

fn param_name(g: &Graph, v: Value) -> Option<&str> {
    match &g.node(v).op {
        Op::Param { name } => Some(name),
        _ => None,
    }
}

#[test]
fn gemms_read_carried_copies_and_the_update_makes_the_next() {
    let step = step();
    let bf16 = apply_step(&step, Precision::Bf16).unwrap();
    let g = &bf16.graph;
    g.validate().unwrap();
    assert_eq!(bf16.copies, COPIED);
    for name in COPIED {
        let copy = weight_copy_name(name);
        // A bf16 param of the weight's shape, and an output of the same name and type.
        let (_, param) = g.params().find(|(n, _)| *n == copy).unwrap();
        let out = g.output(&copy).unwrap();
        assert_eq!(g.ty(param).dtype, DType::BF16);
        assert_eq!(g.ty(param).shape, g.ty(g.output(name).unwrap()).shape);
        assert_eq!(g.ty(param), g.ty(out));
        // The output is the updated weight (the step's output `name`) rounded.
        assert_eq!(rounding_of(g, out), g.output(name), "{copy}");
    }
    // Every GEMM operand is rounded, and none is rounded here from a param: the
    // weights come as copies, widened as read; nothing else rounds a param at all.
    for node in g.nodes.iter().filter(|n| n.op.is_gemm()) {
        for &x in &node.inputs {
            match widened_param(g, x) {
                Some(name) => assert!(name.starts_with("bf16."), "GEMM reads {name}"),
                None => assert!(round_trip_of(g, x).is_some(), "an unrounded operand"),
            }
        }
    }
    for node in &g.nodes {
        if node.op == (Op::Cast { to: DType::BF16 }) {
            assert_eq!(param_name(g, node.inputs[0]), None, "a param rounded");
        }
    }
    // The per-step rounding, by contrast, rounds both master weights.
    let old = apply(&step.graph, Precision::Bf16).unwrap();
    let rounded_params = old
        .nodes
        .iter()
        .filter(|n| n.op == (Op::Cast { to: DType::BF16 }))
        .filter_map(|n| param_name(&old, n.inputs[0]))
        .collect::<Vec<_>>();
    assert_eq!(rounded_params, COPIED);
}

#[test]
fn other_policies_and_a_second_application_add_nothing() {
    let step = step();
    for p in [Precision::F32, Precision::Tf32] {
        let s = apply_step(&step, p).unwrap();
        assert_eq!(s.graph, apply(&step.graph, p).unwrap(), "{p}");
        assert!(s.copies.is_empty());
    }
    let once = apply_step(&step, Precision::Bf16).unwrap();
    let twice = apply_step(&once, Precision::Bf16).unwrap();
    assert_eq!(once, twice);
}

/// A replica's step (gradients all-reduced before the update) gets the same copies.
#[test]
fn a_data_parallel_step_carries_the_same_copies() {
    let dp = DataParallel {
        replicas: 2,
        bucket_bytes: 1 << 20,
    };
    let step = data_parallel_step(&forward(), &TrainConfig::default(), &dp)
        .unwrap()
        .step;
    let bf16 = apply_step(&step, Precision::Bf16).unwrap();
    bf16.graph.validate().unwrap();
    assert_eq!(bf16.copies, COPIED);
    for name in COPIED {
        let out = bf16.graph.output(&weight_copy_name(name)).unwrap();
        assert_eq!(rounding_of(&bf16.graph, out), bf16.graph.output(name));
    }
}

/// One step in f32 on the reference interpreter, both ways, from the same state, the
/// copies being the master weights rounded as the interpreter rounds (`cast`, to bf16
/// tensors): every output the two graphs share is the same bits, and each copy output
/// is the updated weight rounded.
#[test]
fn one_step_is_bit_identical_to_the_per_step_rounding() {
    let step = step();
    let old = apply(&step.graph, Precision::Bf16).unwrap();
    let new = apply_step(&step, Precision::Bf16).unwrap();
    let mut rng = Rng::new(5);
    let mut values = BTreeMap::new();
    for node in &step.graph.nodes {
        let (Op::Input { name } | Op::Param { name }) = &node.op else {
            continue;
        };
        let t = match name.as_str() {
            LABELS => rng.labels(3, 4),
            LR => HostTensor::from_f32(vec![], vec![0.1]).unwrap(),
            _ if node.ty.dtype == DType::I64 => HostTensor::from_i64(vec![], vec![7]).unwrap(),
            n if n.ends_with("running_var") => rng.tensor(&node.ty.shape, 0.5, 1.5),
            _ => rng.tensor(&node.ty.shape, -1.0, 1.0),
        };
        // The f32 interpreter's tensors are held in f32.
        let t = match t.dtype() {
            DType::F32 => HostTensor::from_f32(t.shape().to_vec(), t.to_f32_vec()).unwrap(),
            _ => t,
        };
        values.insert(name.clone(), t);
    }
    for name in COPIED {
        let rounded = values[name].cast(DType::BF16);
        values.insert(weight_copy_name(name), rounded);
    }
    let run = |g: &Graph| {
        let mut b = Bindings::new();
        for (name, t) in &values {
            b = b.input(name.clone(), t).param(name.clone(), t);
        }
        reference::run(g, &b).unwrap()
    };
    let (want, got) = (run(&old), run(&new.graph));
    for o in &old.outputs {
        let bits = |t: &HostTensor| {
            t.to_f64_vec()
                .iter()
                .map(|x| x.to_bits())
                .collect::<Vec<_>>()
        };
        assert_eq!(bits(&want[&o.name]), bits(&got[&o.name]), "{}", o.name);
    }
    for name in COPIED {
        let next = want[name].cast(DType::BF16);
        assert_eq!(got[&weight_copy_name(name)], next, "{name}");
    }
}
