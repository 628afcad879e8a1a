//! Layout, reduction and matmul rules.

use crate::check::GradCheck;
use crate::common::{run, Rng};
use calib_ir::{DType, GraphBuilder, Mode, Op};
use calib_passes::grad;
use calib_runtime::HostTensor;
use std::collections::BTreeMap;

fn one_input(
    shape: &[usize],
    f: impl FnOnce(&mut GraphBuilder, calib_ir::Value) -> calib_ir::Result<calib_ir::Value>,
) -> GradCheck {
    let shape = shape.to_vec();
    GradCheck::new(move |b| {
        let x = b.input("x", DType::F32, shape)?;
        f(b, x)
    })
}

#[test]
fn broadcast_sums_over_created_and_stretched_axes() {
    let cases: [(&[usize], &[usize]); 5] = [
        (&[3], &[2, 4, 3]),
        (&[2, 1, 3], &[2, 4, 3]),
        (&[1, 1], &[3, 2]),
        (&[], &[2, 3]),
        (&[4, 1, 1], &[2, 4, 3, 1]),
    ];
    for (from, to) in cases {
        let to = to.to_vec();
        one_input(from, move |b, x| b.broadcast_to(x, &to)).run();
    }
}

#[test]
fn reshape() {
    one_input(&[2, 3, 4], |b, x| b.reshape(x, vec![4, 6])).run();
    one_input(&[2, 3, 4], |b, x| b.reshape(x, vec![24])).run();
}

#[test]
fn slice_pads_with_zeros_on_either_side() {
    for (axis, start, end) in [(1, 0, 2), (1, 1, 3), (1, 2, 5), (0, 1, 2), (2, 0, 4)] {
        let grads = one_input(&[2, 5, 4], move |b, x| b.slice(x, axis, start, end)).run();
        assert!(grads["x"] > 0.0);
    }
}

#[test]
fn concat_slices_the_gradient_back() {
    for axis in [0, 1, 2] {
        GradCheck::new(move |b| {
            let mut shapes = [[2, 3, 4]; 3];
            for (i, s) in shapes.iter_mut().enumerate() {
                s[axis] = i + 1;
            }
            let parts = [
                b.input("a", DType::F32, shapes[0].to_vec())?,
                b.input("b", DType::F32, shapes[1].to_vec())?,
                b.input("c", DType::F32, shapes[2].to_vec())?,
            ];
            // `a` appears twice: its two slices of the gradient add up.
            b.concat(&[parts[0], parts[1], parts[0], parts[2]], axis)
        })
        .run();
    }
}

#[test]
fn one_hot_gives_nothing_to_labels() {
    let mut rng = Rng::new(3);
    let grads = GradCheck::new(|b| {
        let labels = b.input("labels", DType::I64, vec![4])?;
        let x = b.input("x", DType::F32, vec![4, 5])?;
        let hot = b.unary(
            Op::OneHot {
                classes: 5,
                dtype: DType::F32,
            },
            labels,
        )?;
        b.mul(hot, x)
    })
    .with("labels", rng.labels(4, 5))
    .run();
    assert!(!grads.contains_key("labels") && grads["x"] > 0.0);
}

#[test]
fn reductions_over_every_axis_set() {
    let axes_sets: [&[usize]; 5] = [&[0], &[1], &[2], &[0, 2], &[0, 1, 2]];
    for axes in axes_sets {
        for keepdims in [false, true] {
            let ops = [
                Op::ReduceSum {
                    axes: axes.to_vec(),
                    keepdims,
                },
                Op::ReduceMean {
                    axes: axes.to_vec(),
                    keepdims,
                },
                Op::ReduceMax {
                    axes: axes.to_vec(),
                    keepdims,
                },
            ];
            for op in ops {
                one_input(&[3, 4, 5], move |b, x| b.unary(op, x)).run();
            }
        }
    }
}

#[test]
fn reduce_max_ties_share_the_gradient() {
    let mut b = GraphBuilder::new(Mode::Train, DType::F32);
    let x = b.input("x", DType::F32, vec![2, 3]).unwrap();
    let m = b.reduce_max(x, &[1], false).unwrap();
    let (mut g, d) = grad(&b.finish(), m, &[x]).unwrap();
    g.add_output("dx", d[0]).unwrap();
    let data = vec![1.0, 1.0, 0.0, 2.0, 5.0, 5.0];
    let values = BTreeMap::from([(
        "x".to_string(),
        HostTensor::from_f64(vec![2, 3], data).unwrap(),
    )]);
    assert_eq!(
        run(&g, &values)["dx"].to_f64_vec(),
        [0.5, 0.5, 0.0, 0.0, 0.5, 0.5]
    );
}

#[test]
fn matmul_with_every_transpose() {
    let (m, k, n) = (3, 4, 5);
    for ta in [false, true] {
        for tb in [false, true] {
            let a_shape = if ta { vec![k, m] } else { vec![m, k] };
            let b_shape = if tb { vec![n, k] } else { vec![k, n] };
            let grads = GradCheck::new(move |b| {
                let a = b.input("a", DType::F32, a_shape)?;
                let w = b.input("b", DType::F32, b_shape)?;
                b.matmul(a, w, ta, tb)
            })
            .run();
            assert!(grads["a"] > 0.0 && grads["b"] > 0.0);
        }
    }
}

#[test]
fn matmul_of_a_value_with_itself() {
    one_input(&[4, 4], |b, x| b.matmul(x, x, false, true)).run();
    one_input(&[4, 4], |b, x| b.matmul(x, x, true, false)).run();
}
