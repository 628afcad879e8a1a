//! Kernels over channels-last images.
//!
//! * bf16 convolutions: the forward's and the data gradient's image is adjacent along
//!   `k` (a tap's channels), the weight gradient's output gradient and image along `m`
//!   and `n`. Pipelined kernels copy eight channels at a time with one 16-byte
//!   `cp.async` (one padding check for all eight), double-buffered ones load them as
//!   one vector, and a channels-last result is stored four channels at a time.
//! * Maps whose runs walk the channels read per-channel statistics and parameters a
//!   run at a time.
//!
//! Every kernel computes what the reference interpreter does.

mod support;

use calib_codegen::compile;
use calib_ir::{
    gemm_anchor, Anchor, Buffer, BufferId, DType, GemmDims, GemmInstruction, GemmSchedule, Graph,
    Kernel, KernelOutput, Layout, Program, ReductionSchedule, Role, Schedule, Value,
};
use calib_runtime::HostTensor;
use std::collections::BTreeMap;
use support::{bind, check_tensors, graph, per_element, simulate, single_kernel, tensors};

/// A kernel that copies bf16 buffer `from` to `to` (widened and rounded back: exact).
fn copy_kernel(program: &Program, from: BufferId, to: BufferId) -> Kernel {
    let ty = program.buffer(from).ty.clone();
    let shape = ty
        .shape
        .iter()
        .map(|d| d.to_string())
        .collect::<Vec<_>>()
        .join(",");
    let body = graph(&format!(
        "graph {{
          %0 = input name=\"{}\" : bf16[{shape}]
          %1 = cast(%0) to=\"f32\" : f32[{shape}]
          %2 = cast(%1) to=\"bf16\" : bf16[{shape}]
          return {}=%2
        }}",
        Kernel::input_name(0),
        Kernel::output_name(0)
    ));
    Kernel {
        name: String::new(),
        label: "copy".into(),
        anchor: Anchor::Pointwise,
        inputs: vec![from],
        outputs: vec![KernelOutput {
            buffer: to,
            slice: None,
        }],
        body,
        covers: vec![],
        schedule: None,
        workspace: None,
        semaphore: None,
    }
}

/// `program` (one kernel) with its bf16 inputs and outputs named `names` stored
/// channels-last: each becomes a temporary, which a copy kernel fills from the bound
/// buffer (for an input) or empties into the returned one (for an output), as a plan
/// converts at its boundaries. Also where the original kernel now is.
fn stored_channels_last(mut program: Program, names: &[&str]) -> (Program, usize) {
    let (mut before, mut after) = (vec![], vec![]);
    for &name in names {
        let id = BufferId(
            program
                .buffers
                .iter()
                .position(|b| b.name == name)
                .expect("a named buffer"),
        );
        let bound = program.buffer(id).clone();
        assert_eq!(bound.ty.dtype, DType::BF16, "{name}");
        program
            .buffers
            .push(Buffer::new(name, bound.ty.clone(), bound.role));
        let outside = BufferId(program.buffers.len() - 1);
        let temp = &mut program.buffers[id.0];
        temp.name = format!("{name}_nhwc");
        temp.role = Role::Temp;
        temp.layout = Layout::ChannelsLast;
        match bound.role {
            Role::Input => before.push(copy_kernel(&program, outside, id)),
            _ => {
                after.push(copy_kernel(&program, id, outside));
                for o in &mut program.outputs {
                    if o.buffer == id {
                        o.buffer = outside;
                    }
                }
            }
        }
    }
    let position = before.len();
    let original = program.kernels.remove(0);
    program.kernels = before.into_iter().chain([original]).chain(after).collect();
    for (n, k) in program.kernels.iter_mut().enumerate() {
        k.name = format!("k{n}");
    }
    program.validate().expect("a valid plan");
    (program, position)
}

/// Inputs for `g`, bf16 where it declares them so (convolutions' products are then
/// exact).
fn bf16_inputs(g: &Graph) -> BTreeMap<String, HostTensor> {
    let declared = |name: &str| {
        let v = g.inputs().find(|&(n, _)| n == name).map(|(_, v)| v);
        v.map(|v| g.ty(v).dtype)
    };
    tensors(g, 7, 3)
        .into_iter()
        .map(|(name, t)| match declared(&name) {
            Some(DType::BF16) if t.dtype() == DType::F32 => {
                let t = t.cast(DType::BF16);
                (name, t)
            }
            _ => (name, t),
        })
        .collect()
}

/// Convolution `op` (attributes `attrs`) of bf16 `x [2,16,6,6]` (or `dy`, for a data
/// gradient) stored channels-last, its result rounded to bf16 and stored channels-last
/// too where it is an image.
fn conv(op: &str, attrs: &str, a: &str, b: &str, y: &str) -> String {
    format!(
        "graph {{
          %0 = input name=\"a\" : bf16[{a}]
          %1 = input name=\"b\" : bf16[{b}]
          %2 = cast(%0) to=\"f32\" : f32[{a}]
          %3 = cast(%1) to=\"f32\" : f32[{b}]
          %4 = {op}(%2, %3) {attrs} : f32[{y}]
          %5 = cast(%4) to=\"bf16\" : bf16[{y}]
          return y=%5
        }}"
    )
}

