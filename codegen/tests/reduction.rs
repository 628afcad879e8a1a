//! Reductions as kernel anchors (warp and block teams, sibling reductions, epilogues,
//! side outputs) and inside other bodies, simulated against the reference interpreter.

mod support;

use calib_codegen::Family;
use calib_ir::Anchor;
use support::{check, families, graph, single_kernel};

/// Checks the body as a reduction kernel; returns its launches' families.
fn reduction(src: &str, tol: f64) -> Vec<Family> {
    let g = graph(src);
    let program = single_kernel(&g, Anchor::Reduction);
    let launched = families(&program);
    assert_eq!(launched[0], Family::Reduction);
    check(&g, &program, 3, tol);
    launched
}

#[test]
fn batch_statistics_per_channel_with_epilogue() {
    // Short rows (warp teams): mean and mean of squares share the loop; the epilogue
    // forms the variance and a running-statistics update.
    reduction(
        "graph {
          %0 = input name=\"x\" : f32[3,5,4,6]
          %1 = mul(%0, %0) : f32[3,5,4,6]
          %2 = reduce_mean(%0) axes=[0,2,3] keepdims=false : f32[5]
          %3 = reduce_mean(%1) axes=[0,2,3] keepdims=false : f32[5]
          %4 = mul(%2, %2) : f32[5]
          %5 = sub(%3, %4) : f32[5]
          %6 = param name=\"running\" : f32[5]
          %7 = constant value=0.9 : f32[5]
          %8 = mul(%6, %7) : f32[5]
          %9 = add(%8, %5) : f32[5]
          return mean=%2, var=%5, running=%9
        }",
        2e-6,
    );
}

#[test]
fn long_rows_use_a_block_per_element() {
    reduction(
        "graph {
          %0 = input name=\"x\" : f32[4,3,20,16]
          %1 = reduce_sum(%0) axes=[0,2,3] keepdims=true : f32[1,3,1,1]
          %2 = reduce_max(%0) axes=[0,2,3] keepdims=true : f32[1,3,1,1]
          %3 = reshape(%1) shape=[3] : f32[3]
          return sum=%3, max=%2
        }",
        2e-6,
    );
}

#[test]
fn global_average_pool_and_loss_shapes() {
    reduction(
        "graph {
          %0 = input name=\"x\" : f32[3,7,5,5]
          %1 = reduce_mean(%0) axes=[2,3] keepdims=false : f32[3,7]
          %2 = reduce_max(%1) axes=[1] keepdims=true : f32[3,1]
          %3 = reduce_sum(%1) axes=[0,1] keepdims=false : f32[]
          return pooled=%1, rowmax=%2, total=%3
        }",
        2e-6,
    );
}

#[test]
fn side_outputs_outside_the_reduction_are_stored_too() {
    // The centered output needs the whole mean first: a second, pointwise launch reads
    // the mean the reduction launch stored.
    let launches = reduction(
        "graph {
          %0 = input name=\"x\" : f32[2,3,4,4]
          %1 = reduce_mean(%0) axes=[0,2,3] keepdims=true : f32[1,3,1,1]
          %2 = broadcast(%1) shape=[2,3,4,4] : f32[2,3,4,4]
          %3 = sub(%0, %2) : f32[2,3,4,4]
          %4 = relu(%3) : f32[2,3,4,4]
          return mean=%1, centered=%4
        }",
        2e-6,
    );
    assert_eq!(launches, [Family::Reduction, Family::Pointwise]);
}

#[test]
fn a_reduction_in_a_prologue_is_a_loop_per_element() {
    // Row sums feed a matmul: the GEMM's tile loads evaluate each sum as a loop.
    let g = graph(
        "graph {
          %0 = input name=\"x\" : f32[6,4,9]
          %1 = reduce_sum(%0) axes=[2] keepdims=false : f32[6,4]
          %2 = param name=\"w\" : f32[4,3]
          %3 = matmul(%1, %2) transpose_a=false transpose_b=false : f32[6,3]
          return y=%3
        }",
    );
    let program = single_kernel(&g, Anchor::MatMul);
    let compiled = calib_codegen::compile(&program).unwrap();
    assert_eq!(compiled.kernels[0].family, Family::Gemm);
    assert!(compiled.kernels[0]
        .ptx
        .contains("evaluates per element, as loops: %1 reduce_sum"));
    check(&g, &program, 3, 2e-6);
}

#[test]
fn outputs_needing_no_reduction_are_stored_before_those_that_do() {
    // A pointwise-anchored body: the cheap output goes first, the reduction second,
    // reading the stored square back.
    let g = graph(
        "graph {
          %0 = input name=\"x\" : f32[4,70]
          %1 = mul(%0, %0) : f32[4,70]
          %2 = reduce_sum(%1) axes=[1] keepdims=false : f32[4]
          return squares=%1, sums=%2
        }",
    );
    let program = single_kernel(&g, Anchor::Pointwise);
    let compiled = calib_codegen::compile(&program).unwrap();
    let launched: Vec<Family> = compiled.kernels.iter().map(|k| k.family).collect();
    assert_eq!(launched, [Family::Pointwise, Family::Reduction]);
    assert!(compiled.kernels[1].ptx.contains("// reads back out0"));
    check(&g, &program, 3, 2e-6);
}

