//! The SGD step graph: its interface, and its update against the same step done by hand
//! from `grad`'s gradients.

mod common;

use calib_ir::{ConvSpec, DType, Graph, GraphBuilder, Mode, Op, Value};
use calib_passes::{
    grad, momentum_name, train_step, with_loss, PassError, Sgd, TrainConfig, LABELS, LOSS, LR,
};
use calib_runtime::HostTensor;
use common::{run, Rng};
use std::collections::BTreeMap;

const BATCH: usize = 3;
const CLASSES: usize = 4;

/// conv → BN → ReLU → global pool → linear, plus a param the loss never reads.
fn forward() -> Graph {
    let mut b = GraphBuilder::new(Mode::Train, DType::F32);
    let x = b.input("input", DType::F32, vec![BATCH, 2, 5, 5]).unwrap();
    let h = b
        .conv_layer("conv", x, &ConvSpec::new(3, 3).padding(1))
        .unwrap();
    let h = b.batch_norm("bn", h).unwrap();
    let h = b.relu(h).unwrap();
    let h = b.global_avg_pool(h).unwrap();
    let logits = b.linear("fc", h, CLASSES, true).unwrap();
    b.param("unused", DType::F32, vec![2]).unwrap();
    b.output("logits", logits).unwrap();
    b.finish()
}

const PARAMS: [&str; 6] = [
    "conv.weight",
    "bn.weight",
    "bn.bias",
    "fc.weight",
    "fc.bias",
    "unused",
];
const BUFFERS: [&str; 3] = [
    "bn.running_mean",
    "bn.running_var",
    "bn.num_batches_tracked",
];

/// Random values for every source of `graph` (labels and counters drawn as integers).
fn random_state(graph: &Graph, rng: &mut Rng) -> BTreeMap<String, HostTensor> {
    let mut values = BTreeMap::new();
    for node in &graph.nodes {
        let (Op::Input { name } | Op::Param { name }) = &node.op else {
            continue;
        };
        let value = match name.as_str() {
            LABELS => rng.labels(BATCH, CLASSES),
            LR => HostTensor::from_f64(vec![], vec![0.1]).unwrap(),
            _ if node.ty.dtype == DType::I64 => HostTensor::from_i64(vec![], vec![7]).unwrap(),
            n if n.ends_with("running_var") || n == "bn.weight" => {
                rng.tensor(&node.ty.shape, 0.5, 1.5)
            }
            _ => rng.tensor(&node.ty.shape, -1.0, 1.0),
        };
        values.insert(name.clone(), value);
    }
    values
}

fn names(pairs: impl Iterator<Item = String>) -> Vec<String> {
    let mut v: Vec<String> = pairs.collect();
    v.sort();
    v
}

#[test]
fn the_step_graph_has_the_documented_interface() {
    let step = train_step(&forward(), &TrainConfig::default()).unwrap();
    step.graph.validate().unwrap();
    assert_eq!(step.params, PARAMS);
    assert_eq!(step.buffers, BUFFERS);
    let mut inputs = vec!["input".to_string(), LABELS.into(), LR.into()];
    inputs.extend(PARAMS.iter().map(|p| momentum_name(p)));
    assert_eq!(
        names(step.graph.inputs().map(|(n, _)| n.to_string())),
        names(inputs.into_iter())
    );
    let all_state = PARAMS.iter().chain(&BUFFERS).map(|s| s.to_string());
    assert_eq!(
        names(step.graph.params().map(|(n, _)| n.to_string())),
        names(all_state)
    );
    let mut outputs = vec!["logits".to_string(), LOSS.into()];
    outputs.extend(
        PARAMS
            .iter()
            .flat_map(|p| [p.to_string(), momentum_name(p)]),
    );
    outputs.extend(BUFFERS.iter().map(|b| b.to_string()));
    assert_eq!(
        names(step.graph.outputs.iter().map(|o| o.name.clone())),
        names(outputs.into_iter())
    );
    assert_eq!(
        step.graph.ty(step.graph.output(LOSS).unwrap()).shape,
        Vec::<usize>::new()
    );
}

#[test]
fn the_step_graph_is_pruned_and_deduplicated() {
    let step = train_step(&forward(), &TrainConfig::default()).unwrap();
    let g = &step.graph;
    let uses = g.use_counts();
    for (i, node) in g.nodes.iter().enumerate() {
        let source = matches!(node.op, Op::Input { .. } | Op::Param { .. });
        assert!(
            source || uses[i] > 0,
            "node %{i} ({}) is dead",
            node.op.name()
        );
    }
    let constants: Vec<(u64, &calib_ir::TensorType)> = g
        .nodes
        .iter()
        .filter_map(|n| match n.op {
            Op::Constant { value } => Some((value.to_bits(), &n.ty)),
            _ => None,
        })
        .collect();
    for (i, c) in constants.iter().enumerate() {
        assert!(!constants[..i].contains(c), "constant {c:?} appears twice");
    }
}

