//! Convolution and its adjoints: hand-computed cases, then properties over many shapes.

mod common;
use calib_ir::Op;
use calib_runtime::{HostTensor, Precision};
use common::*;

fn conv(stride: usize, padding: usize, dilation: usize, groups: usize) -> Op {
    Op::Conv2d {
        stride: [stride; 2],
        padding: [padding; 2],
        dilation: [dilation; 2],
        groups,
    }
}

#[test]
fn stride_2_with_padding_and_an_asymmetric_kernel() {
    // Two images: iota 0..16 and its negation. Channel 0: all-ones 3x3 kernel; channel 1:
    // 1 at the top-left tap and 2 at the bottom-right one (catches a flipped kernel).
    let mut data: Vec<f32> = (0..16).map(|i| i as f32).collect();
    data.extend((0..16).map(|i| -(i as f32)));
    let x = t(&[2, 1, 4, 4], &data);
    let mut w = vec![1.0; 9];
    w.extend([1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 2.0]);
    let w = t(&[2, 1, 3, 3], &w);
    let y = op_both(conv(2, 1, 1, 1), &[&x, &w]);
    let first = [10.0, 24.0, 51.0, 90.0, 10.0, 14.0, 26.0, 35.0];
    let want: Vec<f32> = first
        .iter()
        .copied()
        .chain(first.iter().map(|v| -v))
        .collect();
    assert_close(&y, &[2, 2, 2, 2], &want, 0.0);
}

#[test]
fn stride_2_drops_the_odd_last_row_and_column() {
    let y = op_both(
        conv(2, 0, 1, 1),
        &[&iota(&[1, 1, 5, 5]), &t(&[1, 1, 2, 2], &[1.0; 4])],
    );
    assert_close(&y, &[1, 1, 2, 2], &[12.0, 20.0, 52.0, 60.0], 0.0);
}

#[test]
fn dilation_2() {
    // y[i,j] = x[i,j] + 2 x[i,j+2] + 3 x[i+2,j] + 4 x[i+2,j+2] with x[r,c] = 5r + c,
    // which is 10 (5i + j) + 82.
    let y = op_both(
        conv(1, 0, 2, 1),
        &[
            &iota(&[1, 1, 5, 5]),
            &t(&[1, 1, 2, 2], &[1.0, 2.0, 3.0, 4.0]),
        ],
    );
    assert_close(
        &y,
        &[1, 1, 3, 3],
        &[82.0, 92.0, 102.0, 132.0, 142.0, 152.0, 182.0, 192.0, 202.0],
        0.0,
    );
}

#[test]
fn groups_2_pointwise() {
    let x = t(&[1, 4, 1, 2], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0]);
    let w = t(&[2, 2, 1, 1], &[1.0, 10.0, 100.0, 1000.0]);
    assert_close(
        &op_both(conv(1, 0, 1, 2), &[&x, &w]),
        &[1, 2, 1, 2],
        &[31.0, 42.0, 7500.0, 8600.0],
        0.0,
    );
}

#[test]
fn groups_2_with_a_padded_3x3_kernel() {
    // Group 0: iota 3x3 under an all-ones kernel; group 1: ones under a centre tap of 2.
    let mut x: Vec<f32> = (0..9).map(|i| i as f32).collect();
    x.extend([1.0; 9]);
    let mut w = vec![1.0; 9];
    w.extend([0.0, 0.0, 0.0, 0.0, 2.0, 0.0, 0.0, 0.0, 0.0]);
    let y = op_both(
        conv(1, 1, 1, 2),
        &[&t(&[1, 2, 3, 3], &x), &t(&[2, 1, 3, 3], &w)],
    );
    let mut want = vec![8.0, 15.0, 12.0, 21.0, 36.0, 27.0, 20.0, 33.0, 24.0];
    want.extend([2.0; 9]);
    assert_close(&y, &[1, 2, 3, 3], &want, 0.0);
}

#[test]
fn adjoints_of_stride_2_padded_conv() {
    // Forward: ones 3x3, stride 2, pad 1 on a 4x4 input; dy = [1, 2, 3, 4].
    let dy = t(&[1, 1, 2, 2], &[1.0, 2.0, 3.0, 4.0]);
    let data = Op::Conv2dBackwardData {
        stride: [2; 2],
        padding: [1; 2],
        dilation: [1; 2],
        groups: 1,
        input_size: [4, 4],
    };
    let dx = op_both(data, &[&dy, &t(&[1, 1, 3, 3], &[1.0; 9])]);
    let want = [
        1.0, 3.0, 2.0, 2.0, 4.0, 10.0, 6.0, 6.0, 3.0, 7.0, 4.0, 4.0, 3.0, 7.0, 4.0, 4.0,
    ];
    assert_close(&dx, &[1, 1, 4, 4], &want, 0.0);

    let weight = Op::Conv2dBackwardWeight {
        stride: [2; 2],
        padding: [1; 2],
        dilation: [1; 2],
        groups: 1,
        kernel: [3, 3],
    };
    let dw = op_both(weight, &[&iota(&[1, 1, 4, 4]), &dy]);
    assert_close(
        &dw,
        &[1, 1, 3, 3],
        &[20.0, 36.0, 43.0, 38.0, 68.0, 78.0, 62.0, 108.0, 118.0],
        0.0,
    );
}

