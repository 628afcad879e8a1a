//! Convolutions (implicit GEMMs), matmul, pooling and resizing with their adjoints,
//! each as its kernel's anchor and as a loop evaluated per element inside another
//! kernel's prologue.

mod support;

use calib_codegen::{compile, Family};
use calib_ir::{Anchor, Graph, Op};
use support::{check, families, graph, single_kernel};

/// Checks `src` as a kernel around `anchor` (emitted as `family`), then with every
/// output summed over axis 1 as a reduction kernel, whose loop evaluates the op under
/// test one element at a time.
fn both_ways(src: &str, anchor: Anchor, family: Family, tol: f64) {
    let g = graph(src);
    let program = single_kernel(&g, anchor);
    assert_eq!(families(&program)[0], family);
    check(&g, &program, 11, tol);

    let summed = summed(&g);
    let program = single_kernel(&summed, Anchor::Reduction);
    let compiled = compile(&program).unwrap();
    assert_eq!(compiled.kernels[0].family, Family::Reduction);
    if family == Family::Gemm {
        let looped = compiled
            .kernels
            .iter()
            .any(|k| k.ptx.contains("evaluates per element, as loops"));
        assert!(looped, "the contraction is evaluated per element");
    }
    check(&summed, &program, 11, tol);
}

/// `g` with each output `y` replaced by `reduce_sum(y, axes=[1])`.
fn summed(g: &Graph) -> Graph {
    let mut g = g.clone();
    for i in 0..g.outputs.len() {
        let op = Op::ReduceSum {
            axes: vec![1],
            keepdims: false,
        };
        g.outputs[i].value = g.push(op, vec![g.outputs[i].value], "").unwrap();
    }
    g
}

/// A convolution: `[n, c, h, w]` images, `o` output channels, a `k` kernel, and the
/// same stride, padding and dilation along both axes.
struct Geometry {
    image: [usize; 4],
    o: usize,
    k: [usize; 2],
    stride: usize,
    pad: usize,
    dil: usize,
    groups: usize,
}

/// Forward, backward-data and backward-weight of one convolution geometry.
fn convolution(g: Geometry) {
    let Geometry {
        image: [n, c, h, w],
        o,
        k,
        stride,
        pad,
        dil,
        groups,
    } = g;
    let out = |i: usize, k: usize| (i + 2 * pad - dil * (k - 1) - 1) / stride + 1;
    let (oh, ow) = (out(h, k[0]), out(w, k[1]));
    let cg = c / groups;
    let attrs = format!(
        "stride=[{stride},{stride}] padding=[{pad},{pad}] dilation=[{dil},{dil}] groups={groups}"
    );
    let src = format!(
        "graph {{
          %0 = input name=\"x\" : f32[{n},{c},{h},{w}]
          %1 = param name=\"w\" : f32[{o},{cg},{},{}]
          %2 = input name=\"dy\" : f32[{n},{o},{oh},{ow}]
          %3 = conv2d(%0, %1) {attrs} : f32[{n},{o},{oh},{ow}]
          %4 = conv2d_backward_data(%2, %1) {attrs} input_size=[{h},{w}] : f32[{n},{c},{h},{w}]
          %5 = conv2d_backward_weight(%0, %2) {attrs} kernel=[{},{}] : f32[{o},{cg},{},{}]
          return y=%3, dx=%4, dw=%5
        }}",
        k[0], k[1], k[0], k[1], k[0], k[1]
    );
    // One kernel per op, so that each is its kernel's anchor.
    for keep in ["y=%3", "dx=%4", "dw=%5"] {
        let one = src.replace("return y=%3, dx=%4, dw=%5", &format!("return {keep}"));
        both_ways(&one, Anchor::Convolution, Family::Gemm, 1e-5);
    }
}

#[test]
fn convolution_3x3_padded() {
    convolution(Geometry {
        image: [2, 5, 6, 7],
        o: 6,
        k: [3, 3],
        stride: 1,
        pad: 1,
        dil: 1,
        groups: 1,
    });
}

