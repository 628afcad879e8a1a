//! Channels-last storage (`FusionOptions::layout`) changes how kernels address the
//! plan's image-shaped temporaries, not what they compute: the Fashion-MNIST SCNet's
//! training step, stored NHWC, gives the same bits on the PTX simulator as stored NCHW,
//! step after step, at every precision, under the same GEMM schedules. (The planner
//! may schedule a GEMM differently in each layout, as its operands copy differently:
//! another split of `k` sums in another order.)

mod support;

use calib::ir::{DType, Layout, Mode, Precision, Role};
use calib::passes::fusion::tuning::TuningCache;
use calib::passes::fusion::{padded_convolutions, prepare, FusionOptions, LayoutPolicy, RuleSet};
use calib::passes::precision::apply_step;
use calib::passes::{train_step, TrainConfig};
use calib::train::SgdState;
use calib::verify::Fused;
use calib::Sim;
use support::session::{assert_same_run, batches, plain_step, run_loop, session_loop};

fn sim(precision: Precision, layout: LayoutPolicy, tuning: Option<TuningCache>) -> Sim {
    Sim::with_fusion(FusionOptions {
        precision,
        layout,
        tuning,
        ..FusionOptions::default()
    })
}

/// The GEMM schedules the row-major plan of `graph` chose, one per shape, as a cache
/// that pins them for both layouts.
fn row_major_schedules(graph: &calib::ir::Graph, precision: Precision) -> TuningCache {
    let options = FusionOptions {
        precision,
        ..FusionOptions::default()
    };
    let program = calib::passes::fusion::fuse(graph, &options)
        .unwrap()
        .program;
    support::planner::pinned_schedules(&program, precision, &options.device.name)
}

fn same_bits_both_ways(precision: Precision) {
    let (step, sgd) = plain_step();
    let step = apply_step(&step, precision).unwrap();
    let sgd = SgdState::new(&step, sgd.state);

    let pinned = row_major_schedules(&step.graph, precision);
    assert!(!pinned.entries.is_empty());
    let nhwc = sim(precision, LayoutPolicy::ChannelsLast, Some(pinned.clone()));
    let plan = nhwc.prepare(&step.graph).unwrap();
    let program = &plan.plan().program;
    let stored = |layout| {
        program
            .buffers
            .iter()
            .filter(|b| b.layout == layout)
            .count()
    };
    assert!(
        stored(Layout::ChannelsLast) >= 10,
        "only {} buffers are channels-last",
        stored(Layout::ChannelsLast)
    );
    // Of what is bound and read back, only 3x3 convolution weights (and the outputs
    // carried into them) are stored OHWI, which the runtime permutes on the way in and
    // out: the runs below bind and read back PyTorch's layout.
    let params = program.buffers.iter().filter(|b| b.role == Role::Param);
    let outputs = program
        .outputs
        .iter()
        .map(|o| (&o.name, program.buffer(o.buffer)));
    let boundary: Vec<(&String, &calib::ir::Buffer)> = params
        .map(|b| (&b.name, b))
        .chain(outputs)
        .filter(|(_, b)| !b.layout.is_row_major())
        .collect();
    assert!(!boundary.is_empty(), "no weight is stored OHWI");
    for (name, b) in &boundary {
        let shape = &b.ty.shape;
        let weight = shape.len() == 4 && shape[2] * shape[3] > 1 && shape[1] > 1;
        assert!(weight, "`{name}` {} is stored {}", b.ty, b.layout);
        // Each OHWI param and the output carried into it.
        let both = boundary.iter().filter(|(n, _)| n == name).count();
        assert_eq!(both, 2, "`{name}`");
    }
    assert!(
        program
            .buffers
            .iter()
            .all(|b| b.role != Role::Input || b.layout.is_row_major()),
        "the batch is not row-major"
    );

    let data = batches(support::data_parallel::SHARD, 2, 11);
    let want = run_loop(
        &sim(precision, LayoutPolicy::RowMajor, Some(pinned)),
        &step,
        sgd.clone(),
        &data,
    );
    let got = run_loop(&nhwc, &step, sgd.clone(), &data);
    assert_same_run(&got, &want);
    // A session keeps the OHWI weights on the device, carrying each step's update
    // into them, and reads them back in PyTorch's layout.
    let (fetched, state, _) = session_loop(&nhwc, &step, sgd, &data);
    assert_same_run(&(fetched, state), &want);
}

#[test]
fn f32_step_is_bit_identical_stored_channels_last() {
    same_bits_both_ways(Precision::F32);
}

#[test]
fn bf16_step_is_bit_identical_stored_channels_last() {
    same_bits_both_ways(Precision::Bf16);
}

#[test]
fn tf32_step_is_bit_identical_stored_channels_last() {
    same_bits_both_ways(Precision::Tf32);
}

