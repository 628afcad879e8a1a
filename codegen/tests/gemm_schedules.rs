//! GEMM schedules: every tile shape and split of k the planner may choose computes the
//! same result as the reference interpreter, and a split-K kernel gives the same bits
//! on every run (its slices are added in a fixed order by a second launch).

mod support;

use calib_codegen::compile;
use calib_ir::{gemm_anchor, Anchor, GemmDims, GemmInstruction, GemmSchedule, Graph, Schedule};
use support::schedules::{
    every_schedule, every_schedule_on_tensor_cores, schedule, scheduled, tensor_core_inputs,
};
use support::{bind, check, check_tensors, graph, simulate, single_kernel, tensors};

/// A 3x3 weight gradient whose 70 output channels no tile divides.
const WEIGHT_GRADIENT: &str = "graph {
  %0 = input name=\"x\" : f32[3,12,9,9]
  %1 = input name=\"dy\" : f32[3,70,9,9]
  %2 = conv2d_backward_weight(%0, %1) stride=[1,1] padding=[1,1] dilation=[1,1] groups=1 kernel=[3,3] : f32[70,12,3,3]
  return dw=%2
}";

/// A forward convolution with a ReLU prologue, a bias and ReLU epilogue, and a
/// statistic over its whole result.
const FORWARD_WITH_PROLOGUE_AND_STATISTICS: &str = "graph {
  %0 = input name=\"x\" : f32[2,9,10,10]
  %1 = relu(%0) : f32[2,9,10,10]
  %2 = param name=\"w\" : f32[70,9,3,3]
  %3 = conv2d(%1, %2) stride=[1,1] padding=[1,1] dilation=[1,1] groups=1 : f32[2,70,10,10]
  %4 = param name=\"bias\" : f32[1,70,1,1]
  %5 = broadcast(%4) shape=[2,70,10,10] : f32[2,70,10,10]
  %6 = add(%3, %5) : f32[2,70,10,10]
  %7 = relu(%6) : f32[2,70,10,10]
  %8 = reduce_sum(%3) axes=[0,2,3] keepdims=true : f32[1,70,1,1]
  return y=%7, total=%8
}";

/// A 3x3 weight gradient over 16 channels: its `n` is `(kh, kw, c)` (taps outside the
/// channels), so a thread's columns of one tap share its window position; tiles
/// narrower and wider than the channels, with 40 output channels no tile divides.
const WEIGHT_GRADIENT_TAPS_OUTER: &str = "graph {
  %0 = input name=\"x\" : f32[2,16,7,7]
  %1 = input name=\"dy\" : f32[2,40,7,7]
  %2 = conv2d_backward_weight(%0, %1) stride=[1,1] padding=[1,1] dilation=[1,1] groups=1 kernel=[3,3] : f32[40,16,3,3]
  return dw=%2
}";

#[test]
fn weight_gradient_in_every_schedule() {
    every_schedule(WEIGHT_GRADIENT, Anchor::Convolution);
    let g = graph(WEIGHT_GRADIENT_TAPS_OUTER);
    let dims = GemmDims::of(&g, gemm_anchor(&g).unwrap()).unwrap();
    assert_eq!(dims.n, vec![3, 3, 16]);
    every_schedule(WEIGHT_GRADIENT_TAPS_OUTER, Anchor::Convolution);
}

/// f32 operands: TF32 tiles copy them, bf16 tiles (16-bit) load them through registers.
const F32_OPERANDS: [(GemmInstruction, bool); 2] = [
    (GemmInstruction::MmaTf32, true),
    (GemmInstruction::MmaBf16, false),
];

#[test]
fn tensor_core_gemms_in_every_schedule() {
    every_schedule_on_tensor_cores(WEIGHT_GRADIENT, Anchor::Convolution, &F32_OPERANDS);
    every_schedule_on_tensor_cores(
        WEIGHT_GRADIENT_TAPS_OUTER,
        Anchor::Convolution,
        &F32_OPERANDS,
    );
    every_schedule_on_tensor_cores(
        FORWARD_WITH_PROLOGUE_AND_STATISTICS,
        Anchor::Convolution,
        &F32_OPERANDS,
    );
    every_schedule_on_tensor_cores(
        "graph {
          %0 = input name=\"a\" : f32[37,45]
          %1 = input name=\"b\" : f32[29,45]
          %2 = matmul(%0, %1) transpose_a=false transpose_b=true : f32[37,29]
          return y=%2
        }",
        Anchor::MatMul,
        &F32_OPERANDS,
    );
}

