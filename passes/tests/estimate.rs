//! The launch estimator on kernel bodies the planner meets while it extracts a plan.

use calib_ir::text;
use calib_passes::fusion::estimate::best_schedule;
use calib_passes::fusion::Device;

/// SCNet-50's layer4 at batch 1: a 3x3 conv on a 1x1 map and BatchNorm's statistics of
/// it. The statistics have the conv's element count but reduce it, so no output is the
/// GEMM's own result; a split-K candidate must still sum the slices.
const STATISTICS_ONLY: &str = r#"graph {
  %0 = input name="in0" : f32[1,256,1,1]
  %1 = input name="in1" : f32[256,256,3,3]
  %2 = conv2d(%0, %1) stride=[1,1] padding=[1,1] dilation=[1,1] groups=1 : f32[1,256,1,1]
  %3 = reduce_mean(%2) axes=[0,2,3] keepdims=true : f32[1,256,1,1]
  %4 = sub(%2, %3) : f32[1,256,1,1]
  %5 = mul(%4, %4) : f32[1,256,1,1]
  %6 = reduce_mean(%5) axes=[0,2,3] keepdims=true : f32[1,256,1,1]
  return out0=%3, out1=%6
}
"#;

#[test]
fn a_gemm_whose_outputs_all_reduce_it_is_estimated() {
    let body = text::parse(STATISTICS_ONLY).unwrap();
    let (_, seconds) =
        best_schedule(&body, &Device::default(), Default::default(), &[]).expect("a GEMM kernel");
    assert!(seconds.is_finite() && seconds > 0.0, "{seconds}");
}

/// A tf32 convolution as the policy writes it, its image rounded straight from the
/// input, or with `prologue` `relu`, after arithmetic.
fn rounded_conv(prologue: &str) -> calib_ir::Graph {
    // The rounding reads the input itself, or the ReLU of it.
    let rounded = if prologue == "relu" { "%1" } else { "%0" };
    text::parse(&format!(
        r#"graph {{
  %0 = input name="in0" : f32[64,256,14,14]
  %1 = relu(%0) : f32[64,256,14,14]
  %2 = cast({rounded}) to="tf32" : tf32[64,256,14,14]
  %3 = cast(%2) to="f32" : f32[64,256,14,14]
  %4 = input name="in1" : f32[256,256,3,3]
  %5 = cast(%4) to="tf32" : tf32[256,256,3,3]
  %6 = cast(%5) to="f32" : f32[256,256,3,3]
  %7 = conv2d(%3, %6) stride=[1,1] padding=[1,1] dilation=[1,1] groups=1 : f32[64,256,14,14]
  return out0=%7
}}
"#
    ))
    .unwrap()
}

#[test]
fn pipelined_schedules_are_candidates_where_shared_memory_holds_them() {
    use calib_ir::{gemm_anchor, GemmDims, GemmInstruction, Precision};
    use calib_passes::fusion::estimate::candidate_schedules;
    let body = rounded_conv("cast");
    let dims = GemmDims::of(&body, gemm_anchor(&body).unwrap()).unwrap();
    for device in ["h200", "a100-sxm"] {
        let device = Device::load(device).unwrap();
        let all = candidate_schedules(&dims, &device, Precision::Tf32);
        for stages in [2, 3, 4] {
            assert!(
                all.iter()
                    .any(|s| s.stages == stages && s.instruction == GemmInstruction::MmaTf32),
                "{}: no {stages}-stage candidate",
                device.name
            );
        }
        let limit = (device.shared_bytes_per_sm - device.shared_bytes_reserved_per_block) as usize;
        assert!(all.iter().all(|s| s.operand_bytes() <= limit));
        assert!(all
            .iter()
            .all(|s| s.instruction.is_fma() <= (s.stages == 2)));
    }
    // The largest ring of the deepest step does not fit an A100's 164 KB.
    let a100 = candidate_schedules(&dims, &Device::load("a100-sxm").unwrap(), Precision::Tf32);
    assert!(!a100
        .iter()
        .any(|s| (s.block_m, s.block_n, s.block_k, s.stages) == (256, 64, 32, 4)));
}

