//! Data-parallel steps against what PyTorch DDP's semantics predict, computed in one
//! process: N replicas of batch b, per-replica BatchNorm, equal the mean of the
//! replicas' own gradients followed by one SGD update; with synchronized BatchNorm they
//! equal the single-process step on the whole batch; one replica is the plain step to
//! the bit; and a failing replica fails the group instead of hanging it.
//!
//! The net is the Fashion-MNIST SCNet (three SCNet blocks, 25 BatchNorms) on 16x16 inputs.

use calib_ir::{DType, Graph, GraphBuilder, Mode, Op};
use calib_models::{build_with, parse_spec_file, ModelSpec};
use calib_passes::{
    data_parallel_step, grad, momentum_name, train_step, with_loss, DataParallel, DataParallelStep,
    Sgd, TrainConfig, TrainStep, LOSS, LR,
};
use calib_runtime::{
    reference, Bindings, Collective, CollectiveError, HostTensor, InProcess, OpError, Outputs,
    Precision, RuntimeError, Storage, TensorMap,
};
use std::time::Duration;

const SIDE: usize = 16;
const CLASSES: usize = 10;
const LEARNING_RATE: f32 = 0.05;

const CONFIG: TrainConfig = TrainConfig {
    sgd: Sgd {
        momentum: 0.9,
        weight_decay: 1e-4,
        nesterov: true,
    },
    label_smoothing: 0.1,
};

fn spec() -> ModelSpec {
    parse_spec_file(include_str!("../../models/specs/fashion_scnet.json"))
        .unwrap()
        .spec
}

/// The train-mode forward graph for a batch of `batch`, BatchNorm synchronized over
/// `sync` replicas if given.
fn forward(batch: usize, sync: Option<usize>) -> Graph {
    let mut b = GraphBuilder::new(Mode::Train, DType::F32);
    if let Some(replicas) = sync {
        b = b.with_sync_bn(replicas);
    }
    build_with(&spec(), &[batch, 1, SIDE, SIDE], b)
        .unwrap()
        .graph
}

fn dp_step(b: usize, replicas: usize, sync: bool, bucket_bytes: usize) -> DataParallelStep {
    let dp = DataParallel {
        replicas,
        bucket_bytes,
    };
    data_parallel_step(&forward(b, sync.then_some(replicas)), &CONFIG, &dp).unwrap()
}

/// SplitMix64, so that every failure reproduces.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> f32 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        ((z ^ (z >> 31)) >> 40) as f32 / (1u64 << 24) as f32
    }

    fn tensor(&mut self, shape: &[usize], lo: f32, hi: f32) -> HostTensor {
        let n = shape.iter().product();
        let data = (0..n).map(|_| lo + (hi - lo) * self.next()).collect();
        HostTensor::from_f32(shape.to_vec(), data).unwrap()
    }
}

/// What one step starts from, and the global batch it sees.
struct Start {
    state: TensorMap,
    momentum: TensorMap,
    pixels: Vec<f32>,
    labels: Vec<i64>,
}

impl Start {
    fn new(step: &TrainStep, batch: usize) -> Start {
        let mut rng = Rng(7);
        let mut state = TensorMap::new();
        for (name, v) in step.graph.params() {
            let ty = step.graph.ty(v);
            let t = if ty.dtype == DType::I64 {
                HostTensor::from_i64(vec![], vec![3]).unwrap()
            } else if name.ends_with("running_var") || name.ends_with("bn.weight") {
                rng.tensor(&ty.shape, 0.5, 1.5)
            } else {
                rng.tensor(&ty.shape, -0.3, 0.3)
            };
            state.insert(name.to_string(), t);
        }
        let momentum = step
            .params
            .iter()
            .map(|p| (p.clone(), rng.tensor(state[p].shape(), -0.01, 0.01)))
            .collect();
        let pixels = rng.tensor(&[batch * SIDE * SIDE], -2.0, 2.0).to_f32_vec();
        let labels = (0..batch)
            .map(|_| (rng.next() * CLASSES as f32) as i64)
            .collect();
        Start {
            state,
            momentum,
            pixels,
            labels,
        }
    }

