//! Whole plans (unfused and fused) of real modules, compiled and run on the simulator,
//! against the reference interpreter on the same graph.

mod support;

use calib_ir::{DType, Graph, Mode};
use calib_passes::fusion::{fuse, unfused, FusionOptions};
use calib_passes::{train_step, TrainConfig};
use std::time::Instant;
use support::check;

fn fixture_spec(name: &str) -> calib_models::ModelSpec {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/fixtures/");
    calib_models::load_spec_file(format!("{path}{name}"))
        .expect("fixture spec")
        .spec
}

/// Checks `graph` unfused and fused.
fn plans(label: &str, graph: &Graph, tol: f64) {
    for (kind, program) in [
        ("unfused", unfused(graph).expect("unfused plan")),
        (
            "fused",
            fuse(graph, &FusionOptions::default())
                .expect("fusion")
                .program,
        ),
    ] {
        let start = Instant::now();
        let err = check(graph, &program, 5, tol);
        eprintln!(
            "{label} {kind}: {} kernels, scaled error {err:.2e}, {:.2?}",
            program.kernels.len(),
            start.elapsed()
        );
    }
}

#[test]
fn scconv_forward_in_both_modes() {
    let spec = fixture_spec("scconv");
    for mode in [Mode::Eval, Mode::Train] {
        let model = calib_models::build(&spec, &[2, 8, 16, 16], mode, DType::F32).unwrap();
        plans(&format!("scconv {mode:?}"), &model.graph, 1e-5);
    }
}

#[test]
fn small_scnet_training_step() {
    let spec = fixture_spec("tiny_scnet");
    let model = calib_models::build(&spec, &[2, 3, 8, 8], Mode::Train, DType::F32).unwrap();
    let step = train_step(&model.graph, &TrainConfig::default()).unwrap();
    plans("tiny_scnet step at 2x3x8x8", &step.graph, 1e-4);
}
