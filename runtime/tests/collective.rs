//! The in-process group and the interpreter's `all_reduce`: every replica gets the same
//! bits, a group of one is the identity, and a failed or absent replica is an error,
//! never a hang.

use calib_ir::{DType, Graph, GraphBuilder, Mode, ReduceOp};
use calib_runtime::{
    reference, Bindings, Collective, CollectiveError, HostTensor, InProcess, OpError, RuntimeError,
    Storage,
};
use std::time::{Duration, Instant};

/// Runs `f(rank, handle)` on one thread per replica; results in rank order.
fn on_threads<T: Send>(group: Vec<InProcess>, f: impl Fn(usize, &InProcess) -> T + Sync) -> Vec<T> {
    std::thread::scope(|s| {
        let handles: Vec<_> = group
            .into_iter()
            .map(|g| {
                let f = &f;
                s.spawn(move || f(g.rank(), &g))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

fn f32s(v: &[f32]) -> Storage {
    Storage::F32(v.to_vec())
}

/// Only whether it failed, and how (`Storage` has no `Debug`).
fn outcome(r: Result<Storage, CollectiveError>) -> Result<(), CollectiveError> {
    r.map(|_| ())
}

/// The elements' bit patterns (f32 widened exactly), for exact comparisons.
fn bits(s: &Storage) -> Vec<u64> {
    s.to_f64_vec().iter().map(|x| x.to_bits()).collect()
}

#[test]
fn every_replica_gets_the_sum_and_the_mean_in_identical_bits() {
    // 1e8 + 1 - 1e8 + 3 is 3 or 4 in f32 depending on the order; the group accumulates
    // in f64 and gets 4 exactly.
    let data = [[1e8_f32, 0.1], [1.0, 0.2], [-1e8, 0.3], [3.0, 0.7]];
    let results = on_threads(InProcess::group(4), |r, g| {
        let sum = g.all_reduce(&f32s(&data[r]), ReduceOp::Sum).unwrap();
        let mean = g.all_reduce(&f32s(&data[r]), ReduceOp::Mean).unwrap();
        (bits(&sum), bits(&mean))
    });
    for (r, result) in results.iter().enumerate() {
        assert_eq!(result, &results[0], "replica {r}");
    }
    let tenths: f64 = data.iter().map(|d| d[1] as f64).sum();
    assert_eq!(results[0].0, bits(&f32s(&[4.0, tenths as f32])));
    assert_eq!(results[0].1, bits(&f32s(&[1.0, (tenths / 4.0) as f32])));
}

#[test]
fn a_group_of_one_is_the_identity_to_the_bit() {
    let group = InProcess::group(1);
    let data = f32s(&[-0.0, 1.0 / 3.0, f32::MIN_POSITIVE / 2.0, -7.5]);
    for reduce in [ReduceOp::Sum, ReduceOp::Mean] {
        let got = group[0].all_reduce(&data, reduce).unwrap();
        assert!(matches!(got, Storage::F32(_)));
        assert_eq!(bits(&got), bits(&data), "{reduce:?}");
    }
}

#[test]
fn f64_tensors_reduce_in_f64() {
    let results = on_threads(InProcess::group(2), |r, g| {
        let x = Storage::F64(vec![1.0 + r as f64 * 1e-12]);
        g.all_reduce(&x, ReduceOp::Mean).unwrap().to_f64_vec()
    });
    assert_eq!(results[0], vec![(2.0 + 1e-12) / 2.0]);
    assert_eq!(results[0], results[1]);
}

#[test]
fn a_replica_that_leaves_fails_its_peers_at_once() {
    let started = Instant::now();
    // The timeout only turns a regression into a failure instead of a hung test.
    let group = InProcess::group_with_timeout(3, Duration::from_secs(20));
    let results = on_threads(group, |r, g| {
        if r == 1 {
            // Fails before its first all-reduce; its handle is dropped on return.
            return Err(CollectiveError::Integer);
        }
        outcome(g.all_reduce(&f32s(&[1.0]), ReduceOp::Sum))
    });
    for r in [0, 2] {
        assert_eq!(
            results[r],
            Err(CollectiveError::PeerLeft { peer: 1, round: 0 }),
            "replica {r}"
        );
    }
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[test]
fn a_replica_that_never_arrives_times_out() {
    let group = InProcess::group_with_timeout(2, Duration::from_millis(50));
    let results = on_threads(group, |r, g| {
        if r == 1 {
            // Alive, holding its handle, but never joining: only the timeout helps.
            std::thread::sleep(Duration::from_millis(500));
            return Ok(());
        }
        outcome(g.all_reduce(&f32s(&[1.0]), ReduceOp::Sum))
    });
    assert!(
        matches!(
            results[0],
            Err(CollectiveError::Timeout {
                peer: 1,
                round: 0,
                ..
            })
        ),
        "{:?}",
        results[0]
    );
}

#[test]
fn tensors_of_different_lengths_are_refused() {
    let results = on_threads(InProcess::group(2), |r, g| {
        outcome(g.all_reduce(&f32s(&vec![1.0; 2 + r]), ReduceOp::Sum))
    });
    assert!(matches!(
        results[0],
        Err(CollectiveError::Mismatch { peer: 1, .. })
    ));
    assert!(matches!(
        results[1],
        Err(CollectiveError::Mismatch { peer: 0, .. })
    ));
}

/// `y = all_reduce(x, mean)` over `replicas`.
fn mean_graph(replicas: usize) -> Graph {
    let mut b = GraphBuilder::new(Mode::Eval, DType::F32);
    let x = b.input("x", DType::F32, vec![2]).unwrap();
    let y = b.all_reduce(x, ReduceOp::Mean, replicas).unwrap();
    b.output("y", y).unwrap();
    b.finish()
}

fn collective_error(e: RuntimeError) -> CollectiveError {
    match e {
        RuntimeError::Op {
            source: OpError::Collective(c),
            ..
        } => c,
        other => panic!("expected a collective error, got {other}"),
    }
}

#[test]
fn the_interpreter_runs_all_reduce_through_the_bound_group() {
    let graph = mean_graph(2);
    let outs = on_threads(InProcess::group(2), |r, g| {
        let x = HostTensor::from_f32(vec![2], vec![r as f32, 10.0 * r as f32]).unwrap();
        reference::run(&graph, &Bindings::new().input("x", &x).collective(g)).unwrap()
    });
    for out in &outs {
        assert_eq!(out["y"].as_f32(), Some(&[0.5, 5.0][..]));
    }
}

#[test]
fn a_graph_for_one_replica_needs_no_group_but_a_larger_one_does() {
    let x = HostTensor::from_f32(vec![2], vec![1.5, -2.0]).unwrap();
    let out = reference::run(&mean_graph(1), &Bindings::new().input("x", &x)).unwrap();
    assert_eq!(out["y"], x);

    let err = reference::run(&mean_graph(4), &Bindings::new().input("x", &x)).unwrap_err();
    assert_eq!(collective_error(err.clone()), CollectiveError::NoGroup(4));
    assert!(err.to_string().contains("no group is bound"), "{err}");

    let group = InProcess::group(1);
    let b = Bindings::new().input("x", &x).collective(&group[0]);
    let err = reference::run(&mean_graph(4), &b).unwrap_err();
    assert_eq!(
        collective_error(err),
        CollectiveError::GroupSize { graph: 4, group: 1 }
    );
}

#[test]
fn all_reduce_round_trips_through_the_text_form() {
    let graph = mean_graph(8);
    let text = calib_ir::text::print(&graph);
    assert!(
        text.contains("all_reduce(%0) reduce=\"mean\" replicas=8 : f32[2]"),
        "{text}"
    );
    assert_eq!(calib_ir::text::parse(&text).unwrap(), graph);
}