/// bf16 buffers read widened, as the bf16 plans store them: `A` transposed (`[k][m]`)
/// and `B` (`[k][n]`) lie along their tiles' widths, 38 and 30 columns, so pipelined
/// kernels copy both in pairs, zero-filling past `m`, `n` and `k` (45, which no step
/// divides); with 29 columns `B` has no aligned pairs and loads through registers while
/// `A` is still copied.
#[test]
fn bf16_buffers_are_copied_in_pairs_in_every_schedule() {
    for (n, b_copied) in [(30, true), (29, false)] {
        let src = format!(
            "graph {{
              %0 = input name=\"a\" : bf16[45,38]
              %1 = input name=\"b\" : bf16[45,{n}]
              %2 = cast(%0) to=\"f32\" : f32[45,38]
              %3 = cast(%1) to=\"f32\" : f32[45,{n}]
              %4 = matmul(%2, %3) transpose_a=true transpose_b=false : f32[38,{n}]
              return y=%4
            }}"
        );
        every_schedule_on_tensor_cores(&src, Anchor::MatMul, &[(GemmInstruction::MmaBf16, true)]);
        // Both operands copied: nothing is stored to the tiles from registers.
        let g = graph(&src);
        let s = GemmSchedule {
            block_k: 16,
            instruction: GemmInstruction::MmaBf16,
            stages: 3,
            ..schedule(64, 64, 1)
        };
        let program = scheduled(single_kernel(&g, Anchor::MatMul), s);
        let ptx = compile(&program).unwrap().kernels[0].ptx.clone();
        assert_eq!(ptx.contains("st.shared.u16"), !b_copied, "n = {n}");
        assert!(ptx.contains("cp.async.ca.shared.global"), "n = {n}");
    }
}

/// bf16 tensors of unpadded 1x1 convolutions, as the bf16 plans store them: each
/// channel's 8x8 plane holds runs of eight, so pipelined kernels copy the forward's
/// image, and the data gradient's output gradient and weight `[O, C]` (also over a
/// strided convolution's lattice), 16 bytes at a time where a tile's share of runs fills
/// every thread (pairs elsewhere). The forward's epilogue stores runs of four: bf16
/// (rounded once, by the store) and f32 beside an input read as a run.
#[test]
fn bf16_1x1_convolutions_copy_16_byte_runs_in_every_schedule() {
    let forward = "graph {
      %0 = input name=\"x\" : bf16[2,24,8,8]
      %1 = input name=\"w\" : bf16[40,24,1,1]
      %2 = cast(%0) to=\"f32\" : f32[2,24,8,8]
      %3 = cast(%1) to=\"f32\" : f32[40,24,1,1]
      %4 = conv2d(%2, %3) stride=[1,1] padding=[0,0] dilation=[1,1] groups=1 : f32[2,40,8,8]
      %5 = cast(%4) to=\"bf16\" : bf16[2,40,8,8]
      %6 = input name=\"r\" : f32[2,40,8,8]
      %7 = add(%4, %6) : f32[2,40,8,8]
      return y=%5, z=%7
    }";
    let data = |stride: usize, dy: usize| {
        format!(
            "graph {{
              %0 = input name=\"dy\" : bf16[2,40,{dy},{dy}]
              %1 = input name=\"w\" : bf16[40,24,1,1]
              %2 = cast(%0) to=\"f32\" : f32[2,40,{dy},{dy}]
              %3 = cast(%1) to=\"f32\" : f32[40,24,1,1]
              %4 = conv2d_backward_data(%2, %3) stride=[{stride},{stride}] padding=[0,0] dilation=[1,1] groups=1 input_size=[8,8] : f32[2,24,8,8]
              return dx=%4
            }}"
        )
    };
    for src in [forward.to_string(), data(1, 8), data(2, 4)] {
        every_schedule_on_tensor_cores(
            &src,
            Anchor::Convolution,
            &[(GemmInstruction::MmaBf16, true)],
        );
        // A 128-wide tile 16 deep is 256 runs of eight: one 16-byte copy per thread.
        let g = graph(&src);
        let s = GemmSchedule {
            block_k: 16,
            instruction: GemmInstruction::MmaBf16,
            stages: 3,
            ..schedule(128, 128, 1)
        };
        let ptx = bf16_ptx_checked(&g, Anchor::Convolution, s);
        assert!(ptx.contains("cp.async.cg.shared.global"), "{src}");
        assert!(!ptx.contains("cp.async.ca.shared.global"), "{src}");
        if src == forward {
            assert!(ptx.contains("st.global.v2.b32"), "bf16 runs: {ptx}");
            assert!(ptx.contains("st.global.v4.f32"), "f32 runs: {ptx}");
            assert!(!ptx.contains("st.global.u16"), "single bf16 stores: {ptx}");
        }
    }
}

