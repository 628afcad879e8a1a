//! Pooling and nearest resize (and their adjoints) against hand-computed values.

mod common;
use calib_ir::Op;
use common::*;

fn avg(k: usize, s: usize, p: usize, ceil_mode: bool, count_include_pad: bool) -> Op {
    Op::AvgPool2d {
        kernel: [k; 2],
        stride: [s; 2],
        padding: [p; 2],
        ceil_mode,
        count_include_pad,
    }
}

fn avg_backward(
    k: usize,
    s: usize,
    p: usize,
    ceil_mode: bool,
    count_include_pad: bool,
    input: usize,
) -> Op {
    Op::AvgPool2dBackward {
        kernel: [k; 2],
        stride: [s; 2],
        padding: [p; 2],
        ceil_mode,
        count_include_pad,
        input_size: [input; 2],
    }
}

fn max(k: usize, s: usize, p: usize, ceil_mode: bool) -> Op {
    Op::MaxPool2d {
        kernel: [k; 2],
        stride: [s; 2],
        padding: [p; 2],
        ceil_mode,
    }
}

#[test]
fn avg_pool_ceil_mode_divides_edge_windows_by_their_real_size() {
    // 5x5 iota, kernel 2, stride 2, ceil_mode: the last row/column of windows holds one
    // input position; the position past the input is not padding and never counts.
    let x = iota(&[1, 1, 5, 5]);
    let want = [3.0, 5.0, 6.5, 13.0, 15.0, 16.5, 20.5, 22.5, 24.0];
    for count_include_pad in [true, false] {
        assert_close(
            &op_both(avg(2, 2, 0, true, count_include_pad), &[&x]),
            &[1, 1, 3, 3],
            &want,
            1e-6,
        );
    }
    // Without ceil_mode the odd last row and column are dropped.
    assert_close(
        &op_both(avg(2, 2, 0, false, true), &[&x]),
        &[1, 1, 2, 2],
        &[3.0, 5.0, 13.0, 15.0],
        1e-6,
    );
}

#[test]
fn avg_pool_ceil_mode_with_padding_counts_padding_but_not_the_overhang() {
    // 4x4 iota, kernel 3, stride 2, pad 1, ceil_mode -> 3x3. Per axis the windows read
    // {0,1}, {1,2,3}, {3}; their lengths with padding are 3, 3, 2 (the third is cut at
    // the padded edge 5), without padding 2, 3, 1. Window sums: 10 24 10 / 51 90 33 / 25 42 15.
    let x = iota(&[1, 1, 4, 4]);
    let with_pad = [
        10.0 / 9.0,
        24.0 / 9.0,
        10.0 / 6.0,
        51.0 / 9.0,
        10.0,
        5.5,
        25.0 / 6.0,
        7.0,
        3.75,
    ];
    assert_close(
        &op_both(avg(3, 2, 1, true, true), &[&x]),
        &[1, 1, 3, 3],
        &with_pad,
        1e-6,
    );
    let without = [2.5, 4.0, 5.0, 8.5, 10.0, 11.0, 12.5, 14.0, 15.0];
    assert_close(
        &op_both(avg(3, 2, 1, true, false), &[&x]),
        &[1, 1, 3, 3],
        &without,
        1e-6,
    );
}

#[test]
fn avg_pool_padding_same_size() {
    // 3x3 iota, kernel 3, stride 1, pad 1: corner windows hold 4 values, edges 6, centre 9.
    let x = iota(&[1, 1, 3, 3]);
    let sums = [8.0, 15.0, 12.0, 21.0, 36.0, 27.0, 20.0, 33.0, 24.0];
    let ninths: Vec<f32> = sums.iter().map(|s| s / 9.0).collect();
    assert_close(
        &op_both(avg(3, 1, 1, false, true), &[&x]),
        &[1, 1, 3, 3],
        &ninths,
        1e-6,
    );
    let real = [2.0, 2.5, 3.0, 3.5, 4.0, 4.5, 5.0, 5.5, 6.0];
    assert_close(
        &op_both(avg(3, 1, 1, false, false), &[&x]),
        &[1, 1, 3, 3],
        &real,
        1e-6,
    );
}

#[test]
fn max_pool_pads_with_negative_infinity() {
    // All inputs negative: zero padding would win every window.
    let x = t(
        &[1, 1, 3, 3],
        &[-1.0, -2.0, -3.0, -4.0, -5.0, -6.0, -7.0, -8.0, -9.0],
    );
    assert_close(
        &op_both(max(3, 2, 1, false), &[&x]),
        &[1, 1, 2, 2],
        &[-1.0, -2.0, -4.0, -5.0],
        0.0,
    );
}