/// The cost model sees what channels-last costs today's kernels: walked along pixels,
/// an NHWC image spreads a warp's accesses over a sector per lane, which the census
/// counts (`global_excess_bytes`), and `--layout auto` keeps the layout it predicts
/// faster.
#[test]
fn the_census_counts_uncoalesced_accesses_and_auto_keeps_the_faster_layout() {
    let (step, _) = plain_step();
    let options = FusionOptions::default();
    let program = calib::passes::fusion::fuse(&step.graph, &options)
        .unwrap()
        .program;
    let excess = |p: &calib::ir::Program| -> f64 {
        let compiled = calib::codegen::compile(p).unwrap();
        compiled
            .kernels
            .iter()
            .map(|k| {
                let launch = k.launch(k.estimated_registers());
                let threads = launch.blocks as f64 * launch.threads as f64;
                launch.census.global_excess_bytes * threads
            })
            .sum()
    };
    let mut nhwc = program.clone();
    assert!(calib::passes::fusion::layout::assign(&mut nhwc, Layout::ChannelsLast) > 0);
    // The images alone: weights stored OHWI are read along their channels, another
    // matter.
    for b in nhwc.buffers.iter_mut().filter(|b| b.role != Role::Temp) {
        b.layout = Layout::RowMajor;
    }
    let (row_major, channels_last) = (excess(&program), excess(&nhwc));
    assert!(
        channels_last > 2.0 * row_major.max(1.0),
        "extra bytes: {row_major} row-major, {channels_last} channels-last"
    );

    // Under auto the channels-last plan is scheduled for its layout: it is the plan
    // fusion makes under channels_last.
    let mut relaid = program.clone();
    let layout_options = FusionOptions {
        layout: LayoutPolicy::ChannelsLast,
        ..options.clone()
    };
    assert!(
        calib::passes::fusion::layout::relayout(&mut relaid, Layout::ChannelsLast, &options) > 0
    );
    let planned = calib::passes::fusion::fuse(&step.graph, &layout_options)
        .unwrap()
        .program;
    assert_eq!(relaid.to_json(), planned.to_json());
    let auto = calib::passes::fusion::FusionOptions {
        layout: LayoutPolicy::Auto,
        ..options.clone()
    };
    let plan =
        calib::device::choose_layout(program.clone(), &auto, |_| Default::default()).unwrap();
    let (chosen, choice) = (plan.program, plan.layout);
    let choice = choice.expect("auto compares both layouts");
    let faster = if choice.channels_last_ms < choice.row_major_ms {
        Layout::ChannelsLast
    } else {
        Layout::RowMajor
    };
    assert_eq!(choice.chosen, faster);
    let stored = chosen.buffers.iter().filter(|b| b.layout == faster).count();
    assert!(stored > 0, "the chosen plan is not stored {faster}");
    // A fixed policy compiles one plan and reports no choice.
    let fixed = calib::passes::fusion::FusionOptions {
        layout: LayoutPolicy::RowMajor,
        ..options
    };
    let plan = calib::device::choose_layout(program, &fixed, |_| Default::default()).unwrap();
    assert_eq!(plan.layout, None);
}

/// Under bf16 a channels-last plan pads images of a few channels to pixels of four
/// (`pad-channels`): the Fashion-MNIST SCNet's one-channel stem and its two-channel
/// SCConv branches. The padding is exact (the padded channels multiply zeros, which add
/// exactly nothing): the reference interpreter's kernels train the padded plan to the
/// same bits as the unpadded one. (On the simulator the padded GEMMs lay out `k` anew
/// and may be split differently, which sums in another order; their kernels are
/// checked against the reference in `codegen/tests/channels_last.rs`.)
#[test]
fn images_padded_to_whole_pixels_train_to_the_same_bits() {
    let (step, sgd) = plain_step();
    let step = apply_step(&step, Precision::Bf16).unwrap();
    let sgd = SgdState::new(&step, sgd.state);
    let padded = bf16_channels_last(RuleSet::default());
    let unpadded = bf16_channels_last(RuleSet::without(["pad-channels"]).unwrap());
    let count = padded_convolutions(&step.graph, &padded);
    assert!(count >= 2, "{count} convolutions padded");
    assert_eq!(padded_convolutions(&step.graph, &unpadded), 0);
    let row_major = FusionOptions {
        layout: LayoutPolicy::RowMajor,
        ..padded.clone()
    };
    assert_eq!(padded_convolutions(&step.graph, &row_major), 0);

    // `verify --fused` plans the graph as the device backends do (`prepare`).
    let data = batches(support::data_parallel::SHARD, 2, 11);
    let fused = |options| Fused { options };
    let got = run_loop(&fused(padded.clone()), &step, sgd.clone(), &data);
    assert_same_run(&got, &run_loop(&fused(unpadded), &step, sgd.clone(), &data));
    // The padded plan runs on the simulator, its losses finite.
    let (outputs, _) = run_loop(&Sim::with_fusion(padded), &step, sgd, &data);
    for out in &outputs {
        let loss = out[calib::passes::LOSS].to_f64_vec()[0];
        assert!(loss.is_finite() && loss > 0.0, "loss {loss}");
    }
}