    /// Rows `r*b..(r+1)*b` of the batch.
    fn shard(&self, r: usize, b: usize) -> (HostTensor, HostTensor) {
        let px = SIDE * SIDE;
        let x = self.pixels[r * b * px..(r + 1) * b * px].to_vec();
        let y = self.labels[r * b..(r + 1) * b].to_vec();
        (
            HostTensor::from_f32(vec![b, 1, SIDE, SIDE], x).unwrap(),
            HostTensor::from_i64(vec![b], y).unwrap(),
        )
    }
}

/// Runs `step` on one replica's shard `(x, y)`.
fn run_step(
    step: &TrainStep,
    start: &Start,
    x: &HostTensor,
    y: &HostTensor,
    group: Option<&dyn Collective>,
    precision: Precision,
) -> Result<Outputs, RuntimeError> {
    let lr = HostTensor::from_f32(vec![], vec![LEARNING_RATE]).unwrap();
    let names: Vec<String> = step.params.iter().map(|p| momentum_name(p)).collect();
    let mut b = Bindings::new()
        .params(&start.state)
        .input("input", x)
        .input("labels", y)
        .input(LR, &lr);
    for (name, p) in names.iter().zip(&step.params) {
        b = b.input(name.clone(), &start.momentum[p]);
    }
    if let Some(g) = group {
        b = b.collective(g);
    }
    reference::run_with(&step.graph, &b, precision)
}

