//! What code generation hands to a runtime: per kernel, a PTX module and everything
//! needed to launch it.

use crate::ptx::{self, InstructionMix};
use calib_ir::BufferId;
use serde::Serialize;
use std::collections::HashMap;

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

/// The most threads a block of any family has: index arithmetic relies on the thread
/// index staying below it.
pub(crate) const MAX_THREADS: usize = 256;

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

/// One launch of a plan kernel as PTX, with its launch configuration.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CompiledKernel {
    /// The entry name: the plan kernel's name for its first launch, `<kernel>_part<i>`
    /// for later ones.
    pub name: String,
    /// The plan kernel this launch belongs to.
    pub kernel: String,
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
    /// What one thread executes (dynamic instruction counts), for the cost model.
    pub mix: InstructionMix,
    /// What one thread of the last block executes after every block is done, where that
    /// block combines a split reduction's slices (`serial_combine.rs`): priced as a
    /// one-block launch that follows the others.
    pub tail: Option<InstructionMix>,
    /// Bytes of the buffers the launch reads or writes, each counted once.
    pub unique_bytes: f64,
    /// The GEMM schedule a GEMM launch was emitted with.
    pub gemm: Option<calib_ir::GemmSchedule>,
}

impl CompiledKernel {
    /// The launch as the cost model sees it, with `registers` per thread (ptxas's
    /// figure, or [`CompiledKernel::estimated_registers`]).
    pub fn launch(&self, registers: u32) -> calib_cost::Launch {
        calib_cost::Launch {
            blocks: self.grid.iter().map(|&g| g as u64).product(),
            threads: self.block.iter().product(),
            shared_bytes: self.shared_bytes as u32,
            registers,
            census: calib_cost::Census::of(&self.mix),
            tail: self.tail.as_ref().map(calib_cost::Census::of),
            unique_bytes: self.unique_bytes,
        }
    }

    /// Registers per thread ptxas is likely to use, for predictions made without
    /// running it: GEMM threads hold their accumulator tile and its operands, other
    /// families a few dozen values.
    pub fn estimated_registers(&self) -> u32 {
        match (self.family, self.gemm) {
            (Family::Gemm, Some(s)) => s.estimated_registers(),
            (Family::Gemm, None) => 64,
            (Family::Reduction | Family::Pointwise, _) => 32,
        }
    }
}

/// Every launch of a plan, in order.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct CompiledProgram {
    pub kernels: Vec<CompiledKernel>,
}

impl CompiledProgram {
    /// All kernels in one PTX module.
    pub fn module(&self) -> String {
        ptx::join_modules(self.kernels.iter().map(|k| k.ptx.as_str()))
    }

    /// One module holding each distinct kernel once, and for every kernel the name of
    /// the entry in it with the same code. Kernels that differ only in name and header
    /// comments (a layer repeated with the same shapes) assemble identically, so tools
    /// like ptxas need to see one of them.
    pub fn distinct_module(&self) -> (String, Vec<String>) {
        let mut first: HashMap<String, String> = HashMap::new();
        let mut kept = vec![];
        let representatives = self
            .kernels
            .iter()
            .map(|k| {
                let code: String = k
                    .ptx
                    .lines()
                    .filter(|l| !l.starts_with("//"))
                    .collect::<Vec<_>>()
                    .join("\n")
                    .replacen(&format!(".entry {}(", k.name), ".entry (", 1);
                first
                    .entry(code)
                    .or_insert_with(|| {
                        kept.push(k.ptx.as_str());
                        k.name.clone()
                    })
                    .clone()
            })
            .collect();
        (ptx::join_modules(kept), representatives)
    }
}

/// The launch shape a family chose: a one-dimensional grid of one-dimensional blocks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Geometry {
    pub blocks: usize,
    pub threads: usize,
    /// Dynamic shared memory in bytes.
    pub shared_bytes: usize,
    /// A cap on registers per thread (`.maxnreg`) the family asks for, if any.
    pub max_registers: Option<u32>,
}