/// The PTX of `g`'s one kernel under bf16 schedule `s`, after checking the kernel's
/// results on the simulator against the reference's (on operands bf16 represents).
fn bf16_ptx_checked(g: &Graph, anchor: Anchor, s: GemmSchedule) -> String {
    let program = scheduled(single_kernel(g, anchor), s);
    let inputs = tensor_core_inputs(g, GemmInstruction::MmaBf16);
    check_tensors(g, &program, &inputs, 1e-5);
    compile(&program).unwrap().kernels.remove(0).ptx
}

/// bf16 operands contiguous along `k`: a forward weight, a weight gradient's output
/// gradient (runs of eight in 8x8 planes, of four in 6x6 ones) and a 1x1 window's
/// image, and a matmul's `A [m][k]` and `B [n][k]` (48 columns). Double-buffered, each
/// run is one vector load whose elements go to their own rows of the tile; in a ring,
/// one `cp.async` into a tile that keeps its `k` adjacent, read by `ldmatrix` without
/// transposing. The image of a padded 3x3 window, shifted off any alignment, loads
/// element by element.
#[test]
fn bf16_runs_along_k_load_as_vectors_in_every_schedule() {
    let wgrad = |x: &str, dy: &str, w: &str, window: usize| {
        let pad = window / 2;
        format!(
            "graph {{
              %0 = input name=\"x\" : bf16[{x}]
              %1 = input name=\"dy\" : bf16[{dy}]
              %2 = cast(%0) to=\"f32\" : f32[{x}]
              %3 = cast(%1) to=\"f32\" : f32[{dy}]
              %4 = conv2d_backward_weight(%2, %3) stride=[1,1] padding=[{pad},{pad}] dilation=[1,1] groups=1 kernel=[{window},{window}] : f32[{w}]
              return dw=%4
            }}"
        )
    };
    let matmul = "graph {
      %0 = input name=\"a\" : bf16[37,48]
      %1 = input name=\"b\" : bf16[29,48]
      %2 = cast(%0) to=\"f32\" : f32[37,48]
      %3 = cast(%1) to=\"f32\" : f32[29,48]
      %4 = matmul(%2, %3) transpose_a=false transpose_b=true : f32[37,29]
      return y=%4
    }";
    // A forward 3x3 weight whose 12 channels keep `k = (c, kh, kw)`: 108 elements per
    // output channel, runs of four, the last step's reaching past the end.
    let forward = "graph {
      %0 = input name=\"x\" : bf16[2,12,6,6]
      %1 = input name=\"w\" : bf16[40,12,3,3]
      %2 = cast(%0) to=\"f32\" : f32[2,12,6,6]
      %3 = cast(%1) to=\"f32\" : f32[40,12,3,3]
      %4 = conv2d(%2, %3) stride=[1,1] padding=[1,1] dilation=[1,1] groups=1 : f32[2,40,6,6]
      return y=%4
    }";
    let cases = [
        (forward.to_string(), Anchor::Convolution, "v2"),
        (
            wgrad("2,24,8,8", "2,40,8,8", "40,24,1,1", 1),
            Anchor::Convolution,
            "v4",
        ),
        (
            wgrad("2,12,6,6", "2,40,6,6", "40,12,3,3", 3),
            Anchor::Convolution,
            "v2",
        ),
        (
            wgrad("2,16,8,8", "2,40,8,8", "40,16,3,3", 3),
            Anchor::Convolution,
            "v4",
        ),
        (matmul.to_string(), Anchor::MatMul, "v4"),
    ];
    for (src, anchor, vector) in cases {
        every_schedule_on_tensor_cores(&src, anchor, &[(GemmInstruction::MmaBf16, true)]);
        // 32 rows of a 128-wide tile are 512 runs of eight: two per thread.
        let g = graph(&src);
        let s = GemmSchedule {
            block_k: 32,
            instruction: GemmInstruction::MmaBf16,
            ..schedule(128, 128, 1)
        };
        let ptx = bf16_ptx_checked(&g, anchor, s);
        assert!(ptx.contains(&format!("ld.global.nc.{vector}.u32")), "{src}");
        assert!(ptx.contains("shr.u32"), "{src}");
        let ring = bf16_ptx_checked(&g, anchor, GemmSchedule { stages: 3, ..s });
        let bytes = if vector == "v4" { 16 } else { 8 };
        assert!(
            ring.contains(&format!("], {bytes}")) && ring.contains("cp.async.c"),
            "{src}: no {bytes}-byte copies"
        );
        assert!(
            ring.contains("ldmatrix.sync.aligned.m8n8.x4.shared.b16")
                || ring.contains("ldmatrix.sync.aligned.m8n8.x2.shared.b16"),
            "{src}: no fragment of a tile along k"
        );
        assert!(
            !ring.contains("ld.global.nc.v"),
            "{src}: runs still through registers"
        );
    }
}

