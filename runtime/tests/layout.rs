//! Reductions, broadcast, reshape, slice, concat, matmul and one-hot, by hand.

mod common;
use calib_ir::{DType, Op};
use calib_runtime::{OpError, Precision, RuntimeError};
use common::*;

fn sum(axes: &[usize], keepdims: bool) -> Op {
    Op::ReduceSum {
        axes: axes.to_vec(),
        keepdims,
    }
}

#[test]
fn reductions_over_axes() {
    // x[a,b,c] = 12a + 4b + c.
    let x = iota(&[2, 3, 4]);
    assert_close(
        &op_both(sum(&[1], false), &[&x]),
        &[2, 4],
        &[12.0, 15.0, 18.0, 21.0, 48.0, 51.0, 54.0, 57.0],
        0.0,
    );
    let mean = op_both(
        Op::ReduceMean {
            axes: vec![0, 2],
            keepdims: true,
        },
        &[&x],
    );
    assert_close(&mean, &[1, 3, 1], &[7.5, 11.5, 15.5], 0.0);
    let max = op_both(
        Op::ReduceMax {
            axes: vec![2],
            keepdims: false,
        },
        &[&x],
    );
    assert_close(&max, &[2, 3], &[3.0, 7.0, 11.0, 15.0, 19.0, 23.0], 0.0);
    assert_close(&op_both(sum(&[0, 1, 2], false), &[&x]), &[], &[276.0], 0.0);
    // Axes listed out of order reduce the same set.
    assert_close(
        &op_both(sum(&[2, 0], false), &[&x]),
        &[3],
        &[60.0, 92.0, 124.0],
        0.0,
    );
}

#[test]
fn integer_sum() {
    let x = ti(&[2, 2], &[1, 2, 3, 4]);
    assert_eq!(op(sum(&[0], false), &[&x]).as_i64(), Some(&[4, 6][..]));
}

#[test]
fn long_f32_sums_accumulate_in_f64() {
    // A naive f32 running sum of a million 1.1s drifts by ~1e-3 relative.
    let n = 1_000_000;
    let x = t(&[n], &vec![1.1; n]);
    let m = op(
        Op::ReduceMean {
            axes: vec![0],
            keepdims: false,
        },
        &[&x],
    );
    assert_eq!(m.to_f32_vec(), vec![1.1f32]);
}

#[test]
fn broadcasts() {
    let row = t(&[3], &[1.0, 2.0, 3.0]);
    let b = |x, shape: &[usize]| {
        op_both(
            Op::Broadcast {
                shape: shape.to_vec(),
            },
            &[x],
        )
    };
    assert_close(
        &b(&row, &[2, 3]),
        &[2, 3],
        &[1.0, 2.0, 3.0, 1.0, 2.0, 3.0],
        0.0,
    );
    let col = t(&[2, 1], &[5.0, 6.0]);
    assert_close(
        &b(&col, &[2, 3]),
        &[2, 3],
        &[5.0, 5.0, 5.0, 6.0, 6.0, 6.0],
        0.0,
    );
    let scalar = t(&[], &[7.0]);
    assert_close(&b(&scalar, &[2, 2]), &[2, 2], &[7.0; 4], 0.0);
    // A per-channel BatchNorm scale over NCHW.
    let per_channel = t(&[1, 3, 1, 1], &[1.0, 2.0, 3.0]);
    let y = b(&per_channel, &[2, 3, 1, 2]);
    assert_close(
        &y,
        &[2, 3, 1, 2],
        &[1.0, 1.0, 2.0, 2.0, 3.0, 3.0, 1.0, 1.0, 2.0, 2.0, 3.0, 3.0],
        0.0,
    );
    // Middle axis broadcast between two kept axes.
    let x = t(&[2, 1, 2], &[1.0, 2.0, 3.0, 4.0]);
    assert_close(
        &b(&x, &[2, 2, 2]),
        &[2, 2, 2],
        &[1.0, 2.0, 1.0, 2.0, 3.0, 4.0, 3.0, 4.0],
        0.0,
    );
    let y = op(Op::Broadcast { shape: vec![2, 2] }, &[&ti(&[2], &[8, 9])]);
    assert_eq!(y.as_i64(), Some(&[8, 9, 8, 9][..]));
}

