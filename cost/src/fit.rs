//! Fitting a device's [`Timing`] to measured launches, and judging a fit.
//!
//! The loss is the squared log-ratio of predicted to measured time, each launch
//! weighted by the square root of its measured time: long kernels matter more, but a
//! few of them cannot drown the many short ones. The search is a seeded random walk in
//! log space with a shrinking step (no gradient is needed and no parameter can turn
//! negative), so a refit of the same data gives the same coefficients.

use crate::{predict, Device, Launch, Timing};

/// A launch and the time it was measured to take.
#[derive(Clone, Debug)]
pub struct Sample {
    pub name: String,
    pub launch: Launch,
    pub measured_seconds: f64,
}

/// How well a device's coefficients predict a set of samples.
#[derive(Clone, Debug, PartialEq)]
pub struct Evaluation {
    /// Predicted over measured, summed over all samples.
    pub sum_ratio: f64,
    /// The share of measured time in samples predicted within a factor of two.
    pub time_within_2x: f64,
    /// Samples predicted within a factor of two.
    pub count_within_2x: usize,
    pub count: usize,
    /// The weighted squared log error the fit minimizes.
    pub loss: f64,
}

/// Predicted over measured time of every sample.
pub fn ratios(samples: &[Sample], device: &Device) -> Vec<f64> {
    samples
        .iter()
        .map(|s| predict(&s.launch, device).seconds / s.measured_seconds)
        .collect()
}

pub fn evaluate(samples: &[Sample], device: &Device) -> Evaluation {
    let ratios = ratios(samples, device);
    let measured: f64 = samples.iter().map(|s| s.measured_seconds).sum();
    let predicted: f64 = samples
        .iter()
        .zip(&ratios)
        .map(|(s, r)| s.measured_seconds * r)
        .sum();
    let within = |r: &f64| (0.5..=2.0).contains(r);
    let weight = |s: &Sample| s.measured_seconds.sqrt();
    let total_weight: f64 = samples.iter().map(weight).sum();
    Evaluation {
        sum_ratio: predicted / measured,
        time_within_2x: samples
            .iter()
            .zip(&ratios)
            .filter(|(_, r)| within(r))
            .map(|(s, _)| s.measured_seconds)
            .sum::<f64>()
            / measured,
        count_within_2x: ratios.iter().filter(|r| within(r)).count(),
        count: samples.len(),
        loss: samples
            .iter()
            .zip(&ratios)
            .map(|(s, r)| weight(s) * r.ln().powi(2))
            .sum::<f64>()
            / total_weight,
    }
}

/// The coefficients a fit moves, in log space.
fn get(t: &Timing) -> [f64; 7] {
    [
        t.load_latency_cycles,
        t.dependent_issue_cycles,
        t.shared_wavefront_cycles,
        t.overlap,
        t.l2_bandwidth,
        t.dram_efficiency,
        t.kernel_floor_us,
    ]
}

fn set(t: &mut Timing, v: [f64; 7]) {
    t.load_latency_cycles = v[0];
    t.dependent_issue_cycles = v[1];
    t.shared_wavefront_cycles = v[2];
    t.overlap = v[3].clamp(1.0, 8.0);
    t.l2_bandwidth = v[4];
    t.dram_efficiency = v[5].clamp(0.05, 1.0);
    t.kernel_floor_us = v[6];
}

/// `device` with its timing coefficients refitted to `samples`, starting from its
/// current ones; `iterations` random steps (a few thousand suffice).
pub fn fit(samples: &[Sample], device: &Device, iterations: usize) -> Device {
    let mut best = device.clone();
    let mut best_loss = evaluate(samples, &best).loss;
    let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
    let mut step = 0.5;
    for i in 0..iterations {
        let mut trial = best.clone();
        let v = get(&best.timing).map(|x| x * (step * rng.normal()).exp());
        set(&mut trial.timing, v);
        let loss = evaluate(samples, &trial).loss;
        if loss < best_loss {
            best = trial;
            best_loss = loss;
        }
        if i % 500 == 499 {
            step *= 0.6;
        }
    }
    best
}

/// A small deterministic generator: fits must be reproducible.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }

    /// A standard normal draw (Box-Muller).
    fn normal(&mut self) -> f64 {
        let u = self.next().max(1e-12);
        let v = self.next();
        (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
    }
}
