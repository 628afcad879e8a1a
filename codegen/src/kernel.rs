//! What code generation hands to a runtime: per kernel, a PTX module and everything
//! needed to launch it.

use crate::ptx;
use calib_ir::BufferId;
use serde::Serialize;

/// How a kernel reads or writes the buffer behind one of its parameters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ParamRole {
    Read,
    Write,
}

/// One `.param .u64` of an entry: the device address of a whole program buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Param {
    pub buffer: BufferId,
    pub role: ParamRole,
}

/// The loop structure a kernel was emitted with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Family {
    /// One thread per output element (pointwise bodies, pooling, resizing, and any body
    /// without a specialized anchor).
    Pointwise,
    /// One warp or block per reduced element, combining through shuffles and shared
    /// memory.
    Reduction,
    /// A tiled GEMM with shared-memory tiles: convolutions as implicit GEMMs, matmul.
    Gemm,
}

impl Family {
    pub fn name(self) -> &'static str {
        match self {
            Family::Pointwise => "pointwise",
            Family::Reduction => "reduction",
            Family::Gemm => "gemm",
        }
    }
}

/// One kernel of a plan as PTX, with its launch configuration.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CompiledKernel {
    /// The entry name, equal to the plan's kernel name.
    pub name: String,
    /// A standalone module (`.version`, `.target`, one `.entry`), headed by comments
    /// naming the IR nodes it implements.
    pub ptx: String,
    pub family: Family,
    pub grid: [u32; 3],
    pub block: [u32; 3],
    /// Dynamic shared memory to launch with, in bytes.
    pub shared_bytes: usize,
    /// Entry parameters in order.
    pub params: Vec<Param>,
}

/// Every kernel of a plan, in launch order.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct CompiledProgram {
    pub kernels: Vec<CompiledKernel>,
}

impl CompiledProgram {
    /// All kernels in one PTX module.
    pub fn module(&self) -> String {
        ptx::join_modules(self.kernels.iter().map(|k| k.ptx.as_str()))
    }
}

/// The launch shape a family chose: a one-dimensional grid of one-dimensional blocks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Geometry {
    pub blocks: usize,
    pub threads: usize,
    /// Dynamic shared memory in bytes.
    pub shared_bytes: usize,
}
