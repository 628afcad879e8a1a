//! Learning-rate schedules: a function of the step, so a resumed run needs no state.

use serde::{Deserialize, Serialize};

/// How the learning rate moves over training.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum ScheduleKind {
    /// Constant after warmup.
    Constant,
    /// Multiplied by `gamma` every `step_epochs` epochs after warmup (the ImageNet recipe).
    Step,
    /// Half a cosine from the peak to zero over the steps after warmup.
    Cosine,
}

/// A schedule over `total_steps` optimizer steps with a linear warmup.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Schedule {
    pub kind: ScheduleKind,
    pub peak: f64,
    pub warmup_steps: u64,
    pub total_steps: u64,
    pub steps_per_epoch: u64,
    pub step_epochs: u64,
    pub gamma: f64,
}

impl Schedule {
    /// The learning rate of optimizer step `step` (0-based).
    pub fn lr(&self, step: u64) -> f64 {
        if step < self.warmup_steps {
            // Linear from peak/warmup up to the peak, never exactly zero.
            return self.peak * (step + 1) as f64 / self.warmup_steps as f64;
        }
        match self.kind {
            ScheduleKind::Constant => self.peak,
            ScheduleKind::Step => {
                let epoch = step / self.steps_per_epoch.max(1);
                self.peak * self.gamma.powi((epoch / self.step_epochs.max(1)) as i32)
            }
            ScheduleKind::Cosine => {
                let span = self.total_steps.saturating_sub(self.warmup_steps).max(1) as f64;
                let t = ((step - self.warmup_steps) as f64 / span).min(1.0);
                0.5 * self.peak * (1.0 + (std::f64::consts::PI * t).cos())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schedule(kind: ScheduleKind) -> Schedule {
        Schedule {
            kind,
            peak: 0.1,
            warmup_steps: 10,
            total_steps: 110,
            steps_per_epoch: 20,
            step_epochs: 2,
            gamma: 0.1,
        }
    }

    #[test]
    fn warmup_rises_linearly_to_the_peak() {
        let s = schedule(ScheduleKind::Cosine);
        assert!((s.lr(0) - 0.01).abs() < 1e-12);
        assert!((s.lr(4) - 0.05).abs() < 1e-12);
        assert!((s.lr(10) - 0.1).abs() < 1e-12);
    }

    #[test]
    fn cosine_reaches_half_at_midpoint_and_zero_at_the_end() {
        let s = schedule(ScheduleKind::Cosine);
        assert!((s.lr(60) - 0.05).abs() < 1e-12);
        assert!(s.lr(110).abs() < 1e-12);
    }

    #[test]
    fn step_decays_every_step_epochs() {
        let s = schedule(ScheduleKind::Step);
        assert!((s.lr(39) - 0.1).abs() < 1e-12);
        assert!((s.lr(40) - 0.01).abs() < 1e-12);
        assert!((s.lr(80) - 0.001).abs() < 1e-12);
    }
}
