//! Sessions: one graph run step after step with its state kept where the executor
//! computes, so that a training step moves only the batch in and the figures the trainer
//! reports out.
//!
//! A [`Carry`] says which outputs of a step become which inputs or params of the next
//! (param `p` <- output `p`, input `momentum.p` <- output `momentum.p`, BatchNorm
//! buffers). [`Session::load`] puts the state in place once; each [`Session::step`]
//! binds only what changes per step (input, labels, learning rate), fetches only the
//! named outputs, and moves the carried outputs into their inputs where they are (on a
//! GPU: device-to-device copies on the step's stream). [`Session::read`] brings state
//! back for checkpoints and evaluation. [`Session::transfers`] counts the bytes that
//! crossed, so tests can hold an executor to that contract. [`Session::step_and_stage`]
//! also hands over the next step's batch before waiting for the current step, so a GPU
//! copies it while the step computes (`staging.rs`).
//!
//! [`HostSession`] serves any [`Backend`](crate::Backend) by running the whole graph per
//! step on host tensors (the reference interpreter's case: its "device" is the host);
//! [`ResidentSession`] keeps the state in a device program's buffers (the simulator and
//! CUDA), and is the same code for both, so the simulator's tests cover the GPU's
//! bookkeeping.

mod carry;
mod host;
mod resident;
mod staging;

pub use carry::{Carried, Carry};
pub use host::HostSession;
pub use resident::{BufferCopy, ResidentProgram, ResidentSession};
pub use staging::CopyTimes;

use crate::{Bindings, DeviceProgram, Outputs, RuntimeError, TensorMap};
use std::ops::Sub;

/// Bytes moved between the host and a session's executor for the session's values
/// (state, batch, fetched outputs) since the session began. All-reduces staged through
/// the host are the replica group's traffic, not counted here.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Transfers {
    pub uploaded_bytes: u64,
    pub downloaded_bytes: u64,
}

impl Sub for Transfers {
    type Output = Transfers;

    fn sub(self, earlier: Transfers) -> Transfers {
        Transfers {
            uploaded_bytes: self.uploaded_bytes - earlier.uploaded_bytes,
            downloaded_bytes: self.downloaded_bytes - earlier.downloaded_bytes,
        }
    }
}

/// A graph bound to an executor for a run of steps, its state kept between them.
///
/// After a failed step the state is unspecified: [`Session::load`] it again.
pub trait Session: Send {
    /// Puts `state` in place: every tensor named like an input or param of the graph
    /// (others are ignored, as [`Bindings::params`] ignores them). It stays until a
    /// carry or another `load` replaces it.
    fn load(&mut self, state: &TensorMap) -> Result<(), RuntimeError>;

    /// Runs one step. `batch` binds what changes per step (and the replica's
    /// collective); every other input and param must have been loaded or carried. Its
    /// tensors serve this step only. Returns the outputs named in `fetch`, then moves
    /// every carried output into its input or param.
    /// A batch staged by the step before ([`Session::step_and_stage`]) binds this step
    /// as if `batch` had bound it; `batch` must not bind those names again.
    fn step(&mut self, batch: &Bindings, fetch: &[&str]) -> Result<Outputs, RuntimeError>;

    /// [`Session::step`], also handing over `next`, the inputs and params of the step
    /// after this one, once this step's work is under way and before its results are
    /// waited for: an executor with asynchronous copies (cuda) copies `next` to the
    /// device while this step computes. This step never sees `next`; the next step reads
    /// it as if its own batch bound it (see `staging.rs`). `next`'s collective, if any,
    /// is ignored: a step's group comes with its own batch.
    fn step_and_stage(
        &mut self,
        batch: &Bindings,
        fetch: &[&str],
        next: &Bindings,
    ) -> Result<Outputs, RuntimeError>;

    /// How long staged batches took to copy to the device, and how much of that the
    /// steps did not hide; only executors that time their copies (cuda) know.
    fn copy_times(&self) -> Option<CopyTimes> {
        None
    }

    /// The current values of loaded or carried inputs and params, by name.
    fn read(&mut self, names: &[&str]) -> Result<TensorMap, RuntimeError>;

    /// Bytes moved so far.
    fn transfers(&self) -> Transfers;

    /// Runs one step as [`Session::step`] does, with a timer around every launch;
    /// returns each launch's time in microseconds, in program order. Only executors
    /// with per-launch timers (CUDA events) can.
    fn time_launches(&mut self, batch: &Bindings) -> Result<Vec<f64>, RuntimeError> {
        let _ = batch;
        Err(RuntimeError::Device(
            "per-launch timing needs a GPU executor (the cuda backend)".into(),
        ))
    }

    /// The device program the session runs, where there is one (device backends): what
    /// [`Session::time_launches`]'s times are in the order of.
    fn plan(&self) -> Option<&DeviceProgram> {
        None
    }

    /// What the executor wants reported about the session (the cuda backend: how its
    /// kernels were loaded); `null` when nothing.
    fn stats(&self) -> serde_json::Value {
        serde_json::Value::Null
    }
}

/// `name` in `fetch` must be an output: the error for one that is not.
fn not_an_output(name: &str) -> RuntimeError {
    RuntimeError::Session(format!(
        "cannot fetch `{name}`: the graph has no output of that name"
    ))
}
