//! Graph-to-graph passes over calib's IR.
//!
//! * [`prune`] / [`retain`]: dead-value elimination; [`cse`]: merging repeated nodes.
//! * [`inline`]: appending one graph to another with its sources bound by name.
//! * [`grad`] / [`vjp`]: reverse-mode autodiff, emitting the backward pass as plain IR.
//! * [`train_step`]: forward + softmax cross-entropy + backward + SGD as one graph.
//! * [`fusion`]: equality saturation (egg) from a graph to a plan of fused kernels.
//! * [`precision::apply`]: the precision policy (tf32, bf16) as round-trip casts.
//! * [`data_parallel_step`]: the same step for one replica of a data-parallel group,
//!   gradients averaged by bucketed `all_reduce` nodes.
//!
//! Every pass takes a graph by reference and returns a new one; none panics on a
//! malformed graph.

mod arena;
mod autodiff;
mod cse;
mod data_parallel;
mod emit;
mod error;
pub mod fusion;
mod inline;
pub mod precision;
mod prune;
mod renumber;
mod train_step;

pub use arena::{all_reduce_windows, plan_arena, AllReduceWindow, ArenaPlan, ALIGN};
pub use autodiff::{grad, vjp};
pub use cse::cse;
pub use data_parallel::{data_parallel_step, Bucket, DataParallel, DataParallelStep};
pub use error::{PassError, Result};
pub use inline::inline;
pub use prune::{prune, retain, PruneOptions};
pub use renumber::Renumbering;
pub use train_step::{
    momentum_name, train_step, with_loss, Sgd, TrainConfig, TrainStep, LABELS, LOSS, LR,
};