#[test]
fn bf16_tiles_fit_rings_whose_f32_tiles_do_not() {
    use calib_ir::{gemm_anchor, GemmDims, GemmInstruction, Precision};
    use calib_passes::fusion::estimate::candidate_schedules;
    let text = rounded_conv("cast").to_string().replace("tf32", "bf16");
    let body = text::parse(&text).unwrap();
    let dims = GemmDims::of(&body, gemm_anchor(&body).unwrap()).unwrap();
    let a100 = Device::load("a100-sxm").unwrap();
    let all = candidate_schedules(&dims, &a100, Precision::Bf16);
    // 16-bit elements: four stages of 256x64x32 take 86 KB, not 172.
    let ring = all
        .iter()
        .find(|s| (s.block_m, s.block_n, s.block_k, s.stages) == (256, 64, 32, 4))
        .expect("the largest bf16 ring is a candidate on an A100");
    assert_eq!(ring.instruction, GemmInstruction::MmaBf16);
    assert_eq!(ring.operand_bytes(), 4 * 2 * 32 * (256 + 64 + 2 * 8));
}

/// A 128x128 tile, k step 16, on TF32 tensor cores with `stages` stages.
fn tf32_128x128(stages: usize) -> calib_ir::GemmSchedule {
    calib_ir::GemmSchedule {
        block_m: 128,
        block_n: 128,
        block_k: 16,
        split_k: 1,
        instruction: calib_ir::GemmInstruction::MmaTf32,
        stages,
    }
}

#[test]
fn copied_operands_wait_for_no_load_round_of_their_own() {
    use calib_ir::{gemm_anchor, GemmDims, Schedule};
    use calib_passes::fusion::estimate::gemm;
    let rounds = |prologue: &str, stages: usize| {
        let body = rounded_conv(prologue);
        let anchor = gemm_anchor(&body).unwrap();
        let dims = GemmDims::of(&body, anchor).unwrap();
        let s = tf32_128x128(stages);
        gemm(&body, anchor, &dims, &Schedule::gemm(s), &[]).launches[0]
            .census
            .load_rounds
    };
    // Both operands copied: the k loop's rounds are gone (the epilogue's remain).
    assert!(rounds("cast", 3) < rounds("cast", 2) / 4.0);
    assert_eq!(rounds("cast", 3), rounds("cast", 4));
    // A prologue keeps its operand in registers, and each step waits for it.
    assert_eq!(rounds("relu", 3), rounds("relu", 2));
}

#[test]
fn an_epilogue_written_out_run_by_run_waits_once() {
    use calib_ir::{gemm_anchor, GemmDims, Schedule};
    use calib_passes::fusion::estimate::gemm;
    // The convolution alone, and with a residual read in its epilogue. Code generation
    // writes a thread's few runs of four outputs out one after another (no loop), so
    // their residual loads are issued together and waited for once, not once per
    // output (as the estimate once assumed: 64 rounds where the emitted code has none).
    let conv = |epilogue: &str| {
        text::parse(&format!(
            r#"graph {{
  %0 = input name="in0" : f32[64,256,14,14]
  %1 = input name="in1" : f32[256,256,3,3]
  %2 = conv2d(%0, %1) stride=[1,1] padding=[1,1] dilation=[1,1] groups=1 : f32[64,256,14,14]
  %3 = input name="in2" : f32[64,256,14,14]
  %4 = add(%2, %3) : f32[64,256,14,14]
  return out0={epilogue}
}}
"#
        ))
        .unwrap()
    };
    let s = tf32_128x128(2);
    let rounds = |body: &calib_ir::Graph| {
        let anchor = gemm_anchor(body).unwrap();
        let dims = GemmDims::of(body, anchor).unwrap();
        gemm(body, anchor, &dims, &Schedule::gemm(s), &[]).launches[0]
            .census
            .load_rounds
    };
    let extra = rounds(&conv("%4")) - rounds(&conv("%2"));
    assert!((0.0..=1.0).contains(&extra), "{extra} more rounds");
}

