//! calib's executors.
//!
//! * [`HostTensor`]: a tensor in host memory, held in `f32`, `f64` or `i64`.
//! * [`weights`]: safetensors checkpoints keyed by PyTorch `state_dict` names, and
//!   PyTorch's own `.pth` checkpoints imported by [`weights::pth`].
//! * [`reference`](mod@reference): the reference interpreter, the numerics every other backend is
//!   judged against. It runs in `f32` (the product) or `f64` (for gradient checks).
//!
//! * [`collective`]: the data-parallel group a replica's `all_reduce` nodes talk to.
//! * [`memory`]: what a run needs at its peak, checked against what the machine has
//!   before any executor allocates.
//!
//! Every executor implements [`Backend`]: bind inputs and parameters by name, get every
//! graph output back by name; or open a [`Session`] that keeps a graph's state where the
//! executor computes, step after step.

mod atomic_file;
mod bindings;
mod bytes;
pub mod collective;
pub mod cuda;
mod device_program;
mod element;
mod error;
mod finite;
pub mod memory;
pub mod reference;
pub mod session;
pub mod sim;
pub mod sim_backend;
mod tensor;
pub mod weights;

pub use atomic_file::write_atomic;
pub use bindings::Bindings;
pub use collective::{
    Collective, CollectiveError, InProcess, Rendezvous, RendezvousError, TcpGroup,
};
pub use device_program::{
    Action, ArenaCopy, DeviceAllReduce, DeviceKernel, DeviceProgram, LaunchInfo,
};
pub use element::{Element, Float, Mat, MatMut};
pub use error::{OpError, RuntimeError};
pub use finite::Finiteness;
pub use session::{Carry, Session, Transfers};
pub use sim_backend::{SimProgram, SimResident};
pub use tensor::{round_tf32_f64, HostTensor, Precision, Storage, TensorError};
pub use weights::{check_state, TensorMap, WeightsError, WeightsMismatch};

use calib_ir::Graph;
use std::collections::HashMap;

/// Graph results by output name.
pub type Outputs = HashMap<String, HostTensor>;

/// Something that executes graphs.
pub trait Backend: Sync {
    /// A short name for reports and command lines (`reference`).
    fn name(&self) -> &str;
    /// Runs `graph` on `bindings` and returns every graph output by name.
    fn run(&self, graph: &Graph, bindings: &Bindings) -> Result<Outputs, RuntimeError>;
    /// How many devices the backend can give data-parallel replicas, one each; `None`
    /// for a backend that computes on the host (its replicas are threads).
    fn devices(&self) -> Option<usize> {
        None
    }
    /// A [`Session`] running `graph` step after step, moving outputs into inputs as
    /// `carry` says. `replica` is the session's rank in its data-parallel group (0
    /// without one): device backends place it on that replica's device. The default
    /// runs every step through [`Backend::run`] on host tensors.
    fn session<'a>(
        &'a self,
        graph: &Graph,
        carry: &Carry,
        replica: usize,
    ) -> Result<Box<dyn Session + 'a>, RuntimeError> {
        Ok(Box::new(session::HostSession::new(
            self, graph, carry, replica,
        )?))
    }

    /// Refuses `graph` when `replicas` copies of it running at once (data-parallel
    /// replicas, each with its own inputs, params and values) would hold more memory
    /// than the place they run in has (host memory, a GPU's), saying both figures.
    /// Callers check before they make a batch; sessions and runs check again before
    /// they allocate. The default is the reference interpreter's peak in f32 against
    /// host memory.
    fn check_memory(&self, graph: &Graph, replicas: usize) -> Result<(), RuntimeError> {
        let what = format!("{} running the graph", self.name());
        let footprint = reference::footprint(graph, Precision::F32);
        memory::check_host(&footprint.with_sources(&what, replicas))
    }
}

/// The reference interpreter as a [`Backend`], computing floats in `precision`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Reference {
    pub precision: Precision,
    /// Fail at the first op that creates a non-finite value, naming it
    /// ([`reference::run_checking_finite`]).
    pub check_finite: bool,
}

impl Reference {
    /// The `f32` interpreter.
    pub fn new() -> Self {
        Self::default()
    }

    /// The `f64` interpreter (parameters and inputs are widened on the way in).
    pub fn f64() -> Self {
        Reference {
            precision: Precision::F64,
            ..Self::default()
        }
    }

    /// This interpreter with the finite check on: slower, for finding where a
    /// diverging run first made a NaN or an infinity.
    pub fn checking_finite(self) -> Self {
        Reference {
            check_finite: true,
            ..self
        }
    }
}

impl Backend for Reference {
    fn name(&self) -> &str {
        "reference"
    }

    fn run(&self, graph: &Graph, bindings: &Bindings) -> Result<Outputs, RuntimeError> {
        if self.check_finite {
            reference::run_checking_finite(graph, bindings, self.precision)
        } else {
            reference::run_with(graph, bindings, self.precision)
        }
    }

    fn check_memory(&self, graph: &Graph, replicas: usize) -> Result<(), RuntimeError> {
        let what = "the reference interpreter running the graph";
        let footprint = reference::footprint(graph, self.precision);
        memory::check_host(&footprint.with_sources(what, replicas))
    }
}
