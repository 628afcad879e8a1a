//! A kernel plan ready for a device: each kernel's PTX and launch geometry, and where
//! every buffer sits in one arena. Code generation and memory planning produce it; the
//! `cuda` executor (and any other device executor) only loads and launches.

use crate::{Bindings, HostTensor, RuntimeError};
use calib_ir::{BufferId, Program, Role};

/// One launch: a PTX module with one `.entry`, and its configuration.
#[derive(Clone, Debug, PartialEq)]
pub struct DeviceKernel {
    /// The entry name.
    pub name: String,
    pub ptx: String,
    pub grid: [u32; 3],
    pub block: [u32; 3],
    pub shared_bytes: u32,
    /// The `.param .u64` arguments in order: the buffer whose address each one gets.
    pub params: Vec<BufferId>,
}

/// A whole program for a device.
#[derive(Clone, Debug, PartialEq)]
pub struct DeviceProgram {
    /// Buffers, kernels in order (their bodies are for reports), outputs.
    pub program: Program,
    pub kernels: Vec<DeviceKernel>,
    /// Byte offset of every buffer in the arena, indexed like `program.buffers`.
    pub offsets: Vec<usize>,
    pub arena_bytes: usize,
}

impl DeviceProgram {
    /// The bound tensor of every input and param buffer, checked against its type.
    pub fn bound_tensors<'a>(
        &self,
        bindings: &Bindings<'a>,
    ) -> Result<Vec<(BufferId, &'a HostTensor)>, RuntimeError> {
        let mut out = vec![];
        for (i, buf) in self.program.buffers.iter().enumerate() {
            let (kind, tensor) = match buf.role {
                Role::Input => ("input", bindings.get_input(&buf.name)),
                Role::Param => ("param", bindings.get_param(&buf.name)),
                Role::Output | Role::Temp => continue,
            };
            let tensor = tensor.ok_or_else(|| RuntimeError::Unbound {
                kind,
                name: buf.name.clone(),
                expected: buf.ty.clone(),
            })?;
            if tensor.ty() != buf.ty {
                return Err(RuntimeError::BindingType {
                    kind,
                    name: buf.name.clone(),
                    expected: buf.ty.clone(),
                    found: tensor.ty(),
                });
            }
            out.push((BufferId(i), tensor));
        }
        Ok(out)
    }
}
