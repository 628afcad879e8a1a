//! The interpreter's peak memory is known before it runs, and a run or session that
//! does not fit the host is refused with the figures instead of ending in the allocator.

use calib_ir::{DType, Graph, GraphBuilder, Mode, Op, TensorType};
use calib_runtime::memory::host_available;
use calib_runtime::reference::{footprint, Footprint};
use calib_runtime::{
    reference, Backend, Bindings, Carry, HostTensor, Precision, Reference, RuntimeError,
};

#[test]
fn the_peak_is_the_largest_set_of_live_values() {
    // x [256] -> a = relu(x) -> b = exp(a) -> c = b + a; outputs c. While c is computed,
    // a, b and c are live: 3 * 1 KiB, and x is bound (1 KiB).
    let mut g = GraphBuilder::new(Mode::Eval, DType::F32);
    let x = g.input("x", DType::F32, vec![256]).unwrap();
    let a = g.relu(x).unwrap();
    let b = g.exp(a).unwrap();
    let c = g.add(b, a).unwrap();
    let d = g.relu(c).unwrap();
    g.output("d", d).unwrap();
    let graph = g.finish();
    let kib = 1024;
    assert_eq!(
        footprint(&graph, Precision::F32),
        Footprint {
            sources: kib,
            values: 3 * kib
        }
    );
    // In f64 every float takes twice the bytes.
    assert_eq!(
        footprint(&graph, Precision::F64),
        Footprint {
            sources: 2 * kib,
            values: 6 * kib
        }
    );
}

#[test]
fn the_weight_gradient_counts_a_partial_sum_per_chunk_of_images() {
    // A 3x3 conv's weight gradient keeps a partial dW per 4 images until it adds them.
    let values = |n: usize| {
        let mut graph = Graph::new();
        let mut input = |name: &str, shape: Vec<usize>| {
            let ty = TensorType::new(DType::F32, shape);
            let op = Op::Input { name: name.into() };
            graph.push_source(op, ty, "").unwrap()
        };
        let x = input("x", vec![n, 8, 8, 8]);
        let dy = input("dy", vec![n, 16, 8, 8]);
        let op = Op::Conv2dBackwardWeight {
            stride: [1, 1],
            padding: [1, 1],
            dilation: [1, 1],
            groups: 1,
            kernel: [3, 3],
        };
        let dw = graph.push(op, vec![x, dy], "").unwrap();
        graph.add_output("dw", dw).unwrap();
        footprint(&graph, Precision::F32).values
    };
    let weight = 16 * 8 * 3 * 3 * 4;
    // Four more images make one more partial; the rest does not change.
    assert_eq!(values(20) - values(16), weight);
    assert_eq!(values(16) - values(12), weight);
    assert_eq!(values(13), values(16));
}

/// `x [1]` broadcast to `elements` and summed: tiny to bind, `elements` floats to run.
fn broadcast_sum(elements: usize) -> Graph {
    let mut g = GraphBuilder::new(Mode::Eval, DType::F32);
    let x = g.input("x", DType::F32, vec![1]).unwrap();
    let big = g.broadcast_to(x, &[elements]).unwrap();
    let s = g.reduce_sum(big, &[0], false).unwrap();
    g.output("s", s).unwrap();
    g.finish()
}

#[test]
fn a_run_larger_than_the_host_is_refused_before_it_allocates() {
    let Some(available) = host_available() else {
        return; // no figure to check against (not Linux)
    };
    // Twice what the host has: were it not refused first, the allocation would abort.
    let elements = (available.bytes / 2 + 1) as usize;
    let graph = broadcast_sum(elements);
    let x = HostTensor::from_f32(vec![1], vec![1.0]).unwrap();
    let err = reference::run(&graph, &Bindings::new().input("x", &x)).unwrap_err();
    let RuntimeError::OutOfMemory {
        required,
        available: reported,
        ..
    } = &err
    else {
        panic!("expected OutOfMemory, got {err:?}");
    };
    assert!(*required >= elements as u64 * 4, "{err}");
    assert!(*reported <= available.bytes * 2, "{err}");
    let message = err.to_string();
    for part in [
        "not enough memory",
        &required.to_string(),
        &reported.to_string(),
        "MemAvailable",
    ] {
        assert!(message.contains(part), "`{part}` missing from: {message}");
    }
    // A session refuses before anything is loaded, with the bound tensors counted.
    let backend = Reference::new();
    let Err(err) = backend.session(&graph, &Carry::new(), 0) else {
        panic!("the session must be refused");
    };
    assert!(matches!(err, RuntimeError::OutOfMemory { .. }), "{err:?}");
    assert!(backend.check_memory(&graph, 1).is_err());
    // The same graph at a size that fits runs.
    let small = broadcast_sum(1000);
    let out = reference::run(&small, &Bindings::new().input("x", &x)).unwrap();
    assert_eq!(out["s"].as_f32(), Some(&[1000.0][..]));
    backend.check_memory(&small, 1).unwrap();
}

#[test]
fn each_replica_is_counted_with_its_own_copy() {
    let Some(available) = host_available() else {
        return;
    };
    // A quarter of the host per replica: one fits, eight do not.
    let graph = broadcast_sum((available.bytes / 16) as usize);
    let backend = Reference::new();
    backend.check_memory(&graph, 1).unwrap();
    let err = backend.check_memory(&graph, 8).unwrap_err().to_string();
    assert!(err.contains("8 replicas of"), "{err}");
    // Sessions are opened replica by replica: the eighth sees the seven before it.
    assert!(backend.session(&graph, &Carry::new(), 0).is_ok());
    let eighth = backend.session(&graph, &Carry::new(), 7).err();
    assert!(
        matches!(eighth, Some(RuntimeError::OutOfMemory { .. })),
        "{eighth:?}"
    );
}
