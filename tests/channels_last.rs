//! Channels-last storage (`FusionOptions::layout`) changes how kernels address the
//! plan's image-shaped temporaries, not what they compute: the Fashion-MNIST SCNet's
//! training step, stored NHWC, gives the same bits on the PTX simulator as stored NCHW,
//! step after step, at every precision.

mod support;

use calib::ir::{Layout, Precision};
use calib::passes::fusion::FusionOptions;
use calib::passes::precision::apply_step;
use calib::train::SgdState;
use calib::Sim;
use support::session::{assert_same_run, batches, plain_step, run_loop};

fn sim(precision: Precision, layout: Layout) -> Sim {
    Sim::with_fusion(FusionOptions {
        precision,
        layout,
        ..FusionOptions::default()
    })
}

fn same_bits_both_ways(precision: Precision) {
    let (step, sgd) = plain_step();
    let step = apply_step(&step, precision).unwrap();
    let sgd = SgdState::new(&step, sgd.state);

    let nhwc = sim(precision, Layout::ChannelsLast);
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
    assert!(
        program
            .buffers
            .iter()
            .all(|b| b.layout.is_row_major() || b.role == calib::ir::Role::Temp),
        "a bound or returned buffer is not row-major"
    );

    let data = batches(support::data_parallel::SHARD, 2, 11);
    let want = run_loop(&sim(precision, Layout::RowMajor), &step, sgd.clone(), &data);
    let got = run_loop(&nhwc, &step, sgd, &data);
    assert_same_run(&got, &want);
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