fn attrs(stride: usize, padding: usize) -> String {
    format!("stride=[{stride},{stride}] padding=[{padding},{padding}] dilation=[1,1] groups=1")
}

/// Every tile shape at two and three stages (unsplit and split in three), checked
/// against the reference; the kernel's PTX at each.
fn every_schedule(src: &str, channels_last: &[&str]) -> Vec<(GemmSchedule, String)> {
    let g = graph(src);
    let dims = GemmDims::of(&g, gemm_anchor(&g).unwrap()).unwrap();
    let inputs = bf16_inputs(&g);
    let mut ptx = vec![];
    for stages in [2, 3] {
        for (bm, bn) in GemmSchedule::TILES {
            for (split, block_k) in [(1, 16), (3, 16), (1, 32)] {
                let s = GemmSchedule {
                    block_m: bm,
                    block_n: bn,
                    block_k,
                    split_k: split,
                    instruction: GemmInstruction::MmaBf16,
                    stages,
                };
                if s.check(&dims).is_err() {
                    continue;
                }
                let (mut program, k) =
                    stored_channels_last(single_kernel(&g, Anchor::Convolution), channels_last);
                program.kernels[k].schedule = Some(Schedule::gemm(s));
                program.add_workspace(k, s.workspace_bytes(&dims));
                check_tensors(&g, &program, &inputs, 1e-5);
                let compiled = compile(&program).unwrap();
                ptx.push((s, compiled.kernels[k].ptx.clone()));
            }
        }
    }
    assert!(ptx.len() >= 2 * GemmSchedule::TILES.len(), "{src}");
    ptx
}

/// Whether some pipelined schedule copies 16 bytes at a time.
fn copies_eight_channels(ptx: &[(GemmSchedule, String)]) -> bool {
    ptx.iter()
        .any(|(s, p)| s.stages > 2 && p.contains("cp.async.cg.shared.global"))
}

#[test]
fn forward_convolutions_copy_a_taps_channels_and_store_runs_of_channels() {
    let forward = |w: usize, stride: usize, padding: usize, y: usize| {
        let (weight, y) = (format!("24,16,{w},{w}"), format!("2,24,{y},{y}"));
        conv("conv2d", &attrs(stride, padding), "2,16,6,6", &weight, &y)
    };
    // A padded 3x3 window, a strided one, and a 1x1 one.
    for src in [
        forward(3, 1, 1, 6),
        forward(3, 2, 1, 3),
        forward(1, 1, 0, 6),
    ] {
        let ptx = every_schedule(&src, &["a", "y"]);
        assert!(copies_eight_channels(&ptx), "{src}");
        // The image's tile keeps each pixel's `k` adjacent: `ldmatrix` reads its
        // fragments without transposing.
        assert!(
            ptx.iter().any(
                |(s, p)| s.stages > 2 && p.contains("ldmatrix.sync.aligned.m8n8.x4.shared.b16")
            ),
            "{src}"
        );
        // Unsplit, the result goes out four channels (8 bytes) a store.
        assert!(
            ptx.iter()
                .filter(|(s, _)| s.split_k == 1)
                .all(|(_, p)| p.contains("st.global.v2.b32") && !p.contains("st.global.u16")),
            "{src}"
        );
    }
}

#[test]
fn data_gradients_copy_a_taps_output_channels() {
    let data = |window: usize, stride: usize, padding: usize, dy: usize, o: usize| {
        conv(
            "conv2d_backward_data",
            &format!("{} input_size=[6,6]", attrs(stride, padding)),
            &format!("2,{o},{dy},{dy}"),
            &format!("{o},16,{window},{window}"),
            "2,16,6,6",
        )
    };
    // A padded 3x3 window, a strided 1x1 one (a GEMM over its lattice), and a strided
    // 3x3 one over 32 channels (a GEMM per phase).
    for src in [
        data(3, 1, 1, 6, 24),
        data(1, 2, 0, 3, 24),
        data(3, 2, 1, 3, 32),
    ] {
        let ptx = every_schedule(&src, &["a", "y"]);
        assert!(copies_eight_channels(&ptx), "{src}");
        // The lattice's blocks store the zeros off it eight channels (16 bytes) a
        // store, a pixel's run at a time, as they store their tiles: no 16-bit store.
        if src == data(1, 2, 0, 3, 24) {
            assert!(
                ptx.iter()
                    .filter(|(s, _)| s.split_k == 1)
                    .all(|(_, p)| p.contains("st.global.v4.b32") && !p.contains("st.global.u16")),
                "{src}"
            );
        }
    }
    let g = graph(&data(3, 2, 1, 3, 32));
    assert!(GemmDims::of(&g, gemm_anchor(&g).unwrap())
        .unwrap()
        .phases
        .is_some());
}

