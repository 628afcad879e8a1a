//! The cost model against every measured data set in `cost/data/datasets.json`: kernels
//! holding at least 90% of the measured time are predicted within a factor of two, and
//! the sum of all kernels within 30%, with the coefficients the device file carries.

use calib_cost::data::samples;
use calib_cost::fit::{evaluate, fit, ratios, Sample};
use calib_cost::Device;
use serde::Deserialize;
use std::path::{Path, PathBuf};

#[derive(Deserialize)]
struct DataSet {
    name: String,
    device: String,
    launches: String,
    measured: String,
}

fn data_sets() -> Vec<(DataSet, Vec<Sample>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("data");
    let manifest = std::fs::read_to_string(dir.join("datasets.json")).expect("manifest");
    let sets: Vec<DataSet> = serde_json::from_str(&manifest).expect("manifest JSON");
    assert!(!sets.is_empty());
    sets.into_iter()
        .map(|set| {
            let path = |p: &str| -> PathBuf { dir.join(p) };
            let samples = samples(&path(&set.launches), &path(&set.measured))
                .unwrap_or_else(|e| panic!("data set {}: {e}", set.name));
            (set, samples)
        })
        .collect()
}

#[test]
fn predictions_are_within_twice_the_measured_time() {
    for (set, samples) in data_sets() {
        let device = Device::named(&set.device).expect("device");
        assert!(
            device.timing.fitted_to.contains(&set.name),
            "{} is not fitted to {}",
            set.device,
            set.name
        );
        let e = evaluate(&samples, &device);
        eprintln!(
            "{}: {} launches, sum predicted/measured {:.3}, {:.1}% of the time within 2x \
             ({} of {} launches)",
            set.name,
            e.count,
            e.sum_ratio,
            100.0 * e.time_within_2x,
            e.count_within_2x,
            e.count
        );
        let ratios = ratios(&samples, &device);
        let mut worst: Vec<(f64, &Sample)> = ratios.iter().copied().zip(&samples).collect();
        worst.sort_by(|a, b| {
            let off = |x: &(f64, &Sample)| x.0.ln().abs() * x.1.measured_seconds;
            off(b).total_cmp(&off(a))
        });
        for (r, s) in worst.iter().take(5) {
            eprintln!(
                "  {}: measured {:.1} us, predicted {:.1} us",
                s.name,
                s.measured_seconds * 1e6,
                s.measured_seconds * r * 1e6
            );
        }
        assert!(
            e.time_within_2x >= 0.90,
            "{}: only {:.1}% of the measured time is in kernels predicted within 2x",
            set.name,
            100.0 * e.time_within_2x
        );
        assert!(
            (e.sum_ratio - 1.0).abs() <= 0.30,
            "{}: the sum is predicted at {:.2}x the measured",
            set.name,
            e.sum_ratio
        );
    }
}

/// The device files carry a fit, not stale numbers: refitting from them finds at most
/// a little better.
#[test]
fn stored_coefficients_are_a_fit_of_the_data() {
    for (set, samples) in data_sets() {
        let device = Device::named(&set.device).expect("device");
        let stored = evaluate(&samples, &device).loss;
        let refit = evaluate(&samples, &fit(&samples, &device, 1500)).loss;
        assert!(
            refit >= 0.95 * stored,
            "{}: a refit lowers the loss from {stored:.4} to {refit:.4}; update devices/{}.json \
             (cargo run -p calib-cost --example fit)",
            set.name,
            set.device
        );
    }
}

/// Starting far from the answer, the fit still lands near it: the search works.
#[test]
fn a_fit_from_poor_coefficients_recovers() {
    let (set, samples) = data_sets().remove(0);
    let good = Device::named(&set.device).expect("device");
    let mut poor = good.clone();
    poor.timing.load_latency_cycles *= 4.0;
    poor.timing.dependent_issue_cycles /= 3.0;
    poor.timing.l2_bandwidth *= 5.0;
    let before = evaluate(&samples, &poor).loss;
    let after = evaluate(&samples, &fit(&samples, &poor, 3000)).loss;
    let target = evaluate(&samples, &good).loss;
    assert!(before > 2.0 * target, "{before} vs {target}");
    assert!(after < 1.25 * target, "refit loss {after}, stored {target}");
}

/// What the device files assume rather than fit: instructions that wait for none of
/// their neighbours issue at one per cycle. The measured kernels cannot tell (the best
/// fits with one cycle and with six are as good), so the first GPU run of the new code
/// generation, which leans on such instructions, is what pins it down.
#[test]
fn the_measurements_do_not_pin_down_independent_issue() {
    let (set, samples) = data_sets().remove(0);
    let one = Device::named(&set.device).expect("device");
    assert_eq!(one.timing.independent_issue_cycles, 1.0);
    let mut six = one.clone();
    six.timing.independent_issue_cycles = 6.0;
    let six = fit(&samples, &six, 2000);
    let (a, b) = (evaluate(&samples, &one).loss, evaluate(&samples, &six).loss);
    assert!(
        (a - b).abs() < 0.05 * a,
        "loss {a:.4} with one cycle, {b:.4} with six"
    );
}
