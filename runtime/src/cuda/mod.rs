//! NVIDIA GPUs through cudarc, loaded at run time.
//!
//! cudarc panics on its first call when `libcuda.so` is missing, so every entry point
//! here asks [`driver_present`] first and turns absence into [`CudaError::NoDriver`]:
//! on a machine without a GPU calib says why, and the CPU backends work as before.

pub mod cubin;
mod device;
mod executor;
pub mod modules;
mod nccl;
mod staging;
mod timing;
mod upload;

pub use device::{devices, DeviceInfo};
pub use executor::{check_device_memory, CudaOptions, CudaProgram};
pub use modules::{LoadStats, LoadedKernels};
pub use nccl::{NcclGroup, NcclRank, UNIQUE_ID_BYTES};

use thiserror::Error;

/// Why the CUDA backend cannot run here.
#[derive(Debug, Error)]
pub enum CudaError {
    #[error(
        "no NVIDIA driver: libcuda.so could not be loaded (install the NVIDIA driver, or use \
         --backend reference or sim)"
    )]
    NoDriver,
    #[error("the NVIDIA driver reports no GPU (is CUDA_VISIBLE_DEVICES empty?)")]
    NoDevice,
    #[error(
        "NCCL could not be loaded: no libnccl.so on the library path (the nvidia-nccl-cu12/13 \
         wheel ships libnccl.so.2 only: link it as libnccl.so in a directory on \
         LD_LIBRARY_PATH, as scripts/gpu-check.sh does)"
    )]
    NoNccl,
    #[error("CUDA driver error {context}: {message}")]
    Driver { context: String, message: String },
    /// A plan the GPU has no room for, refused before allocating (the message has the
    /// figures).
    #[error("{0}")]
    OutOfMemory(String),
}

/// Whether the CUDA driver library can be loaded; no other cudarc call is safe before.
pub fn driver_present() -> bool {
    // SAFETY: only tries to dlopen libcuda; it makes no driver call.
    unsafe { cudarc::driver::sys::is_culib_present() }
}

/// Whether NCCL (for multi-GPU all-reduce) can be loaded.
pub fn nccl_present() -> bool {
    // SAFETY: only tries to dlopen libnccl.
    unsafe { cudarc::nccl::sys::is_culib_present() }
}

pub(crate) fn driver_error(context: &str, e: impl std::fmt::Debug) -> CudaError {
    CudaError::Driver {
        context: context.to_string(),
        message: format!("{e:?}"),
    }
}