#[test]
fn forward_convolution_with_prologue_epilogue_and_statistics_in_every_schedule() {
    // The epilogue (bias, ReLU) and a statistic over the whole result (a third launch)
    // both read the anchor from the workspace when k is split.
    every_schedule(FORWARD_WITH_PROLOGUE_AND_STATISTICS, Anchor::Convolution);
}

#[test]
fn shifted_statistics_read_the_stored_result_in_every_schedule() {
    // BatchNorm's shift: each channel's first element of the convolution's result
    // (slices of the anchor). The statistics and the centred map read the anchor at
    // other indices than the epilogue's, so a later launch computes them from the
    // stored result; with k split, from the workspace.
    let src = "graph {
          %0 = input name=\"x\" : f32[2,9,10,10]
          %1 = param name=\"w\" : f32[70,9,3,3]
          %2 = conv2d(%0, %1) stride=[1,1] padding=[1,1] dilation=[1,1] groups=1 : f32[2,70,10,10]
          %3 = slice(%2) axis=0 start=0 end=1 : f32[1,70,10,10]
          %4 = slice(%3) axis=2 start=0 end=1 : f32[1,70,1,10]
          %5 = slice(%4) axis=3 start=0 end=1 : f32[1,70,1,1]
          %6 = broadcast(%5) shape=[2,70,10,10] : f32[2,70,10,10]
          %7 = sub(%2, %6) : f32[2,70,10,10]
          %8 = reduce_mean(%7) axes=[0,2,3] keepdims=true : f32[1,70,1,1]
          %9 = mul(%7, %7) : f32[2,70,10,10]
          %10 = reduce_mean(%9) axes=[0,2,3] keepdims=true : f32[1,70,1,1]
          return y=%2, centred=%7, mean_d=%8, mean_dd=%10
        }";
    every_schedule(src, Anchor::Convolution);
    // Unsplit: the GEMM stores the result alone, one more launch everything else.
    let compiled = compile(&single_kernel(&graph(src), Anchor::Convolution)).unwrap();
    let stores: Vec<&str> = compiled
        .kernels
        .iter()
        .map(|k| k.ptx.lines().find(|l| l.starts_with("// stores")).unwrap())
        .collect();
    assert_eq!(stores, ["// stores out0", "// stores out2, out3, out1"]);
}

#[test]
fn strided_grouped_data_gradient_in_every_schedule() {
    every_schedule(
        "graph {
          %0 = input name=\"dy\" : f32[2,8,6,6]
          %1 = param name=\"w\" : f32[8,3,3,3]
          %2 = conv2d_backward_data(%0, %1) stride=[2,2] padding=[1,1] dilation=[1,1] groups=2 input_size=[11,11] : f32[2,6,11,11]
          return dx=%2
        }",
        Anchor::Convolution,
    );
}

