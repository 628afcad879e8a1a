//! Discovering GPUs (`calib devices`).

use super::{driver_error, driver_present, CudaError};
use cudarc::driver::CudaContext;
use serde::Serialize;

/// One GPU as the driver describes it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DeviceInfo {
    pub ordinal: usize,
    pub name: String,
    /// `(major, minor)`, e.g. `(9, 0)` for an H100.
    pub compute_capability: (i32, i32),
    pub total_memory_bytes: usize,
}

/// Every GPU the driver exposes, or why there are none.
pub fn devices() -> Result<Vec<DeviceInfo>, CudaError> {
    if !driver_present() {
        return Err(CudaError::NoDriver);
    }
    let count = CudaContext::device_count().map_err(|e| driver_error("counting devices", e))?;
    if count <= 0 {
        return Err(CudaError::NoDevice);
    }
    (0..count as usize)
        .map(|ordinal| {
            let ctx = CudaContext::new(ordinal)
                .map_err(|e| driver_error(&format!("opening GPU {ordinal}"), e))?;
            Ok(DeviceInfo {
                ordinal,
                name: ctx
                    .name()
                    .map_err(|e| driver_error("reading the name", e))?,
                compute_capability: ctx
                    .compute_capability()
                    .map_err(|e| driver_error("reading the compute capability", e))?,
                total_memory_bytes: ctx
                    .total_mem()
                    .map_err(|e| driver_error("reading the memory size", e))?,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_a_driver_the_answer_is_an_error_not_a_panic() {
        match devices() {
            Ok(list) => assert!(!list.is_empty(), "Ok means at least one GPU"),
            Err(CudaError::NoDriver) => assert!(!driver_present()),
            Err(e) => assert!(!e.to_string().is_empty()),
        }
    }
}
