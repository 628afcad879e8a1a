//! Pointwise bodies and index maps, simulated and compared with the reference
//! interpreter.

mod support;

use calib_ir::Anchor;
use support::{check, graph, single_kernel};

fn pointwise(src: &str, tol: f64) {
    let g = graph(src);
    let p = single_kernel(&g, Anchor::Pointwise);
    if let Ok(dir) = std::env::var("DUMP_PTX") {
        std::fs::write(
            format!("{dir}/k.ptx"),
            &calib_codegen::compile(&p).unwrap().kernels[0].ptx,
        )
        .unwrap();
    }
    check(&g, &p, 7, tol);
}

#[test]
fn every_elementwise_op() {
    pointwise(
        "graph {
          %0 = input name=\"a\" : f32[3,5,7]
          %1 = input name=\"b\" : f32[3,5,7]
          %2 = exp(%0) : f32[3,5,7]
          %3 = add(%2, %1) : f32[3,5,7]
          %4 = log(%2) : f32[3,5,7]
          %5 = sigmoid(%3) : f32[3,5,7]
          %6 = mul(%5, %4) : f32[3,5,7]
          %7 = sqrt(%2) : f32[3,5,7]
          %8 = rsqrt(%2) : f32[3,5,7]
          %9 = div(%7, %8) : f32[3,5,7]
          %10 = sub(%9, %6) : f32[3,5,7]
          %11 = neg(%10) : f32[3,5,7]
          %12 = relu(%11) : f32[3,5,7]
          %13 = max(%0, %1) : f32[3,5,7]
          %14 = cmp_gt(%0, %1) : f32[3,5,7]
          %15 = cmp_ge(%0, %13) : f32[3,5,7]
          %16 = cmp_eq(%0, %13) : f32[3,5,7]
          %17 = select(%14, %12, %16) : f32[3,5,7]
          %18 = add(%17, %15) : f32[3,5,7]
          return out=%18, relu=%12, sig=%5
        }",
        4e-6,
    );
}

#[test]
fn broadcast_reshape_and_slice() {
    pointwise(
        "graph {
          %0 = input name=\"x\" : f32[2,6,4,5]
          %1 = param name=\"scale\" : f32[6]
          %2 = reshape(%1) shape=[1,6,1,1] : f32[1,6,1,1]
          %3 = broadcast(%2) shape=[2,6,4,5] : f32[2,6,4,5]
          %4 = mul(%0, %3) : f32[2,6,4,5]
          %5 = slice(%4) axis=1 start=2 end=5 : f32[2,3,4,5]
          %6 = reshape(%5) shape=[6,20] : f32[6,20]
          %7 = input name=\"row\" : f32[20]
          %8 = broadcast(%7) shape=[6,20] : f32[6,20]
          %9 = sub(%6, %8) : f32[6,20]
          %10 = constant value=0.5 : f32[]
          %11 = broadcast(%10) shape=[6,20] : f32[6,20]
          %12 = max(%9, %11) : f32[6,20]
          return y=%12, sliced=%5
        }",
        1e-6,
    );
}

#[test]
fn concat_reads_each_operand_in_its_range_only() {
    pointwise(
        "graph {
          %0 = input name=\"a\" : f32[2,3,4,4]
          %1 = input name=\"b\" : f32[2,5,4,4]
          %2 = input name=\"c\" : f32[2,1,4,4]
          %3 = exp(%1) : f32[2,5,4,4]
          %4 = concat(%0, %3, %2) axis=1 : f32[2,9,4,4]
          %5 = slice(%4) axis=3 start=1 end=3 : f32[2,9,4,2]
          return y=%5
        }",
        1e-6,
    );
}

#[test]
fn nearest_resize_follows_atens_f32_index_rule() {
    // Equal sizes, exact 2x, other integer and fractional ratios, downsampling; 14 -> 46
    // and 26 -> 22 are sizes where f32 arithmetic picks another source than exact
    // rational arithmetic would (output 23 reads 6, not 7; output 11 reads 12, not 13).
    for (h, w, oh, ow) in [
        (4, 4, 16, 16),
        (8, 5, 16, 5),
        (5, 7, 7, 3),
        (3, 13, 10, 29),
        (7, 9, 3, 4),
        (14, 26, 46, 22),
    ] {
        pointwise(
            &format!(
                "graph {{
                  %0 = input name=\"x\" : f32[2,3,{h},{w}]
                  %1 = resize_nearest(%0) size=[{oh},{ow}] : f32[2,3,{oh},{ow}]
                  return y=%1
                }}"
            ),
            0.0,
        );
    }
}