/// Deterministic values in [-1, 1) from a linear congruential generator.
fn noise(shape: &[usize], seed: u64) -> HostTensor {
    let mut s = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    let n: usize = shape.iter().product();
    let data = (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f64 / (1u64 << 24) as f64 * 2.0 - 1.0) as f32
        })
        .collect();
    HostTensor::from_f32(shape.to_vec(), data).unwrap()
}

fn dot(a: &HostTensor, b: &HostTensor) -> f64 {
    a.to_f64_vec()
        .iter()
        .zip(b.to_f64_vec())
        .map(|(x, y)| x * y)
        .sum()
}

/// A direct seven-loop convolution, independent of im2col.
fn direct_conv(
    x: &HostTensor,
    w: &HostTensor,
    s: usize,
    p: usize,
    d: usize,
    groups: usize,
    out: &[usize],
) -> Vec<f64> {
    let (xs, ws) = (x.shape(), w.shape());
    let (xv, wv) = (x.to_f64_vec(), w.to_f64_vec());
    let (cg, og) = (xs[1] / groups, ws[0] / groups);
    let mut y = vec![0.0; out.iter().product()];
    for n in 0..out[0] {
        for o in 0..out[1] {
            for oy in 0..out[2] {
                for ox in 0..out[3] {
                    let mut acc = 0.0;
                    for c in 0..cg {
                        let ci = (o / og) * cg + c;
                        for ki in 0..ws[2] {
                            for kj in 0..ws[3] {
                                let iy = (oy * s + ki * d) as isize - p as isize;
                                let ix = (ox * s + kj * d) as isize - p as isize;
                                if iy < 0 || ix < 0 || iy >= xs[2] as isize || ix >= xs[3] as isize
                                {
                                    continue;
                                }
                                let xi =
                                    ((n * xs[1] + ci) * xs[2] + iy as usize) * xs[3] + ix as usize;
                                let wi = ((o * cg + c) * ws[2] + ki) * ws[3] + kj;
                                acc += xv[xi] * wv[wi];
                            }
                        }
                    }
                    y[((n * out[1] + o) * out[2] + oy) * out[3] + ox] = acc;
                }
            }
        }
    }
    y
}

#[test]
fn forward_matches_direct_loops_and_adjoints_satisfy_the_dot_product_identity() {
    // (batch, channels, out channels, h, w, kernel, stride, padding, dilation, groups)
    let cases = [
        (1, 1, 1, 7, 5, 3, 1, 1, 1, 1),
        (2, 4, 6, 9, 8, 3, 2, 1, 1, 2),
        (3, 3, 3, 11, 6, 3, 2, 2, 2, 3),
        (9, 2, 4, 5, 5, 1, 2, 0, 1, 1),
        (5, 6, 4, 6, 7, 1, 1, 0, 1, 2),
        (2, 2, 2, 8, 8, 5, 3, 2, 1, 1),
        (1, 3, 2, 4, 9, 2, 1, 1, 3, 1),
    ];
    for (i, &(n, c, o, h, w, k, s, p, d, g)) in cases.iter().enumerate() {
        let x = noise(&[n, c, h, w], 3 * i as u64);
        let wt = noise(&[o, c / g, k, k], 3 * i as u64 + 1);
        let fwd = conv(s, p, d, g);
        let y = try_op_in(fwd, &[&x, &wt], Precision::F64).unwrap();
        let direct = HostTensor::from_f64(
            y.shape().to_vec(),
            direct_conv(&x, &wt, s, p, d, g, y.shape()),
        )
        .unwrap();
        assert!(
            y.max_abs_diff(&direct).unwrap() < 1e-12,
            "case {i}: forward differs from direct loops"
        );

        let dy = noise(y.shape(), 3 * i as u64 + 2);
        let data = Op::Conv2dBackwardData {
            stride: [s; 2],
            padding: [p; 2],
            dilation: [d; 2],
            groups: g,
            input_size: [h, w],
        };
        let weight = Op::Conv2dBackwardWeight {
            stride: [s; 2],
            padding: [p; 2],
            dilation: [d; 2],
            groups: g,
            kernel: [k, k],
        };
        let dx = try_op_in(data, &[&dy, &wt], Precision::F64).unwrap();
        let dw = try_op_in(weight, &[&x, &dy], Precision::F64).unwrap();
        let (lhs, via_x, via_w) = (dot(&y, &dy), dot(&x, &dx), dot(&wt, &dw));
        assert!(
            (lhs - via_x).abs() < 1e-10 * lhs.abs().max(1.0),
            "case {i}: <y,dy> {lhs} vs <x,dx> {via_x}"
        );
        assert!(
            (lhs - via_w).abs() < 1e-10 * lhs.abs().max(1.0),
            "case {i}: <y,dy> {lhs} vs <w,dw> {via_w}"
        );
    }
}