/// Every replica of `step` on its shard, one thread each; `shards[r]` is replica r's.
fn run_group(
    step: &TrainStep,
    start: &Start,
    shards: &[(HostTensor, HostTensor)],
    precision: Precision,
) -> Vec<Result<Outputs, RuntimeError>> {
    // A generous timeout that only turns a broken failure path into a failed test.
    let group = InProcess::group_with_timeout(shards.len(), Duration::from_secs(60));
    std::thread::scope(|s| {
        let handles: Vec<_> = group
            .into_iter()
            .zip(shards)
            .map(|(g, (x, y))| s.spawn(move || run_step(step, start, x, y, Some(&g), precision)))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

fn bits(t: &HostTensor) -> Vec<u64> {
    t.to_f64_vec().iter().map(|v| v.to_bits()).collect()
}

/// `max |got - want| / max |want|`.
fn relative_error(got: &HostTensor, want: &[f64]) -> f64 {
    let got = got.to_f64_vec();
    assert_eq!(got.len(), want.len());
    let diff = got
        .iter()
        .zip(want)
        .fold(0.0f64, |m, (g, w)| m.max((g - w).abs()));
    let scale = want.iter().fold(0.0f64, |m, w| m.max(w.abs()));
    if scale == 0.0 {
        diff
    } else {
        diff / scale
    }
}

/// Each trained parameter's gradient of the mean loss of one shard, with the forward
/// pass's own outputs (the new BatchNorm statistics): no collectives anywhere.
fn gradient_graph(step: &TrainStep, b: usize) -> Graph {
    let g = with_loss(&forward(b, None), CONFIG.label_smoothing).unwrap();
    let loss = g.output(LOSS).unwrap();
    let wrt: Vec<_> = step
        .params
        .iter()
        .map(|p| g.params().find(|(n, _)| n == p).unwrap().1)
        .collect();
    let (mut g, grads) = grad(&g, loss, &wrt).unwrap();
    for (p, d) in step.params.iter().zip(grads) {
        g.add_output(format!("grad.{p}"), d).unwrap();
    }
    g
}

/// PyTorch's SGD update (dampening 0) in f32, in the order the step graph computes it.
fn sgd(p: f32, buf: f32, d_p: f32) -> (f32, f32) {
    let Sgd {
        momentum,
        weight_decay,
        nesterov,
    } = CONFIG.sgd;
    let (mu, wd) = (momentum as f32, weight_decay as f32);
    let d = d_p + p * wd;
    let buf = buf * mu + d;
    let step = if nesterov { d + buf * mu } else { buf };
    (p - LEARNING_RATE * step, buf)
}

/// DDP with per-replica BatchNorm: every replica's parameters and momentum are those of
/// one SGD step on the mean of the replicas' own gradients (each computed on its shard
/// with its shard's batch statistics), and rank 0's BatchNorm buffers are shard 0's.
fn check_ddp_semantics(replicas: usize, b: usize) {
    let dp = dp_step(b, replicas, false, 16 << 10);
    assert!(
        dp.buckets.len() > 1,
        "the test should cover several buckets"
    );
    let start = Start::new(&dp.step, replicas * b);
    let shards: Vec<_> = (0..replicas).map(|r| start.shard(r, b)).collect();
    let outs: Vec<Outputs> = run_group(&dp.step, &start, &shards, Precision::F32)
        .into_iter()
        .map(Result::unwrap)
        .collect();

    let oracle = gradient_graph(&dp.step, b);
    let alone: Vec<Outputs> = shards
        .iter()
        .map(|(x, y)| {
            let bind = Bindings::new()
                .params(&start.state)
                .input("input", x)
                .input("labels", y);
            reference::run(&oracle, &bind).unwrap()
        })
        .collect();

    let mut worst = 0.0f64;
    for p in &dp.step.params {
        let n = start.state[p].numel();
        let grads: Vec<Vec<f32>> = alone
            .iter()
            .map(|o| o[&format!("grad.{p}")].to_f32_vec())
            .collect();
        let (param, buf) = (start.state[p].to_f32_vec(), start.momentum[p].to_f32_vec());
        let (mut want_p, mut want_buf) = (vec![0.0; n], vec![0.0; n]);
        for i in 0..n {
            let mean = grads.iter().map(|g| g[i] as f64).sum::<f64>() / replicas as f64;
            let (np, nb) = sgd(param[i], buf[i], mean as f32);
            want_p[i] = np as f64;
            want_buf[i] = nb as f64;
        }
        for (r, out) in outs.iter().enumerate() {
            // The replicas stay in step to the bit.
            assert_eq!(bits(&out[p]), bits(&outs[0][p]), "{p} on replica {r}");
            let m = momentum_name(p);
            assert_eq!(bits(&out[&m]), bits(&outs[0][&m]), "{m} on replica {r}");
        }
        worst = worst
            .max(relative_error(&outs[0][p], &want_p))
            .max(relative_error(&outs[0][&momentum_name(p)], &want_buf));
    }
    // Both sides average in f64 and update in f32 in the same order, so nothing but a
    // different rounding of the same formulas could separate them.
    assert!(
        worst <= 1e-6,
        "parameters or momentum off by {worst:e} (relative)"
    );
    for name in &dp.step.buffers {
        for (r, out) in outs.iter().enumerate() {
            assert_eq!(
                bits(&out[name]),
                bits(&alone[r][name]),
                "{name}: replica {r} keeps its own shard's statistics"
            );
        }
    }
    println!("{replicas} replicas: largest relative difference {worst:e}");
}

#[test]
fn two_replicas_follow_ddp_semantics() {
    check_ddp_semantics(2, 2);
}

#[test]
fn four_replicas_follow_ddp_semantics() {
    check_ddp_semantics(4, 2);
}

#[test]
fn synchronized_batch_norm_equals_the_whole_batch_in_one_process() {
    let (replicas, b) = (2, 3);
    let dp = dp_step(b, replicas, true, 16 << 10);
    let whole = train_step(&forward(replicas * b, None), &CONFIG).unwrap();
    let start = Start::new(&dp.step, replicas * b);
    let shards: Vec<_> = (0..replicas).map(|r| start.shard(r, b)).collect();
    // In f64 the two computations agree to rounding alone; any semantic difference
    // (a per-replica statistic, a biased count, a gradient scaled by the group size)
    // would show up at 1e-3 or more.
    let outs: Vec<Outputs> = run_group(&dp.step, &start, &shards, Precision::F64)
        .into_iter()
        .map(Result::unwrap)
        .collect();
    let (x, y) = start.shard(0, replicas * b);
    let want = run_step(&whole, &start, &x, &y, None, Precision::F64).unwrap();
    assert!(matches!(want[LOSS].storage(), Storage::F64(_)));

    let mut names: Vec<String> = whole.params.iter().map(|p| momentum_name(p)).collect();
    names.extend(whole.params.iter().cloned());
    names.extend(whole.buffers.iter().cloned());
    for name in &names {
        for (r, out) in outs.iter().enumerate() {
            let err = relative_error(&out[name], &want[name].to_f64_vec());
            assert!(err < 1e-10, "{name} on replica {r}: off by {err:e}");
        }
    }
    let loss: f64 = outs.iter().map(|o| o[LOSS].to_f64_vec()[0]).sum::<f64>() / replicas as f64;
    assert!((loss - want[LOSS].to_f64_vec()[0]).abs() < 1e-12);
}

#[test]
fn one_replica_is_the_plain_step_to_the_bit() {
    let b = 2;
    let plain = train_step(&forward(b, None), &CONFIG).unwrap();
    let start = Start::new(&plain, b);
    let (x, y) = start.shard(0, b);
    let want = run_step(&plain, &start, &x, &y, None, Precision::F32).unwrap();
    let group = InProcess::group(1);
    for sync in [false, true] {
        let dp = dp_step(b, 1, sync, 4 << 10);
        assert!(dp.buckets.len() > 1);
        for g in [None, Some(&group[0] as &dyn Collective)] {
            let got = run_step(&dp.step, &start, &x, &y, g, Precision::F32).unwrap();
            assert_eq!(got.len(), want.len());
            for (name, t) in &want {
                assert_eq!(bits(&got[name]), bits(t), "{name} (sync BN {sync})");
            }
        }
    }
}

fn collective_error(e: &RuntimeError) -> Option<&CollectiveError> {
    match e {
        RuntimeError::Op {
            source: OpError::Collective(c),
            ..
        } => Some(c),
        _ => None,
    }
}

#[test]
fn a_replica_with_a_misshapen_batch_fails_every_replica() {
    let (replicas, b) = (3, 2);
    let dp = dp_step(b, replicas, false, 16 << 10);
    let start = Start::new(&dp.step, replicas * b);
    let mut shards: Vec<_> = (0..replicas).map(|r| start.shard(r, b)).collect();
    shards[1].0 =
        HostTensor::from_f32(vec![b, 1, SIDE, SIDE + 1], vec![0.0; b * SIDE * (SIDE + 1)]).unwrap();
    let results = run_group(&dp.step, &start, &shards, Precision::F32);
    assert!(matches!(
        &results[1],
        Err(RuntimeError::BindingType { name, .. }) if name == "input"
    ));
    for r in [0, 2] {
        let err = results[r].as_ref().unwrap_err();
        assert_eq!(
            collective_error(err),
            Some(&CollectiveError::PeerLeft { peer: 1, round: 0 }),
            "replica {r}: {err}"
        );
    }
}

#[test]
fn a_replica_that_fails_mid_step_fails_the_others_mid_step() {
    // With synchronized BatchNorm the replicas have all-reduced several statistics
    // when replica 2 meets its bad label in the loss.
    let (replicas, b) = (3, 2);
    let dp = dp_step(b, replicas, true, 16 << 10);
    let start = Start::new(&dp.step, replicas * b);
    let mut shards: Vec<_> = (0..replicas).map(|r| start.shard(r, b)).collect();
    shards[2].1 = HostTensor::from_i64(vec![b], vec![0, 99]).unwrap();
    let results = run_group(&dp.step, &start, &shards, Precision::F32);
    assert!(
        matches!(
            &results[2],
            Err(RuntimeError::Op {
                source: OpError::LabelOutOfRange { label: 99, .. },
                ..
            })
        ),
        "{:?}",
        results[2].as_ref().err()
    );
    for r in [0, 1] {
        let err = results[r].as_ref().unwrap_err();
        match collective_error(err) {
            Some(CollectiveError::PeerLeft { peer: 2, round }) => assert!(*round > 0),
            _ => panic!("replica {r}: {err}"),
        }
    }
}

fn all_reduces(graph: &Graph) -> Vec<usize> {
    (0..graph.nodes.len())
        .filter(|&i| matches!(graph.nodes[i].op, Op::AllReduce { .. }))
        .collect()
}

#[test]
fn each_bucket_is_one_all_reduce() {
    let b = 2;
    // With 1-byte buckets every distinct gradient tensor is a bucket of its own; the
    // biases of a block's last BatchNorm and of its downsampling BatchNorm have one
    // gradient (their outputs are added), and share one.
    let tensors = dp_step(b, 2, false, 1);
    assert_eq!(
        all_reduces(&tensors.step.graph).len(),
        tensors.buckets.len()
    );
    let params: usize = tensors.buckets.iter().map(|bk| bk.params.len()).sum();
    assert_eq!(params, tensors.step.params.len());
    let shared: Vec<_> = tensors
        .buckets
        .iter()
        .filter(|bk| bk.params.len() > 1)
        .collect();
    assert!(!shared.is_empty());
    for bk in shared {
        assert!(
            bk.params.iter().all(|p| p.ends_with("bias")),
            "{:?}",
            bk.params
        );
    }
    // Which tensor each parameter's gradient is, and the tensors' sizes.
    let tensor_of: std::collections::HashMap<&str, usize> = tensors
        .buckets
        .iter()
        .enumerate()
        .flat_map(|(k, bk)| bk.params.iter().map(move |p| (p.as_str(), k)))
        .collect();
    let size = |k: usize| tensors.buckets[k].bytes;
    let production: Vec<&str> = tensors
        .buckets
        .iter()
        .flat_map(|bk| bk.params.iter().map(String::as_str))
        .collect();

    assert_eq!(
        all_reduces(&dp_step(b, 2, false, usize::MAX).step.graph).len(),
        1
    );
    for cap in [512, 4 << 10, 16 << 10] {
        let dp = dp_step(b, 2, false, cap);
        assert_eq!(
            all_reduces(&dp.step.graph).len(),
            dp.buckets.len(),
            "cap {cap}"
        );
        // The buckets cut the production order into greedy runs of at most `cap` bytes.
        let flat: Vec<&str> = dp
            .buckets
            .iter()
            .flat_map(|bk| bk.params.iter().map(String::as_str))
            .collect();
        assert_eq!(flat, production, "cap {cap}");
        for (k, bk) in dp.buckets.iter().enumerate() {
            let mut ids: Vec<usize> = bk.params.iter().map(|p| tensor_of[p.as_str()]).collect();
            ids.dedup();
            let bytes: usize = ids.iter().map(|&t| size(t)).sum();
            assert_eq!(bk.bytes, bytes);
            assert!(
                bytes <= cap || ids.len() == 1,
                "cap {cap}: bucket {k} too large"
            );
            if let Some(next) = dp.buckets.get(k + 1) {
                let first = size(tensor_of[next.params[0].as_str()]);
                assert!(
                    bytes + first > cap,
                    "cap {cap}: bucket {k} could have taken more"
                );
            }
        }
    }
}

#[test]
fn bucket_all_reduces_are_issued_during_the_backward_pass() {
    let dp = dp_step(2, 2, false, 4 << 10);
    let g = &dp.step.graph;
    let reduces = all_reduces(g);
    let last_backward = (0..g.nodes.len())
        .rev()
        .find(|&i| matches!(g.nodes[i].op, Op::Conv2dBackwardWeight { .. }))
        .unwrap();
    // The first bucket (the last layers' gradients) is on its way long before the
    // backward pass reaches the first convolution.
    assert!(reduces[0] < last_backward);
    // And the update still reads every bucket after its all-reduce.
    assert!(reduces.windows(2).all(|w| w[0] < w[1]));
}

#[test]
fn synchronized_batch_norm_all_reduces_its_two_statistics_both_ways() {
    let model = forward(2, Some(4));
    let bns = model
        .params()
        .filter(|(n, _)| n.ends_with("running_mean"))
        .count();
    assert!(bns > 20);
    assert_eq!(all_reduces(&model).len(), 2 * bns);
    let dp = dp_step(2, 4, true, usize::MAX);
    // Forward and backward of each statistic, plus the one gradient bucket.
    assert_eq!(all_reduces(&dp.step.graph).len(), 4 * bns + 1);
}

#[test]
fn a_forward_graph_for_another_group_size_is_refused() {
    let dp = DataParallel::new(2);
    let err = data_parallel_step(&forward(2, Some(4)), &CONFIG, &dp).unwrap_err();
    assert!(err.to_string().contains("across 4 replicas"), "{err}");
    let err = data_parallel_step(&forward(2, None), &CONFIG, &DataParallel::new(0)).unwrap_err();
    assert!(err.to_string().contains("at least one replica"), "{err}");
}
