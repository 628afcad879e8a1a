//! GEMM schedules checked against the code they emit (`calib::schedules::refine`):
//! the planner's estimate ranks the candidates, code generation writes the best few,
//! and the cost model's price of the emitted code decides.

use calib::codegen::compile;
use calib::ir::{DType, Mode, Precision};
use calib::passes::fusion::{fuse, FusionOptions};
use calib::passes::{train_step, TrainConfig};
use calib::predict::predict_step;
use std::collections::{BTreeMap, HashMap};

/// ResNet-50's training step at batch 16 under TF32: after refinement every GEMM or
/// reduction kernel whose schedule changed is priced lower in its emitted code, and the
/// plan stays valid (each split's workspace sized for its new split).
#[test]
fn refined_schedules_price_every_changed_kernel_lower() {
    let spec = calib::models::presets::preset("resnet50").unwrap();
    let model = calib::models::build(&spec, &[16, 3, 224, 224], Mode::Train, DType::F32).unwrap();
    let step = train_step(&model.graph, &TrainConfig::default()).unwrap();
    let precision = Precision::Tf32;
    let graph = calib::passes::precision::apply_step(&step, precision)
        .unwrap()
        .graph;
    let options = FusionOptions {
        precision,
        ..FusionOptions::default()
    };
    let planned = fuse(&graph, &options).unwrap().program;
    let mut refined = planned.clone();
    let changed = calib::schedules::refine(&mut refined, &options);
    refined.validate().unwrap();
    let per_kernel = |program: &calib::ir::Program| {
        let compiled = compile(program).unwrap();
        let p = predict_step(program, &compiled, &options.device, &HashMap::new());
        let mut us: BTreeMap<String, f64> = BTreeMap::new();
        // Each launch with the gap before the next, as the step counts it: a split
        // that saves less than a launch costs more.
        let gap = options.device.timing.launch_gap_us;
        for l in &p.launches {
            *us.entry(l.kernel.clone()).or_default() += l.predicted_us + gap;
        }
        (us, p.step_ms)
    };
    let (before, before_ms) = per_kernel(&planned);
    let (after, after_ms) = per_kernel(&refined);
    eprintln!("{changed} schedules changed: {before_ms:.2} -> {after_ms:.2} ms");
    assert!(changed > 0, "no schedule changed");
    let mut moved = 0;
    for (k, kernel) in planned.kernels.iter().zip(&refined.kernels) {
        assert_eq!(k.name, kernel.name);
        if k.schedule == kernel.schedule {
            continue;
        }
        moved += 1;
        let (b, a) = (before[&k.name], after[&k.name]);
        assert!(
            a < b,
            "{}: {b:.1} us -> {a:.1} us {:?} -> {:?}",
            k.name,
            k.schedule,
            kernel.schedule
        );
        // A split of `k`, or of the statistics over the result, needs a workspace.
        let s = kernel.schedule.unwrap();
        let split = s.gemm.map_or(1, |g| g.split_k) * s.reduction.map_or(1, |r| r.split);
        assert_eq!(split > 1, kernel.workspace.is_some(), "{}", k.name);
    }
    assert_eq!(moved, changed);
    assert!(after_ms < before_ms);
}
