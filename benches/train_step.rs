//! One SGD training step of tiny_scnet (the fixture network) at batch 32 on the
//! reference interpreter: forward, cross-entropy, backward and update as one graph.
//! `bench/torch_train_step.py` times the same step in PyTorch for the ratio.

use calib::data::rng::Rng;
use calib::ir::{DType, Mode};
use calib::models::{build, load_spec_file};
use calib::passes::{train_step, TrainConfig};
use calib::runtime::{Backend, HostTensor, Reference};
use calib::train::{init_state, SgdState};
use criterion::{criterion_group, criterion_main, Criterion};

const BATCH: usize = 32;

fn tiny_scnet_step(c: &mut Criterion) {
    let fixture = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/fixtures/tiny_scnet");
    let spec = load_spec_file(fixture).expect("tiny_scnet meta.json").spec;
    let shape = [BATCH, 3, 32, 32];
    let model = build(&spec, &shape, Mode::Train, DType::F32).unwrap();
    let step = train_step(&model.graph, &TrainConfig::default()).unwrap();
    let mut rng = Rng::new(0);
    let sgd = SgdState::new(&step, init_state(&model.state, &mut rng));
    let x: Vec<f32> = (0..shape.iter().product::<usize>())
        .map(|_| rng.normal() as f32)
        .collect();
    let x = HostTensor::from_f32(shape.to_vec(), x).unwrap();
    let y = HostTensor::from_i64(vec![BATCH], (0..BATCH as i64).map(|i| i % 10).collect()).unwrap();
    let lr = HostTensor::from_f32(Vec::<usize>::new(), vec![0.1]).unwrap();
    let bindings = sgd.bindings(&step, &x, &y, &lr);
    let backend = Reference::new();
    c.bench_function("tiny_scnet train step, batch 32, reference", |b| {
        b.iter(|| backend.run(&step.graph, &bindings).unwrap())
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20);
    targets = tiny_scnet_step
}
criterion_main!(benches);