#[test]
fn convolution_strided_1x1_and_7x7() {
    convolution(Geometry {
        image: [2, 8, 8, 8],
        o: 12,
        k: [1, 1],
        stride: 2,
        pad: 0,
        dil: 1,
        groups: 1,
    });
    convolution(Geometry {
        image: [1, 3, 11, 10],
        o: 4,
        k: [7, 7],
        stride: 2,
        pad: 3,
        dil: 1,
        groups: 1,
    });
}

#[test]
fn convolution_grouped_and_dilated() {
    convolution(Geometry {
        image: [2, 6, 7, 6],
        o: 4,
        k: [3, 3],
        stride: 1,
        pad: 2,
        dil: 2,
        groups: 2,
    });
    convolution(Geometry {
        image: [1, 4, 9, 9],
        o: 8,
        k: [3, 3],
        stride: 2,
        pad: 1,
        dil: 1,
        groups: 4,
    });
}

#[test]
fn convolution_with_prologue_and_epilogue() {
    // BatchNorm-apply and ReLU on the input as it is loaded (a padded position stays
    // zero, not relu(bias)), a per-channel bias, a residual and ReLU after.
    both_ways(
        "graph {
          %0 = input name=\"x\" : f32[2,4,5,5]
          %1 = param name=\"scale\" : f32[1,4,1,1]
          %2 = broadcast(%1) shape=[2,4,5,5] : f32[2,4,5,5]
          %3 = mul(%0, %2) : f32[2,4,5,5]
          %4 = param name=\"shift\" : f32[1,4,1,1]
          %5 = broadcast(%4) shape=[2,4,5,5] : f32[2,4,5,5]
          %6 = add(%3, %5) : f32[2,4,5,5]
          %7 = relu(%6) : f32[2,4,5,5]
          %8 = param name=\"w\" : f32[6,4,3,3]
          %9 = conv2d(%7, %8) stride=[1,1] padding=[1,1] dilation=[1,1] groups=1 : f32[2,6,5,5]
          %10 = param name=\"bias\" : f32[1,6,1,1]
          %11 = broadcast(%10) shape=[2,6,5,5] : f32[2,6,5,5]
          %12 = add(%9, %11) : f32[2,6,5,5]
          %13 = input name=\"residual\" : f32[2,6,5,5]
          %14 = add(%12, %13) : f32[2,6,5,5]
          %15 = relu(%14) : f32[2,6,5,5]
          return y=%15, activation=%7
        }",
        Anchor::Convolution,
        Family::Gemm,
        1e-5,
    );
}

#[test]
fn matmul_in_every_transposition() {
    for (ta, tb, a, b) in [
        (false, false, "[5,9]", "[9,7]"),
        (false, true, "[5,9]", "[7,9]"),
        (true, false, "[9,5]", "[9,7]"),
        (true, true, "[9,5]", "[7,9]"),
    ] {
        both_ways(
            &format!(
                "graph {{
                  %0 = input name=\"a\" : f32{a}
                  %1 = param name=\"b\" : f32{b}
                  %2 = matmul(%0, %1) transpose_a={ta} transpose_b={tb} : f32[5,7]
                  return y=%2
                }}"
            ),
            Anchor::MatMul,
            Family::Gemm,
            1e-5,
        );
    }
}

/// The pooled extent of an `input`-long axis (PyTorch's rule: in ceil mode the last
/// window must start inside the input or its leading padding).
fn pooled(input: usize, k: usize, s: usize, p: usize, ceil: bool) -> usize {
    let span = input + 2 * p - k;
    let mut o = if ceil {
        span.div_ceil(s) + 1
    } else {
        span / s + 1
    };
    if ceil && (o - 1) * s >= input + p {
        o -= 1;
    }
    o
}