/// SCNet's gate gradient beside its per-channel statistics: a reduction of a
/// `[64,64,56,56]` product into 64 channels, and a side output of the input's size that
/// reduces nothing. Code generation stores the side output by grid-stride passes of the
/// reduction launch's own threads, so the 64 teams of an unsplit reduction would walk
/// all 12.8M elements themselves: the estimate prices those passes, and a split (more
/// teams, more threads for the passes) comes out well ahead.
#[test]
fn a_side_output_of_the_input_size_is_priced_on_the_reduction_threads() {
    use calib_passes::fusion::estimate::{best_reduction_split, kernel_seconds};
    let side = |with: bool| {
        let out = if with { ", side=%6" } else { "" };
        text::parse(&format!(
            r#"graph {{
  %0 = input name="x" : f32[64,64,56,56]
  %1 = input name="g" : f32[64,64,56,56]
  %2 = mul(%0, %1) : f32[64,64,56,56]
  %3 = reduce_sum(%2) axes=[0,2,3] keepdims=true : f32[1,64,1,1]
  %4 = constant value=1.0 : f32[64,64,56,56]
  %5 = sub(%4, %1) : f32[64,64,56,56]
  %6 = mul(%2, %5) : f32[64,64,56,56]
  return sum=%3{out}
}}
"#
        ))
        .unwrap()
    };
    let device = Device::load("h200").unwrap();
    let (split, with_side, _) = best_reduction_split(&side(true), &device, &[]).unwrap();
    assert!(split > 1, "split {split}");
    // The side output costs at least the time to write it (its inputs are read for
    // the sum anyway), not the sliver an epilogue run once per channel would; and no
    // more than a pointwise kernel that reads those inputs again to store it.
    let (_, alone, _) = best_reduction_split(&side(false), &device, &[]).unwrap();
    let map = text::parse(
        r#"graph {
  %0 = input name="x" : f32[64,64,56,56]
  %1 = input name="g" : f32[64,64,56,56]
  %2 = mul(%0, %1) : f32[64,64,56,56]
  %3 = constant value=1.0 : f32[64,64,56,56]
  %4 = sub(%3, %1) : f32[64,64,56,56]
  %5 = mul(%2, %4) : f32[64,64,56,56]
  return side=%5
}
"#,
    )
    .unwrap();
    let pointwise = kernel_seconds(&map, &device, Default::default());
    let extra = with_side - alone;
    let write = (64 * 64 * 56 * 56 * 4) as f64 / device.dram_bandwidth;
    // Unsplit, 64 teams of 256 threads store all 12.8M elements: slower than writing
    // them at full bandwidth, by a round of loads per run for ~100 runs a thread (runs
    // of eight since the thirteenth session, half the rounds of four: about 2x).
    let unsplit = |body: calib_ir::Graph| unsplit_reduction_seconds(body, &device);
    let unsplit_extra = unsplit(side(true)) - unsplit(side(false));
    assert!(
        unsplit_extra > 1.5 * write,
        "unsplit, the side output is priced at {unsplit_extra:e} s; writing it takes {write:e} s"
    );
    assert!(
        (write..=pointwise).contains(&extra),
        "side output priced at {extra:e} s; writing it takes {write:e} s, a pointwise \
         kernel storing it {pointwise:e} s"
    );
}

/// BatchNorm's statistics over 512 channels of 64x14x14: unsplit, a channels-last launch
/// keeping a warp's sixteen channels would have 32 blocks, too few. Where the kernel
/// reads channels-last images the planner splits at least so far that it has
/// `MIN_CHANNEL_BLOCKS`; a row-major plan keeps the split it would choose anyway.
#[test]
fn channels_last_statistics_are_split_for_enough_blocks() {
    use calib_ir::{channel_team_blocks, channel_team_split, Layout, MIN_CHANNEL_BLOCKS};
    use calib_passes::fusion::estimate::best_reduction_split;
    let g = text::parse(
        r#"graph {
  %0 = input name="x" : bf16[64,512,14,14]
  %1 = cast(%0) to="f32" : f32[64,512,14,14]
  %2 = mul(%1, %1) : f32[64,512,14,14]
  %3 = reduce_sum(%1) axes=[0,2,3] keepdims=true : f32[1,512,1,1]
  %4 = reduce_sum(%2) axes=[0,2,3] keepdims=true : f32[1,512,1,1]
  return sum=%3, squares=%4
}
"#,
    )
    .unwrap();
    let device = Device::load("h200").unwrap();
    // (At 28x28 the estimate splits three ways by itself, now that a split's last
    // block combines: no floor needed there.)
    let (shape, axes) = ([64, 512, 14, 14], [0, 2, 3]);
    assert_eq!(channel_team_blocks(&shape, &axes, 1), Some(32));
    let floor = channel_team_split(&shape, &axes, 256).unwrap();
    let split = |layout| best_reduction_split(&g, &device, &[layout]).unwrap().0;
    let nhwc = split(Layout::ChannelsLast);
    assert!(nhwc >= floor, "split {nhwc}, floor {floor}");
    assert!(channel_team_blocks(&shape, &axes, nhwc).unwrap() >= MIN_CHANNEL_BLOCKS);
    let unaware = best_reduction_split(&g, &device, &[]).unwrap().0;
    assert_eq!(split(Layout::RowMajor), unaware);
    assert!(
        unaware < floor,
        "the row-major plan would not split so far: {unaware}"
    );
}

