//! The planner's own estimates against the cost model's reading of the code generation
//! emits, kernel by kernel.

use calib::passes::fusion::{estimate::program_kernel_seconds, Device};
use calib::predict::StepPrediction;
use std::collections::BTreeMap;

/// The share of the predicted step time (of emitted launches) spent in kernels whose
/// planned estimate is within 2x of the emitted code's.
pub fn share_within_twice(
    program: &calib::ir::Program,
    p: &StepPrediction,
    device: &Device,
) -> f64 {
    let mut emitted: BTreeMap<&str, f64> = BTreeMap::new();
    for l in &p.launches {
        *emitted.entry(&l.kernel).or_default() += l.predicted_us;
    }
    let (mut total, mut agreeing) = (0.0, 0.0);
    for k in &program.kernels {
        let Some(&us) = emitted.get(k.name.as_str()) else {
            continue;
        };
        let planned = program_kernel_seconds(k, &program.input_layouts(k), device) * 1e6;
        total += us;
        if (0.5..=2.0).contains(&(planned / us)) {
            agreeing += us;
        }
    }
    agreeing / total
}

/// The planner's estimate of the GEMM kernels (those with a GEMM schedule), summed,
/// over the cost model's price of the code emitted for them: how far the estimate
/// that extraction and scheduling decide by is from the emitted code, on the whole.
pub fn gemm_estimate_ratio(
    program: &calib::ir::Program,
    p: &StepPrediction,
    device: &Device,
) -> f64 {
    let gemm: Vec<&calib::ir::Kernel> = program
        .kernels
        .iter()
        .filter(|k| k.schedule.is_some_and(|s| s.gemm.is_some()))
        .collect();
    let planned: f64 = gemm
        .iter()
        .map(|k| program_kernel_seconds(k, &program.input_layouts(k), device) * 1e6)
        .sum();
    let emitted: f64 = p
        .launches
        .iter()
        .filter(|l| gemm.iter().any(|k| k.name == l.kernel))
        .map(|l| l.predicted_us)
        .sum();
    planned / emitted
}

/// The GEMM schedules `program` (planned under `precision` for device `device`) chose,
/// one per shape, as a tuning cache that pins them for other plans of the same GEMMs:
/// under both keys, since a kernel over channels-last images has its own.
pub fn pinned_schedules(
    program: &calib::ir::Program,
    precision: calib::ir::Precision,
    device: &str,
) -> calib::passes::fusion::tuning::TuningCache {
    use calib::ir::Layout;
    use calib::passes::fusion::tuning::{shape_key, TunedSchedule, TuningCache};
    let mut pinned = TuningCache {
        device: device.to_string(),
        ..TuningCache::default()
    };
    for kernel in &program.kernels {
        let Some(schedule) = kernel.schedule.and_then(|s| s.gemm) else {
            continue;
        };
        for layouts in [&[][..], &[Layout::ChannelsLast]] {
            if let Some((key, _)) = shape_key(&kernel.body, precision, layouts) {
                pinned.entries.entry(key).or_insert(TunedSchedule {
                    schedule,
                    measured_us: 0.0,
                    candidates: 1,
                });
            }
        }
    }
    pinned
}