/// A 3x3 weight stored OHWI (as `calib_passes::fusion::layout` stores it): the forward
/// copies each output's `k` along its taps' channels, and the data gradient each tap's
/// channels along `n`, where the `[O, C, KH, KW]` weight loads an element at a time:
/// every schedule against the reference, and more copies in the pipelined ones.
#[test]
fn weights_stored_ohwi_are_copied_in_runs() {
    let forward = conv("conv2d", &attrs(1, 1), "2,16,6,6", "24,16,3,3", "2,24,6,6");
    let data = conv(
        "conv2d_backward_data",
        &format!("{} input_size=[6,6]", attrs(1, 1)),
        "2,24,6,6",
        "24,16,3,3",
        "2,16,6,6",
    );
    let copies = |p: &str| p.matches("cp.async.c").count();
    for src in [forward, data] {
        let oihw = every_schedule(&src, &["a", "y"]);
        let ohwi = every_schedule(&src, &["a", "b", "y"]);
        let pipelined = oihw.iter().zip(&ohwi).filter(|((s, _), _)| s.stages > 2);
        let more = pipelined.map(|((s, before), (_, after))| {
            // (A tile too small to give each thread a whole run still loads it.)
            assert!(copies(after) >= copies(before), "{src}\n{s:?}");
            copies(after) > copies(before)
        });
        assert!(more.filter(|&m| m).count() >= 10, "{src}");
    }
}

/// An image padded to pixels of four channels (`pad-channels`): the window's taps lie
/// outside its channels, and the forward and the weight gradient copy a pixel (8
/// bytes) at a time, in every schedule, against the reference.
#[test]
fn pixels_of_four_channels_copy_8_bytes_at_a_time() {
    let forward = conv("conv2d", &attrs(2, 1), "2,4,8,8", "24,4,3,3", "2,24,4,4");
    let weight = conv(
        "conv2d_backward_weight",
        &format!("{} kernel=[3,3]", attrs(2, 1)),
        "2,4,8,8",
        "2,24,4,4",
        "24,4,3,3",
    );
    for (src, stored) in [(forward, ["a", "y"]), (weight, ["a", "b"])] {
        let ptx = every_schedule(&src, &stored);
        let copies = |p: &String| p.contains("cp.async.ca.shared.global") && p.contains("], 8");
        assert!(
            ptx.iter().any(|(s, p)| s.stages > 2 && copies(p)),
            "{src}: no 8-byte copies"
        );
    }
}

#[test]
fn weight_gradients_copy_channels_along_m_and_n() {
    for (window, padding) in [(3, 1), (1, 0)] {
        let src = conv(
            "conv2d_backward_weight",
            &format!("{} kernel=[{window},{window}]", attrs(1, padding)),
            "2,16,6,6",
            "2,24,6,6",
            &format!("24,16,{window},{window}"),
        );
        let ptx = every_schedule(&src, &["a", "b"]);
        assert!(copies_eight_channels(&ptx), "{src}");
    }
}

/// Batch-norm-like maps over a channels-last image: each run of four walks four channels,
/// and the statistics (`[1, C, 1, 1]`) and parameters (`[C]`) come in four at a time, one
/// 16-byte load each. A thread keeps its four channels from pixel to pixel, so the
/// per-channel terms (`rsqrt(var + eps) * gamma`) and their loads come once a thread,
/// not once an element. Bit for bit the reference's.
#[test]
fn runs_along_channels_read_per_channel_inputs_once_a_thread() {
    let g = graph(
        "graph {
          %0 = input name=\"x\" : bf16[4,16,32,32]
          %1 = cast(%0) to=\"f32\" : f32[4,16,32,32]
          %2 = input name=\"mean\" : f32[1,16,1,1]
          %3 = broadcast(%2) shape=[4,16,32,32] : f32[4,16,32,32]
          %4 = input name=\"var\" : f32[1,16,1,1]
          %5 = constant value=0.00001 : f32[]
          %6 = broadcast(%5) shape=[1,16,1,1] : f32[1,16,1,1]
          %7 = mul(%4, %4) : f32[1,16,1,1]
          %8 = add(%7, %6) : f32[1,16,1,1]
          %9 = rsqrt(%8) : f32[1,16,1,1]
          %10 = input name=\"gamma\" : f32[16]
          %11 = reshape(%10) shape=[1,16,1,1] : f32[1,16,1,1]
          %12 = mul(%9, %11) : f32[1,16,1,1]
          %13 = broadcast(%12) shape=[4,16,32,32] : f32[4,16,32,32]
          %14 = sub(%1, %3) : f32[4,16,32,32]
          %15 = mul(%14, %13) : f32[4,16,32,32]
          %16 = relu(%15) : f32[4,16,32,32]
          %17 = cast(%16) to=\"bf16\" : bf16[4,16,32,32]
          return y=%17
        }",
    );
    let (program, k) = stored_channels_last(single_kernel(&g, Anchor::Pointwise), &["x", "y"]);
    check_tensors(&g, &program, &bf16_inputs(&g), 0.0);
    let kernel = compile(&program).unwrap().kernels.remove(k);
    assert!(kernel.ptx.contains("ld.global.nc.v4.f32"), "{}", kernel.ptx);
    assert!(!kernel.ptx.contains("ld.global.nc.f32"), "{}", kernel.ptx);
    // Per element: a quarter of a run's image load and its share of the three
    // per-channel vectors; one load an element (or more) if the terms came per run.
    let (loads, special) = per_element(&kernel, g.ty(Value(17)).numel());
    assert!(loads < 0.5, "{loads} loads an element");
    assert!(
        special < 1.0,
        "{special} special-function operations an element"
    );
}

