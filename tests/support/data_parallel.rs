//! A small data-parallel training step and the means to run and compare it, shared by
//! the simulator's and the GPU's data-parallel tests.

use calib::data::rng::Rng;
use calib::ir::{DType, GraphBuilder, Mode};
use calib::models::{build_with, parse_spec_file, ModelSpec};
use calib::passes::{
    data_parallel_step, momentum_name, DataParallel, DataParallelStep, Sgd, TrainConfig,
};
use calib::runtime::{Backend, Bindings, Collective, HostTensor, InProcess, Outputs};
use calib::train::{init_state, SgdState};

pub const SIDE: usize = 16;
pub const SHARD: usize = 4;

fn spec() -> ModelSpec {
    parse_spec_file(include_str!("../../models/specs/fashion_scnet.json"))
        .unwrap()
        .spec
}

/// The Fashion-MNIST SCNet's per-replica step for `replicas` on 16x16 inputs; small
/// buckets so that several all-reduces interleave with the backward pass.
pub fn step(replicas: usize, sync_bn: bool) -> DataParallelStep {
    let mut b = GraphBuilder::new(Mode::Train, DType::F32);
    if sync_bn {
        b = b.with_sync_bn(replicas);
    }
    let forward = build_with(&spec(), &[SHARD, 1, SIDE, SIDE], b)
        .unwrap()
        .graph;
    let config = TrainConfig {
        sgd: Sgd {
            momentum: 0.9,
            weight_decay: 1e-4,
            nesterov: true,
        },
        label_smoothing: 0.1,
    };
    let dp = DataParallel {
        replicas,
        bucket_bytes: 64 << 10,
    };
    data_parallel_step(&forward, &config, &dp).unwrap()
}

/// The model state and SGD momentum every replica starts from, and the global batch.
pub struct Start {
    pub sgd: SgdState,
    pub pixels: Vec<f32>,
    pub labels: Vec<i64>,
    pub lr: HostTensor,
}

pub fn start(dp: &DataParallelStep, replicas: usize) -> Start {
    let model = build_with(
        &spec(),
        &[SHARD, 1, SIDE, SIDE],
        GraphBuilder::new(Mode::Train, DType::F32),
    )
    .unwrap();
    let sgd = SgdState::new(&dp.step, init_state(&model.state, &mut Rng::new(7)));
    let mut rng = Rng::new(11);
    Start {
        sgd,
        pixels: (0..replicas * SHARD * SIDE * SIDE)
            .map(|_| rng.unit_f64() as f32)
            .collect(),
        labels: (0..replicas * SHARD)
            .map(|_| rng.below(10) as i64)
            .collect(),
        lr: HostTensor::from_f32(Vec::<usize>::new(), vec![0.05]).unwrap(),
    }
}

impl Start {
    /// Replica `r`'s shard of the batch.
    pub fn shard(&self, r: usize) -> (HostTensor, HostTensor) {
        let n = SHARD * SIDE * SIDE;
        (
            HostTensor::from_f32(
                vec![SHARD, 1, SIDE, SIDE],
                self.pixels[r * n..(r + 1) * n].to_vec(),
            )
            .unwrap(),
            HostTensor::from_i64(
                vec![SHARD],
                self.labels[r * SHARD..(r + 1) * SHARD].to_vec(),
            )
            .unwrap(),
        )
    }

    /// Replica `r`'s bindings (without a group).
    pub fn bindings<'a>(
        &'a self,
        dp: &DataParallelStep,
        x: &'a HostTensor,
        y: &'a HostTensor,
    ) -> Bindings<'a> {
        self.sgd.bindings(&dp.step, x, y, &self.lr)
    }
}

/// Every replica's outputs for one step of `backend`, the replicas as threads joined by
/// an in-process group.
pub fn run(backend: &(dyn Backend + Sync), dp: &DataParallelStep, replicas: usize) -> Vec<Outputs> {
    let start = start(dp, replicas);
    std::thread::scope(|s| {
        let handles: Vec<_> = InProcess::group(replicas)
            .into_iter()
            .map(|group| {
                let start = &start;
                s.spawn(move || {
                    let (x, y) = start.shard(group.rank());
                    let b = start.bindings(dp, &x, &y).collective(&group);
                    backend.run(&dp.step.graph, &b).unwrap()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

/// The largest difference between two runs' new parameters and momentum, relative to
/// the largest magnitude of the reference tensor.
pub fn worst_relative_error(got: &Outputs, reference: &Outputs, dp: &DataParallelStep) -> f64 {
    dp.step
        .params
        .iter()
        .flat_map(|p| [p.clone(), momentum_name(p)])
        .map(|name| {
            let (a, b) = (got[&name].to_f64_vec(), reference[&name].to_f64_vec());
            let scale = b.iter().fold(1e-12f64, |m, v| m.max(v.abs()));
            a.iter()
                .zip(&b)
                .map(|(x, y)| (x - y).abs() / scale)
                .fold(0.0, f64::max)
        })
        .fold(0.0, f64::max)
}

/// Generated kernels and the interpreter sum in different orders, so results agree to
/// f32 rounding, amplified a little by the BatchNorm backward pass (the simulator
/// measured 2.5e-6 at worst).
pub const TOLERANCE: f64 = 2e-5;

/// Checks that replicas hold the same parameters, bit for bit.
pub fn assert_replicas_agree(outputs: &[Outputs], dp: &DataParallelStep) {
    for name in &dp.step.params {
        for o in &outputs[1..] {
            assert_eq!(
                o[name].to_f32_vec(),
                outputs[0][name].to_f32_vec(),
                "{name}"
            );
        }
    }
}