/// Runs the step and, separately, `grad` of the same loss, and checks every output
/// against PyTorch's update rule applied by hand.
fn check_update(sgd: Sgd) {
    let config = TrainConfig {
        sgd,
        label_smoothing: 0.0,
    };
    let step = train_step(&forward(), &config).unwrap();
    let mut rng = Rng::new(42);
    let values = random_state(&step.graph, &mut rng);
    let out = run(&step.graph, &values);

    let with = with_loss(&forward(), 0.0).unwrap();
    let loss = with.output(LOSS).unwrap();
    let wrt: Vec<Value> = PARAMS
        .iter()
        .map(|p| with.params().find(|(n, _)| n == p).unwrap().1)
        .collect();
    let (mut reference, grads) = grad(&with, loss, &wrt).unwrap();
    for (p, g) in PARAMS.iter().zip(grads) {
        reference.add_output(format!("grad.{p}"), g).unwrap();
    }
    let expected = run(&reference, &values);

    let lr = 0.1;
    for p in PARAMS {
        let [w, buf, g] = [
            &values[p],
            &values[&momentum_name(p)],
            &expected[&format!("grad.{p}")],
        ]
        .map(|t| t.to_f64_vec());
        let d: Vec<f64> = g
            .iter()
            .zip(&w)
            .map(|(g, w)| g + sgd.weight_decay * w)
            .collect();
        let new_buf: Vec<f64> = buf
            .iter()
            .zip(&d)
            .map(|(b, d)| sgd.momentum * b + d)
            .collect();
        let dir: Vec<f64> = if sgd.nesterov {
            d.iter()
                .zip(&new_buf)
                .map(|(d, b)| d + sgd.momentum * b)
                .collect()
        } else {
            new_buf.clone()
        };
        let new_w: Vec<f64> = w.iter().zip(&dir).map(|(w, s)| w - lr * s).collect();
        for (what, want, got) in [
            ("param", new_w, &out[p]),
            ("momentum", new_buf, &out[&momentum_name(p)]),
        ] {
            let diff = want
                .iter()
                .zip(got.to_f64_vec())
                .map(|(a, b)| (a - b).abs())
                .fold(0.0, f64::max);
            assert!(diff < 1e-12, "{p} {what}: off by {diff}");
        }
    }
    for name in ["logits", LOSS] {
        assert_eq!(
            out[name].to_f64_vec(),
            expected[name].to_f64_vec(),
            "{name}"
        );
    }
    assert_eq!(out["bn.num_batches_tracked"].as_i64(), Some(&[8i64][..]));
    assert_eq!(
        out["bn.running_mean"].to_f64_vec(),
        expected["bn.running_mean"].to_f64_vec()
    );
}

#[test]
fn heavy_ball_momentum_matches_pytorch_rule() {
    check_update(Sgd::default());
}

#[test]
fn nesterov_momentum_matches_pytorch_rule() {
    check_update(Sgd {
        nesterov: true,
        ..Sgd::default()
    });
}

#[test]
fn without_weight_decay_or_momentum() {
    check_update(Sgd {
        momentum: 0.0,
        weight_decay: 0.0,
        nesterov: false,
    });
}

#[test]
fn zero_momentum_buffers_make_the_first_step() {
    let step = train_step(&forward(), &TrainConfig::default()).unwrap();
    let mut values = random_state(&step.graph, &mut Rng::new(9));
    for p in PARAMS {
        let shape = values[p].shape().to_vec();
        let zeros = vec![0.0; shape.iter().product()];
        values.insert(
            momentum_name(p),
            HostTensor::from_f64(shape, zeros).unwrap(),
        );
    }
    let out = run(&step.graph, &values);
    for p in PARAMS {
        // p1 = p0 - lr * buf1 with buf1 = d exactly (PyTorch's first step).
        let (w0, buf, w1) = (
            values[p].to_f64_vec(),
            out[&momentum_name(p)].to_f64_vec(),
            out[p].to_f64_vec(),
        );
        for i in 0..w0.len() {
            assert_eq!(w1[i], w0[i] - 0.1 * buf[i], "{p}[{i}]");
        }
    }
    let unused = out[&momentum_name("unused")].to_f64_vec();
    let w = values["unused"].to_f64_vec();
    assert_eq!(
        unused,
        w.iter().map(|w| 1e-4 * w).collect::<Vec<_>>(),
        "weight decay alone"
    );
}