/// The predicted seconds of `body` as a reduction kernel, unsplit: anything else it
/// computes (a convolution, a side output) evaluated on the reduction's threads.
fn unsplit_reduction_seconds(body: calib_ir::Graph, device: &Device) -> f64 {
    let kernel = calib_ir::Kernel {
        name: "k0".into(),
        label: String::new(),
        anchor: calib_ir::Anchor::Reduction,
        inputs: vec![],
        outputs: vec![],
        body,
        covers: vec![],
        schedule: Some(calib_ir::Schedule::reduction(calib_ir::ReductionSchedule {
            split: 1,
        })),
        workspace: None,
        semaphore: None,
    };
    calib_passes::fusion::estimate::program_kernel_seconds(&kernel, &[], device)
}

/// A strided data gradient evaluated one element at a time (inside a reduction kernel,
/// not as its GEMM anchor) walks every tap of its window: its phases are only the
/// anchor's. 32 output channels take phases as an anchor, 40 do not; priced per
/// element, the two cost about their channels' ratio.
#[test]
fn a_data_gradient_evaluated_per_element_is_priced_over_every_tap() {
    let seconds = |o: usize| {
        let body = text::parse(&format!(
            r#"graph {{
  %0 = input name="dy" : f32[8,{o},14,14]
  %1 = input name="w" : f32[{o},16,3,3]
  %2 = conv2d_backward_data(%0, %1) stride=[2,2] padding=[1,1] dilation=[1,1] groups=1 input_size=[28,28] : f32[8,16,28,28]
  %3 = reduce_sum(%2) axes=[0,2,3] keepdims=true : f32[1,16,1,1]
  return total=%3
}}
"#
        ))
        .unwrap();
        let dims = calib_ir::GemmDims::of(&body, calib_ir::Value(2)).unwrap();
        assert_eq!(dims.phases.is_some(), o == 32);
        let device = Device::load("h200").unwrap();
        unsplit_reduction_seconds(body, &device)
    };
    let ratio = seconds(40) / seconds(32);
    assert!(
        (1.0..1.5).contains(&ratio),
        "40 channels cost {ratio:.2}x 32"
    );
}

/// A split GEMM's second launch sums the partial tiles and runs the epilogue: it moves
/// the partial tiles, what the epilogue reads besides the anchor and what it writes,
/// not the GEMM's operands (the estimate once charged it the whole body's bytes, some
/// 80 us of device memory per split weight gradient of SCNet-50 that the emitted code
/// never spends). Statistics over the result read the partial tiles back the same way.
#[test]
fn a_split_gemms_later_launches_move_their_own_bytes() {
    use calib_ir::{gemm_anchor, GemmDims, Schedule};
    use calib_passes::fusion::estimate::gemm;
    let body = text::parse(
        r#"graph {
  %0 = input name="in0" : f32[64,256,14,14]
  %1 = input name="in1" : f32[256,256,3,3]
  %2 = conv2d(%0, %1) stride=[1,1] padding=[1,1] dilation=[1,1] groups=1 : f32[64,256,14,14]
  %3 = input name="in2" : f32[64,256,14,14]
  %4 = add(%2, %3) : f32[64,256,14,14]
  %5 = reduce_sum(%4) axes=[0,2,3] keepdims=true : f32[1,256,1,1]
  return out0=%4, out1=%5
}
"#,
    )
    .unwrap();
    let anchor = gemm_anchor(&body).unwrap();
    let dims = GemmDims::of(&body, anchor).unwrap();
    let split = 4;
    let s = calib_ir::GemmSchedule {
        split_k: split,
        ..tf32_128x128(3)
    };
    let launches = gemm(&body, anchor, &dims, &Schedule::gemm(s), &[]).launches;
    assert_eq!(
        launches.len(),
        3,
        "partial tiles, their sum, the statistics"
    );
    let image = (64 * 256 * 14 * 14 * 4) as f64;
    let partials = split as f64 * image;
    // The sum reads the partial tiles and the residual, and writes the output.
    assert_eq!(launches[1].unique_bytes, partials + 2.0 * image);
    // The statistics read the partial tiles and the residual, and write 256 sums.
    assert_eq!(launches[2].unique_bytes, partials + image + 256.0 * 4.0);
}