/// Graph lines making `%4`, a `[2, 3, h, w]` image of small integers (`x` scaled and
/// truncated): ties are common, so the first-maximum rule is exercised.
fn tied_integers(h: usize, w: usize) -> String {
    format!(
        "%0 = input name=\"x\" : f32[2,3,{h},{w}]
              %1 = constant value=4 : f32[2,3,{h},{w}]
              %2 = mul(%0, %1) : f32[2,3,{h},{w}]
              %3 = cast(%2) to=\"i64\" : i64[2,3,{h},{w}]
              %4 = cast(%3) to=\"f32\" : f32[2,3,{h},{w}]"
    )
}

fn pool(src: &str) {
    both_ways(src, Anchor::Pool, Family::Pointwise, 2e-6);
}

#[test]
fn average_pooling_and_adjoint() {
    for (k, s, p, ceil, include) in [
        (4, 4, 0, false, true),
        (3, 2, 1, false, true),
        (3, 2, 1, true, false),
        (2, 2, 0, true, false),
    ] {
        let attrs = format!("kernel=[{k},{k}] stride=[{s},{s}] padding=[{p},{p}] ceil_mode={ceil} count_include_pad={include}");
        let out = |i: usize| pooled(i, k, s, p, ceil);
        let (h, w) = (9, 8);
        let (oh, ow) = (out(h), out(w));
        pool(&format!(
            "graph {{
              %0 = input name=\"x\" : f32[2,3,{h},{w}]
              %1 = avg_pool2d(%0) {attrs} : f32[2,3,{oh},{ow}]
              return y=%1
            }}"
        ));
        pool(&format!(
            "graph {{
              %0 = input name=\"dy\" : f32[2,3,{oh},{ow}]
              %1 = avg_pool2d_backward(%0) {attrs} input_size=[{h},{w}] : f32[2,3,{h},{w}]
              return dx=%1
            }}"
        ));
    }
}

#[test]
fn max_pooling_and_adjoint_route_to_the_first_maximum() {
    // Every residue of a position modulo the stride is a branch of the adjoint: strides
    // 1 to 3, windows wider and narrower than the stride, padding, ceil mode, odd and
    // even images.
    for (k, s, p, ceil, h, w) in [
        (3, 2, 1, false, 9, 9),
        (3, 2, 1, true, 8, 10),
        (2, 2, 0, false, 8, 7),
        (3, 1, 1, false, 6, 7),
        (3, 3, 0, true, 10, 8),
        (5, 2, 2, false, 9, 6),
    ] {
        let out = |i: usize| pooled(i, k, s, p, ceil);
        let (oh, ow) = (out(h), out(w));
        let attrs = format!("kernel=[{k},{k}] stride=[{s},{s}] padding=[{p},{p}] ceil_mode={ceil}");
        pool(&format!(
            "graph {{
              {}
              %5 = max_pool2d(%4) {attrs} : f32[2,3,{oh},{ow}]
              %6 = input name=\"dy\" : f32[2,3,{oh},{ow}]
              %7 = max_pool2d_backward(%4, %6) {attrs} : f32[2,3,{h},{w}]
              return y=%5, dx=%7
            }}",
            tied_integers(h, w)
        ));
    }
}

#[test]
fn max_pooling_adjoint_routes_to_the_first_nan() {
    // `log(z + 0.8) * 0` is NaN where `z < -0.8` and zero elsewhere: windows holding one
    // NaN, several, or none, among tied integers.
    for (k, s, p) in [(3, 2, 1), (2, 2, 0), (3, 1, 1)] {
        let out = |i: usize| pooled(i, k, s, p, false);
        let (h, w) = (9, 8);
        let (oh, ow) = (out(h), out(w));
        let attrs = format!("kernel=[{k},{k}] stride=[{s},{s}] padding=[{p},{p}] ceil_mode=false");
        pool(&format!(
            "graph {{
              {}
              %5 = input name=\"z\" : f32[2,3,{h},{w}]
              %6 = constant value=0.8 : f32[2,3,{h},{w}]
              %7 = add(%5, %6) : f32[2,3,{h},{w}]
              %8 = log(%7) : f32[2,3,{h},{w}]
              %9 = constant value=0 : f32[2,3,{h},{w}]
              %10 = mul(%8, %9) : f32[2,3,{h},{w}]
              %11 = add(%4, %10) : f32[2,3,{h},{w}]
              %12 = input name=\"dy\" : f32[2,3,{oh},{ow}]
              %13 = max_pool2d_backward(%11, %12) {attrs} : f32[2,3,{h},{w}]
              return dx=%13
            }}",
            tied_integers(h, w)
        ));
    }
}

