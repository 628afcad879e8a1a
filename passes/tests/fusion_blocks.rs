//! Whole blocks through fusion: every fixture module in eval and train mode, their
//! gradients, a whole training step, and fusion under limits and on bad input.

mod fusion_common;

use calib_ir::{DType, Graph, IrError, Mode, Op, Value};
use calib_models::{build, load_spec_file};
use calib_passes::fusion::{fuse, Device, FusionOptions, Limits};
use calib_passes::{train_step, vjp, TrainConfig};
use fusion_common::{check, check_with, fixture};

const MODULES: [&str; 4] = [
    "scconv",
    "scbottleneck_s1",
    "scbottleneck_s2_down",
    "tiny_scnet",
];

fn model(name: &str, mode: Mode) -> Graph {
    let file = load_spec_file(fixture(name)).unwrap();
    build(&file.spec, &file.input_shape.unwrap(), mode, DType::F32)
        .unwrap()
        .graph
}

/// The forward extended with the gradient of `sum(output * seed)` for every float
/// parameter.
fn with_gradients(forward: &Graph) -> Graph {
    let out = forward.outputs[0].value;
    let mut g = forward.clone();
    let seed = g
        .push_source(
            Op::Input {
                name: "seed".into(),
            },
            g.ty(out).clone(),
            "",
        )
        .unwrap();
    let wrt: Vec<Value> = forward
        .params()
        .filter(|(n, v)| forward.ty(*v).dtype.is_float() && forward.output(n).is_none())
        .map(|(_, v)| v)
        .collect();
    let (mut g, grads) = vjp(&g, out, seed, &wrt).unwrap();
    for (k, v) in grads.into_iter().enumerate() {
        g.add_output(format!("grad{k}"), v).unwrap();
    }
    g
}

#[test]
fn every_module_fuses_correctly_in_both_modes() {
    for name in MODULES {
        for mode in [Mode::Eval, Mode::Train] {
            let g = model(name, mode);
            let f = check(&g, 21);
            assert!(
                f.report.kernels_after * 3 < f.report.kernels_before,
                "{name} {mode:?}: {} of {} kernels",
                f.report.kernels_after,
                f.report.kernels_before
            );
            assert!(
                f.report.bytes_after < 0.6 * f.report.bytes_before,
                "{name} {mode:?}"
            );
        }
    }
}

#[test]
fn module_gradients_fuse_correctly() {
    for name in ["scconv", "scbottleneck_s2_down"] {
        check(&with_gradients(&model(name, Mode::Train)), 22);
    }
}

#[test]
fn a_whole_training_step_fuses_correctly() {
    let step = train_step(&model("tiny_scnet", Mode::Train), &TrainConfig::default()).unwrap();
    let f = check(&step.graph, 23);
    assert!(f.report.bytes_after < 0.6 * f.report.bytes_before);
    assert!(f.report.warnings.is_empty(), "{:?}", f.report.warnings);
}

#[test]
fn one_scbottleneck_forward_is_a_handful_of_kernels() {
    // Train mode: merged 1x1 convolutions, k1, k2 (pooling prologue), k3, k4 (gate
    // prologue), conv3, the shortcut convolution, and the final add + ReLU; every BN's
    // statistics accumulate in its convolution's kernel. Where the cost model prices
    // recomputing the gate for every tile and step of k4 above a map that writes it
    // once, the gate is a kernel of its own: nine.
    let f = check(&model("scbottleneck_s2_down", Mode::Train), 24);
    assert!(f.program.kernels.len() <= 9, "{}", f.program.to_text());
    // Eval mode folds every BN away: about one kernel per convolution.
    let f = check(&model("scbottleneck_s1", Mode::Eval), 25);
    assert!(f.program.kernels.len() <= 7, "{}", f.program.to_text());
}

#[test]
fn hitting_a_limit_gives_a_valid_less_fused_plan_and_a_warning() {
    let g = model("scbottleneck_s1", Mode::Train);
    let tight = FusionOptions {
        limits: Limits {
            nodes: 50,
            ..Limits::default()
        },
        ..FusionOptions::default()
    };
    let f = check_with(&g, 26, &tight);
    assert!(
        f.report.warnings.iter().any(|w| w.contains("node limit")),
        "{:?}",
        f.report.warnings
    );
    let loose = check(&g, 26);
    assert!(f.report.seconds_after >= loose.report.seconds_after);

    let out_of_time = FusionOptions {
        limits: Limits {
            total_seconds: 0.0,
            ..Limits::default()
        },
        ..FusionOptions::default()
    };
    let f = check_with(&g, 27, &out_of_time);
    assert!(
        f.report
            .warnings
            .iter()
            .any(|w| w.contains("total time limit")),
        "{:?}",
        f.report.warnings
    );
    assert_eq!(
        f.report.kernels_after,
        f.report.kernels_before - f.report.side_outputs - f.report.concat_views
    );
}

#[test]
fn bad_input_is_an_error_not_a_panic() {
    let mut g = model("scconv", Mode::Eval);
    g.nodes[5].inputs = vec![Value(999)];
    assert!(fuse(&g, &FusionOptions::default()).is_err());
    let mut g = model("scconv", Mode::Eval);
    g.outputs[0].value = Value(9999);
    assert!(fuse(&g, &FusionOptions::default()).is_err());
    let mut g = model("scconv", Mode::Eval);
    g.nodes[3].ty.shape[0] += 1;
    assert!(matches!(
        fuse(&g, &FusionOptions::default()),
        Err(calib_passes::PassError::Ir(IrError::TypeMismatch { .. }))
    ));

    let dir = std::env::temp_dir().join(format!("calib-device-{}", std::process::id()));
    std::fs::write(&dir, r#"{"name": "x", "peak_flops_f32": -1}"#).unwrap();
    assert!(Device::from_json_file(&dir).is_err());
    std::fs::write(&dir, serde_json::to_string(&Device::default()).unwrap()).unwrap();
    assert_eq!(Device::from_json_file(&dir).unwrap(), Device::default());
    std::fs::remove_file(&dir).unwrap();
}

#[test]
fn explanations_name_the_rewrites() {
    let g = model("scconv", Mode::Eval);
    let f = fuse(&g, &FusionOptions::default()).unwrap();
    let folded = f
        .program
        .kernels
        .iter()
        .find(|k| k.label.contains("k4"))
        .expect("a kernel for k4");
    let text = calib_passes::fusion::explain(&g, &f.program, &folded.name).unwrap();
    // Each step names its rule and shows the subterm it changed as algebra over the
    // layers: the eval BatchNorm's scale folded into k4's weights, its shifts into one
    // bias.
    assert!(text.contains("  bias-combine:"), "{text}");
    assert!(text.contains("(k4.0.weight * "), "{text}");
    assert!(
        !text.contains("Rewrite=>") && !text.contains("(mul "),
        "{text}"
    );
    assert!(calib_passes::fusion::explain(&g, &f.program, "k999").is_err());
}
