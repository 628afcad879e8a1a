//! The interpreter as a whole: bindings, outputs, precision, BatchNorm, and the SCConv
//! fixture computed by the authors' PyTorch code.

mod common;
use calib_ir::{ConvSpec, DType, Graph, GraphBuilder, Mode, Node, Op, TensorType, Value};
use calib_runtime::{
    reference, weights, Backend, Bindings, HostTensor, Reference, RuntimeError, Storage, TensorMap,
};
use common::*;

/// `y = relu(x + b)` with input `x [2]` and param `b [2]`.
fn add_bias_graph() -> Graph {
    let mut g = GraphBuilder::new(Mode::Eval, DType::F32);
    let x = g.input("x", DType::F32, vec![2]).unwrap();
    let b = g.param("b", DType::F32, vec![2]).unwrap();
    let s = g.add(x, b).unwrap();
    let y = g.relu(s).unwrap();
    g.output("y", y).unwrap();
    g.output("bias", b).unwrap();
    g.output("again", y).unwrap();
    g.finish()
}

#[test]
fn outputs_are_returned_by_name_including_params_and_repeats() {
    let (x, b) = (t(&[2], &[1.0, -5.0]), t(&[2], &[0.5, 1.0]));
    let out = reference::run(
        &add_bias_graph(),
        &Bindings::new().input("x", &x).param("b", &b),
    )
    .unwrap();
    assert_eq!(out.len(), 3);
    assert_eq!(out["y"].as_f32(), Some(&[1.5, 0.0][..]));
    assert_eq!(out["again"], out["y"]);
    assert_eq!(out["bias"], b);
}

#[test]
fn missing_and_mistyped_bindings_are_named() {
    let g = add_bias_graph();
    let x = t(&[2], &[1.0, 2.0]);
    let err = reference::run(&g, &Bindings::new().input("x", &x)).unwrap_err();
    assert!(
        matches!(&err, RuntimeError::Unbound { kind: "param", name, .. } if name == "b"),
        "{err}"
    );
    assert!(
        err.to_string().contains("param `b`") && err.to_string().contains("f32[2]"),
        "{err}"
    );

    let long = t(&[3], &[1.0, 2.0, 3.0]);
    let err = reference::run(&g, &Bindings::new().input("x", &long).param("b", &x)).unwrap_err();
    assert!(
        matches!(&err, RuntimeError::BindingType { kind: "input", .. }),
        "{err}"
    );
    assert!(
        err.to_string().contains("f32[3]") && err.to_string().contains("expects f32[2]"),
        "{err}"
    );

    let half = HostTensor::new(DType::F16, vec![2], Storage::F32(vec![1.0, 2.0])).unwrap();
    let err = reference::run(&g, &Bindings::new().input("x", &x).param("b", &half)).unwrap_err();
    assert!(err.to_string().contains("f16[2]"), "{err}");
}

#[test]
fn malformed_graphs_are_rejected_before_running() {
    let mut g = add_bias_graph();
    // Claim the add produces three elements.
    let add = g.nodes.iter().position(|n| n.op == Op::Add).unwrap();
    g.nodes[add].ty = TensorType::new(DType::F32, vec![3]);
    let x = t(&[2], &[1.0, 2.0]);
    let err = reference::run(&g, &Bindings::new().input("x", &x).param("b", &x)).unwrap_err();
    assert!(matches!(err, RuntimeError::Graph(_)), "{err}");

    // An operand that refers forward.
    g.nodes.push(Node {
        op: Op::Relu,
        inputs: vec![Value(99)],
        ty: TensorType::new(DType::F32, vec![2]),
        scope: String::new(),
    });
    assert!(matches!(
        reference::run(&g, &Bindings::new()),
        Err(RuntimeError::Graph(_))
    ));
}