#[test]
fn max_pool_ceil_mode_over_planes() {
    // Two planes: iota and iota + 100.
    let mut data: Vec<f32> = (0..25).map(|i| i as f32).collect();
    data.extend((0..25).map(|i| i as f32 + 100.0));
    let y = op_both(max(2, 2, 0, true), &[&t(&[1, 2, 5, 5], &data)]);
    let plane = [6.0, 8.0, 9.0, 16.0, 18.0, 19.0, 21.0, 23.0, 24.0];
    let want: Vec<f32> = plane
        .iter()
        .copied()
        .chain(plane.iter().map(|v| v + 100.0))
        .collect();
    assert_close(&y, &[1, 2, 3, 3], &want, 0.0);
}

#[test]
fn avg_pool_backward_spreads_each_gradient_over_its_window() {
    // Same windows as the padded ceil_mode case; with dy = 1 the gradient is separable:
    // dx[r,c] = a[r] a[c], a = (1/3, 2/3, 1/3, 1/3 + 1/2) counting padding,
    // b = (1/2, 1/2 + 1/3, 1/3, 1/3 + 1) counting real positions only.
    let dy = t(&[1, 1, 3, 3], &[1.0; 9]);
    let outer = |a: [f32; 4]| -> Vec<f32> {
        a.iter()
            .flat_map(|r| a.iter().map(move |c| r * c))
            .collect()
    };
    let dx = op_both(avg_backward(3, 2, 1, true, true, 4), &[&dy]);
    assert_close(
        &dx,
        &[1, 1, 4, 4],
        &outer([1.0 / 3.0, 2.0 / 3.0, 1.0 / 3.0, 5.0 / 6.0]),
        1e-6,
    );
    let dx = op_both(avg_backward(3, 2, 1, true, false, 4), &[&dy]);
    assert_close(
        &dx,
        &[1, 1, 4, 4],
        &outer([0.5, 5.0 / 6.0, 1.0 / 3.0, 4.0 / 3.0]),
        1e-6,
    );
}

#[test]
fn max_pool_backward_routes_to_the_first_maximum() {
    // Window 0 holds 1 3 / 2 3 (first max at row 0), window 1 holds 3 0 / 1 0.
    let x = t(&[1, 1, 2, 4], &[1.0, 3.0, 3.0, 0.0, 2.0, 3.0, 1.0, 0.0]);
    let dy = t(&[1, 1, 1, 2], &[10.0, 20.0]);
    let back = Op::MaxPool2dBackward {
        kernel: [2; 2],
        stride: [2; 2],
        padding: [0; 2],
        ceil_mode: false,
    };
    assert_close(
        &op_both(back, &[&x, &dy]),
        &[1, 1, 2, 4],
        &[0.0, 10.0, 20.0, 0.0, 0.0, 0.0, 0.0, 0.0],
        0.0,
    );
    // Overlapping windows that share their maximum both send it their gradient.
    let x = t(&[1, 1, 1, 3], &[1.0, 5.0, 2.0]);
    let back = Op::MaxPool2dBackward {
        kernel: [1, 2],
        stride: [1, 1],
        padding: [0; 2],
        ceil_mode: false,
    };
    assert_close(
        &op_both(back, &[&x, &t(&[1, 1, 1, 2], &[1.0, 2.0])]),
        &[1, 1, 1, 3],
        &[0.0, 3.0, 0.0],
        0.0,
    );
}

#[test]
fn nearest_resize_uses_the_legacy_index_rule() {
    // 3 -> 7 rows read [0,0,0,1,1,2,2]; 4 -> 16 columns read [0,0,0,0,1,1,1,1,...].
    let rows = [0, 0, 0, 1, 1, 2, 2];
    let cols = [0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3];
    let y = op_both(Op::ResizeNearest { size: [7, 16] }, &[&iota(&[1, 1, 3, 4])]);
    let want: Vec<f32> = rows
        .iter()
        .flat_map(|r| cols.iter().map(move |c| (4 * r + c) as f32))
        .collect();
    assert_close(&y, &[1, 1, 7, 16], &want, 0.0);
}

#[test]
fn nearest_resize_downsamples_and_keeps_integers() {
    // 7 -> 3 reads 0, 2, 4.
    let x = ti(&[1, 1, 1, 7], &[10, 11, 12, 13, 14, 15, 16]);
    let y = op(Op::ResizeNearest { size: [1, 3] }, &[&x]);
    assert_eq!(y.as_i64(), Some(&[10, 12, 14][..]));
}

#[test]
fn nearest_resize_backward_sums_what_each_source_fed() {
    // Rows 3 -> 7 are read 3, 2, 2 times; columns 4 -> 16 are read 4 times each.
    let dy = t(&[1, 1, 7, 16], &[1.0; 112]);
    let dx = op_both(Op::ResizeNearestBackward { input_size: [3, 4] }, &[&dy]);
    let want = [
        12.0, 12.0, 12.0, 12.0, 8.0, 8.0, 8.0, 8.0, 8.0, 8.0, 8.0, 8.0,
    ];
    assert_close(&dx, &[1, 1, 3, 4], &want, 0.0);
}