/// Max pooling over a channels-last image, a run of four channels a thread: each tap of
/// the window is one 8-byte load of the four channels at that pixel, not four 16-bit
/// loads. Bit for bit the reference's.
#[test]
fn a_window_over_channels_last_reads_each_tap_for_a_run_of_channels() {
    let g = graph(
        "graph {
          %0 = input name=\"x\" : bf16[4,16,64,64]
          %1 = cast(%0) to=\"f32\" : f32[4,16,64,64]
          %2 = max_pool2d(%1) kernel=[3,3] stride=[2,2] padding=[1,1] ceil_mode=false : f32[4,16,32,32]
          %3 = cast(%2) to=\"bf16\" : bf16[4,16,32,32]
          return y=%3
        }",
    );
    let (program, k) = stored_channels_last(single_kernel(&g, Anchor::Pool), &["x", "y"]);
    check_tensors(&g, &program, &bf16_inputs(&g), 0.0);
    let ptx = compile(&program).unwrap().kernels.remove(k).ptx;
    assert!(ptx.contains("ld.global.nc.v2.b32"), "{ptx}");
    assert!(!ptx.contains("ld.global.nc.u16"), "{ptx}");
}

/// `program`'s one kernel split `split` ways, with a workspace for `reductions`
/// sibling reductions of `outputs` elements.
fn split_reduction(
    mut program: Program,
    split: usize,
    reductions: usize,
    outputs: usize,
) -> Program {
    let schedule = ReductionSchedule { split };
    program.kernels[0].schedule = Some(Schedule::reduction(schedule));
    program.add_workspace(0, schedule.workspace_bytes(reductions, outputs));
    program
}

/// Reductions over the pixels of channels-last images (BatchNorm's statistics and its
/// gradient's sums, a maximum, global average pooling): a thread keeps four channels
/// and reads them at a pixel as one 8-byte load, never a 16-bit one. The sums come out
/// bit for bit as the row-major kernel's, with warp teams and block teams, split or
/// not (into empty slices too), with runs along rows and without. A launch of too few
/// blocks keeps the row-major lanes, and their bits too.
#[test]
fn reductions_over_channels_last_pixels_keep_the_row_major_bits() {
    let bn = |shape: &str, keep: bool| {
        let channels: usize = shape.split(',').nth(1).unwrap().parse().unwrap();
        let out = if keep {
            format!("1,{channels},1,1")
        } else {
            channels.to_string()
        };
        let g = graph(&format!(
            "graph {{
              %0 = input name=\"x\" : bf16[{shape}]
              %1 = cast(%0) to=\"f32\" : f32[{shape}]
              %2 = input name=\"dy\" : bf16[{shape}]
              %3 = cast(%2) to=\"f32\" : f32[{shape}]
              %4 = input name=\"mean\" : f32[1,{channels},1,1]
              %5 = broadcast(%4) shape=[{shape}] : f32[{shape}]
              %6 = sub(%1, %5) : f32[{shape}]
              %7 = mul(%3, %6) : f32[{shape}]
              %8 = reduce_sum(%7) axes=[0,2,3] keepdims={keep} : f32[{out}]
              %9 = reduce_mean(%3) axes=[0,2,3] keepdims={keep} : f32[{out}]
              %10 = reduce_max(%6) axes=[0,2,3] keepdims={keep} : f32[{out}]
              %11 = mul(%8, %9) : f32[{out}]
              return projected=%8, mean_dy=%9, max=%10, product=%11
            }}"
        ));
        (g, 3, channels)
    };
    let pooled = graph(
        "graph {
          %0 = input name=\"x\" : bf16[4,64,8,8]
          %1 = cast(%0) to=\"f32\" : f32[4,64,8,8]
          %2 = reduce_mean(%1) axes=[2,3] keepdims=true : f32[4,64,1,1]
          return pooled=%2
        }",
    );
    // (graph, reductions, outputs), slices, whether the threads keep channels.
    let cases = [
        // Block teams (1024 pixels a slice), with runs along rows.
        (bn("2,32,132,128", true), 33, true),
        // Warp teams, with runs, some slices empty.
        (bn("4,64,16,16", false), 132, true),
        // Warp teams without runs (rows of seven).
        (bn("3,64,7,7", false), 132, true),
        ((pooled, 1, 256), 33, true),
        // Two blocks' worth: the row-major lanes.
        (bn("2,32,8,8", true), 3, false),
    ];
    for ((g, reductions, outputs), slices, keeps_channels) in cases {
        let names: Vec<&str> = ["x", "dy"]
            .into_iter()
            .filter(|&n| g.inputs().any(|(name, _)| name == n))
            .collect();
        let row_major = split_reduction(
            single_kernel(&g, Anchor::Reduction),
            slices,
            reductions,
            outputs,
        );
        let (nhwc, k) = stored_channels_last(row_major.clone(), &names);
        let inputs = bf16_inputs(&g);
        check_tensors(&g, &nhwc, &inputs, 2e-6);
        let want = simulate(&row_major, &bind(&g, &inputs));
        let got = simulate(&nhwc, &bind(&g, &inputs));
        for (name, w) in &want {
            let case = format!("{name}, {slices} slices");
            assert_eq!(got[name].to_le_bytes(), w.to_le_bytes(), "{case}");
        }
        let ptx = &compile(&nhwc).unwrap().kernels[k].ptx;
        assert_eq!(ptx.contains("ld.global.nc.v2.b32"), keeps_channels, "{ptx}");
        assert_eq!(!ptx.contains("ld.global.nc.u16"), keeps_channels, "{ptx}");
    }
}

