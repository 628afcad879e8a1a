//! calib: a graph compiler and training runtime for convolutional networks.
//!
//! This facade re-exports the workspace crates and holds what the `calib` command line
//! needs on top of them: resolving model arguments, verifying fixtures, and data sets.
//!
//! * [`ir`] — the typed tensor IR and its builder.
//! * [`models`] — SCNet, SCConv, SCBottleneck, ResNet-50, with PyTorch names.
//! * [`passes`] — graph transformations.
//! * [`codegen`] — PTX for every kernel of a plan.
//! * [`runtime`] — tensors, safetensors weights, the reference interpreter, the PTX
//!   simulator.
//! * [`report`] — `calib report`: a compile output as one HTML page.
//! * [`Sim`] — the `sim` backend: fusion, code generation and the simulator together.

pub use calib_codegen as codegen;
pub use calib_ir as ir;
pub use calib_models as models;
pub use calib_passes as passes;
pub use calib_runtime as runtime;

mod backends;
pub mod cuda;
pub mod data;
pub mod device;
pub mod differential;
pub mod kernel_times;
pub mod predict;
pub mod ptx_report;
pub mod report;
mod resolve;
pub mod schedules;
pub mod sim;
pub mod train;
pub mod verify;

pub use backends::{backend, backend_with, BackendOptions, BACKENDS};
pub use cuda::Cuda;
pub use resolve::{resolve_model, with_batch, ModelSource};
pub use sim::Sim;