/// A weight gradient of SCNet-50's layer3 (1024x256 outputs, `k` = 64x14x14): sixteen
/// 128x128 tiles. Splitting `k` to fill one wave of an H200's 132 SMs takes 8 slices
/// (128 blocks); 9 slices (the smallest split that reaches 132 blocks) make 144, and
/// the twelve of the second wave then take as long as the first 132. The candidates
/// hold, for each number of waves, the largest split that stays within it as well as
/// the smallest that fills it.
#[test]
fn splits_of_k_include_the_largest_that_fits_whole_waves() {
    use calib_ir::{gemm_anchor, GemmDims, GemmInstruction, Precision};
    use calib_passes::fusion::estimate::candidate_schedules;
    let body = text::parse(
        r#"graph {
  %0 = input name="x" : bf16[64,256,14,14]
  %1 = cast(%0) to="f32" : f32[64,256,14,14]
  %2 = input name="dy" : bf16[64,1024,14,14]
  %3 = cast(%2) to="f32" : f32[64,1024,14,14]
  %4 = conv2d_backward_weight(%1, %3) stride=[1,1] padding=[0,0] dilation=[1,1] groups=1 kernel=[1,1] : f32[1024,256,1,1]
  return dw=%4
}
"#,
    )
    .unwrap();
    let dims = GemmDims::of(&body, gemm_anchor(&body).unwrap()).unwrap();
    let device = Device::load("h200").unwrap();
    let splits: Vec<usize> = candidate_schedules(&dims, &device, Precision::Bf16)
        .into_iter()
        .filter(|s| {
            (s.block_m, s.block_n, s.block_k, s.stages) == (128, 128, 32, 3)
                && s.instruction == GemmInstruction::MmaBf16
        })
        .map(|s| s.split_k)
        .collect();
    let tiles = 16;
    for waves in [1, 2, 4] {
        let slots = waves * device.sms as usize;
        let within = slots / tiles;
        assert!(tiles * within <= slots && tiles * (within + 1) > slots);
        assert!(splits.contains(&within), "{waves} waves: {splits:?}");
        assert!(
            splits.contains(&slots.div_ceil(tiles)),
            "{waves} waves: {splits:?}"
        );
    }
    // Priced, the split that fits one wave beats the one that spills into a second.
    use calib_ir::Schedule;
    use calib_passes::fusion::estimate::{gemm, seconds};
    let anchor = gemm_anchor(&body).unwrap();
    let time = |split_k: usize| {
        let s = calib_ir::GemmSchedule {
            block_m: 128,
            block_n: 128,
            block_k: 32,
            split_k,
            instruction: GemmInstruction::MmaBf16,
            stages: 3,
        };
        seconds(
            &gemm(&body, anchor, &dims, &Schedule::gemm(s), &[]).launches,
            &device,
        )
    };
    assert!(
        time(8) < time(9),
        "{} us against {} us",
        time(8) * 1e6,
        time(9) * 1e6
    );
}

/// The same for a reduction's split: BatchNorm's statistics over 256 channels of
/// 64x56x56, on an H200's 132 SMs at eight blocks each (1056 a wave), fill one wave
/// with four slices (1024 blocks) and spill into a second with five.
#[test]
fn reduction_splits_include_the_largest_that_fits_whole_waves() {
    use calib_passes::fusion::estimate::ranked_reduction_splits;
    let g = text::parse(
        r#"graph {
  %0 = input name="x" : bf16[64,256,56,56]
  %1 = cast(%0) to="f32" : f32[64,256,56,56]
  %2 = reduce_sum(%1) axes=[0,2,3] keepdims=true : f32[1,256,1,1]
  return sum=%2
}
"#,
    )
    .unwrap();
    let device = Device::load("h200").unwrap();
    let splits = ranked_reduction_splits(&g, &device, &[]);
    for (within, spilling) in [(4, 5), (8, 9), (16, 17), (33, 33)] {
        assert!(splits.contains(&within), "{within}: {splits:?}");
        assert!(splits.contains(&spilling), "{spilling}: {splits:?}");
    }
}
