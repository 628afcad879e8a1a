//! The limits saturation runs under, and what happened when one was hit.
//!
//! egg stops a phase at its node, iteration or time limit with the e-graph intact:
//! every class still holds the nodes it had, so extraction still finds a program, only
//! a less rewritten one. A fusion that hits a limit therefore still returns a valid
//! plan, plus a warning that names the limit, the phase and the region.

use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Bounds on saturation, per region and phase, and on fusion as a whole.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Limits {
    /// E-nodes per region (egg may overshoot by one rule's batch of matches).
    pub nodes: usize,
    /// Iterations per phase.
    pub iterations: usize,
    /// Seconds per phase of one region.
    pub phase_seconds: f64,
    /// Seconds for the whole fusion: regions that start later are lowered as they are.
    pub total_seconds: f64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            nodes: 20_000,
            iterations: 12,
            phase_seconds: 2.0,
            total_seconds: 60.0,
        }
    }
}

impl Limits {
    pub fn phase_time(&self) -> Duration {
        Duration::from_secs_f64(self.phase_seconds.max(0.0))
    }
}

/// Why a phase stopped, as reported.
pub fn stop_reason(reason: Option<&egg::StopReason>) -> String {
    match reason {
        None => "not run".into(),
        Some(egg::StopReason::Saturated) => "saturated".into(),
        Some(egg::StopReason::IterationLimit(n)) => format!("iteration limit ({n})"),
        Some(egg::StopReason::NodeLimit(n)) => format!("node limit ({n} e-nodes)"),
        Some(egg::StopReason::TimeLimit(s)) => format!("time limit ({s} s)"),
        Some(egg::StopReason::Other(why)) => why.clone(),
    }
}
