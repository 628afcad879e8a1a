//! Elementwise ops, casts and half-precision rounding, against hand-computed values.

mod common;
use calib_ir::{DType, Op};
use calib_runtime::{HostTensor, Storage};
use common::*;

#[test]
fn unary_ops() {
    let x = t(&[5], &[-1.5, 0.0, 2.0, 4.0, 0.25]);
    assert_close(
        &op_both(Op::Relu, &[&x]),
        &[5],
        &[0.0, 0.0, 2.0, 4.0, 0.25],
        0.0,
    );
    assert_close(
        &op_both(Op::Neg, &[&x]),
        &[5],
        &[1.5, 0.0, -2.0, -4.0, -0.25],
        0.0,
    );
    let pos = t(&[3], &[1.0, 4.0, 0.25]);
    assert_close(&op_both(Op::Sqrt, &[&pos]), &[3], &[1.0, 2.0, 0.5], 0.0);
    assert_close(&op_both(Op::Rsqrt, &[&pos]), &[3], &[1.0, 0.5, 2.0], 0.0);
    assert_close(
        &op_both(Op::Log, &[&t(&[2], &[1.0, std::f32::consts::E])]),
        &[2],
        &[0.0, 1.0],
        1e-6,
    );
    assert_close(
        &op_both(Op::Exp, &[&t(&[2], &[0.0, 1.0])]),
        &[2],
        &[1.0, std::f32::consts::E],
        1e-6,
    );
    // sigmoid(ln 3) = 1 / (1 + 1/3) = 0.75; sigmoid(-ln 3) = 0.25.
    let s = op_both(Op::Sigmoid, &[&t(&[3], &[0.0, 3f32.ln(), -(3f32.ln())])]);
    assert_close(&s, &[3], &[0.5, 0.75, 0.25], 1e-6);
}

#[test]
fn sigmoid_saturates_without_nan() {
    let s = op(Op::Sigmoid, &[&t(&[2], &[-200.0, 200.0])]);
    assert_eq!(s.to_f32_vec(), vec![0.0, 1.0]);
}

#[test]
fn binary_ops() {
    let a = t(&[2, 3], &[1.0, -2.0, 3.0, 4.0, 5.0, -6.0]);
    let b = t(&[2, 3], &[2.0, 2.0, -1.0, 0.5, 5.0, 3.0]);
    assert_close(
        &op_both(Op::Add, &[&a, &b]),
        &[2, 3],
        &[3.0, 0.0, 2.0, 4.5, 10.0, -3.0],
        0.0,
    );
    assert_close(
        &op_both(Op::Sub, &[&a, &b]),
        &[2, 3],
        &[-1.0, -4.0, 4.0, 3.5, 0.0, -9.0],
        0.0,
    );
    assert_close(
        &op_both(Op::Mul, &[&a, &b]),
        &[2, 3],
        &[2.0, -4.0, -3.0, 2.0, 25.0, -18.0],
        0.0,
    );
    assert_close(
        &op_both(Op::Div, &[&a, &b]),
        &[2, 3],
        &[0.5, -1.0, -3.0, 8.0, 1.0, -2.0],
        0.0,
    );
    assert_close(
        &op_both(Op::Max, &[&a, &b]),
        &[2, 3],
        &[2.0, 2.0, 3.0, 4.0, 5.0, 3.0],
        0.0,
    );
}

#[test]
fn max_and_relu_propagate_nan() {
    let a = t(&[3], &[f32::NAN, 1.0, 2.0]);
    let b = t(&[3], &[0.0, f32::NAN, 1.0]);
    let m = op(Op::Max, &[&a, &b]).to_f32_vec();
    assert!(m[0].is_nan() && m[1].is_nan());
    assert_eq!(m[2], 2.0);
    assert!(op(Op::Relu, &[&a]).to_f32_vec()[0].is_nan());
}

#[test]
fn comparisons_give_one_or_zero_and_select_picks() {
    let a = t(&[4], &[1.0, 2.0, 3.0, -0.0]);
    let b = t(&[4], &[2.0, 2.0, 2.0, 0.0]);
    assert_close(
        &op_both(Op::CmpGt, &[&a, &b]),
        &[4],
        &[0.0, 0.0, 1.0, 0.0],
        0.0,
    );
    assert_close(
        &op_both(Op::CmpGe, &[&a, &b]),
        &[4],
        &[0.0, 1.0, 1.0, 1.0],
        0.0,
    );
    assert_close(
        &op_both(Op::CmpEq, &[&a, &b]),
        &[4],
        &[0.0, 1.0, 0.0, 1.0],
        0.0,
    );
    let cond = t(&[4], &[1.0, 0.0, -3.0, 0.0]);
    assert_close(
        &op_both(Op::Select, &[&cond, &a, &b]),
        &[4],
        &[1.0, 2.0, 3.0, 0.0],
        0.0,
    );
}