#[test]
fn labels_one_hot_casts_and_integer_arithmetic() {
    pointwise(
        "graph {
          %0 = input name=\"labels\" : i64[6]
          %1 = one_hot(%0) classes=4 dtype=\"f32\" : f32[6,4]
          %2 = param name=\"count\" : i64[]
          %3 = constant value=1 : i64[]
          %4 = add(%2, %3) : i64[]
          %5 = cast(%0) to=\"f32\" : f32[6]
          %6 = input name=\"x\" : f32[6]
          %7 = mul(%5, %6) : f32[6]
          %8 = cast(%7) to=\"i64\" : i64[6]
          return hot=%1, count=%4, scaled=%8
        }",
        0.0,
    );
}

#[test]
fn large_maps_take_runs_of_four_along_the_innermost_axis() {
    // 2x8x64x64 elements: each thread takes four neighbours along the last axis,
    // sharing their coordinates; per-channel parameters are read once for the four;
    // a resized operand and a channel slice keep their own index maps.
    let src = "graph {
          %0 = input name=\"x\" : f32[2,8,64,64]
          %1 = input name=\"scale\" : f32[1,8,1,1]
          %2 = broadcast(%1) shape=[2,8,64,64] : f32[2,8,64,64]
          %3 = mul(%0, %2) : f32[2,8,64,64]
          %4 = input name=\"small\" : f32[2,8,32,32]
          %5 = resize_nearest(%4) size=[64,64] : f32[2,8,64,64]
          %6 = add(%3, %5) : f32[2,8,64,64]
          %7 = sigmoid(%6) : f32[2,8,64,64]
          %8 = input name=\"wide\" : f32[2,16,64,64]
          %9 = slice(%8) axis=1 start=4 end=12 : f32[2,8,64,64]
          %10 = mul(%7, %9) : f32[2,8,64,64]
          return y=%10, gate=%7
        }";
    let g = graph(src);
    let p = single_kernel(&g, Anchor::Pointwise);
    let compiled = calib_codegen::compile(&p).unwrap();
    // A quarter of the threads one per element would need.
    assert_eq!(
        compiled.kernels[0].grid[0] as usize,
        2 * 8 * 64 * 64 / 4 / 256
    );
    // `x`, read where the outputs are, comes in four at a time with 128-bit loads.
    let ptx = &compiled.kernels[0].ptx;
    assert_eq!(ptx.matches("ld.global.nc.v4.f32").count(), 1, "{ptx}");
    // Both outputs go out four at a time too.
    assert_eq!(ptx.matches("st.global.v4.f32").count(), 2, "{ptx}");
    check(&g, &p, 9, 2e-6);
}

#[test]
fn bf16_runs_of_four_move_as_two_32_bit_words() {
    // Four bf16 neighbours are two 32-bit words: each element's bits, moved to the high
    // half of an f32, are its value, the lower address in each word's low half; stored,
    // each pair is rounded into one word the same way round.
    let src = "graph {
          %0 = input name=\"x\" : bf16[2,8,64,64]
          %1 = cast(%0) to=\"f32\" : f32[2,8,64,64]
          %2 = input name=\"y\" : f32[2,8,64,64]
          %3 = mul(%1, %2) : f32[2,8,64,64]
          %4 = cast(%3) to=\"bf16\" : bf16[2,8,64,64]
          return z=%3, rounded=%4
        }";
    let g = graph(src);
    let p = single_kernel(&g, Anchor::Pointwise);
    let ptx = calib_codegen::compile(&p).unwrap().kernels[0].ptx.clone();
    assert_eq!(ptx.matches("ld.global.nc.v2.b32").count(), 1, "{ptx}");
    assert_eq!(ptx.matches("ld.global.nc.v4.f32").count(), 1, "{ptx}");
    assert!(!ptx.contains("ld.global.nc.u16"), "{ptx}");
    assert_eq!(ptx.matches("st.global.v2.b32").count(), 1, "{ptx}");
    assert!(!ptx.contains("st.global.u16"), "{ptx}");
    let mut inputs = support::tensors(&g, 5, 3);
    let x = inputs["x"].cast(calib_ir::DType::BF16);
    inputs.insert("x".into(), x);
    support::check_tensors(&g, &p, &inputs, 0.0);
}