#[test]
fn max_pooling_adjoint_takes_runs_along_rows() {
    // Maps of 64K elements and more take runs of four along each row: the run's
    // positions branch on their row's residue once, share every tap and load the rows
    // above and below as vectors. Tied integers with -inf and NaN strewn among them
    // (the values the ordinary comparisons leave to the exact ones), at every stride
    // that divides the run, windows narrower and wider than the stride, padding and
    // ceil mode, with rows that end mid-window.
    for (k, s, p, ceil, h, w) in [
        (3, 2, 1, false, 9, 8),
        (3, 2, 1, true, 8, 12),
        (2, 2, 0, false, 8, 8),
        (3, 1, 1, false, 6, 12),
        (3, 4, 1, false, 9, 16),
    ] {
        let out = |i: usize| pooled(i, k, s, p, ceil);
        let (oh, ow) = (out(h), out(w));
        let attrs = format!("kernel=[{k},{k}] stride=[{s},{s}] padding=[{p},{p}] ceil_mode={ceil}");
        let g = graph(&format!(
            "graph {{
              %0 = input name=\"x\" : f32[32,32,{h},{w}]
              %1 = input name=\"dy\" : f32[32,32,{oh},{ow}]
              %2 = max_pool2d_backward(%0, %1) {attrs} : f32[32,32,{h},{w}]
              return dx=%2
            }}"
        ));
        let program = single_kernel(&g, Anchor::Pool);
        let kernel = &compile(&program).unwrap().kernels[0];
        let n = 32 * 32 * h * w;
        assert_eq!(
            kernel.grid[0] as usize,
            (n / 4).div_ceil(256),
            "runs of four"
        );
        // The run's own row and at least one other come in as vectors.
        assert!(
            kernel.ptx.matches("ld.global.nc.v4.f32").count() >= 2,
            "{}",
            kernel.ptx
        );
        let mut inputs = support::tensors(&g, 29, 3);
        let x = support::tied_with_nan_and_infinity(vec![32, 32, h, w]);
        inputs.insert("x".into(), x);
        // Within the reference's tolerance (it sums a position's windows in another
        // order), and bit for bit what positions computed alone give: the first 256
        // planes, too few for runs.
        support::check_tensors(&g, &program, &inputs, 2e-6);
        let few = graph(&format!(
            "graph {{
              %0 = input name=\"x\" : f32[8,32,{h},{w}]
              %1 = input name=\"dy\" : f32[8,32,{oh},{ow}]
              %2 = max_pool2d_backward(%0, %1) {attrs} : f32[8,32,{h},{w}]
              return dx=%2
            }}"
        ));
        let alone = single_kernel(&few, Anchor::Pool);
        let threads = compile(&alone).unwrap().kernels[0].grid[0] as usize * 256;
        assert_eq!(
            threads,
            (8 * 32 * h * w).next_multiple_of(256),
            "a position a thread"
        );
        let first = |name: &str, t: &calib_runtime::HostTensor| {
            let mut shape = t.shape().to_vec();
            shape[0] = 8;
            let values = t.to_f32_vec()[..shape.iter().product::<usize>()].to_vec();
            (
                name.to_string(),
                calib_runtime::HostTensor::from_f32(shape, values).unwrap(),
            )
        };
        let few_inputs = inputs.iter().map(|(k, t)| first(k, t)).collect();
        let runs = support::simulate(&program, &support::bind(&g, &inputs));
        let alone = support::simulate(&alone, &support::bind(&few, &few_inputs));
        let bits = |t: &calib_runtime::HostTensor| -> Vec<u32> {
            t.to_f32_vec().iter().map(|v| v.to_bits()).collect()
        };
        let runs = &bits(&runs["dx"])[..8 * 32 * h * w];
        assert!(
            runs == bits(&alone["dx"]),
            "runs differ from positions alone"
        );
    }
}

