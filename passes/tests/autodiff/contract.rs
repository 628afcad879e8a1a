//! What `grad` and `vjp` promise besides correct numbers.

use calib_ir::{DType, Graph, GraphBuilder, Mode, Op, TensorType, Value};
use calib_passes::{grad, vjp, PassError};

/// `y = sum(exp(x) * w)` with an unused input `u` and an i64 counter `n`.
fn sample() -> (Graph, [Value; 4]) {
    let mut b = GraphBuilder::new(Mode::Train, DType::F32);
    let x = b.input("x", DType::F32, vec![3]).unwrap();
    let w = b.param("w", DType::F32, vec![3]).unwrap();
    let u = b.input("u", DType::F32, vec![2]).unwrap();
    let n = b.param("n", DType::I64, vec![]).unwrap();
    let e = b.exp(x).unwrap();
    let p = b.mul(e, w).unwrap();
    let y = b.reduce_sum(p, &[0], false).unwrap();
    b.output("y", y).unwrap();
    let _ = (u, n);
    (b.finish(), [x, w, u, y])
}

#[test]
fn the_forward_graph_is_kept_as_it_was() {
    let (g, [x, w, _, y]) = sample();
    let (out, grads) = grad(&g, y, &[x, w]).unwrap();
    out.validate().unwrap();
    assert_eq!(&out.nodes[..g.nodes.len()], &g.nodes[..]);
    assert_eq!(out.outputs, g.outputs);
    assert!(grads.iter().all(|d| d.0 >= g.nodes.len()));
    assert_eq!(out.ty(grads[0]), g.ty(x));
}

#[test]
fn an_unrelated_value_gets_a_zero_constant() {
    let (g, [_, _, u, y]) = sample();
    let (out, grads) = grad(&g, y, &[u]).unwrap();
    let node = out.node(grads[0]);
    assert_eq!(node.op, Op::Constant { value: 0.0 });
    assert_eq!(node.ty, TensorType::new(DType::F32, vec![2]));
}

#[test]
fn only_the_path_to_the_loss_is_differentiated() {
    let (g, [_, w, _, y]) = sample();
    let (out, _) = grad(&g, y, &[w]).unwrap();
    // d/dw needs exp(x) (already there), the seed and its broadcast: no exp adjoint.
    let added: Vec<&str> = out.nodes[g.nodes.len()..]
        .iter()
        .map(|n| n.op.name())
        .collect();
    assert!(
        !added.contains(&"div") && !added.contains(&"exp"),
        "{added:?}"
    );
    assert!(added.contains(&"mul"));
}

#[test]
fn bad_requests_are_errors() {
    let (g, [x, _, _, y]) = sample();
    let n = Value(3);
    assert!(matches!(
        grad(&g, y, &[n]),
        Err(PassError::NotDifferentiable { .. })
    ));
    assert!(matches!(
        grad(&g, n, &[x]),
        Err(PassError::NotDifferentiable { .. })
    ));
    assert!(matches!(
        grad(&g, y, &[Value(99)]),
        Err(PassError::UnknownValue { .. })
    ));
    assert!(matches!(
        grad(&g, Value(99), &[x]),
        Err(PassError::UnknownValue { .. })
    ));
    assert!(matches!(
        vjp(&g, y, x, &[x]),
        Err(PassError::SeedType { .. })
    ));
    let mut broken = g.clone();
    broken.nodes[4].inputs = vec![Value(7)];
    assert!(matches!(grad(&broken, y, &[x]), Err(PassError::Ir(_))));
}

#[test]
fn adjoint_ops_have_no_rule_of_their_own() {
    let mut b = GraphBuilder::new(Mode::Train, DType::F32);
    let x = b.input("x", DType::F32, vec![1, 1, 4, 4]).unwrap();
    let y = b.resize_nearest(x, [8, 8]).unwrap();
    let (g, d) = grad(&b.finish(), y, &[x]).unwrap();
    // d[0] = resize_nearest_backward(seed): differentiating it for its seed needs a
    // second-order rule, which autodiff refuses instead of guessing.
    let seed = g.node(d[0]).inputs[0];
    assert!(matches!(g.node(seed).op, Op::Constant { .. }));
    let err = grad(&g, d[0], &[seed]).unwrap_err();
    assert!(matches!(err, PassError::NotDifferentiable { .. }), "{err}");
    // Off its path, the same node is never visited.
    assert!(grad(&g, d[0], &[x]).is_ok());
}

#[test]
fn adjoint_ops_are_type_checked_against_their_forward_op() {
    let f32s = |s: &[usize]| TensorType::new(DType::F32, s.to_vec());
    let mut g = Graph::new();
    let mut source = |name: &str, shape: &[usize]| {
        let op = Op::Input { name: name.into() };
        g.push_source(op, f32s(shape), "").unwrap()
    };
    let (dy, w, x) = (
        source("dy", &[1, 4, 3, 3]),
        source("w", &[4, 2, 3, 3]),
        source("x", &[1, 2, 6, 5]),
    );
    let (s, p, d) = ([2, 2], [1, 1], [1, 1]);
    let data = |input_size| Op::Conv2dBackwardData {
        stride: s,
        padding: p,
        dilation: d,
        groups: 1,
        input_size,
    };
    let weight = |kernel| Op::Conv2dBackwardWeight {
        stride: s,
        padding: p,
        dilation: d,
        groups: 1,
        kernel,
    };
    let max = Op::MaxPool2dBackward {
        kernel: [3, 3],
        stride: s,
        padding: p,
        ceil_mode: false,
    };
    let resize = |input_size| Op::ResizeNearestBackward { input_size };
    // A 3x3, stride-2, pad-1 window maps 6 (or 5) inputs to 3 outputs.
    let ok = g.push(data([6, 5]), vec![dy, w], "").unwrap();
    assert_eq!(g.ty(ok), &f32s(&[1, 2, 6, 5]));
    let ok = g.push(weight([3, 3]), vec![x, dy], "").unwrap();
    assert_eq!(g.ty(ok), &f32s(&[4, 2, 3, 3]));
    assert!(g.push(data([8, 8]), vec![dy, w], "").is_err());
    assert!(g.push(weight([2, 2]), vec![x, dy], "").is_err());
    assert!(
        g.push(max.clone(), vec![x, dy], "").is_err(),
        "4 channels against 2"
    );
    assert!(g.push(resize([0, 3]), vec![dy], "").is_err());
    let shrunk = g.push(resize([2, 2]), vec![dy], "").unwrap();
    assert_eq!(g.ty(shrunk), &f32s(&[1, 4, 2, 2]));
}
