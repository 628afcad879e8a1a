//! `calib train`: SGD training of a model on an image classification data set, with
//! evaluation each epoch, JSON-lines metrics, atomic checkpoints and exact resume.
//! A run stops rather than keep a state that diverged, keeps its last few checkpoints
//! to roll back to, and holds its run directory against a second trainer.

pub mod checkpoint;
pub mod divergence;
pub mod evaluate;
pub mod generations;
mod init;
pub mod launch;
mod lookahead;
mod metrics;
mod options;
mod replicas;
mod run_dir;
mod run_lock;
pub mod schedule;
mod sgd_state;
mod trainer;

pub use evaluate::{Evaluation, Evaluator};
pub use init::{init_state, read_weights, start_from, CLASSIFIER};
pub use launch::{Launch, ProcessGroup};
pub use options::{OptionNames, TrainOptions};
pub use replicas::MAX_HOST_REPLICAS;
pub use run_lock::LOCK_FILE;
pub use schedule::{Schedule, ScheduleKind};
pub use sgd_state::{carry, rounded_copy, SgdState, STEP_FETCH};
pub use trainer::{train, train_in_group, EpochResult, Start};