#[test]
fn larger_maps_take_runs_of_eight_as_two_128_bit_vectors() {
    // 4x8x64x64 elements, enough threads at eight a thread: a run of eight f32 is two
    // 128-bit loads of each input stored like the outputs and two stores of each
    // output; the channel's rsqrt is computed once for the eight; the resized operand
    // and the channel slice keep their own index maps.
    let src = "graph {
          %0 = input name=\"x\" : f32[4,8,64,64]
          %1 = input name=\"var\" : f32[1,8,1,1]
          %2 = rsqrt(%1) : f32[1,8,1,1]
          %3 = broadcast(%2) shape=[4,8,64,64] : f32[4,8,64,64]
          %4 = mul(%0, %3) : f32[4,8,64,64]
          %5 = input name=\"small\" : f32[4,8,32,32]
          %6 = resize_nearest(%5) size=[64,64] : f32[4,8,64,64]
          %7 = add(%4, %6) : f32[4,8,64,64]
          %8 = input name=\"wide\" : f32[4,16,64,64]
          %9 = slice(%8) axis=1 start=4 end=12 : f32[4,8,64,64]
          %10 = mul(%7, %9) : f32[4,8,64,64]
          return y=%10, sum=%7
        }";
    let g = graph(src);
    let p = single_kernel(&g, Anchor::Pointwise);
    let compiled = calib_codegen::compile(&p).unwrap();
    assert_eq!(
        compiled.kernels[0].grid[0] as usize,
        4 * 8 * 64 * 64 / 8 / 256
    );
    let ptx = &compiled.kernels[0].ptx;
    assert_eq!(ptx.matches("ld.global.nc.v4.f32").count(), 2, "{ptx}");
    assert_eq!(ptx.matches("st.global.v4.f32").count(), 4, "{ptx}");
    assert_eq!(ptx.matches("rsqrt.approx").count(), 1, "{ptx}");
    // No window is cut, so each divides by 4: a multiplication by 0.25, which rounds as
    // the reference's division does.
    assert!(!ptx.contains("div.rn"), "{ptx}");
    let mut inputs = support::tensors(&g, 17, 3);
    let var = positive(&inputs["var"]);
    inputs.insert("var".into(), var);
    support::check_tensors(&g, &p, &inputs, 0.0);
}

#[test]
fn bf16_runs_of_eight_move_as_one_128_bit_vector() {
    // Eight bf16 neighbours are four 32-bit words, one 128-bit access each way; a
    // narrower f32 input of the same shape takes two.
    let src = "graph {
          %0 = input name=\"x\" : bf16[4,8,64,64]
          %1 = cast(%0) to=\"f32\" : f32[4,8,64,64]
          %2 = input name=\"y\" : f32[4,8,64,64]
          %3 = mul(%1, %2) : f32[4,8,64,64]
          %4 = cast(%3) to=\"bf16\" : bf16[4,8,64,64]
          return rounded=%4
        }";
    let g = graph(src);
    let p = single_kernel(&g, Anchor::Pointwise);
    let ptx = calib_codegen::compile(&p).unwrap().kernels[0].ptx.clone();
    assert_eq!(ptx.matches("ld.global.nc.v4.b32").count(), 1, "{ptx}");
    assert_eq!(ptx.matches("ld.global.nc.v4.f32").count(), 2, "{ptx}");
    assert!(!ptx.contains("ld.global.nc.u16"), "{ptx}");
    assert_eq!(ptx.matches("st.global.v4.b32").count(), 1, "{ptx}");
    assert!(!ptx.contains("st.global.u16"), "{ptx}");
    let mut inputs = support::tensors(&g, 19, 3);
    let x = inputs["x"].cast(calib_ir::DType::BF16);
    inputs.insert("x".into(), x);
    support::check_tensors(&g, &p, &inputs, 0.0);
}

#[test]
fn pooling_keeps_runs_of_four() {
    // A window read at a stride spreads a warp's loads over twice the sectors at eight
    // elements a thread, for little shared work: pooled maps stay at four.
    let src = "graph {
          %0 = input name=\"x\" : f32[4,8,128,128]
          %1 = max_pool2d(%0) kernel=[3,3] stride=[2,2] padding=[1,1] ceil_mode=false : f32[4,8,64,64]
          return y=%1
        }";
    let g = graph(src);
    let p = single_kernel(&g, Anchor::Pool);
    let compiled = calib_codegen::compile(&p).unwrap();
    assert_eq!(
        compiled.kernels[0].grid[0] as usize,
        4 * 8 * 64 * 64 / 4 / 256
    );
    check(&g, &p, 23, 0.0);
}

#[test]
fn a_pooling_window_computes_its_channel_terms_once_and_divides_by_multiplying() {
    // The window's taps are unrolled straight-line code: the channel's rsqrt of a
    // batch norm feeding the pool is computed by the first tap and read by the others.
    let src = "graph {
          %0 = input name=\"x\" : f32[2,8,8,8]
          %1 = input name=\"var\" : f32[1,8,1,1]
          %2 = rsqrt(%1) : f32[1,8,1,1]
          %3 = broadcast(%2) shape=[2,8,8,8] : f32[2,8,8,8]
          %4 = mul(%0, %3) : f32[2,8,8,8]
          %5 = avg_pool2d(%4) kernel=[2,2] stride=[2,2] padding=[0,0] ceil_mode=false count_include_pad=true : f32[2,8,4,4]
          return y=%5
        }";
    let g = graph(src);
    let p = single_kernel(&g, Anchor::Pool);
    let ptx = calib_codegen::compile(&p).unwrap().kernels[0].ptx.clone();
    assert_eq!(ptx.matches("rsqrt.approx").count(), 1, "{ptx}");
    // No window is cut, so each divides by 4: a multiplication by 0.25, which rounds as
    // the reference's division does.
    assert!(!ptx.contains("div.rn"), "{ptx}");
    let mut inputs = support::tensors(&g, 17, 3);
    let var = positive(&inputs["var"]);
    inputs.insert("var".into(), var);
    support::check_tensors(&g, &p, &inputs, 0.0);
}

