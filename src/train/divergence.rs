//! Telling a diverging run from a noisy one by its loss, so that it stops before its
//! checkpoints fill with weights that cannot be trained further.
//!
//! A step's loss is compared with the best mean over `WINDOW` consecutive steps seen so
//! far in this invocation (a single lucky batch is not the reference). A loss that is
//! not finite, or more than `GROWTH` times that best mean, means the run diverged: an
//! honest run's loss wanders by a few times, not a thousand. The reference is never
//! taken below `FLOOR`, so a run that has driven its loss to nearly zero is not stopped
//! by an ordinary bad batch (cross-entropy above `GROWTH * FLOOR` = 100 means logits
//! off by about a hundred, which no converging run shows).

use calib_runtime::{OpError, RuntimeError};
use std::collections::VecDeque;

/// Steps in the mean the best loss is taken over.
pub const WINDOW: usize = 10;
/// How many times the best windowed mean loss a step's loss may reach.
pub const GROWTH: f64 = 1e3;
/// The smallest reference loss: growth is measured from at least this.
pub const FLOOR: f64 = 0.1;

/// Why a loss means the run diverged.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Divergence {
    /// The loss is NaN or infinite.
    NotFinite,
    /// The loss is over `GROWTH` times `best`, the best windowed mean loss so far.
    Grew { best: f64 },
}

/// The losses of the run so far, as far as divergence needs them.
#[derive(Debug, Default)]
pub struct LossWatch {
    recent: VecDeque<f64>,
    best: Option<f64>,
}

impl LossWatch {
    /// Takes the loss of the next step; says whether the run diverged with it (a
    /// diverged loss is not taken into the windows).
    pub fn observe(&mut self, loss: f64) -> Option<Divergence> {
        if !loss.is_finite() {
            return Some(Divergence::NotFinite);
        }
        if let Some(best) = self.best {
            if loss > GROWTH * best.max(FLOOR) {
                return Some(Divergence::Grew { best });
            }
        }
        if self.recent.len() == WINDOW {
            self.recent.pop_front();
        }
        self.recent.push_back(loss);
        // Until a whole window has passed, the mean of the steps so far stands in.
        let mean = self.recent.iter().sum::<f64>() / self.recent.len() as f64;
        self.best = Some(self.best.map_or(mean, |b| b.min(mean)));
        None
    }
}

/// When a step failed because the interpreter's finite check (`--check-finite`) found
/// an op that made a NaN or an infinity: that error, which names the op.
pub fn non_finite_op(err: &anyhow::Error) -> Option<&RuntimeError> {
    err.chain()
        .filter_map(|cause| cause.downcast_ref::<RuntimeError>())
        .find(|e| {
            matches!(
                e,
                RuntimeError::Op {
                    source: OpError::NonFinite(_),
                    ..
                } | RuntimeError::NonFiniteBinding { .. }
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_loss_a_thousand_times_the_best_window_is_divergence() {
        let mut watch = LossWatch::default();
        assert_eq!(watch.observe(2.3), None);
        // From the first step on there is a reference: 2.3.
        assert_eq!(watch.observe(2e17), Some(Divergence::Grew { best: 2.3 }));
        assert_eq!(watch.observe(f64::NAN), Some(Divergence::NotFinite));
        assert_eq!(watch.observe(f64::INFINITY), Some(Divergence::NotFinite));
    }

    #[test]
    fn the_reference_is_the_best_windowed_mean_not_the_best_step() {
        let mut watch = LossWatch::default();
        // Nine steps at 2.0 and one lucky batch at 0.0001: the best ten-step mean is ~1.8.
        for _ in 0..9 {
            assert_eq!(watch.observe(2.0), None);
        }
        assert_eq!(watch.observe(0.0001), None);
        assert_eq!(watch.observe(500.0), None, "within 1000x of the mean");
        assert!(matches!(
            watch.observe(5000.0),
            Some(Divergence::Grew { .. })
        ));
    }

    #[test]
    fn a_nearly_zero_loss_does_not_make_ordinary_noise_divergence() {
        let mut watch = LossWatch::default();
        for _ in 0..20 {
            assert_eq!(watch.observe(1e-6), None);
        }
        assert_eq!(watch.observe(3.0), None, "measured from the floor, 0.1");
        assert_eq!(watch.observe(150.0), Some(Divergence::Grew { best: 1e-6 }));
    }
}