#[test]
fn label_smoothing_reaches_the_loss() {
    let eps = 0.2;
    let config = TrainConfig {
        label_smoothing: eps,
        ..TrainConfig::default()
    };
    let step = train_step(&forward(), &config).unwrap();
    let values = random_state(&step.graph, &mut Rng::new(4));
    let out = run(&step.graph, &values);
    let logits = out["logits"].to_f64_vec();
    let labels = values[LABELS].as_i64().unwrap();
    let mut total = 0.0;
    for (row, &label) in logits.chunks(CLASSES).zip(labels) {
        let lse = row.iter().map(|z| z.exp()).sum::<f64>().ln();
        for (k, z) in row.iter().enumerate() {
            let target = eps / CLASSES as f64 + if k as i64 == label { 1.0 - eps } else { 0.0 };
            total -= target * (z - lse);
        }
    }
    let loss = out[LOSS].to_f64_vec()[0];
    assert!(
        (loss - total / BATCH as f64).abs() < 1e-12,
        "{loss} vs {}",
        total / BATCH as f64
    );
}

#[test]
fn with_loss_adds_labels_and_loss_once() {
    let g = with_loss(&forward(), 0.0).unwrap();
    let labels = g.inputs().find(|(n, _)| *n == LABELS).unwrap().1;
    assert_eq!(g.ty(labels).shape, [BATCH]);
    assert_eq!(g.ty(labels).dtype, DType::I64);
    assert_eq!(
        with_loss(&g, 0.0).unwrap(),
        g,
        "a graph with a loss is left alone"
    );
}

#[test]
fn unusable_forward_graphs_are_errors() {
    let mut g = forward();
    g.outputs.retain(|o| o.name != "logits");
    assert!(matches!(
        train_step(&g, &TrainConfig::default()),
        Err(PassError::Missing { .. })
    ));

    let mut b = GraphBuilder::new(Mode::Train, DType::F32);
    let x = b.input("input", DType::F32, vec![2, 3]).unwrap();
    let w = b.param("w", DType::F32, vec![2, 3]).unwrap();
    let y = b.mul(x, w).unwrap();
    b.input(LR, DType::F32, vec![]).unwrap();
    b.output("logits", y).unwrap();
    let err = train_step(&b.finish(), &TrainConfig::default()).unwrap_err();
    assert!(
        matches!(err, PassError::Ir(calib_ir::IrError::DuplicateName { .. })),
        "{err}"
    );
    // The same for a momentum buffer's name.
    let mut b = GraphBuilder::new(Mode::Train, DType::F32);
    let x = b.input("input", DType::F32, vec![2, 3]).unwrap();
    let w = b.param("w", DType::F32, vec![2, 3]).unwrap();
    let y = b.mul(x, w).unwrap();
    b.input("momentum.w", DType::F32, vec![2, 3]).unwrap();
    b.output("logits", y).unwrap();
    let err = train_step(&b.finish(), &TrainConfig::default()).unwrap_err();
    assert!(err.to_string().contains("momentum.w"), "{err}");

    let mut b = GraphBuilder::new(Mode::Train, DType::F32);
    let x = b.input("input", DType::F32, vec![2, 3, 4]).unwrap();
    b.output("output", x).unwrap();
    assert!(matches!(
        train_step(&b.finish(), &TrainConfig::default()),
        Err(PassError::WrongType { .. })
    ));
}

#[test]
fn scnet50_step_graph_trains_exactly_the_pytorch_parameters() {
    let spec = calib_models::presets::scnet50();
    let model = calib_models::build(&spec, &[2, 3, 224, 224], Mode::Train, DType::F32).unwrap();
    let started = std::time::Instant::now();
    let step = train_step(&model.graph, &TrainConfig::default()).unwrap();
    let elapsed = started.elapsed();
    step.graph.validate().unwrap();
    let of_kind = |kind| {
        let entries = model.state.iter().filter(move |e| e.kind == kind);
        entries.map(|e| e.name.clone()).collect::<Vec<_>>()
    };
    assert_eq!(step.params, of_kind(calib_models::StateKind::Param));
    assert_eq!(step.buffers, of_kind(calib_models::StateKind::Buffer));
    let count = |name: &str| {
        step.graph
            .nodes
            .iter()
            .filter(|n| n.op.name() == name)
            .count()
    };
    // Every conv gets a weight gradient; all but the stem also pass one to their input.
    assert_eq!(count("conv2d_backward_weight"), count("conv2d"));
    assert_eq!(count("conv2d_backward_data"), count("conv2d") - 1);
    assert!(elapsed.as_secs() < 10, "building the step took {elapsed:?}");
}