#[test]
fn nodes_no_output_needs_are_not_computed() {
    // A one-hot of out-of-range labels would fail, but nothing reads it.
    let mut g = GraphBuilder::new(Mode::Eval, DType::F32);
    let labels = g.input("labels", DType::I64, vec![1]).unwrap();
    let x = g.input("x", DType::F32, vec![1]).unwrap();
    let mut graph = g.finish();
    graph
        .push(
            Op::OneHot {
                classes: 2,
                dtype: DType::F32,
            },
            vec![labels],
            "",
        )
        .unwrap();
    let y = graph.push(Op::Neg, vec![x], "").unwrap();
    graph.add_output("y", y).unwrap();
    let (l, xv) = (ti(&[1], &[5]), t(&[1], &[2.0]));
    let out = reference::run(&graph, &Bindings::new().input("labels", &l).input("x", &xv)).unwrap();
    assert_eq!(out["y"].as_f32(), Some(&[-2.0][..]));
}

#[test]
fn f64_backend_computes_and_returns_f64() {
    // 1 + 1e-10 is lost in f32 but kept in f64.
    let (x, b) = (
        t(&[2], &[1.0, 2.0]),
        HostTensor::from_f64(vec![2], vec![1e-10, 0.0]).unwrap(),
    );
    let bind = Bindings::new().input("x", &x).param("b", &b);
    let backend = Reference::f64();
    assert_eq!(backend.name(), "reference");
    let out = backend.run(&add_bias_graph(), &bind).unwrap();
    assert_eq!(out["y"].as_f64(), Some(&[1.0 + 1e-10, 2.0][..]));
    let out = Reference::new().run(&add_bias_graph(), &bind).unwrap();
    assert_eq!(out["y"].as_f32(), Some(&[1.0, 2.0][..]));
}

#[test]
fn batch_norm_train_normalizes_and_updates_running_statistics() {
    // 1x1 conv with weight diag(1, 2): channel 0 is x0, channel 1 is 2 x1.
    let mut g = GraphBuilder::new(Mode::Train, DType::F32);
    let x = g.input("input", DType::F32, vec![2, 2, 1, 2]).unwrap();
    let c = g.conv_layer("conv", x, &ConvSpec::new(2, 1)).unwrap();
    let n = g.batch_norm("bn", c).unwrap();
    let y = g.relu(n).unwrap();
    g.output("normalized", n).unwrap();
    g.output("output", y).unwrap();
    let graph = g.finish();

    // Channel 0 over the batch: 1 3 5 7 (mean 4, biased var 5, unbiased 20/3);
    // channel 1: 2 * (2 4 0 -2) = 4 8 0 -4 (mean 2, biased var 20, unbiased 80/3).
    let input = t(&[2, 2, 1, 2], &[1.0, 3.0, 2.0, 4.0, 5.0, 7.0, 0.0, -2.0]);
    let mut state = TensorMap::new();
    state.insert(
        "conv.weight".into(),
        t(&[2, 2, 1, 1], &[1.0, 0.0, 0.0, 2.0]),
    );
    state.insert("bn.weight".into(), t(&[2], &[2.0, 0.5]));
    state.insert("bn.bias".into(), t(&[2], &[0.1, -0.3]));
    state.insert("bn.running_mean".into(), t(&[2], &[0.5, -1.0]));
    state.insert("bn.running_var".into(), t(&[2], &[1.0, 2.0]));
    state.insert("bn.num_batches_tracked".into(), ti(&[], &[0]));
    let out = reference::run(
        &graph,
        &Bindings::new().input("input", &input).params(&state),
    )
    .unwrap();

    assert_close(
        &out["bn.running_mean"],
        &[2],
        &[0.9 * 0.5 + 0.1 * 4.0, -0.9 + 0.1 * 2.0],
        1e-6,
    );
    let rv = [0.9 * 1.0 + 0.1 * 20.0 / 3.0, 0.9 * 2.0 + 0.1 * 80.0 / 3.0];
    assert_close(&out["bn.running_var"], &[2], &rv, 1e-6);
    assert_eq!(out["bn.num_batches_tracked"].as_i64(), Some(&[1][..]));

    // Each channel of (normalized - bias) / weight has zero mean and unit biased variance.
    let v = out["normalized"].to_f64_vec();
    for (ch, (gamma, beta)) in [(2.0, 0.1), (0.5, -0.3)].into_iter().enumerate() {
        let z: Vec<f64> = [0, 1, 4, 5]
            .iter()
            .map(|&i| (v[i + 2 * ch] - beta) / gamma)
            .collect();
        let mean = z.iter().sum::<f64>() / 4.0;
        let var = z.iter().map(|a| (a - mean) * (a - mean)).sum::<f64>() / 4.0;
        assert!(
            mean.abs() < 1e-6 && (var - 1.0).abs() < 1e-4,
            "channel {ch}: mean {mean}, var {var}"
        );
    }
    // First element by hand: 2 (1 - 4) / sqrt(5 + 1e-5) + 0.1, clipped by the ReLU.
    let first = 2.0 * (1.0 - 4.0) / (5.0f64 + 1e-5).sqrt() + 0.1;
    assert!((v[0] - first).abs() < 1e-6);
    assert_eq!(out["output"].to_f32_vec()[0], 0.0);
    assert_eq!(
        out["output"].to_f32_vec()[1],
        out["normalized"].to_f32_vec()[1].max(0.0)
    );
}

