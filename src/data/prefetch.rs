//! Training batches built ahead of the step: a producer thread walks the run's steps in
//! order (the epoch's shuffled order, the step's draws) and hands finished batches over a
//! bounded queue, so decoding and augmenting overlap the training step while memory
//! stays at `depth` batches. The batches are exactly those the trainer would build
//! itself, in the same order: only when they are made changes. In a group of processes
//! each one makes only its own shard of every batch.

use super::dataset::{epoch_order, Batch, Dataset, Draw};
use super::digest::{batch_digest, sharded_digest};
use anyhow::{anyhow, Result};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::Arc;
use std::thread::JoinHandle;

/// Which batches a run takes: steps `start..end` of `steps_per_epoch` each.
#[derive(Clone, Copy, Debug)]
pub struct Plan {
    pub seed: u64,
    pub batch: usize,
    pub steps_per_epoch: u64,
    pub start: u64,
    pub end: u64,
    /// Training augmentation (otherwise the evaluation transform).
    pub augment: bool,
    /// The data-parallel replicas each batch is split among (in rank order).
    pub replicas: usize,
    /// In a group of processes, this process's rank: only its shard is made.
    pub rank: Option<usize>,
}

impl Plan {
    /// The rows of a global batch this loader makes: all of them, or its rank's shard.
    fn rows(&self) -> std::ops::Range<usize> {
        match self.rank {
            Some(r) => {
                let per = self.batch / self.replicas.max(1);
                r * per..(r + 1) * per
            }
            None => 0..self.batch,
        }
    }
}

/// A batch as the loader made it (in a group of processes, this rank's shard), with its
/// digest (`data::digest`), computed on the loader's thread: the global batch's, its
/// shards' digests chained; or the rank's shard's, which the group chains.
pub struct Prefetched {
    pub batch: Batch,
    pub digest: u64,
    /// Files the data set had found unreadable once this batch was made: those of the
    /// run's batches up to this one (batches are made in step order), whatever the
    /// loader has made since.
    pub skipped: usize,
}

/// Hands out the batches of a [`Plan`] in step order.
pub struct Prefetcher {
    queue: Option<Receiver<Result<Prefetched>>>,
    stop: Arc<AtomicBool>,
    producer: Option<JoinHandle<()>>,
}

impl Prefetcher {
    /// Starts making the plan's batches, at most `depth` ahead of the reader.
    pub fn start(data: Arc<dyn Dataset>, plan: Plan, depth: usize) -> Result<Self> {
        let (tx, rx) = sync_channel(depth.max(1));
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let producer = std::thread::Builder::new()
            .name("calib-prefetch".into())
            .spawn(move || {
                let mut order: Option<(u64, Vec<usize>)> = None;
                for step in plan.start..plan.end {
                    if stopped.load(Ordering::Relaxed) {
                        return;
                    }
                    let epoch = step / plan.steps_per_epoch;
                    if order.as_ref().map(|(e, _)| *e) != Some(epoch) {
                        order = Some((epoch, epoch_order(plan.seed, epoch, data.len())));
                    }
                    let pos = (step % plan.steps_per_epoch) as usize;
                    let all = &order.as_ref().expect("set above").1;
                    let indices = &all[pos * plan.batch..(pos + 1) * plan.batch];
                    let draw = plan.augment.then_some(Draw {
                        seed: plan.seed,
                        epoch,
                        step,
                    });
                    let batch = match plan.rank {
                        Some(_) => data.shard(indices, draw, plan.rows()),
                        None => data.batch(indices, draw),
                    };
                    let batch = batch.map(|batch| Prefetched {
                        digest: match plan.rank {
                            Some(_) => batch_digest(&batch.pixels, &batch.labels),
                            None => sharded_digest(&batch.pixels, &batch.labels, plan.replicas),
                        },
                        skipped: data.skipped(),
                        batch,
                    });
                    let failed = batch.is_err();
                    // A reader that has gone away wants no more batches.
                    if tx.send(batch).is_err() || failed {
                        return;
                    }
                }
            })
            .map_err(|e| anyhow!("cannot start the data loader thread: {e}"))?;
        Ok(Prefetcher {
            queue: Some(rx),
            stop,
            producer: Some(producer),
        })
    }

    /// The next step's batch (waiting for it if it is not ready).
    pub fn next_batch(&mut self) -> Result<Prefetched> {
        let queue = self.queue.as_ref().expect("present until drop");
        match queue.recv() {
            Ok(batch) => batch,
            Err(_) => Err(anyhow!(
                "the data loader stopped before the run's last step (its thread failed)"
            )),
        }
    }
}

impl Drop for Prefetcher {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Dropping the queue fails the producer's pending send, so it returns at once.
        self.queue.take();
        if let Some(producer) = self.producer.take() {
            let _ = producer.join();
        }
    }
}
