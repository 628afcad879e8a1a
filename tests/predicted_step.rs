//! The SCNet-50 training step (batch 64, 224x224) as planned for an H200 and priced by
//! the cost model from the code generation emits: the step fits 100 ms, GEMM launches
//! too small to fill the GPU carry almost none of the GEMM work, and the planner's own
//! estimates (which fusion and scheduling decide by) agree with the emitted code's.

use calib::codegen::compile;
use calib::ir::{DType, Mode};
use calib::passes::fusion::{fuse, FusionOptions};
use calib::passes::{train_step, TrainConfig};
use calib::predict::predict_step;
use std::collections::HashMap;

mod support;

#[test]
fn the_scnet50_step_is_predicted_within_the_targets() {
    let spec = calib::models::presets::preset("scnet50").unwrap();
    let model = calib::models::build(&spec, &[64, 3, 224, 224], Mode::Train, DType::F32).unwrap();
    let step = train_step(&model.graph, &TrainConfig::default()).unwrap();
    let options = FusionOptions::default();
    let fusion = fuse(&step.graph, &options).unwrap();
    let compiled = compile(&fusion.program).unwrap();
    let p = predict_step(&fusion.program, &compiled, &options.device, &HashMap::new());
    eprintln!("{}", p.to_text(5));

    assert!(p.step_ms <= 100.0, "predicted step {:.1} ms", p.step_ms);
    assert!(
        p.gemm_flops_in_small_grids < 0.05,
        "{:.1}% of the GEMM FLOPs in launches with fewer blocks than SMs",
        100.0 * p.gemm_flops_in_small_grids
    );
    let splits = fusion
        .program
        .kernels
        .iter()
        .filter(|k| {
            k.schedule
                .and_then(|s| s.gemm)
                .is_some_and(|g| g.split_k > 1)
        })
        .count();
    assert!(splits > 50, "{splits} GEMMs split k");

    // Planner against emitted code, kernel by kernel.
    let share = support::planner::share_within_twice(&fusion.program, &p, &options.device);
    assert!(
        share >= 0.9,
        "the planner's estimates are within 2x for only {:.1}% of the time",
        100.0 * share
    );
}

/// Turning a rewrite family off costs what the rewrites were worth, not more: without
/// the BatchNorm rewrites the plan once fused `y - mean(y)` into the convolution's
/// kernel, where a later launch recomputed the convolution for every element (two
/// launches predicted at 112 ms each; found by `calib compile --ablate`).
#[test]
fn plans_without_a_rewrite_family_stay_near_the_full_plan() {
    let spec = calib::models::presets::preset("scnet50").unwrap();
    let model = calib::models::build(&spec, &[64, 3, 224, 224], Mode::Train, DType::F32).unwrap();
    let step = train_step(&model.graph, &TrainConfig::default()).unwrap();
    let predicted = |options: &FusionOptions| {
        let fusion = fuse(&step.graph, options).unwrap();
        let compiled = compile(&fusion.program).unwrap();
        predict_step(&fusion.program, &compiled, &options.device, &HashMap::new()).step_ms
    };
    let full = predicted(&FusionOptions::default());
    let without = |family: &str| {
        predicted(&FusionOptions {
            rules: calib::passes::fusion::RuleSet::without([family]).unwrap(),
            ..FusionOptions::default()
        })
    };
    for family in ["cleanup", "batchnorm", "siblings"] {
        let ms = without(family);
        assert!(
            ms <= 1.1 * full,
            "without {family}: {ms:.1} ms against {full:.1} ms"
        );
    }
    // The BatchNorm gradient's mean term is a pass over every BatchNorm's batch: worth
    // about a tenth of the step on its own, but no more than that pass.
    let ms = without("batchnorm-grad");
    assert!(
        full < ms && ms <= 1.2 * full,
        "without batchnorm-grad: {ms:.1} ms against {full:.1} ms"
    );
}