/// `program`'s one kernel split `split` ways, with a workspace for `reductions`
/// sibling reductions of `outputs` elements.
fn split(
    mut program: calib_ir::Program,
    split: usize,
    reductions: usize,
    outputs: usize,
) -> calib_ir::Program {
    use calib_ir::{ReductionSchedule, Schedule};
    let schedule = ReductionSchedule { split };
    program.kernels[0].schedule = Some(Schedule::reduction(schedule));
    program.add_workspace(0, schedule.workspace_bytes(reductions, outputs));
    program.validate().expect("valid");
    program
}

#[test]
fn split_reductions_agree_with_the_reference_and_repeat_bit_for_bit() {
    // Sibling sums, a mean and a maximum over long rows (block teams) and short ones
    // (warp teams), split so that the last slice is short, with an epilogue that
    // reads the combined results.
    let long = graph(
        "graph {
          %0 = input name=\"x\" : f32[4,3,20,17]
          %1 = mul(%0, %0) : f32[4,3,20,17]
          %2 = reduce_mean(%0) axes=[0,2,3] keepdims=false : f32[3]
          %3 = reduce_sum(%1) axes=[0,2,3] keepdims=false : f32[3]
          %4 = reduce_max(%0) axes=[0,2,3] keepdims=false : f32[3]
          %5 = mul(%2, %2) : f32[3]
          %6 = sub(%3, %5) : f32[3]
          return mean=%2, spread=%6, max=%4
        }",
    );
    for slices in [1, 2, 3, 7] {
        let program = split(single_kernel(&long, Anchor::Reduction), slices, 3, 3);
        let launched = families(&program);
        assert_eq!(
            launched.len(),
            if slices > 1 { 2 } else { 1 },
            "{slices} slices"
        );
        check(&long, &program, 4, 2e-6);
        let inputs = support::tensors(&long, 4, 3);
        let runs: Vec<Vec<u8>> = (0..2)
            .map(|_| {
                support::simulate(&program, &support::bind(&long, &inputs))["spread"].to_le_bytes()
            })
            .collect();
        assert_eq!(runs[0], runs[1], "{slices} slices: two runs differ");
    }
    let short = graph(
        "graph {
          %0 = input name=\"x\" : f32[5,9,3,3]
          %1 = reduce_sum(%0) axes=[0,2,3] keepdims=true : f32[1,9,1,1]
          %2 = relu(%1) : f32[1,9,1,1]
          return y=%2
        }",
    );
    let program = split(single_kernel(&short, Anchor::Reduction), 4, 1, 9);
    check(&short, &program, 8, 2e-6);
}

#[test]
fn lanes_take_runs_of_adjacent_reduced_elements() {
    // Reduced over N, H, W of a row-major map: a lane takes eight neighbours along W
    // (two 128-bit loads of f32, one of bf16) and folds them into its accumulators;
    // a map whose rows four does not divide walks H and W as one.
    let f32_map = graph(
        "graph {
          %0 = input name=\"x\" : f32[4,3,20,16]
          %1 = mul(%0, %0) : f32[4,3,20,16]
          %2 = reduce_sum(%0) axes=[0,2,3] keepdims=true : f32[1,3,1,1]
          %3 = reduce_sum(%1) axes=[0,2,3] keepdims=true : f32[1,3,1,1]
          return sum=%2, squares=%3
        }",
    );
    let program = single_kernel(&f32_map, Anchor::Reduction);
    let ptx = calib_codegen::compile(&program).unwrap().kernels[0]
        .ptx
        .clone();
    assert_eq!(ptx.matches("ld.global.nc.v4.f32").count(), 2, "{ptx}");
    assert!(!ptx.contains("ld.global.nc.f32"), "{ptx}");
    check(&f32_map, &program, 5, 2e-6);

    let bf16_map = graph(
        "graph {
          %0 = input name=\"x\" : bf16[4,3,6,6]
          %1 = cast(%0) to=\"f32\" : f32[4,3,6,6]
          %2 = reduce_mean(%1) axes=[0,2,3] keepdims=true : f32[1,3,1,1]
          return mean=%2
        }",
    );
    let program = single_kernel(&bf16_map, Anchor::Reduction);
    let ptx = calib_codegen::compile(&program).unwrap().kernels[0]
        .ptx
        .clone();
    // 6x6 planes: runs of four across rows, one 64-bit load.
    assert_eq!(ptx.matches("ld.global.nc.v2.b32").count(), 1, "{ptx}");
    assert!(!ptx.contains("ld.global.nc.u16"), "{ptx}");
    let mut inputs = support::tensors(&bf16_map, 6, 3);
    let x = inputs["x"].cast(calib_ir::DType::BF16);
    inputs.insert("x".into(), x);
    support::check_tensors(&bf16_map, &program, &inputs, 2e-6);
}

