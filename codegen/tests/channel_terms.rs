//! Per-channel terms of maps over channels-last images, computed once a thread.
//!
//! A thread that keeps its channels and walks pixels (`stationary.rs`) evaluates what
//! depends on the channel alone (a BatchNorm's `rsqrt(var)`, its mean) before its
//! loop. SCNet's self-calibration reads such terms in two shapes besides the output's:
//!
//! * through a nearest resize, from the downsampled branch's BatchNorm (`k2`), whose
//!   image is a quarter of the output's rows and columns;
//! * through a slice along the channels, where each half of a concatenation is
//!   normalized by statistics of all the channels (`bn1_a`, `bn1_b` of one
//!   convolution), so the second half reads them from channel `C` on.
//!
//! Both are bit for bit the reference interpreter's, and the census shows the terms
//! once a thread rather than once an element.

mod support;

use calib_codegen::compile;
use calib_ir::{Anchor, Graph, Layout, Program, Value};
use calib_runtime::HostTensor;
use std::collections::BTreeMap;
use support::{check_tensors, graph, per_element, single_kernel, tensors};

/// `graph` as one pointwise kernel whose images (rank 4, more than one row) are all
/// stored channels-last; the runtime permutes what is bound and read back.
fn channels_last_plan(g: &Graph) -> Program {
    let mut program = single_kernel(g, Anchor::Pointwise);
    for b in (program.buffers.iter_mut()).filter(|b| b.ty.rank() == 4 && b.ty.shape[2] > 1) {
        b.layout = Layout::ChannelsLast;
    }
    program
}

/// Inputs with positive `*var` tensors (the terms mean numbers, not NaN).
fn inputs(g: &Graph) -> BTreeMap<String, HostTensor> {
    let mut inputs = tensors(g, 7, 3);
    for (name, t) in inputs.iter_mut() {
        if name.ends_with("var") {
            let values = t.to_f32_vec().iter().map(|v| v.abs() + 0.5).collect();
            *t = HostTensor::from_f32(t.shape().to_vec(), values).unwrap();
        }
    }
    inputs
}

/// The downsampled branch: `x * relu(resize(bn(d)))`. The resize's source pixel is one
/// shift each coordinate, shared by a run's channels, so the run reads `d` as vectors;
/// `bn(d)`'s `rsqrt` is a term of `d`'s shape and is computed before the loop.
#[test]
fn a_resized_operands_per_channel_terms_come_once_a_thread() {
    let g = graph(
        "graph {
          %0 = input name=\"x\" : f32[8,32,16,16]
          %1 = input name=\"d\" : f32[8,32,4,4]
          %2 = input name=\"d_mean\" : f32[1,32,1,1]
          %3 = broadcast(%2) shape=[8,32,4,4] : f32[8,32,4,4]
          %4 = input name=\"d_var\" : f32[1,32,1,1]
          %5 = rsqrt(%4) : f32[1,32,1,1]
          %6 = broadcast(%5) shape=[8,32,4,4] : f32[8,32,4,4]
          %7 = sub(%1, %3) : f32[8,32,4,4]
          %8 = mul(%7, %6) : f32[8,32,4,4]
          %9 = resize_nearest(%8) size=[16,16] : f32[8,32,16,16]
          %10 = relu(%9) : f32[8,32,16,16]
          %11 = mul(%0, %10) : f32[8,32,16,16]
          return y=%11
        }",
    );
    let program = channels_last_plan(&g);
    check_tensors(&g, &program, &inputs(&g), 0.0);
    let kernel = compile(&program).unwrap().kernels.remove(0);
    let (loads, special) = per_element(&kernel, g.ty(Value(11)).numel());
    // A vector of `x` and one of `d` a run of four: half a load an element. Without a
    // shared shift, `d` came in a scalar at a time (with its terms: over 1.3).
    assert!(loads < 0.6, "{loads} loads an element");
    // The `rsqrt` once a thread; once an element makes 1.
    assert!(
        special < 0.5,
        "{special} special-function operations an element"
    );
}

/// A concatenation of the two halves of one normalized image, as SCNet's split
/// BatchNorms store a block's first activations: the statistics cover all 32 channels,
/// and the second half reads them from channel 16 on. Each half's terms, at its own
/// offset, are computed before the thread's loop.
#[test]
fn a_concatenation_reads_statistics_sliced_along_the_channels_once_a_thread() {
    let g = graph(
        "graph {
          %0 = input name=\"z\" : f32[8,32,16,16]
          %1 = input name=\"mean\" : f32[1,32,1,1]
          %2 = broadcast(%1) shape=[8,32,16,16] : f32[8,32,16,16]
          %3 = sub(%0, %2) : f32[8,32,16,16]
          %4 = input name=\"var\" : f32[1,32,1,1]
          %5 = rsqrt(%4) : f32[1,32,1,1]
          %6 = broadcast(%5) shape=[8,32,16,16] : f32[8,32,16,16]
          %7 = mul(%3, %6) : f32[8,32,16,16]
          %8 = slice(%7) axis=1 start=0 end=16 : f32[8,16,16,16]
          %9 = slice(%7) axis=1 start=16 end=32 : f32[8,16,16,16]
          %10 = relu(%8) : f32[8,16,16,16]
          %11 = input name=\"w\" : f32[8,16,16,16]
          %12 = mul(%9, %11) : f32[8,16,16,16]
          %13 = concat(%10, %12) axis=1 : f32[8,32,16,16]
          return y=%13
        }",
    );
    let program = channels_last_plan(&g);
    check_tensors(&g, &program, &inputs(&g), 0.0);
    let kernel = compile(&program).unwrap().kernels.remove(0);
    let (loads, special) = per_element(&kernel, g.ty(Value(13)).numel());
    // Vectors of `z` and, in the second half, `w`, with the terms' loads before the
    // loop: under one load an element. Evaluating the terms inside the loop loaded the
    // mean and the variance for every element (more than two).
    assert!(loads < 1.0, "{loads} loads an element");
    // The `rsqrt`s once a thread; once an element makes 1.
    assert!(
        special < 0.5,
        "{special} special-function operations an element"
    );
}
