//! Convolution, pooling and resize: the dedicated adjoint ops.

use crate::check::GradCheck;
use crate::common::run;
use calib_ir::{DType, Graph, GraphBuilder, Mode, Op, TensorType};
use calib_passes::grad;
use calib_runtime::HostTensor;
use std::collections::BTreeMap;

/// A conv with per-axis attributes, built by hand since the builder's are symmetric.
fn conv(
    x: &[usize],
    w: &[usize],
    stride: [usize; 2],
    padding: [usize; 2],
    dilation: [usize; 2],
    groups: usize,
) -> GradCheck {
    let mut g = Graph::new();
    let f32s = |s: &[usize]| TensorType::new(DType::F32, s.to_vec());
    let xv = g
        .push_source(Op::Input { name: "x".into() }, f32s(x), "")
        .unwrap();
    let wv = g
        .push_source(Op::Param { name: "w".into() }, f32s(w), "")
        .unwrap();
    let y = g
        .push(
            Op::Conv2d {
                stride,
                padding,
                dilation,
                groups,
            },
            vec![xv, wv],
            "",
        )
        .unwrap();
    GradCheck::from_graph(g, y)
}

#[test]
fn conv_stride_2_odd_sizes_with_and_without_padding() {
    conv(&[2, 3, 7, 7], &[4, 3, 3, 3], [2, 2], [1, 1], [1, 1], 1).run();
    // 8 -> 3 with kernel 3, stride 2, no padding: input row 7 is never read.
    conv(&[2, 3, 8, 8], &[4, 3, 3, 3], [2, 2], [0, 0], [1, 1], 1).run();
    conv(&[2, 3, 5, 5], &[4, 3, 1, 1], [2, 2], [0, 0], [1, 1], 1).run();
}

#[test]
fn conv_dilation_2() {
    conv(&[1, 2, 9, 9], &[3, 2, 3, 3], [1, 1], [2, 2], [2, 2], 1).run();
    conv(&[1, 2, 9, 8], &[3, 2, 3, 3], [2, 2], [1, 1], [2, 2], 1).run();
}

#[test]
fn conv_groups_2_and_depthwise() {
    conv(&[2, 4, 6, 6], &[6, 2, 3, 3], [1, 1], [1, 1], [1, 1], 2).run();
    conv(&[1, 3, 5, 5], &[3, 1, 3, 3], [1, 1], [1, 1], [1, 1], 3).run();
}

#[test]
fn conv_with_different_attributes_per_axis() {
    conv(&[1, 4, 7, 6], &[2, 2, 2, 3], [2, 1], [0, 1], [1, 2], 2).run();
}

fn avg_pool(
    x: &[usize],
    kernel: usize,
    stride: usize,
    padding: usize,
    ceil_mode: bool,
    count_include_pad: bool,
) -> GradCheck {
    let shape = x.to_vec();
    GradCheck::new(move |b| {
        let x = b.input("x", DType::F32, shape)?;
        b.avg_pool2d(x, kernel, stride, padding, ceil_mode, count_include_pad)
    })
}

#[test]
fn avg_pool_every_ceil_mode_and_count_include_pad() {
    for ceil_mode in [false, true] {
        for count_include_pad in [false, true] {
            avg_pool(&[2, 2, 6, 7], 3, 2, 1, ceil_mode, count_include_pad).run();
            // 5 -> 3 in ceil mode: the last window holds one real column.
            avg_pool(&[1, 2, 5, 5], 2, 2, 0, ceil_mode, count_include_pad).run();
        }
    }
    // SCConv's k2 pool: kernel = stride = 4.
    avg_pool(&[1, 2, 8, 8], 4, 4, 0, false, true).run();
}

fn max_pool(
    x: &[usize],
    kernel: usize,
    stride: usize,
    padding: usize,
    ceil_mode: bool,
) -> GradCheck {
    let shape = x.to_vec();
    GradCheck::new(move |b| {
        let x = b.input("x", DType::F32, shape)?;
        b.max_pool2d(x, kernel, stride, padding, ceil_mode)
    })
}

#[test]
fn max_pool_with_padding_and_ceil_mode() {
    max_pool(&[2, 2, 7, 7], 3, 2, 1, false).run();
    max_pool(&[1, 2, 6, 6], 3, 2, 1, true).run();
    max_pool(&[1, 1, 5, 5], 2, 2, 0, true).run();
    // Overlapping windows: one input can win several of them.
    max_pool(&[1, 2, 6, 6], 3, 1, 1, false).run();
}

#[test]
fn max_pool_gives_each_window_to_its_first_maximum() {
    let mut b = GraphBuilder::new(Mode::Train, DType::F32);
    let x = b.input("x", DType::F32, vec![1, 1, 2, 4]).unwrap();
    let y = b.max_pool2d(x, 2, 2, 0, false).unwrap();
    let (mut g, d) = grad(&b.finish(), y, &[x]).unwrap();
    g.add_output("dx", d[0]).unwrap();
    let data = vec![3.0, 1.0, 2.0, 2.0, 3.0, 0.0, 2.0, 2.0];
    let values = BTreeMap::from([(
        "x".to_string(),
        HostTensor::from_f64(vec![1, 1, 2, 4], data).unwrap(),
    )]);
    assert_eq!(
        run(&g, &values)["dx"].to_f64_vec(),
        [1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0]
    );
}

fn resize(x: &[usize], size: [usize; 2]) -> GradCheck {
    let shape = x.to_vec();
    GradCheck::new(move |b| {
        let x = b.input("x", DType::F32, shape)?;
        b.resize_nearest(x, size)
    })
}

#[test]
fn resize_nearest_up_down_and_uneven() {
    resize(&[2, 2, 3, 3], [7, 7]).run();
    resize(&[1, 2, 4, 4], [16, 16]).run();
    resize(&[1, 2, 7, 7], [3, 3]).run();
    resize(&[1, 1, 3, 4], [7, 16]).run();
}
