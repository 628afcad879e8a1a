//! The loader's batches as the steps take them: each step's own and, when batches are
//! staged, the next step's too, taken before the step runs so that the sessions get it
//! before they wait for the step's results (`Session::step_and_stage`: on a GPU the
//! next batch's copy overlaps the step).

use crate::data::prefetch::{Prefetched, Prefetcher};
use anyhow::{Context, Result};
use std::time::Instant;

/// A batch and the seconds the trainer waited for the loader to hand it over.
pub struct Taken {
    pub batch: Prefetched,
    pub waited: f64,
}

/// Hands out the batches of a run's steps in order, one step ahead when staging.
pub struct Lookahead {
    loader: Prefetcher,
    staging: bool,
    next: Option<Taken>,
}

impl Lookahead {
    /// Batches from `loader`, staged one ahead with `staging`.
    pub fn new(loader: Prefetcher, staging: bool) -> Self {
        Lookahead {
            loader,
            staging,
            next: None,
        }
    }

    /// The batch of `step` (0-based), and with staging the batch of the step after it
    /// unless `step + 1` is `end` (the run's last step). The next call, for `step + 1`,
    /// returns that batch as its own.
    pub fn take(&mut self, step: u64, end: u64) -> Result<(Taken, Option<&Taken>)> {
        let this = match self.next.take() {
            Some(t) => t,
            None => self.fetch(step)?,
        };
        if self.staging && step + 1 < end {
            self.next = Some(self.fetch(step + 1)?);
        }
        Ok((this, self.next.as_ref()))
    }

    fn fetch(&mut self, step: u64) -> Result<Taken> {
        let waited = Instant::now();
        let batch = self
            .loader
            .next_batch()
            .with_context(|| format!("loading the batch of step {}", step + 1))?;
        Ok(Taken {
            batch,
            waited: waited.elapsed().as_secs_f64(),
        })
    }
}

/// Whether each step hands the sessions the next step's batch before waiting for its own
/// results: on by default; `CALIB_STAGE_BATCHES=0` turns it off, to compare the two paths
/// (their results are the same bits; only a GPU's overlap of the copy with the step
/// differs).
pub fn stage_batches() -> bool {
    std::env::var("CALIB_STAGE_BATCHES").map_or(true, |v| v != "0")
}