/// ResNet-50's stem (batch 64), padded: under bf16 its convolution and weight gradient
/// read the image as four channels stored channels-last, copied by `cp.async` a pixel
/// (8 bytes) at a time, where three channels load 16 bits at a time; under TF32 a pixel
/// of four f32 channels is one 16-byte copy, where three are copied a word at a time.
#[test]
fn the_padded_stem_copies_a_pixel_at_a_time() {
    let spec = calib::models::presets::preset("resnet50").unwrap();
    let model = calib::models::build(&spec, &[64, 3, 224, 224], Mode::Train, DType::F32).unwrap();
    let step = train_step(&model.graph, &TrainConfig::default()).unwrap();
    for (precision, dtype, pixel) in [
        (Precision::Bf16, DType::BF16, "cp.async.ca.shared.global"),
        (Precision::Tf32, DType::F32, "cp.async.cg.shared.global"),
    ] {
        let step = apply_step(&step, precision).unwrap();
        let bytes = format!("], {}", 4 * dtype.size_bytes());
        let stem = |options: &FusionOptions| {
            let graph = prepare(&step.graph, options).unwrap();
            let program = calib::passes::fusion::fuse(&graph, options)
                .unwrap()
                .program;
            ["conv2d@conv1", "conv2d_backward_weight@conv1"].map(|label| {
                let kernel = program.kernels.iter().find(|k| k.label == label).unwrap();
                let images: Vec<_> = kernel
                    .inputs
                    .iter()
                    .map(|&b| program.buffer(b))
                    .filter(|b| b.ty.shape.len() == 4 && b.ty.shape[2] == 224)
                    .map(|b| (b.ty.shape[1], b.layout, b.ty.dtype))
                    .collect();
                let launches = calib::codegen::compile_kernel(&program, kernel).unwrap();
                let copies = launches[0]
                    .ptx
                    .lines()
                    .filter(|l| l.contains(pixel) && l.contains(&bytes))
                    .count();
                (images, copies)
            })
        };
        let options = |rules| FusionOptions {
            precision,
            ..channels_last(rules)
        };
        let padded = stem(&options(RuleSet::default()));
        let unpadded = stem(&options(RuleSet::without(["pad-channels"]).unwrap()));
        for (images, _) in &padded {
            assert_eq!(images, &[(4, Layout::ChannelsLast, dtype)], "{precision:?}");
        }
        // The forward's only copies of that size are the image's; the weight
        // gradient's output gradient (16-byte runs under TF32) is copied either way.
        assert_eq!(unpadded[0].1, 0, "{precision:?}: three channels copied");
        for ((_, padded), (_, unpadded)) in padded.iter().zip(&unpadded) {
            assert!(
                padded > unpadded,
                "{precision:?}: {padded} against {unpadded}"
            );
        }
    }
}

fn bf16_channels_last(rules: RuleSet) -> FusionOptions {
    FusionOptions {
        precision: Precision::Bf16,
        ..channels_last(rules)
    }
}

fn channels_last(rules: RuleSet) -> FusionOptions {
    FusionOptions {
        layout: LayoutPolicy::ChannelsLast,
        rules,
        ..FusionOptions::default()
    }
}

/// A session ends each step copying a carried output's bytes into its param (an OHWI
/// weight's update into the weight): a plan that stores the two in different layouts
/// is refused by name, not run with its weights scrambled.
#[test]
fn a_carried_value_stored_two_ways_is_refused() {
    use calib::runtime::session::ResidentSession;
    use calib::runtime::{SimProgram, SimResident};
    let (step, _) = plain_step();
    let step = apply_step(&step, Precision::Bf16).unwrap();
    let nhwc = sim(Precision::Bf16, LayoutPolicy::ChannelsLast, None);
    let mut device = nhwc.prepare(&step.graph).unwrap().plan().clone();
    let program = &mut device.program;
    let (name, b) = program
        .outputs
        .iter()
        .map(|o| (o.name.clone(), o.buffer))
        .find(|&(_, b)| !program.buffers[b.0].layout.is_row_major())
        .expect("an OHWI weight's update");
    program.buffers[b.0].layout = Layout::RowMajor;
    let resident = SimResident::new(std::sync::Arc::new(SimProgram::new(device).unwrap())).unwrap();
    let e = ResidentSession::new(resident, &step.graph, &calib::train::carry(&step))
        .err()
        .expect("refused")
        .to_string();
    assert!(
        e.contains(&format!("`{name}`")) && e.contains("same layout"),
        "{e}"
    );
}
