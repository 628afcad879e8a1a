//! Fusion time of the SCNet-50 training step at batch 64, 224x224 (the target
//! is 10 s on a 2-core machine). Graph construction is outside the measurement.
//!
//! `cargo bench -p calib-passes --bench fusion`

use calib_ir::{DType, Mode};
use calib_passes::fusion::{fuse, FusionOptions};
use calib_passes::{train_step, TrainConfig};
use criterion::{criterion_group, criterion_main, Criterion};
use std::hint::black_box;
use std::time::Duration;

fn scnet50_training_step(c: &mut Criterion) {
    let spec = calib_models::presets::preset("scnet50").expect("scnet50 is a preset");
    let model = calib_models::build(&spec, &[64, 3, 224, 224], Mode::Train, DType::F32)
        .expect("SCNet-50 builds");
    let step = train_step(&model.graph, &TrainConfig::default()).expect("the step derives");
    let options = FusionOptions::default();
    let mut group = c.benchmark_group("fusion");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(20));
    group.bench_function("scnet50_train_step_b64", |b| {
        b.iter(|| fuse(black_box(&step.graph), &options).expect("fusion succeeds"))
    });
    group.finish();
}

criterion_group!(benches, scnet50_training_step);
criterion_main!(benches);