#[test]
fn matmul_in_every_schedule() {
    every_schedule(
        "graph {
          %0 = input name=\"a\" : f32[66,150]
          %1 = param name=\"b\" : f32[130,150]
          %2 = matmul(%0, %1) transpose_a=false transpose_b=true : f32[66,130]
          return y=%2
        }",
        Anchor::MatMul,
    );
}

#[test]
fn a_split_kernel_gives_the_same_bits_on_every_run() {
    let g = graph(
        "graph {
          %0 = input name=\"x\" : f32[4,16,10,10]
          %1 = input name=\"dy\" : f32[4,24,10,10]
          %2 = conv2d_backward_weight(%0, %1) stride=[1,1] padding=[1,1] dilation=[1,1] groups=1 kernel=[3,3] : f32[24,16,3,3]
          return dw=%2
        }",
    );
    let program = scheduled(single_kernel(&g, Anchor::Convolution), schedule(64, 128, 5));
    let inputs = tensors(&g, 9, 3);
    let runs: Vec<Vec<u8>> = (0..2)
        .map(|_| simulate(&program, &bind(&g, &inputs))["dw"].to_le_bytes())
        .collect();
    assert_eq!(runs[0], runs[1], "two runs of a split-K kernel differ");
}

#[test]
fn schedules_codegen_cannot_run_are_refused_by_name() {
    let g = graph(
        "graph {
          %0 = input name=\"a\" : f32[8,16]
          %1 = param name=\"b\" : f32[16,8]
          %2 = matmul(%0, %1) transpose_a=false transpose_b=false : f32[8,8]
          return y=%2
        }",
    );
    let odd = GemmSchedule {
        block_m: 32,
        ..schedule(64, 64, 1)
    };
    assert!(GemmSchedule::TILES.iter().all(|&t| t != (32, 64)));
    let mut program = single_kernel(&g, Anchor::MatMul);
    program.kernels[0].schedule = Some(Schedule::gemm(odd));
    let e = compile(&program).unwrap_err().to_string();
    assert!(e.contains("k0") && e.contains("tile 32x64"), "{e}");

    // A split with no workspace to put the slices in.
    program.kernels[0].schedule = Some(Schedule::gemm(schedule(64, 64, 1)));
    let mut split = schedule(64, 64, 1);
    split.block_k = 4;
    split.split_k = 2;
    program.kernels[0].schedule = Some(Schedule::gemm(split));
    let e = compile(&program).unwrap_err().to_string();
    assert!(e.contains("workspace"), "{e}");
}

#[test]
fn a_strided_1x1_data_gradient_runs_over_its_lattice_in_every_schedule() {
    // Only every second row and third column of the input was read: the GEMM covers
    // those positions, and the rest (zero) still reach the epilogue and the statistics.
    let src = "graph {
          %0 = input name=\"dy\" : f32[2,40,6,5]
          %1 = param name=\"w\" : f32[40,12,1,1]
          %2 = conv2d_backward_data(%0, %1) stride=[2,3] padding=[0,0] dilation=[1,1] groups=1 input_size=[11,14] : f32[2,12,11,14]
          %3 = input name=\"r\" : f32[2,12,11,14]
          %4 = add(%2, %3) : f32[2,12,11,14]
          %5 = reduce_sum(%2) axes=[0,2,3] keepdims=true : f32[1,12,1,1]
          return dx=%2, y=%4, total=%5
        }";
    let g = graph(src);
    let anchor = gemm_anchor(&g).unwrap();
    let dims = GemmDims::of(&g, anchor).unwrap();
    assert_eq!(dims.lattice, Some([2, 3]));
    assert_eq!(dims.mnk(), (2 * 6 * 5, 12, 40));
    every_schedule(src, Anchor::Convolution);
}

/// `graph`'s GEMM operands as the precision policies write them: each read through a
/// rounding round trip `cast(cast(x, P), f32)`.
fn rounded_operands(p: &str) -> String {
    format!(
        "graph {{
          %0 = input name=\"x\" : f32[2,9,10,10]
          %1 = cast(%0) to=\"{p}\" : {p}[2,9,10,10]
          %2 = cast(%1) to=\"f32\" : f32[2,9,10,10]
          %3 = param name=\"w\" : f32[70,9,3,3]
          %4 = cast(%3) to=\"{p}\" : {p}[70,9,3,3]
          %5 = cast(%4) to=\"f32\" : f32[70,9,3,3]
          %6 = conv2d(%2, %5) stride=[1,1] padding=[1,1] dilation=[1,1] groups=1 : f32[2,70,10,10]
          return y=%6
        }}"
    )
}

