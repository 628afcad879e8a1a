//! Runs a [`DeviceProgram`] on one GPU: PTX loaded once, one arena allocation, launches
//! in order on one stream, inputs uploaded and outputs downloaded per run.

use super::{driver_error, driver_present, CudaError};
use crate::{Bindings, DeviceProgram, HostTensor, Outputs, RuntimeError};
use cudarc::driver::{
    CudaContext, CudaFunction, CudaSlice, CudaStream, DevicePtr, LaunchConfig, PushKernelArg,
};
use cudarc::nvrtc::Ptx;
use std::sync::Arc;

/// A program loaded on a GPU.
pub struct CudaProgram {
    stream: Arc<CudaStream>,
    functions: Vec<CudaFunction>,
    arena: CudaSlice<u8>,
    plan: DeviceProgram,
}

impl CudaProgram {
    /// Loads every kernel's PTX on GPU `ordinal` (the driver JIT-compiles it for the
    /// device) and allocates the arena.
    pub fn load(ordinal: usize, plan: DeviceProgram) -> Result<Self, CudaError> {
        if !driver_present() {
            return Err(CudaError::NoDriver);
        }
        let ctx = CudaContext::new(ordinal)
            .map_err(|e| driver_error(&format!("opening GPU {ordinal}"), e))?;
        let stream = ctx.default_stream();
        let functions = plan
            .kernels
            .iter()
            .map(|k| {
                let module = ctx.load_module(Ptx::from_src(k.ptx.clone())).map_err(|e| {
                    driver_error(&format!("loading the PTX of kernel {}", k.name), e)
                })?;
                module
                    .load_function(&k.name)
                    .map_err(|e| driver_error(&format!("finding entry {}", k.name), e))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let arena = stream
            .alloc_zeros::<u8>(plan.arena_bytes.max(1))
            .map_err(|e| {
                driver_error(&format!("allocating a {} byte arena", plan.arena_bytes), e)
            })?;
        Ok(CudaProgram {
            stream,
            functions,
            arena,
            plan,
        })
    }

    /// Bytes of device memory the program holds.
    pub fn arena_bytes(&self) -> usize {
        self.plan.arena_bytes
    }

    /// Uploads the bound inputs and params, launches every kernel, and downloads the
    /// program outputs.
    pub fn run(&mut self, bindings: &Bindings) -> Result<Outputs, RuntimeError> {
        let fail = |context: &str, e: cudarc::driver::DriverError| {
            RuntimeError::Device(driver_error(context, e).to_string())
        };
        for (id, tensor) in self.plan.bound_tensors(bindings)? {
            let start = self.plan.offsets[id.0];
            let bytes = tensor.to_le_bytes();
            let mut view = self.arena.slice_mut(start..start + bytes.len());
            self.stream
                .memcpy_htod(&bytes, &mut view)
                .map_err(|e| fail("uploading", e))?;
        }
        let base = {
            let (ptr, _sync) = self.arena.device_ptr(&self.stream);
            ptr
        };
        for (kernel, function) in self.plan.kernels.iter().zip(&self.functions) {
            let addresses: Vec<u64> = kernel
                .params
                .iter()
                .map(|b| base + self.plan.offsets[b.0] as u64)
                .collect();
            let mut launch = self.stream.launch_builder(function);
            for a in &addresses {
                launch.arg(a);
            }
            let config = LaunchConfig {
                grid_dim: (kernel.grid[0], kernel.grid[1], kernel.grid[2]),
                block_dim: (kernel.block[0], kernel.block[1], kernel.block[2]),
                shared_mem_bytes: kernel.shared_bytes,
            };
            // SAFETY: every parameter is the address of a buffer inside the arena, sized
            // by the plan for the kernel's static shapes; codegen's PTX reads and writes
            // only within those buffers (checked on the simulator in CI).
            unsafe { launch.launch(config) }
                .map_err(|e| fail(&format!("launching {}", kernel.name), e))?;
        }
        let mut outputs = Outputs::new();
        for o in &self.plan.program.outputs {
            let buf = &self.plan.program.buffers[o.buffer.0];
            let start = self.plan.offsets[o.buffer.0];
            let view = self.arena.slice(start..start + buf.ty.size_bytes());
            let bytes = self
                .stream
                .clone_dtoh(&view)
                .map_err(|e| fail("downloading", e))?;
            let tensor = HostTensor::from_le_bytes(&buf.ty, &bytes)
                .map_err(|e| RuntimeError::Device(e.to_string()))?;
            outputs.insert(o.name.clone(), tensor);
        }
        self.stream
            .synchronize()
            .map_err(|e| fail("synchronizing", e))?;
        Ok(outputs)
    }
}
