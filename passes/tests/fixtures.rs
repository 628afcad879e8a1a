//! Autodiff and the training step against the PyTorch fixtures in `shared/fixtures`
//! (float32, the README's tolerances): module gradients for a `grad_output` seed, and two
//! SGD steps of `tiny_scnet`.

use calib_ir::{DType, Graph, Mode, Op, TensorType, Value};
use calib_models::{build, load_spec_file, Model, StateKind};
use calib_passes::{
    grad, momentum_name, train_step, vjp, with_loss, TrainConfig, LABELS, LOSS, LR,
};
use calib_runtime::{reference, weights, Bindings, HostTensor, Outputs, TensorMap};
use std::path::PathBuf;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../shared/fixtures"
    ))
    .join(name)
}

fn load(name: &str, file: &str) -> TensorMap {
    let path = fixture(name).join(file);
    weights::load(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn train_model(name: &str) -> Model {
    let file = load_spec_file(fixture(name)).unwrap();
    build(
        &file.spec,
        &file.input_shape.unwrap(),
        Mode::Train,
        DType::F32,
    )
    .unwrap()
}

fn run(graph: &Graph, state: &TensorMap, inputs: &[(&str, &HostTensor)]) -> Outputs {
    let mut bindings = Bindings::new().params(state);
    for &(name, t) in inputs {
        bindings = bindings.input(name, t);
    }
    reference::run(graph, &bindings).unwrap()
}

/// The README's criterion for outputs and gradients: max abs error <= 1e-4 * max(1, max |ref|).
fn assert_close(what: &str, got: &HostTensor, want: &HostTensor) {
    let err = got
        .max_abs_diff(&want.clone().reshape(got.shape().to_vec()).unwrap())
        .unwrap();
    let bound = 1e-4 * want.max_abs().max(1.0);
    assert!(err <= bound, "{what}: max abs error {err:e} > {bound:e}");
}

/// The criterion for running statistics, parameters after SGD and momentum buffers.
fn assert_state(what: &str, got: &HostTensor, want: &HostTensor) {
    if want.dtype() == DType::I64 {
        assert_eq!(got.as_i64(), want.as_i64(), "{what}");
        return;
    }
    let err = got.max_abs_diff(want).unwrap();
    assert!(err <= 1e-5, "{what}: max abs error {err:e} > 1e-5");
}

/// `sum(output * grad_output)` differentiated with respect to the input and every
/// trainable parameter, run in f32 and compared with PyTorch's autograd.
fn check_module(name: &str) {
    let model = train_model(name);
    let (params, io) = (
        load(name, "params.safetensors"),
        load(name, "train_io.safetensors"),
    );
    let mut graph = model.graph.clone();
    let output = model.output();
    let ty = graph.ty(output).clone();
    let seed = graph
        .push_source(
            Op::Input {
                name: "grad_output".into(),
            },
            ty,
            "",
        )
        .unwrap();
    let input = graph.inputs().find(|(n, _)| *n == "input").unwrap().1;
    let trained: Vec<(String, Value)> = graph
        .params()
        .filter(|(n, _)| StateKind::of(n) == StateKind::Param)
        .map(|(n, v)| (n.to_string(), v))
        .collect();
    let wrt: Vec<Value> = std::iter::once(input)
        .chain(trained.iter().map(|(_, v)| *v))
        .collect();
    let (mut graph, grads) = vjp(&graph, output, seed, &wrt).unwrap();
    graph.add_output("grad_input", grads[0]).unwrap();
    for ((n, _), g) in trained.iter().zip(&grads[1..]) {
        graph.add_output(format!("grad.{n}"), *g).unwrap();
    }
    let out = run(
        &graph,
        &params,
        &[("input", &io["input"]), ("grad_output", &io["grad_output"])],
    );
    assert_close(&format!("{name} output"), &out["output"], &io["output"]);
    assert_close(
        &format!("{name} grad_input"),
        &out["grad_input"],
        &io["grad_input"],
    );
    let want = load(name, "train_grads.safetensors");
    assert_eq!(
        want.len(),
        trained.len(),
        "{name}: one fixture gradient per trained parameter"
    );
    for (n, _) in &trained {
        assert_close(
            &format!("{name} d/d{n}"),
            &out[&format!("grad.{n}")],
            &want[n],
        );
    }
    for (n, t) in load(name, "train_buffers_after.safetensors") {
        assert_state(&format!("{name} {n}"), &out[&n], &t);
    }
}

#[test]
fn scconv_gradients_match_pytorch() {
    check_module("scconv");
}

#[test]
fn scbottleneck_s1_gradients_match_pytorch() {
    check_module("scbottleneck_s1");
}

#[test]
fn scbottleneck_s2_down_gradients_match_pytorch() {
    check_module("scbottleneck_s2_down");
}

/// The batch's labels, stored beside the input.
fn labels(name: &str) -> HostTensor {
    load(name, "train_io.safetensors")[LABELS].clone()
}

/// Two SGD steps of tiny_scnet from the initial state on one batch, checked against the
/// state after each step, the step-1 momentum and gradients, and the step-2 logits and loss.
#[test]
fn tiny_scnet_two_sgd_steps_match_pytorch() {
    let name = "tiny_scnet";
    let model = train_model(name);
    let step = train_step(&model.graph, &TrainConfig::default()).unwrap();
    let mut state = load(name, "params.safetensors");
    let input = load(name, "eval_io.safetensors")["input"].clone();
    let labels = labels(name);
    let lr = HostTensor::from_f32(vec![], vec![0.1]).unwrap();
    let mut momentum: TensorMap = step
        .params
        .iter()
        .map(|p| {
            let ty: &TensorType = &model.state.iter().find(|e| &e.name == p).unwrap().ty;
            (
                momentum_name(p),
                HostTensor::full(ty, 0.0, Default::default()),
            )
        })
        .collect();

    // Step-1 gradients, from the loss graph alone.
    let with = with_loss(&model.graph, 0.0).unwrap();
    let wrt: Vec<Value> = step
        .params
        .iter()
        .map(|p| with.params().find(|(n, _)| n == p).unwrap().1)
        .collect();
    let (mut grad_graph, grads) = grad(&with, with.output(LOSS).unwrap(), &wrt).unwrap();
    for (p, g) in step.params.iter().zip(grads) {
        grad_graph.add_output(format!("grad.{p}"), g).unwrap();
    }
    let out = run(&grad_graph, &state, &[("input", &input), (LABELS, &labels)]);
    for (p, want) in load(name, "train_grads.safetensors") {
        assert_close(&format!("step-1 d/d{p}"), &out[&format!("grad.{p}")], &want);
    }

    for (k, after) in [
        (1, "state_after_sgd_step1.safetensors"),
        (2, "state_after_sgd_step2.safetensors"),
    ] {
        let mut inputs: Vec<(&str, &HostTensor)> =
            vec![("input", &input), (LABELS, &labels), (LR, &lr)];
        inputs.extend(momentum.iter().map(|(n, t)| (n.as_str(), t)));
        let out = run(&step.graph, &state, &inputs);
        if k == 2 {
            let io = load(name, "step2_io.safetensors");
            assert_close("step-2 logits", &out["logits"], &io["logits"]);
            let (loss, want) = (out[LOSS].to_f64_vec()[0], io[LOSS].to_f64_vec()[0]);
            assert!(
                (loss - want).abs() <= 1e-5 * want.abs(),
                "step-2 loss {loss} vs {want}"
            );
        }
        for (n, want) in load(name, after) {
            assert_state(&format!("step {k}: {n}"), &out[&n], &want);
            state.insert(n.clone(), out[&n].clone());
        }
        for (n, t) in momentum.iter_mut() {
            *t = out[n].clone();
        }
        if k == 1 {
            for (p, want) in load(name, "sgd_momentum_after_step1.safetensors") {
                assert_state(
                    &format!("step-1 momentum of {p}"),
                    &momentum[&momentum_name(&p)],
                    &want,
                );
            }
        }
    }
}