#[test]
fn reshape_keeps_row_major_order() {
    let y = op_both(Op::Reshape { shape: vec![3, 2] }, &[&iota(&[2, 3])]);
    assert_close(&y, &[3, 2], &[0.0, 1.0, 2.0, 3.0, 4.0, 5.0], 0.0);
}

#[test]
fn slices() {
    let x = iota(&[2, 3, 4]);
    let mid: Vec<f32> = (4..12).chain(16..24).map(|v| v as f32).collect();
    assert_close(
        &op_both(
            Op::Slice {
                axis: 1,
                start: 1,
                end: 3,
            },
            &[&x],
        ),
        &[2, 2, 4],
        &mid,
        0.0,
    );
    let last = [3.0, 7.0, 11.0, 15.0, 19.0, 23.0];
    assert_close(
        &op_both(
            Op::Slice {
                axis: 2,
                start: 3,
                end: 4,
            },
            &[&x],
        ),
        &[2, 3, 1],
        &last,
        0.0,
    );
    let first: Vec<f32> = (0..12).map(|v| v as f32).collect();
    assert_close(
        &op_both(
            Op::Slice {
                axis: 0,
                start: 0,
                end: 1,
            },
            &[&x],
        ),
        &[1, 3, 4],
        &first,
        0.0,
    );
}

#[test]
fn concats() {
    let a = t(&[2, 1], &[1.0, 2.0]);
    let b = t(&[2, 2], &[3.0, 4.0, 5.0, 6.0]);
    assert_close(
        &op_both(Op::Concat { axis: 1 }, &[&a, &b]),
        &[2, 3],
        &[1.0, 3.0, 4.0, 2.0, 5.0, 6.0],
        0.0,
    );
    let c = t(&[2, 1], &[7.0, 8.0]);
    let three = op_both(Op::Concat { axis: 1 }, &[&a, &c, &a]);
    assert_close(&three, &[2, 3], &[1.0, 7.0, 1.0, 2.0, 8.0, 2.0], 0.0);
    let y = op(
        Op::Concat { axis: 0 },
        &[&ti(&[1], &[1]), &ti(&[2], &[2, 3])],
    );
    assert_eq!(y.as_i64(), Some(&[1, 2, 3][..]));
}

#[test]
fn matmul_with_every_transpose_combination() {
    let a = t(&[2, 3], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
    let at = t(&[3, 2], &[1.0, 4.0, 2.0, 5.0, 3.0, 6.0]);
    let b = t(&[3, 2], &[7.0, 8.0, 9.0, 10.0, 11.0, 12.0]);
    let bt = t(&[2, 3], &[7.0, 9.0, 11.0, 8.0, 10.0, 12.0]);
    let want = [58.0, 64.0, 139.0, 154.0];
    for (ta, tb, lhs, rhs) in [
        (false, false, &a, &b),
        (true, false, &at, &b),
        (false, true, &a, &bt),
        (true, true, &at, &bt),
    ] {
        let y = op_both(
            Op::MatMul {
                transpose_a: ta,
                transpose_b: tb,
            },
            &[lhs, rhs],
        );
        assert_close(&y, &[2, 2], &want, 0.0);
    }
}

#[test]
fn one_hot_encodes_and_rejects_out_of_range_labels() {
    let onehot = Op::OneHot {
        classes: 3,
        dtype: DType::F32,
    };
    let y = op_both(onehot.clone(), &[&ti(&[3], &[2, 0, 1])]);
    assert_close(
        &y,
        &[3, 3],
        &[0.0, 0.0, 1.0, 1.0, 0.0, 0.0, 0.0, 1.0, 0.0],
        0.0,
    );
    for (labels, bad, at) in [([0, 3], 3, 1), ([-1, 0], -1, 0)] {
        let err = try_op_in(onehot.clone(), &[&ti(&[2], &labels)], Precision::F32).unwrap_err();
        match &err {
            RuntimeError::Op {
                source:
                    OpError::LabelOutOfRange {
                        index,
                        label,
                        classes: 3,
                    },
                ..
            } => {
                assert_eq!((*index, *label), (at, bad));
            }
            other => panic!("expected a label error, got {other}"),
        }
        assert!(err.to_string().contains("one_hot"), "{err}");
    }
}