/// A convolution's statistics over its result (BatchNorm's, in the convolution's own
/// kernel) read back the result an earlier launch stored: stored channels-last, a
/// thread keeps four channels and reads them at a pixel as one vector, as a reduction
/// kernel over a channels-last input does, where the row-major lanes would read a
/// word a sector; bit for bit the row-major kernel's sums.
#[test]
fn statistics_over_a_channels_last_result_keep_channels() {
    let g = graph(
        "graph {
          %0 = input name=\"x\" : bf16[1,32,32,33]
          %1 = input name=\"w\" : bf16[256,32,1,1]
          %2 = cast(%0) to=\"f32\" : f32[1,32,32,33]
          %3 = cast(%1) to=\"f32\" : f32[256,32,1,1]
          %4 = conv2d(%2, %3) stride=[1,1] padding=[0,0] dilation=[1,1] groups=1 : f32[1,256,32,33]
          %5 = reduce_mean(%4) axes=[0,2,3] keepdims=true : f32[1,256,1,1]
          %6 = mul(%4, %4) : f32[1,256,32,33]
          %7 = reduce_mean(%6) axes=[0,2,3] keepdims=true : f32[1,256,1,1]
          return y=%4, mean=%5, square=%7
        }",
    );
    let dims = GemmDims::of(&g, gemm_anchor(&g).unwrap()).unwrap();
    let gemm = GemmSchedule {
        block_m: 64,
        block_n: 64,
        block_k: 16,
        split_k: 1,
        instruction: GemmInstruction::MmaBf16,
        stages: 3,
    };
    // Eight spans of 32 channels in 66 slices of 16 pixels: warp teams, 66 blocks.
    let reduction = ReductionSchedule { split: 66 };
    let schedule = Schedule {
        gemm: Some(gemm),
        reduction: Some(reduction),
    };
    let mut row_major = single_kernel(&g, Anchor::Convolution);
    row_major.kernels[0].schedule = Some(schedule);
    let workspace =
        schedule.reduction_offset_bytes(Some(&dims)) + reduction.workspace_bytes(2, 256);
    row_major.add_workspace(0, workspace);
    let mut nhwc = row_major.clone();
    for name in ["x", "y"] {
        let b = nhwc.buffers.iter_mut().find(|b| b.name == name).unwrap();
        b.layout = Layout::ChannelsLast;
    }
    let inputs = bf16_inputs(&g);
    check_tensors(&g, &nhwc, &inputs, 1e-5);
    let want = simulate(&row_major, &bind(&g, &inputs));
    let got = simulate(&nhwc, &bind(&g, &inputs));
    for (name, w) in &want {
        assert_eq!(got[name].to_le_bytes(), w.to_le_bytes(), "{name}");
    }
    // The launch that folds the slices' statistics.
    let folds = |p: &Program| {
        let compiled = compile(p).unwrap();
        let k = compiled
            .kernels
            .iter()
            .find(|k| k.ptx.contains("shfl.sync"));
        k.expect("a launch of the statistics").ptx.clone()
    };
    let (rows, channels) = (folds(&row_major), folds(&nhwc));
    assert!(channels.contains("ld.global.v4.f32"), "{channels}");
    assert!(!channels.contains("ld.global.f32 "), "{channels}");
    assert!(
        rows.contains("ld.global.v4.f32"),
        "row-major runs along rows"
    );
}