#[test]
fn max_pooling_takes_runs_along_rows() {
    // Outputs of 64K elements and more take runs of four along each row, and the run
    // loads each input row's stretch (four strides) and the ones either side as
    // vectors: strides 1 to 4, windows narrower and wider than the stride, padding,
    // ceil mode and an odd number of rows; NaN strewn among tied integers.
    for (k, s, p, ceil, h, w) in [
        (3, 2, 1, false, 32, 32),
        (3, 2, 0, true, 33, 32),
        (2, 2, 0, false, 32, 32),
        (3, 1, 1, false, 16, 16),
        (3, 4, 1, false, 64, 64),
        (3, 3, 0, true, 48, 48),
    ] {
        let (oh, ow) = (pooled(h, k, s, p, ceil), pooled(w, k, s, p, ceil));
        let attrs = format!("kernel=[{k},{k}] stride=[{s},{s}] padding=[{p},{p}] ceil_mode={ceil}");
        let g = graph(&format!(
            "graph {{
              %0 = input name=\"x\" : f32[16,16,{h},{w}]
              %1 = max_pool2d(%0) {attrs} : f32[16,16,{oh},{ow}]
              return y=%1
            }}"
        ));
        let program = single_kernel(&g, Anchor::Pool);
        let kernel = &compile(&program).unwrap().kernels[0];
        let n = 16 * 16 * oh * ow;
        let runs = (n / 4).div_ceil(256);
        assert_eq!(
            kernel.grid[0] as usize, runs,
            "runs of four at {k} {s} {p} {h}"
        );
        assert!(kernel.ptx.contains("ld.global.nc.v4.f32"), "{}", kernel.ptx);
        let mut inputs = support::tensors(&g, 3, 3);
        inputs.insert("x".into(), strewn_nans(&[16, 16, h, w], 30));
        support::check_exact_with_nans(&g, &program, &inputs);
    }
}

#[test]
fn a_nan_in_a_window_is_its_maximum() {
    // PyTorch's max pooling, maximum, ReLU and max-reduction propagate NaN; PTX's
    // `max.f32` returns the other operand. Small maps take one output a thread, large
    // ones runs of four.
    for (n, h, w) in [(2, 9, 8), (16, 64, 64)] {
        let (oh, ow) = (pooled(h, 3, 2, 1, false), pooled(w, 3, 2, 1, false));
        let attrs = "kernel=[3,3] stride=[2,2] padding=[1,1] ceil_mode=false";
        let g = graph(&format!(
            "graph {{
              %0 = input name=\"x\" : f32[{n},8,{h},{w}]
              %1 = max_pool2d(%0) {attrs} : f32[{n},8,{oh},{ow}]
              return y=%1
            }}"
        ));
        let program = single_kernel(&g, Anchor::Pool);
        let mut inputs = support::tensors(&g, 5, 3);
        inputs.insert("x".into(), strewn_nans(&[n, 8, h, w], 40));
        support::check_exact_with_nans(&g, &program, &inputs);
    }
    let g = graph(
        "graph {
          %0 = input name=\"x\" : f32[4,8,6,6]
          %1 = input name=\"z\" : f32[4,8,6,6]
          %2 = max(%0, %1) : f32[4,8,6,6]
          %3 = relu(%0) : f32[4,8,6,6]
          return m=%2, r=%3
        }",
    );
    let program = single_kernel(&g, Anchor::Pointwise);
    let mut inputs = support::tensors(&g, 7, 3);
    inputs.insert("x".into(), strewn_nans(&[4, 8, 6, 6], 40));
    inputs.insert("z".into(), strewn_nans(&[4, 8, 6, 6], 40));
    support::check_exact_with_nans(&g, &program, &inputs);
    let g = graph(
        "graph {
          %0 = input name=\"x\" : f32[4,8,6,6]
          %1 = reduce_max(%0) axes=[2,3] keepdims=false : f32[4,8]
          return m=%1
        }",
    );
    let program = single_kernel(&g, Anchor::Reduction);
    let mut inputs = support::tensors(&g, 7, 3);
    inputs.insert("x".into(), strewn_nans(&[4, 8, 6, 6], 250));
    support::check_exact_with_nans(&g, &program, &inputs);
}