#[test]
fn pipelined_tiles_round_operands_like_the_policy_casts() {
    // Inputs no TF32 or bf16 represents: TF32 tiles arrive by `cp.async` as the buffers'
    // f32 bits (the casts are seen through), so the fragment loads must round them
    // exactly as the casts do, or the products drift from the reference's. bf16 tiles
    // hold 16-bit elements, which no copy of f32 bits makes: they are rounded (to
    // nearest even, as the casts) as they are stored from registers.
    for (p, instruction) in [
        ("tf32", GemmInstruction::MmaTf32),
        ("bf16", GemmInstruction::MmaBf16),
    ] {
        let g = graph(&rounded_operands(p));
        for stages in [3, 4] {
            let s = GemmSchedule {
                block_k: 16,
                instruction,
                stages,
                ..schedule(128, 64, 1)
            };
            let program = scheduled(single_kernel(&g, Anchor::Convolution), s);
            let ptx = compile(&program).unwrap().kernels[0].ptx.clone();
            if instruction == GemmInstruction::MmaTf32 {
                // Both operands are copied (4 bytes each: the image is padded), none is
                // stored from registers.
                assert!(ptx.contains("cp.async.ca.shared.global"), "{p} {stages}");
                assert!(!ptx.contains("st.shared.b32"), "{p} {stages}");
            } else {
                assert!(!ptx.contains("cp.async.ca"), "{p} {stages}");
                assert!(ptx.contains("cvt.rn.bf16x2.f32"), "{p} {stages}");
                assert!(ptx.contains("st.shared.u16"), "{p} {stages}");
            }
            check(&g, &program, 11, 1e-5);
        }
    }
}

#[test]
fn a_pipelined_kernel_without_its_wait_is_reported_by_the_sanitizer() {
    use calib_runtime::sim::{FaultKind, SimError};
    let g = graph(&rounded_operands("tf32"));
    let s = GemmSchedule {
        block_k: 16,
        instruction: GemmInstruction::MmaTf32,
        stages: 3,
        ..schedule(64, 64, 1)
    };
    let program = scheduled(single_kernel(&g, Anchor::Convolution), s);
    let kernel = compile(&program).unwrap().kernels.remove(0);
    let inputs = tensors(&g, 3, 3);
    let run = |ptx: &str| support::run_kernel(&program, &kernel, ptx, &inputs);
    // As emitted, the kernel runs clean under the sanitizer.
    run(&kernel.ptx).unwrap_or_else(|e| panic!("{e}"));
    // Without its waits, the products read a stage whose copies are still in flight.
    let wait = "cp.async.wait_group 1;";
    assert!(kernel.ptx.contains(wait));
    let planted = kernel.ptx.replace(wait, "");
    let fault = match run(&planted) {
        Err(SimError::Fault(f)) => f,
        other => panic!("expected a fault, got {other:?}"),
    };
    let FaultKind::AsyncCopyPending { copy, .. } = &fault.kind else {
        panic!("expected a cp.async hazard, got {fault}");
    };
    assert!(fault.instruction.starts_with("ld.shared"), "{fault}");
    assert!(
        copy.instruction.starts_with("cp.async.ca.shared.global"),
        "{fault}"
    );
}

/// `op` of f32 inputs `a` and `b` (shapes as `"4,6"`) read through the TF32 policy's
/// rounding round trip, as a tf32 plan reads them.
fn tf32_operands((op, attrs): (&str, &str), a: &str, b: &str, y: &str) -> String {
    format!(
        "graph {{
          %0 = input name=\"a\" : f32[{a}]
          %1 = input name=\"b\" : f32[{b}]
          %2 = cast(%0) to=\"tf32\" : tf32[{a}]
          %3 = cast(%2) to=\"f32\" : f32[{a}]
          %4 = cast(%1) to=\"tf32\" : tf32[{b}]
          %5 = cast(%4) to=\"f32\" : f32[{b}]
          %6 = {op}(%3, %5) {attrs} : f32[{y}]
          return y=%6
        }}"
    )
}