/// The max-pooling adjoint over a channels-last image (of 64K elements or more, where
/// threads take runs), a run of four channels a thread:
/// the channels share the pixel's residue branches and windows, and each tap and each
/// window's gradient is one 8-byte load of the four, never a 16-bit one. Tied integers
/// with NaN and -inf strewn among them, with padding, ceil mode, strides one and two,
/// and windows narrower than the stride: bit for bit the row-major kernel's. Where a
/// column residue's pixels fill whole warps, the threads walk a row residue by
/// residue, and no warp diverges on the residue branches.
#[test]
fn the_max_pooling_adjoint_over_channels_last_shares_a_pixels_windows() {
    for (k, s, p, ceil, h, w) in [
        (3, 2, 1, false, 9, 8),
        (3, 2, 1, true, 8, 12),
        (2, 2, 0, false, 8, 8),
        (3, 1, 1, false, 6, 12),
    ] {
        let pooled = |i: usize| {
            let span = i + 2 * p - k;
            let o = if ceil { span.div_ceil(s) } else { span / s } + 1;
            // PyTorch drops a last window that starts in the padding.
            if ceil && (o - 1) * s >= i + p {
                o - 1
            } else {
                o
            }
        };
        let (oh, ow) = (pooled(h), pooled(w));
        let attrs = format!("kernel=[{k},{k}] stride=[{s},{s}] padding=[{p},{p}] ceil_mode={ceil}");
        let g = graph(&format!(
            "graph {{
              %0 = input name=\"x\" : bf16[32,32,{h},{w}]
              %1 = cast(%0) to=\"f32\" : f32[32,32,{h},{w}]
              %2 = input name=\"dy\" : bf16[32,32,{oh},{ow}]
              %3 = cast(%2) to=\"f32\" : f32[32,32,{oh},{ow}]
              %4 = max_pool2d_backward(%1, %3) {attrs} : f32[32,32,{h},{w}]
              %5 = cast(%4) to=\"bf16\" : bf16[32,32,{h},{w}]
              return dx=%5
            }}"
        ));
        let mut inputs = bf16_inputs(&g);
        let x = support::tied_with_nan_and_infinity(vec![32, 32, h, w]);
        inputs.insert("x".into(), x.cast(DType::BF16));
        let row_major = single_kernel(&g, Anchor::Pool);
        let (nhwc, at) = stored_channels_last(row_major.clone(), &["x", "dy", "dx"]);
        let want = simulate(&row_major, &bind(&g, &inputs));
        let got = simulate(&nhwc, &bind(&g, &inputs));
        let case = format!("{k}x{k} stride {s} padding {p} ceil {ceil}");
        assert_eq!(got["dx"].to_le_bytes(), want["dx"].to_le_bytes(), "{case}");
        let ptx = &compile(&nhwc).unwrap().kernels[at].ptx;
        assert!(ptx.contains("ld.global.nc.v2.b32"), "{case}: {ptx}");
        assert!(!ptx.contains("ld.global.nc.u16"), "{case}: {ptx}");
        // Where a residue's columns fill whole warps (8 threads a pixel, 4 pixels a
        // warp), each warp walks one column residue: its lanes take the same branches.
        let stats = support::launch_stats(&nhwc, at, &inputs);
        let active = stats.thread_instructions as f64 / (32 * stats.warp_instructions) as f64;
        let uniform = s == 1 || (w % s == 0 && (w / s) % 4 == 0);
        assert_eq!(
            active > 0.99,
            uniform,
            "{case}, {w} columns: {active:.3} of lanes active"
        );
    }
}

/// The max-pooling adjoint of a stem-sized channels-last bf16 image (enough pixels that
/// each thread still has work at eight channels, `calib_ir::WINDOWED_RUN_THREADS`)
/// takes runs of eight channels: every tap is one 16-byte load of them. Bit for bit the
/// row-major kernel's, ties, NaN and infinities included.
#[test]
fn a_large_max_pooling_adjoint_over_channels_last_takes_eight_channels_a_tap() {
    let (h, w) = (128, 128);
    let g = graph(&format!(
        "graph {{
          %0 = input name=\"x\" : bf16[2,64,{h},{w}]
          %1 = cast(%0) to=\"f32\" : f32[2,64,{h},{w}]
          %2 = input name=\"dy\" : bf16[2,64,64,64]
          %3 = cast(%2) to=\"f32\" : f32[2,64,64,64]
          %4 = max_pool2d_backward(%1, %3) kernel=[3,3] stride=[2,2] padding=[1,1] ceil_mode=false : f32[2,64,{h},{w}]
          %5 = cast(%4) to=\"bf16\" : bf16[2,64,{h},{w}]
          return dx=%5
        }}"
    ));
    let numel = 2 * 64 * h * w;
    assert!(
        numel / 8 >= calib_ir::WINDOWED_RUN_THREADS,
        "{numel} elements"
    );
    let mut inputs = bf16_inputs(&g);
    let x = support::tied_with_nan_and_infinity(vec![2, 64, h, w]);
    inputs.insert("x".into(), x.cast(DType::BF16));
    let row_major = single_kernel(&g, Anchor::Pool);
    let (nhwc, at) = stored_channels_last(row_major.clone(), &["x", "dy", "dx"]);
    let want = simulate(&row_major, &bind(&g, &inputs));
    let got = simulate(&nhwc, &bind(&g, &inputs));
    assert_eq!(got["dx"].to_le_bytes(), want["dx"].to_le_bytes());
    let ptx = &compile(&nhwc).unwrap().kernels[at].ptx;
    assert!(ptx.contains("ld.global.nc.v4.b32"), "{ptx}");
    assert!(!ptx.contains("ld.global.nc.v2.b32"), "{ptx}");
    assert!(ptx.contains("st.global.v4.b32"), "{ptx}");
}

