//! Every public fixture under the tf32 and bf16 precision policies, on the reference
//! interpreter and on the simulator (the exact PTX a GPU would run), its plan stored
//! row-major and channels-last (the layout `auto` picks for tensor-core plans, images
//! of a few channels padded), against the f32 fixtures with the tolerances of
//! docs/precision.md. The numbers each run measures are
//! recorded in bench/results/cpu-2026-12-05-precision.md.

use calib::ir::Precision;
use calib::passes::fusion::LayoutPolicy;
use calib::runtime::{Backend, Reference};
use calib::verify::{verify_fixture_at, Status, Tolerance};
use calib::Sim;
use support::fixture;

mod support;

fn check(name: &str, backend: &dyn Backend, precision: Precision) {
    let report = verify_fixture_at(&fixture(name), backend, precision).expect("verification runs");
    let failed: Vec<_> = report
        .rows
        .iter()
        .filter(|r| r.status != Status::Pass)
        .collect();
    assert!(
        failed.is_empty(),
        "{name} at {precision}: rows not passed {failed:#?}"
    );
    assert!(report.count(Status::Pass) > 20, "{name}: too few rows");
    assert_eq!(report.precision, precision);
    // The tolerances are the derived ones, wider than f32's, never infinite.
    for r in &report.rows {
        let t = r.tolerance.expect("checked rows have a tolerance");
        assert!(t.is_finite(), "{name}: {}", r.name);
    }
}

fn sim(precision: Precision, layout: LayoutPolicy) -> Sim {
    Sim::with_fusion(calib::passes::fusion::FusionOptions {
        precision,
        layout,
        ..Default::default()
    })
}

macro_rules! fixtures {
    ($($test:ident: $name:literal, $precision:ident;)*) => {$(
        mod $test {
            use super::*;

            #[test]
            fn on_the_reference() {
                check($name, &Reference::new(), Precision::$precision);
            }

            #[test]
            fn on_the_simulator() {
                let sim = sim(Precision::$precision, LayoutPolicy::RowMajor);
                check($name, &sim, Precision::$precision);
            }

            #[test]
            fn on_the_simulator_channels_last() {
                let sim = sim(Precision::$precision, LayoutPolicy::ChannelsLast);
                check($name, &sim, Precision::$precision);
            }
        }
    )*};
}

fixtures! {
    scconv_tf32: "scconv", Tf32;
    scconv_bf16: "scconv", Bf16;
    scbottleneck_s1_tf32: "scbottleneck_s1", Tf32;
    scbottleneck_s1_bf16: "scbottleneck_s1", Bf16;
    scbottleneck_s2_down_tf32: "scbottleneck_s2_down", Tf32;
    scbottleneck_s2_down_bf16: "scbottleneck_s2_down", Bf16;
    tiny_scnet_tf32: "tiny_scnet", Tf32;
    tiny_scnet_bf16: "tiny_scnet", Bf16;
}

/// The policy changes the numbers (a check that passes whatever the backend computes
/// would pass here too): at bf16 the reference differs from f32 by more than f32's own
/// tolerance on the module's gradients, and f32's tolerances would fail it.
#[test]
fn bf16_is_not_f32() {
    let f32 = verify_fixture_at(&fixture("scconv"), &Reference::new(), Precision::F32).unwrap();
    let bf16 = verify_fixture_at(&fixture("scconv"), &Reference::new(), Precision::Bf16).unwrap();
    let err = |r: &calib::verify::Report, row: &str| {
        r.rows
            .iter()
            .find(|x| x.name == row)
            .unwrap()
            .max_abs_err
            .unwrap()
    };
    let row = "eval_io/output";
    assert!(
        err(&bf16, row) > 10.0 * err(&f32, row),
        "{} vs {}",
        err(&bf16, row),
        err(&f32, row)
    );
    assert!(err(&bf16, row) > Tolerance::OUTPUT.bound(&[1.0]));
}
