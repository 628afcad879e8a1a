//! Strided data gradients computed phase by phase (`calib_ir::Phases`): each phase of
//! the gradient's positions is a GEMM over the taps it meets, stepping through only
//! those, in every tile shape and split, on FMA and tensor cores, with the result the
//! reference interpreter's.

mod support;

use calib_ir::{gemm_anchor, Anchor, GemmDims, GemmSchedule};
use support::graph;
use support::schedules::{every_schedule, every_schedule_on_tensor_cores, schedule, scheduled};
use support::{launch_stats, single_kernel};

/// The data gradient of a `k`x`k` convolution at `stride`, padded by `pad`, from
/// `o` output channels in `groups` groups to 8 image channels of `h` x `w`.
fn data_gradient(
    k: usize,
    stride: [usize; 2],
    pad: usize,
    o: usize,
    groups: usize,
    [h, w]: [usize; 2],
) -> String {
    let out = |i: usize, s: usize| (i + 2 * pad - k) / s + 1;
    let (oh, ow) = (out(h, stride[0]), out(w, stride[1]));
    let [sh, sw] = stride;
    format!(
        "graph {{
          %0 = input name=\"dy\" : f32[2,{o},{oh},{ow}]
          %1 = param name=\"w\" : f32[{o},{cg},{k},{k}]
          %2 = conv2d_backward_data(%0, %1) stride=[{sh},{sw}] padding=[{pad},{pad}] dilation=[1,1] groups={groups} input_size=[{h},{w}] : f32[2,8,{h},{w}]
          return dx=%2
        }}",
        cg = 8 / groups
    )
}

fn dims(src: &str) -> GemmDims {
    let g = graph(src);
    GemmDims::of(&g, gemm_anchor(&g).unwrap()).unwrap()
}

#[test]
fn phases_multiply_the_forward_products_only() {
    // A 3x3 window padded by 1 at stride 2: phases meet 4, 2, 2 and 1 taps, laid out
    // as 2x2 each, so the GEMM's k is 4 taps of 32 channels and its FLOPs the 9 taps.
    let d = dims(&data_gradient(3, [2, 2], 1, 32, 1, [8, 8]));
    let p = d.phases.expect("phases");
    assert_eq!(
        (d.groups, d.m.clone(), d.n.clone(), d.k.clone()),
        (4, vec![2, 4, 4], vec![8], vec![2, 2, 32])
    );
    let forward = 2.0 * (2 * 4 * 4 * 8 * 32 * 9) as f64;
    assert_eq!(d.flops(), forward);
    assert!(p.reversed());
    // Too few channels for a step to stay on one tap: one dense GEMM.
    assert!(dims(&data_gradient(3, [2, 2], 1, 16, 1, [8, 8]))
        .phases
        .is_none());
}

#[test]
fn phased_data_gradients_in_every_schedule() {
    for (k, stride, pad, o, groups, hw) in [
        (3, [2, 2], 1, 32, 1, [8, 8]),
        (2, [2, 2], 0, 32, 1, [8, 6]),
        (3, [2, 2], 0, 32, 1, [10, 8]),
        (4, [2, 2], 1, 64, 2, [8, 8]),
        (3, [2, 3], 1, 32, 1, [8, 9]),
    ] {
        let src = data_gradient(k, stride, pad, o, groups, hw);
        assert!(dims(&src).phases.is_some(), "{src}");
        every_schedule(&src, Anchor::Convolution);
    }
}

#[test]
fn phased_data_gradients_on_tensor_cores() {
    let src = data_gradient(3, [2, 2], 1, 64, 1, [8, 8]);
    let f32_operands = [
        (calib_ir::GemmInstruction::MmaTf32, true),
        (calib_ir::GemmInstruction::MmaBf16, false),
    ];
    every_schedule_on_tensor_cores(&src, Anchor::Convolution, &f32_operands);
}

/// Warp instructions the simulator executes for `src`'s one kernel under a 64x64
/// tile, 16 deep (on inputs of zeros: only the instruction count matters).
fn warp_instructions(src: &str) -> u64 {
    let g = graph(src);
    let s = GemmSchedule {
        block_k: 16,
        ..schedule(64, 64, 1)
    };
    let program = scheduled(single_kernel(&g, Anchor::Convolution), s);
    launch_stats(&program, 0, &Default::default()).warp_instructions
}

#[test]
fn a_phase_steps_through_its_own_taps() {
    // A 2x2 window at stride 2 meets one tap per phase; a 3x3 one padded by 1 lays out
    // 2x2 taps per phase but meets 9 in all. Stepping through the taps met, the 3x3
    // gradient runs 9/4 of the 2x2's steps; through every tap laid out it would run 4x.
    let two = warp_instructions(&data_gradient(2, [2, 2], 0, 256, 1, [8, 8]));
    let three = warp_instructions(&data_gradient(3, [2, 2], 1, 256, 1, [8, 8]));
    let ratio = three as f64 / two as f64;
    assert!(
        (2.0..2.8).contains(&ratio),
        "{three} / {two} warp instructions: {ratio:.2}"
    );
}