/// A batch-norm-like map `(x - mean) * rsqrt(var)` of an image `x` of `c` channels,
/// `[8, c, 16, 16]`, as IR lines numbered from `first`: read widened from bf16 and
/// stored rounded back where `bf16`. Also the number of its result.
fn normalized(first: usize, c: usize, x: &str, bf16: bool) -> (String, usize) {
    let (image, per_channel) = (format!("[8,{c},16,16]"), format!("[1,{c},1,1]"));
    let stored = if bf16 { "bf16" } else { "f32" };
    let mut ops = vec![format!("input name=\"{x}\" : {stored}{image}")];
    if bf16 {
        ops.push(format!("cast(%{first}) to=\"f32\" : f32{image}"));
    }
    let widened = first + ops.len() - 1;
    let mean = first + ops.len();
    ops.push(format!("input name=\"{x}_mean\" : f32{per_channel}"));
    ops.push(format!("broadcast(%{mean}) shape={image} : f32{image}"));
    let var = first + ops.len();
    ops.push(format!("input name=\"{x}_var\" : f32{per_channel}"));
    ops.push(format!("rsqrt(%{var}) : f32{per_channel}"));
    ops.push(format!(
        "broadcast(%{}) shape={image} : f32{image}",
        var + 1
    ));
    ops.push(format!("sub(%{widened}, %{}) : f32{image}", mean + 1));
    ops.push(format!("mul(%{}, %{}) : f32{image}", var + 3, var + 2));
    if bf16 {
        ops.push(format!("cast(%{}) to=\"bf16\" : bf16{image}", var + 4));
    }
    let lines: Vec<String> = (ops.iter().enumerate())
        .map(|(i, op)| format!("%{} = {op}", first + i))
        .collect();
    (lines.join("\n"), first + ops.len() - 1)
}

/// Positive variances for [`normalized`] maps `a` and `b`: the reference's rsqrt of a
/// negative one is NaN either way, but the tests mean numbers.
fn positive_variances(inputs: &mut BTreeMap<String, HostTensor>) {
    for name in ["a_var", "b_var"] {
        let t = &inputs[name];
        let values = t.to_f32_vec().iter().map(|v| v.abs() + 0.5).collect();
        let positive = HostTensor::from_f32(t.shape().to_vec(), values).unwrap();
        inputs.insert(name.into(), positive);
    }
}

/// A concatenation along the channels of two batch-norm-like maps, stored
/// channels-last: a thread's run of four channels lies within one operand (16 and 32
/// channels), so the thread branches on the operand once, before its loop over pixels,
/// computes that operand's per-channel terms there, and reads and writes each pixel's
/// four channels as one vector. Bit for bit the reference's.
#[test]
fn a_concatenation_along_channels_last_branches_once_a_thread() {
    let (a, last) = normalized(0, 16, "a", true);
    let (b, _) = normalized(last + 1, 32, "b", true);
    let g = graph(&format!(
        "graph {{
          {a}
          {b}
          %20 = concat(%9, %19) axis=1 : bf16[8,48,16,16]
          return y=%20
        }}"
    ));
    let mut inputs = bf16_inputs(&g);
    positive_variances(&mut inputs);
    let (program, k) = stored_channels_last(single_kernel(&g, Anchor::Pointwise), &["a", "b", "y"]);
    check_tensors(&g, &program, &inputs, 0.0);
    let kernel = compile(&program).unwrap().kernels.remove(k);
    assert!(kernel.ptx.contains("ld.global.nc.v2.b32"), "{}", kernel.ptx);
    assert!(!kernel.ptx.contains("ld.global.nc.u16"), "{}", kernel.ptx);
    assert!(!kernel.ptx.contains("st.global.b16"), "{}", kernel.ptx);
    // A conversion to bf16 pairs (half an operation an element) and the per-channel
    // `rsqrt`s once a thread; one `rsqrt` an element would make 1.5.
    let (_, special) = per_element(&kernel, g.ty(Value(20)).numel());
    assert!(
        special < 1.0,
        "{special} special-function operations an element"
    );
}