#[test]
fn runs_of_four_span_rows_where_four_does_not_divide_a_row() {
    // 14x14 planes: no row holds whole runs of four, a plane holds 49. A run walks the
    // plane, its elements each with their own row and column (the resized operand reads
    // by them) and one channel, so the per-channel rsqrt is computed once a run.
    let src = "graph {
          %0 = input name=\"x\" : f32[8,48,14,14]
          %1 = input name=\"var\" : f32[1,48,1,1]
          %2 = rsqrt(%1) : f32[1,48,1,1]
          %3 = broadcast(%2) shape=[8,48,14,14] : f32[8,48,14,14]
          %4 = mul(%0, %3) : f32[8,48,14,14]
          %5 = input name=\"small\" : f32[8,48,7,7]
          %6 = resize_nearest(%5) size=[14,14] : f32[8,48,14,14]
          %7 = add(%4, %6) : f32[8,48,14,14]
          return y=%7
        }";
    let g = graph(src);
    let p = single_kernel(&g, Anchor::Pointwise);
    let compiled = calib_codegen::compile(&p).unwrap();
    assert_eq!(
        compiled.kernels[0].grid[0] as usize,
        (8 * 48 * 14 * 14 / 4usize).div_ceil(256)
    );
    let ptx = &compiled.kernels[0].ptx;
    assert_eq!(ptx.matches("ld.global.nc.v4.f32").count(), 1, "{ptx}");
    assert_eq!(ptx.matches("st.global.v4.f32").count(), 1, "{ptx}");
    assert_eq!(ptx.matches("rsqrt.approx").count(), 1, "{ptx}");
    let mut inputs = support::tensors(&g, 11, 3);
    let var = positive(&inputs["var"]);
    inputs.insert("var".into(), var);
    support::check_tensors(&g, &p, &inputs, 2e-6);
}

#[test]
fn a_run_takes_one_branch_of_a_concat_along_channels() {
    // The four elements of a run share their channel, so they read the same operand of
    // a concatenation along channels: one branch a run, each operand's per-channel
    // terms computed once in it and its input read as a run.
    let src = "graph {
          %0 = input name=\"a\" : f32[8,24,14,14]
          %1 = input name=\"va\" : f32[1,24,1,1]
          %2 = rsqrt(%1) : f32[1,24,1,1]
          %3 = broadcast(%2) shape=[8,24,14,14] : f32[8,24,14,14]
          %4 = mul(%0, %3) : f32[8,24,14,14]
          %5 = input name=\"b\" : f32[8,24,14,14]
          %6 = input name=\"vb\" : f32[1,24,1,1]
          %7 = sqrt(%6) : f32[1,24,1,1]
          %8 = broadcast(%7) shape=[8,24,14,14] : f32[8,24,14,14]
          %9 = mul(%5, %8) : f32[8,24,14,14]
          %10 = concat(%4, %9) axis=1 : f32[8,48,14,14]
          return y=%10
        }";
    let g = graph(src);
    let p = single_kernel(&g, Anchor::Pointwise);
    let ptx = calib_codegen::compile(&p).unwrap().kernels[0].ptx.clone();
    assert_eq!(ptx.matches("rsqrt.approx").count(), 1, "{ptx}");
    assert_eq!(ptx.matches("sqrt.rn").count(), 1, "{ptx}");
    // Each branch reads its own operand's input as a run, and only that one; the
    // scalar loads left are the two per-channel ones.
    assert_eq!(ptx.matches("ld.global.nc.v4.f32").count(), 2, "{ptx}");
    assert_eq!(ptx.matches("ld.global.nc.f32").count(), 2, "{ptx}");
    assert_eq!(ptx.matches("st.global.v4.f32").count(), 2, "{ptx}");
    let mut inputs = support::tensors(&g, 13, 3);
    for name in ["va", "vb"] {
        let v = positive(&inputs[name]);
        inputs.insert(name.into(), v);
    }
    support::check_tensors(&g, &p, &inputs, 2e-6);
}

/// `t` with every element made positive (and away from zero): a variance.
fn positive(t: &calib_runtime::HostTensor) -> calib_runtime::HostTensor {
    let values = t.to_f32_vec().iter().map(|v| v.abs() + 0.5).collect();
    calib_runtime::HostTensor::from_f32(t.shape().to_vec(), values).unwrap()
}