/// The authors' SCConv: `k4(k3(x) * sigmoid(x + up(k2(x))))`, k2 = BN(conv(avgpool4(x))).
fn scconv(mode: Mode, shape: &[usize]) -> Graph {
    let mut g = GraphBuilder::new(mode, DType::F32);
    let x = g.input("input", DType::F32, shape.to_vec()).unwrap();
    let spec = ConvSpec::new(shape[1], 3).padding(1);
    let pooled = g.avg_pool2d(x, 4, 4, 0, false, true).unwrap();
    let k2 = g.scoped("k2", |g| {
        let y = g.conv_layer("1", pooled, &spec)?;
        g.batch_norm("2", y)
    });
    let up = g.resize_nearest(k2.unwrap(), [shape[2], shape[3]]).unwrap();
    let sum = g.add(x, up).unwrap();
    let gate = g.sigmoid(sum).unwrap();
    let k3 = g.scoped("k3", |g| {
        let y = g.conv_layer("0", x, &spec)?;
        g.batch_norm("1", y)
    });
    let gated = g.mul(k3.unwrap(), gate).unwrap();
    let y = g.scoped("k4", |g| {
        let y = g.conv_layer("0", gated, &spec)?;
        g.batch_norm("1", y)
    });
    g.output("output", y.unwrap()).unwrap();
    g.finish()
}

fn load(file: &str) -> TensorMap {
    weights::load(fixtures().join("scconv").join(file)).unwrap()
}

/// The fixtures' forward criterion: max abs error <= 1e-4 * max(1, max |reference|).
fn assert_matches_fixture(got: &HostTensor, want: &HostTensor, what: &str) {
    let tol = 1e-4 * want.max_abs().max(1.0);
    let err = got.max_abs_diff(want).unwrap();
    assert!(err <= tol, "{what}: max abs error {err} > {tol}");
}

#[test]
fn scconv_eval_matches_pytorch() {
    let params = load("params.safetensors");
    let io = load("eval_io.safetensors");
    let graph = scconv(Mode::Eval, io["input"].shape());
    let bind = Bindings::new().input("input", &io["input"]).params(&params);
    let out = reference::run(&graph, &bind).unwrap();
    assert_matches_fixture(&out["output"], &io["output"], "eval output (f32)");
    let out = reference::run_f64(&graph, &bind).unwrap();
    assert_matches_fixture(&out["output"], &io["output"], "eval output (f64)");
}

#[test]
fn scconv_train_matches_pytorch_output_and_buffers() {
    let params = load("params.safetensors");
    let io = load("train_io.safetensors");
    let after = load("train_buffers_after.safetensors");
    let graph = scconv(Mode::Train, io["input"].shape());
    let out = reference::run(
        &graph,
        &Bindings::new().input("input", &io["input"]).params(&params),
    )
    .unwrap();
    assert_matches_fixture(&out["output"], &io["output"], "train output");
    for (name, want) in &after {
        let got = &out[name.as_str()];
        if want.dtype() == DType::I64 {
            assert_eq!(got, want, "{name}");
        } else {
            let err = got.max_abs_diff(want).unwrap();
            assert!(err <= 1e-5, "{name}: max abs error {err}");
        }
    }
    assert_eq!(after.len(), 9);
}