/// The same concatenation in f32, stored rounded to TF32 (`cast(cast(concat, tf32),
/// f32)`, as a tf32 plan stores a block's output for the convolutions after it): the
/// rounding is computed from the operand's elements inside its branch, so the thread
/// still branches once, keeps its per-channel terms, and moves each pixel's four
/// channels as one 16-byte vector. Bit for bit the reference's.
#[test]
fn a_rounded_concatenation_along_channels_last_branches_once_a_thread() {
    let (a, last) = normalized(0, 16, "a", false);
    let (b, _) = normalized(last + 1, 32, "b", false);
    let g = graph(&format!(
        "graph {{
          {a}
          {b}
          %16 = concat(%7, %15) axis=1 : f32[8,48,16,16]
          %17 = cast(%16) to=\"tf32\" : tf32[8,48,16,16]
          %18 = cast(%17) to=\"f32\" : f32[8,48,16,16]
          return y=%18
        }}"
    ));
    let mut inputs = tensors(&g, 5, 3);
    positive_variances(&mut inputs);
    // Bound and returned channels-last: the runtime permutes them.
    let mut program = single_kernel(&g, Anchor::Pointwise);
    for b in program
        .buffers
        .iter_mut()
        .filter(|b| b.ty.rank() == 4 && b.ty.shape[2] > 1)
    {
        b.layout = Layout::ChannelsLast;
    }
    check_tensors(&g, &program, &inputs, 0.0);
    let kernel = compile(&program).unwrap().kernels.remove(0);
    assert!(kernel.ptx.contains("ld.global.nc.v4.f32"), "{}", kernel.ptx);
    assert!(kernel.ptx.contains("st.global.v4.f32"), "{}", kernel.ptx);
    // The rounding (a conversion an element) and the per-channel `rsqrt`s once a
    // thread; an `rsqrt` an element would make more than two.
    let (_, special) = per_element(&kernel, g.ty(Value(18)).numel());
    assert!(
        special < 1.5,
        "{special} special-function operations an element"
    );
}

/// A small window kernel over channels-last runs (a resize's adjoint into 3x3 maps, 25
/// taps an output) takes fewer runs a thread rather than leave the GPU idle: here one,
/// 72 blocks of runs of four channels, where eight a thread made nine blocks.
#[test]
fn a_small_window_kernel_over_channels_keeps_enough_blocks() {
    let g = graph(
        "graph {
          %0 = input name=\"x\" : bf16[64,128,14,14]
          %1 = cast(%0) to=\"f32\" : f32[64,128,14,14]
          %2 = resize_nearest_backward(%1) input_size=[3,3] : f32[64,128,3,3]
          %3 = cast(%2) to=\"bf16\" : bf16[64,128,3,3]
          return y=%3
        }",
    );
    let (program, k) = stored_channels_last(single_kernel(&g, Anchor::Pool), &["x", "y"]);
    let kernel = compile(&program).unwrap().kernels.remove(k);
    assert!(kernel.ptx.contains("ld.global.nc.v2.b32"), "{}", kernel.ptx);
    assert_eq!(
        kernel.grid[0] as usize,
        (64 * 128 * 9 / 4_usize).div_ceil(256)
    );
}

/// An input read a whole number of runs past a run's channels (a slice along the
/// channels, as of the outputs of sibling convolutions computed as one): one vector
/// load a run, like an input read at the run's own channels, never 16-bit loads.
#[test]
fn a_slice_along_channels_last_channels_reads_whole_runs() {
    let g = graph(
        "graph {
          %0 = input name=\"x\" : bf16[32,48,8,8]
          %1 = cast(%0) to=\"f32\" : f32[32,48,8,8]
          %2 = slice(%1) axis=1 start=16 end=48 : f32[32,32,8,8]
          %3 = input name=\"g\" : bf16[32,32,8,8]
          %4 = cast(%3) to=\"f32\" : f32[32,32,8,8]
          %5 = mul(%2, %4) : f32[32,32,8,8]
          %6 = cast(%5) to=\"bf16\" : bf16[32,32,8,8]
          return y=%6
        }",
    );
    let inputs = bf16_inputs(&g);
    let row_major = single_kernel(&g, Anchor::Pointwise);
    let (nhwc, at) = stored_channels_last(row_major.clone(), &["x", "g", "y"]);
    let want = simulate(&row_major, &bind(&g, &inputs));
    let got = simulate(&nhwc, &bind(&g, &inputs));
    assert_eq!(got["y"].to_le_bytes(), want["y"].to_le_bytes());
    let ptx = &compile(&nhwc).unwrap().kernels[at].ptx;
    assert!(!ptx.contains("ld.global.nc.u16"), "{ptx}");
    assert!(ptx.matches("ld.global.nc.v").count() >= 2, "{ptx}");
}