/// Integers in -2..=2 with about one element in `one_in` NaN.
fn strewn_nans(shape: &[usize], one_in: u32) -> calib_runtime::HostTensor {
    let mut state = 0x2545_F491_u32;
    let values = (0..shape.iter().product::<usize>())
        .map(|_| {
            state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            match (state >> 8) % one_in {
                0 => f32::NAN,
                r => (r % 5) as f32 - 2.0,
            }
        })
        .collect();
    calib_runtime::HostTensor::from_f32(shape.to_vec(), values).unwrap()
}

#[test]
fn power_of_two_upsampling_needs_no_index_rule() {
    // 4x and 2x: ATen's f32 rule is exact there, so the forward shifts and the adjoint
    // sums its block of 4x2 pixels without computing or checking anyone's source.
    let g = graph(
        "graph {
          %0 = input name=\"x\" : f32[2,3,5,6]
          %1 = resize_nearest(%0) size=[20,12] : f32[2,3,20,12]
          %2 = input name=\"dy\" : f32[2,3,20,12]
          %3 = resize_nearest_backward(%2) input_size=[5,6] : f32[2,3,5,6]
          return y=%1, dx=%3
        }",
    );
    let program = single_kernel(&g, Anchor::Pointwise);
    let ptx = &compile(&program).unwrap().kernels[0].ptx;
    assert!(!ptx.contains("cvt.rmi"), "{ptx}");
    assert!(ptx.contains("shr.u32"), "{ptx}");
    check(&g, &program, 13, 0.0);
}

#[test]
fn nearest_resize_adjoint_sums_every_reader() {
    // 14 -> 46 and 26 -> 22: sizes where the f32 index rule differs from exact division.
    for (h, w, oh, ow) in [
        (4, 4, 16, 16),
        (8, 5, 16, 5),
        (5, 7, 7, 3),
        (3, 13, 10, 29),
        (14, 26, 46, 22),
        // 18x12 candidates: too many to write out, a loop.
        (1, 2, 16, 20),
    ] {
        pool(&format!(
            "graph {{
              %0 = input name=\"dy\" : f32[2,3,{oh},{ow}]
              %1 = resize_nearest_backward(%0) input_size=[{h},{w}] : f32[2,3,{h},{w}]
              return dx=%1
            }}"
        ));
    }
}

#[test]
fn batch_statistics_of_a_convolution_run_as_a_second_launch() {
    // The statistics need the whole convolution result: the GEMM launch stores it and a
    // reduction launch reads it back (rather than recomputing the convolution).
    let g = graph(
        "graph {
          %0 = input name=\"x\" : f32[2,3,6,6]
          %1 = param name=\"w\" : f32[5,3,3,3]
          %2 = conv2d(%0, %1) stride=[1,1] padding=[1,1] dilation=[1,1] groups=1 : f32[2,5,6,6]
          %3 = mul(%2, %2) : f32[2,5,6,6]
          %4 = reduce_mean(%2) axes=[0,2,3] keepdims=true : f32[1,5,1,1]
          %5 = reduce_mean(%3) axes=[0,2,3] keepdims=true : f32[1,5,1,1]
          %6 = mul(%4, %4) : f32[1,5,1,1]
          %7 = sub(%5, %6) : f32[1,5,1,1]
          return y=%2, mean=%4, var=%7
        }",
    );
    let program = single_kernel(&g, Anchor::Convolution);
    assert_eq!(families(&program), [Family::Gemm, Family::Reduction]);
    check(&g, &program, 2, 1e-5);
}
