//! The per-replica training step of data-parallel SGD, with PyTorch DDP's semantics.
//!
//! `R` replicas hold identical parameters and momentum, and each runs the same step
//! graph on its own shard of the global batch. The graph is the single-process step
//! ([`train_step`](crate::train_step)) of the per-replica forward graph with one
//! addition: between the backward pass and the update, the gradients are averaged over
//! the group by `all_reduce(mean)` nodes, a few gradients to a node (see `buckets.rs`).
//! Identical parameters, momentum and averaged gradients give identical updates, so
//! the replicas stay in step without ever exchanging parameters.
//!
//! BatchNorm follows the forward graph. By default (DDP's) each replica normalizes with
//! its own shard's statistics and computes its own new running statistics; DDP's
//! `broadcast_buffers=True` then copies rank 0's buffers to every replica before the
//! next forward pass, so the running statistics that survive a step are rank 0's, and
//! callers keep exactly those. A forward graph built with
//! [`GraphBuilder::with_sync_bn`](calib_ir::GraphBuilder::with_sync_bn) all-reduces
//! its batch statistics itself (PyTorch's `SyncBatchNorm`), and then every replica
//! computes the same buffers.
//!
//! The loss and logits outputs are the replica's own (the mean loss over its shard).

mod buckets;
mod overlap;

pub use buckets::Bucket;

use crate::train_step::train_step_with;
use crate::{PassError, Result, TrainConfig, TrainStep};
use calib_ir::{Graph, Op};

/// How a step is shared across replicas.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DataParallel {
    /// The number of replicas (the world size); 1 gives the single-process step plus
    /// all-reduces that are identities.
    pub replicas: usize,
    /// Gradients are all-reduced in buckets of at most this many bytes; a gradient
    /// larger than that has a bucket of its own.
    pub bucket_bytes: usize,
}

impl DataParallel {
    /// PyTorch DDP's `bucket_cap_mb=25`.
    pub const DEFAULT_BUCKET_BYTES: usize = 25 << 20;

    /// `replicas` replicas with DDP's default bucket size.
    pub fn new(replicas: usize) -> Self {
        DataParallel {
            replicas,
            bucket_bytes: Self::DEFAULT_BUCKET_BYTES,
        }
    }
}

/// A per-replica step graph and how it groups the gradients.
#[derive(Clone, Debug, PartialEq)]
pub struct DataParallelStep {
    /// The step graph, with the interface of [`train_step`](crate::train_step)'s.
    pub step: TrainStep,
    /// One per gradient `all_reduce`, in the order the backward pass completes them.
    pub buckets: Vec<Bucket>,
}

/// The per-replica training step of the train-mode `forward` graph (built for one
/// replica's shard of the batch) in a group of `dp.replicas` (see the module docs).
/// Collectives already in `forward` (synchronized BatchNorm) must be for that group.
pub fn data_parallel_step(
    forward: &Graph,
    config: &TrainConfig,
    dp: &DataParallel,
) -> Result<DataParallelStep> {
    if dp.replicas == 0 {
        return Err(PassError::DataParallel(
            "a group needs at least one replica".into(),
        ));
    }
    if let Some(other) = forward.nodes.iter().find_map(|n| match n.op {
        Op::AllReduce { replicas, .. } if replicas != dp.replicas => Some(replicas),
        _ => None,
    }) {
        return Err(PassError::DataParallel(format!(
            "the forward graph all-reduces across {other} replicas, the step is for {}",
            dp.replicas
        )));
    }
    let mut plan = vec![];
    let step = train_step_with(forward, config, |graph, grads| {
        plan = buckets::plan(graph, grads, dp.bucket_bytes)?;
        buckets::all_reduce(graph, grads, &plan, dp.replicas)
    })?;
    let step = TrainStep {
        graph: overlap::issue_early(&step.graph),
        ..step
    };
    Ok(DataParallelStep {
        step,
        buckets: plan,
    })
}
