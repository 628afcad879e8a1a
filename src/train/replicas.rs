//! Running one optimizer step, on one replica or on a data-parallel group of threads.
//!
//! With `R` replicas the global batch of `B` images is split in rank order (replica `r`
//! takes rows `r*B/R .. (r+1)*B/R`), every replica runs the per-replica step graph
//! ([`calib_passes::data_parallel_step`]) on its own thread with the same parameters and
//! momentum, and the graph's all-reduces go through an in-process group. The replicas
//! then hold identical parameters and momentum, and the state kept is rank 0's: for
//! per-replica BatchNorm that is what PyTorch DDP's `broadcast_buffers` keeps too.
//!
//! A fresh group per step keeps failure simple: a replica that fails returns, its
//! handle is dropped, the others' all-reduces fail at once, and the step reports the
//! first replica's own error rather than its peers' complaints about it.

use super::SgdState;
use anyhow::{anyhow, bail, Context, Result};
use calib_passes::{momentum_name, TrainStep, LOSS};
use calib_runtime::{
    Backend, Collective, CollectiveError, HostTensor, InProcess, OpError, Outputs, RuntimeError,
    Storage,
};

/// Runs a step graph for a group of `replicas` (1: a plain step, no threads).
pub struct StepRunner<'a> {
    pub backend: &'a (dyn Backend + Sync),
    pub step: &'a TrainStep,
    /// NCHW shape of one replica's shard of the batch.
    pub shard: Vec<usize>,
    pub replicas: usize,
}

impl StepRunner<'_> {
    /// One step on the global batch (`pixels`, `labels`). The outputs are rank 0's, except
    /// `logits`, which are every replica's in rank order (the whole batch's), and `loss`,
    /// the mean of the replicas' losses (the whole batch's mean loss).
    pub fn run(&self, sgd: &SgdState, pixels: &[f32], labels: &[i64], lr: f64) -> Result<Outputs> {
        let lr = HostTensor::from_f32(Vec::<usize>::new(), vec![lr as f32])?;
        if self.replicas == 1 {
            return self.replica(None, sgd, pixels, labels, &lr);
        }
        let rows = self.shard[0];
        let pixels_per_row: usize = self.shard[1..].iter().product();
        if labels.len() != rows * self.replicas || pixels.len() != labels.len() * pixels_per_row {
            bail!(
                "a batch of {} labels and {} pixels does not split into {} shards of {:?}",
                labels.len(),
                pixels.len(),
                self.replicas,
                self.shard
            );
        }
        let results: Vec<Result<Outputs>> = std::thread::scope(|s| {
            let handles: Vec<_> = InProcess::group(self.replicas)
                .into_iter()
                .map(|group| {
                    let r = group.rank();
                    let x = &pixels[r * rows * pixels_per_row..(r + 1) * rows * pixels_per_row];
                    let y = &labels[r * rows..(r + 1) * rows];
                    let lr = &lr;
                    // The group handle moves into the thread: when the thread ends, for
                    // whatever reason, the handle is dropped and its peers stop waiting.
                    s.spawn(move || self.replica(Some(&group), sgd, x, y, lr))
                })
                .collect();
            handles
                .into_iter()
                .enumerate()
                .map(|(r, h)| {
                    h.join()
                        .unwrap_or_else(|_| Err(anyhow!("replica {r} panicked")))
                        .with_context(|| format!("replica {r} of {}", self.replicas))
                })
                .collect()
        });
        merge(self.step, results)
    }

    /// One replica's step on its shard.
    fn replica(
        &self,
        group: Option<&dyn Collective>,
        sgd: &SgdState,
        pixels: &[f32],
        labels: &[i64],
        lr: &HostTensor,
    ) -> Result<Outputs> {
        let x = HostTensor::from_f32(self.shard.clone(), pixels.to_vec())?;
        let y = HostTensor::from_i64(vec![labels.len()], labels.to_vec())?;
        let mut b = sgd.bindings(self.step, &x, &y, lr);
        if let Some(group) = group {
            b = b.collective(group);
        }
        Ok(self.backend.run(&self.step.graph, &b)?)
    }
}

/// Rank 0's outputs, with the whole batch's logits and mean loss; or the error of the
/// replica that failed first in its own right.
fn merge(step: &TrainStep, results: Vec<Result<Outputs>>) -> Result<Outputs> {
    if results.iter().any(Result::is_err) {
        let mut errors: Vec<anyhow::Error> = results.into_iter().filter_map(Result::err).collect();
        let own = errors.iter().position(|e| !is_peer_failure(e)).unwrap_or(0);
        return Err(errors.swap_remove(own));
    }
    let outputs: Vec<Outputs> = results.into_iter().map(|r| r.expect("no errors")).collect();
    debug_assert!(
        outputs.iter().all(|o| step
            .params
            .iter()
            .flat_map(|p| [p.clone(), momentum_name(p)])
            .all(|name| same_bits(&o[&name], &outputs[0][&name]))),
        "data-parallel replicas diverged"
    );
    let logits: Vec<&HostTensor> = outputs
        .iter()
        .map(|o| o.get("logits").context("step graph has no logits"))
        .collect::<Result<_>>()?;
    let classes = logits[0].shape()[1];
    let all: Vec<f32> = logits.iter().flat_map(|t| t.to_f32_vec()).collect();
    let all = HostTensor::from_f32(vec![all.len() / classes, classes], all)?;
    let loss = outputs
        .iter()
        .map(|o| o.get(LOSS).map(|t| t.to_f64_vec()[0]))
        .sum::<Option<f64>>()
        .context("step graph has no loss")?
        / outputs.len() as f64;
    let mut first = outputs.into_iter().next().expect("at least one replica");
    first.insert("logits".into(), all);
    first.insert(
        LOSS.into(),
        HostTensor::from_f32(Vec::<usize>::new(), vec![loss as f32])?,
    );
    Ok(first)
}

/// Whether a replica failed only because a peer did.
fn is_peer_failure(e: &anyhow::Error) -> bool {
    matches!(
        e.downcast_ref::<RuntimeError>(),
        Some(RuntimeError::Op {
            source: OpError::Collective(CollectiveError::PeerLeft { .. }),
            ..
        })
    )
}

/// Equal dtype, shape and bits (NaN equal to itself, `-0.0` unequal to `0.0`).
fn same_bits(a: &HostTensor, b: &HostTensor) -> bool {
    a.dtype() == b.dtype()
        && a.shape() == b.shape()
        && match (a.storage(), b.storage()) {
            (Storage::F32(x), Storage::F32(y)) => x
                .iter()
                .map(|v| v.to_bits())
                .eq(y.iter().map(|v| v.to_bits())),
            (Storage::F64(x), Storage::F64(y)) => x
                .iter()
                .map(|v| v.to_bits())
                .eq(y.iter().map(|v| v.to_bits())),
            (Storage::I64(x), Storage::I64(y)) => x == y,
            _ => false,
        }
}