#[test]
fn a_split_whose_last_slice_ends_early_skips_the_runs_past_the_end() {
    // 36 reduced elements in runs of four, split five ways: slices of eight, the
    // last of them holding one run and a run past the end that no lane may fold.
    let g = graph(
        "graph {
          %0 = input name=\"x\" : f32[1,3,6,6]
          %1 = reduce_sum(%0) axes=[0,2,3] keepdims=false : f32[3]
          %2 = reduce_max(%0) axes=[0,2,3] keepdims=false : f32[3]
          return sum=%1, max=%2
        }",
    );
    let program = split(single_kernel(&g, Anchor::Reduction), 5, 2, 3);
    let ptx = &calib_codegen::compile(&program).unwrap().kernels[0].ptx;
    assert_eq!(ptx.matches("ld.global.nc.v4.f32").count(), 1, "{ptx}");
    check(&g, &program, 9, 2e-6);
}

#[test]
fn a_split_without_room_for_its_slices_is_refused() {
    let g = graph(
        "graph {
          %0 = input name=\"x\" : f32[4,3,20,17]
          %1 = reduce_sum(%0) axes=[0,2,3] keepdims=false : f32[3]
          return y=%1
        }",
    );
    let program = split(single_kernel(&g, Anchor::Reduction), 4, 1, 2);
    let e = calib_codegen::compile(&program).unwrap_err().to_string();
    assert!(e.contains("workspace"), "{e}");
}

#[test]
fn a_split_reduction_with_a_semaphore_combines_in_its_last_block() {
    // Batch statistics of a few channels: the combining launch would be one block, so
    // the split launch's last block to finish takes it over. Same bits as two
    // launches, the reference's values, and the semaphore back at zero after each run.
    let g = graph(
        "graph {
          %0 = input name=\"x\" : f32[4,6,20,17]
          %1 = mul(%0, %0) : f32[4,6,20,17]
          %2 = reduce_mean(%0) axes=[0,2,3] keepdims=false : f32[6]
          %3 = reduce_sum(%1) axes=[0,2,3] keepdims=false : f32[6]
          %4 = mul(%2, %2) : f32[6]
          %5 = sub(%3, %4) : f32[6]
          return mean=%2, spread=%5
        }",
    );
    let two_launches = split(single_kernel(&g, Anchor::Reduction), 7, 2, 6);
    let mut one_launch = two_launches.clone();
    one_launch.add_semaphore(0);
    one_launch.validate().expect("valid");
    assert_eq!(families(&two_launches).len(), 2);
    let compiled = calib_codegen::compile(&one_launch).unwrap();
    assert_eq!(compiled.kernels.len(), 1, "the combine is not folded");
    let kernel = &compiled.kernels[0];
    assert!(kernel.ptx.contains("atom.global.add.u32"), "{}", kernel.ptx);
    assert!(
        kernel.tail.is_some(),
        "the cost model is not told of the tail"
    );
    check(&g, &one_launch, 4, 2e-6);

    let inputs = support::tensors(&g, 4, 3);
    let bindings = support::bind(&g, &inputs);
    let (folded, separate) = (
        support::simulate(&one_launch, &bindings),
        support::simulate(&two_launches, &bindings),
    );
    for name in ["mean", "spread"] {
        assert_eq!(
            folded[name].to_le_bytes(),
            separate[name].to_le_bytes(),
            "{name}"
        );
    }

    // Two runs over the same memory: the second finds the semaphore reset.
    use calib_runtime::sim::{self, GlobalMemory, KernelArg, SimOptions};
    let mut memory = GlobalMemory::new();
    let addresses = support::allocate_params(&one_launch, kernel, &inputs, &mut memory);
    let args: Vec<KernelArg> = addresses.iter().map(|&a| KernelArg::U64(a)).collect();
    let module = sim::parse(&kernel.ptx).unwrap();
    let at = |name: &str| {
        let i = (kernel.params.iter())
            .position(|p| one_launch.buffer(p.buffer).name == name)
            .unwrap();
        (
            addresses[i],
            one_launch.buffer(kernel.params[i].buffer).ty.size_bytes(),
        )
    };
    let (spread, bytes) = at("spread");
    for run in 0..2 {
        memory.write_bytes(spread, &vec![0; bytes]).unwrap();
        sim::simulate_with(
            &SimOptions::default(),
            &module,
            &kernel.name,
            kernel.grid,
            kernel.block,
            kernel.shared_bytes,
            &args,
            &mut memory,
        )
        .unwrap_or_else(|e| panic!("run {run}: {e}"));
        assert_eq!(
            memory.read_bytes(spread, bytes).unwrap(),
            separate["spread"].to_le_bytes(),
            "run {run}"
        );
        let (semaphore, _) = at("semaphore0");
        assert_eq!(
            memory.read_bytes(semaphore, 4).unwrap(),
            [0; 4],
            "run {run}"
        );
    }
}