/// f32 buffers adjacent the way the loader walks: pipelined TF32 kernels copy two or
/// four words at a time (8 or 16 bytes) along a tile's width, or along `k` into a tile
/// that keeps its `k` adjacent, and each thread rounds its own runs where they landed
/// (inputs no TF32 represents: a run left unrounded would be truncated by the `mma`,
/// and the products would drift from the reference's). Tiles that keep their `k`
/// adjacent are read by `ldmatrix`: a matrix row of four words.
#[test]
fn tf32_runs_are_copied_and_rounded_in_place_in_every_schedule() {
    let one = "stride=[1,1] padding=[0,0] dilation=[1,1] groups=1";
    let cases = [
        // A transposed (rows of m, 40: runs of four), B (rows of n, 30: pairs).
        (
            tf32_operands(
                ("matmul", "transpose_a=true transpose_b=false"),
                "45,40",
                "45,30",
                "40,30",
            ),
            Anchor::MatMul,
        ),
        // A and B transposed along `k` (rows of 48).
        (
            tf32_operands(
                ("matmul", "transpose_a=false transpose_b=true"),
                "37,48",
                "29,48",
                "37,29",
            ),
            Anchor::MatMul,
        ),
        // A 1x1 convolution: the image along m within 4x4 planes, the weight along k.
        (
            tf32_operands(("conv2d", one), "2,24,4,4", "40,24,1,1", "2,40,4,4"),
            Anchor::Convolution,
        ),
        // Its weight gradient: both along k = (n, h, w).
        (
            tf32_operands(
                ("conv2d_backward_weight", &format!("{one} kernel=[1,1]")),
                "2,24,4,4",
                "2,40,4,4",
                "40,24,1,1",
            ),
            Anchor::Convolution,
        ),
    ];
    for (src, anchor) in cases {
        let g = graph(&src);
        let dims = GemmDims::of(&g, gemm_anchor(&g).unwrap()).unwrap();
        let (mut runs, mut rounded, mut by_matrices) = (0, 0, 0);
        for stages in [3, 4] {
            for (bm, bn) in GemmSchedule::TILES {
                for (split, block_k) in [(1, 16), (2, 16), (1, 32), (1, 8)] {
                    let s = GemmSchedule {
                        block_k,
                        instruction: GemmInstruction::MmaTf32,
                        stages,
                        ..schedule(bm, bn, split)
                    };
                    if s.check(&dims).is_err() {
                        continue;
                    }
                    let program = scheduled(single_kernel(&g, anchor), s);
                    let ptx = compile(&program).unwrap().kernels[0].ptx.clone();
                    let copies_runs =
                        ptx.contains("cp.async.cg.shared.global") || ptx.contains("], 8");
                    runs += usize::from(copies_runs);
                    let in_place =
                        ptx.contains("ld.shared.v4.f32") || ptx.contains("ld.shared.v2.f32");
                    assert_eq!(in_place, copies_runs, "{s:?}\n{src}");
                    rounded += usize::from(in_place);
                    // A tile copied in runs along `k` is read by `ldmatrix`, untransposed.
                    let body = &program.kernels[0].body;
                    let y = gemm_anchor(body).unwrap();
                    let along_k = [(0, bm), (1, bn)].map(|(i, width)| {
                        calib_ir::copy_source(body, y, i, s.instruction, &[]).is_some_and(|c| {
                            c.along_k && c.grain(block_k, width, 256).is_some_and(|g| g > 1)
                        })
                    });
                    let matrices = |x: usize| {
                        ptx.contains(&format!("ldmatrix.sync.aligned.m8n8.x{x}.shared.b16"))
                    };
                    assert_eq!([matrices(4), matrices(2)], along_k, "{s:?}\n{src}");
                    assert!(!ptx.contains(".trans"), "{s:?}");
                    by_matrices += usize::from(along_k.contains(&true));
                    check(&g, &program, 11, 1e-5);
                }
            }
        }
        assert!(
            runs >= GemmSchedule::TILES.len(),
            "{runs} schedules copy runs: {src}"
        );
        assert_eq!(runs, rounded, "{src}");
        // Every case but the first has an operand along `k`.
        assert_eq!(by_matrices > 0, !src.contains("transpose_a=true"), "{src}");
    }
}
