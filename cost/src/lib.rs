//! calib's cost model: how long a kernel launch takes on a GPU.
//!
//! ```text
//!  codegen ──► Launch { blocks, threads, registers, shared, Census, unique bytes }
//!  planner ──►   (estimated for kernels not yet written)           │
//!                                                                  ▼
//!  Device { SMs, occupancy limits, bandwidth, Timing } ──► predict ──► seconds, bound
//!                           ▲
//!                fit ◄── measured launches (per-kernel timing tables)
//! ```
//!
//! The model prices the kernels code generation really emits: their dynamic instruction
//! mix per thread ([`Census`]), their occupancy and waves on the device's SMs, the
//! latency of a warp's critical path when few warps share an SM, and the bytes they move
//! through L2 and device memory ([`model`]). Device descriptions are data files whose
//! timing coefficients are fitted to measured kernels ([`fit`]); each names the
//! measurements it was fitted to.

pub mod census;
pub mod data;
pub mod device;
pub mod fit;
pub mod launch;
pub mod model;

pub use census::{Census, InstructionMix};
pub use device::{Device, DeviceError, Timing};
pub use launch::Launch;
pub use model::{blocks_per_sm, predict, Bound, Prediction};