#[test]
fn integer_arithmetic_and_comparison() {
    // BatchNorm's num_batches_tracked + 1, on a 0-d tensor.
    let n = ti(&[], &[41]);
    let one = ti(&[], &[1]);
    assert_eq!(op(Op::Add, &[&n, &one]).as_i64(), Some(&[42][..]));
    let a = ti(&[3], &[5, -7, 2]);
    let b = ti(&[3], &[5, 3, 9]);
    assert_eq!(op(Op::CmpEq, &[&a, &b]).as_i64(), Some(&[1, 0, 0][..]));
    assert_eq!(op(Op::Max, &[&a, &b]).as_i64(), Some(&[5, 3, 9][..]));
    assert_eq!(op(Op::Relu, &[&a]).as_i64(), Some(&[5, 0, 2][..]));
    assert_eq!(
        op(Op::Select, &[&ti(&[3], &[0, 1, 0]), &a, &b]).as_i64(),
        Some(&[5, -7, 9][..])
    );
}

#[test]
fn cast_to_half_rounds_to_nearest_even() {
    let x = t(
        &[5],
        &[
            1.0 + 1.0 / 2048.0,   // halfway between 1 and 1 + 2^-10: ties to even, 1
            1.0 + 3.0 / 4096.0,   // nearer to 1 + 2^-10
            std::f32::consts::PI, // f16 pi is 3.140625
            65520.0,              // halfway past the largest f16 (65504): infinity
            1e-8,                 // below half the smallest subnormal (2^-25): zero
        ],
    );
    let h = op_both(Op::Cast { to: DType::F16 }, &[&x]);
    assert_eq!(h.dtype(), DType::F16);
    assert_eq!(
        h.to_f32_vec(),
        vec![1.0, 1.0 + 1.0 / 1024.0, 3.140625, f32::INFINITY, 0.0]
    );
}

#[test]
fn cast_to_bfloat16_rounds_to_nearest_even() {
    let x = t(
        &[3],
        &[1.0 + 1.0 / 256.0, 1.0 + 3.0 / 512.0, std::f32::consts::PI],
    );
    let b = op_both(Op::Cast { to: DType::BF16 }, &[&x]);
    assert_eq!(b.dtype(), DType::BF16);
    assert_eq!(b.to_f32_vec(), vec![1.0, 1.0078125, 3.140625]);
}

#[test]
fn casts_between_floats_and_integers() {
    let x = t(&[4], &[-1.7, 2.9, 0.4, -0.4]);
    assert_eq!(
        op(Op::Cast { to: DType::I64 }, &[&x]).as_i64(),
        Some(&[-1, 2, 0, 0][..])
    );
    let y = op(Op::Cast { to: DType::F32 }, &[&ti(&[2], &[3, -4])]);
    assert_eq!(y.as_f32(), Some(&[3.0, -4.0][..]));
}

#[test]
fn half_precision_results_are_rounded_after_every_op() {
    let a = HostTensor::new(DType::F16, vec![2], Storage::F32(vec![1.0, 1.0])).unwrap();
    let b = HostTensor::new(
        DType::F16,
        vec![2],
        Storage::F32(vec![1.0 / 2048.0, 3.0 / 2048.0]),
    )
    .unwrap();
    // 1 + 2^-11 ties to 1; 1 + 3 * 2^-11 ties to the even neighbour 1 + 2^-9.
    let y = op(Op::Add, &[&a, &b]);
    assert_eq!(y.dtype(), DType::F16);
    assert_eq!(y.to_f32_vec(), vec![1.0, 1.0 + 1.0 / 512.0]);
}

#[test]
fn half_tensors_are_rounded_on_construction() {
    // 0.1 = 1.6 * 2^-4; f16 keeps 10 mantissa bits: 1638 / 1024 * 2^-4.
    let h = HostTensor::new(DType::F16, vec![1], Storage::F32(vec![0.1])).unwrap();
    assert_eq!(h.to_f32_vec(), vec![1638.0 / 16384.0]);
}

#[test]
fn large_maps_take_the_parallel_path_and_agree() {
    // Above the parallel threshold: every element must still land in place.
    let n = 100_003;
    let x = t(
        &[n],
        &(0..n).map(|i| i as f32 - 50_000.0).collect::<Vec<_>>(),
    );
    let y = op(Op::Relu, &[&x]).to_f32_vec();
    assert!(y
        .iter()
        .enumerate()
        .all(|(i, &v)| v == (i as f32 - 50_000.0).max(0.0)));
}

#[test]
fn cast_to_tf32_rounds_ties_away_from_zero_in_f32_and_f64() {
    // 1 + 2^-11 and 1 + 3 * 2^-11 are ties: both go up (away from zero), unlike bf16's
    // ties to even; 1 + 2^-11 - 2^-20 is below the tie.
    let x = t(
        &[4],
        &[
            1.0 + 1.0 / 2048.0,
            -(1.0 + 3.0 / 2048.0),
            1.0 + 1.0 / 2048.0 - 1.0 / 1048576.0,
            std::f32::consts::PI,
        ],
    );
    let y = op_both(Op::Cast { to: DType::TF32 }, &[&x]);
    assert_eq!(y.dtype(), DType::TF32);
    assert_eq!(
        y.to_f32_vec(),
        vec![1.0 + 1.0 / 1024.0, -(1.0 + 2.0 / 1024.0), 1.0, 3.140625]
    );
    // A round trip through f32 keeps the rounded value.
    let back = op(Op::Cast { to: DType::F32 }, &[&y]);
    assert_eq!(back.to_f32_vec(), y.to_f32_vec());
}
