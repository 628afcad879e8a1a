//! Launching a kernel: argument and geometry checks, the parameter buffer, and blocks run
//! in parallel on rayon's pool.
//!
//! Blocks share only global memory, whose every access is atomic (see
//! [`GlobalMemory`]), so they run concurrently as on a GPU. If blocks fault, the fault of
//! the lowest-numbered faulting block is reported, whatever order they ran in: a block
//! starts only while no lower-numbered block is known to have faulted.

mod async_copy;
mod block;
mod collective;
mod ldmatrix;
mod memory;
mod mma;
mod race;
mod warp;

use super::ast::{Kernel, Module};
use super::error::SimError;
use super::memory::GlobalMemory;
use super::types::{Kind, Ty};
use rayon::prelude::*;
use std::ops::AddAssign;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Shared memory a block may use, static and dynamic together (sm_90's limit).
pub const MAX_SHARED_BYTES: usize = 227 * 1024;

/// What a launch executed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Lanes active at issue, summed over every warp instruction (predicated-off lanes
    /// included, as a GPU counts them).
    pub thread_instructions: u64,
    pub warp_instructions: u64,
    pub blocks: u64,
}

impl AddAssign for Stats {
    fn add_assign(&mut self, o: Stats) {
        self.thread_instructions += o.thread_instructions;
        self.warp_instructions += o.warp_instructions;
        self.blocks += o.blocks;
    }
}

/// Checks a launch may turn off or bound.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SimOptions {
    /// Instructions one warp may execute before the launch is declared stuck.
    pub max_warp_steps: u64,
    /// Detect shared-memory races between barriers.
    pub race_check: bool,
}

impl Default for SimOptions {
    fn default() -> Self {
        SimOptions {
            max_warp_steps: 1 << 26,
            race_check: true,
        }
    }
}

/// A kernel argument, matched against the `.param` it fills. Device pointers are `U64`.
#[derive(Clone, Debug, PartialEq)]
pub enum KernelArg {
    U32(u32),
    S32(i32),
    U64(u64),
    S64(i64),
    F32(f32),
    F64(f64),
    /// The bytes of a byte-array parameter (`.param .align 8 .b8 p[16]`).
    Bytes(Vec<u8>),
}

macro_rules! kernel_arg_from {
    ($($t:ty => $v:ident),*) => {$(
        impl From<$t> for KernelArg {
            fn from(x: $t) -> Self {
                KernelArg::$v(x)
            }
        }
    )*};
}

kernel_arg_from!(u32 => U32, i32 => S32, u64 => U64, i64 => S64, f32 => F32, f64 => F64);

impl KernelArg {
    fn bytes(&self) -> Vec<u8> {
        match self {
            KernelArg::U32(v) => v.to_le_bytes().to_vec(),
            KernelArg::S32(v) => v.to_le_bytes().to_vec(),
            KernelArg::U64(v) => v.to_le_bytes().to_vec(),
            KernelArg::S64(v) => v.to_le_bytes().to_vec(),
            KernelArg::F32(v) => v.to_le_bytes().to_vec(),
            KernelArg::F64(v) => v.to_le_bytes().to_vec(),
            KernelArg::Bytes(b) => b.clone(),
        }
    }

    fn is_float(&self) -> bool {
        matches!(self, KernelArg::F32(_) | KernelArg::F64(_))
    }

    fn describe(&self) -> String {
        let (name, bytes) = match self {
            KernelArg::U32(_) => ("u32", 4),
            KernelArg::S32(_) => ("s32", 4),
            KernelArg::U64(_) => ("u64", 8),
            KernelArg::S64(_) => ("s64", 8),
            KernelArg::F32(_) => ("f32", 4),
            KernelArg::F64(_) => ("f64", 8),
            KernelArg::Bytes(b) => return format!("{} raw bytes", b.len()),
        };
        format!("a {name} ({bytes} bytes)")
    }
}

/// Runs `kernel` of `module` over `grid` blocks of `block` threads with `shared_bytes`
/// of dynamic shared memory, with default [`SimOptions`].
pub fn simulate(
    module: &Module,
    kernel: &str,
    grid: [u32; 3],
    block: [u32; 3],
    shared_bytes: usize,
    args: &[KernelArg],
    memory: &mut GlobalMemory,
) -> Result<Stats, SimError> {
    simulate_with(
        &SimOptions::default(),
        module,
        kernel,
        grid,
        block,
        shared_bytes,
        args,
        memory,
    )
}

/// [`simulate`] with explicit options.
#[allow(clippy::too_many_arguments)]
pub fn simulate_with(
    options: &SimOptions,
    module: &Module,
    kernel: &str,
    grid: [u32; 3],
    block: [u32; 3],
    shared_bytes: usize,
    args: &[KernelArg],
    memory: &mut GlobalMemory,
) -> Result<Stats, SimError> {
    let k = module.kernel(kernel).ok_or_else(|| SimError::NoKernel {
        name: kernel.to_string(),
        available: module
            .kernels
            .iter()
            .map(|k| k.name.as_str())
            .collect::<Vec<_>>()
            .join(", "),
    })?;
    let launch_error = |reason: String| SimError::Launch {
        kernel: kernel.to_string(),
        reason,
    };
    check_geometry(k, grid, block).map_err(launch_error)?;
    let total_shared = k.dynamic_shared_offset() + shared_bytes;
    if total_shared > MAX_SHARED_BYTES {
        return Err(launch_error(format!(
            "{total_shared} bytes of shared memory exceed the limit of {MAX_SHARED_BYTES}"
        )));
    }
    let params = param_buffer(k, args).map_err(launch_error)?;
    let memory: &GlobalMemory = memory;
    let blocks = grid.iter().map(|&d| d as usize).product::<usize>();
    let first_fault = AtomicUsize::new(usize::MAX);
    let results: Vec<Option<Result<Stats, _>>> = (0..blocks)
        .into_par_iter()
        .map_init(block::Scratch::default, |scratch, b| {
            if b > first_fault.load(Ordering::Acquire) {
                return None;
            }
            let ctaid = [
                (b % grid[0] as usize) as u32,
                (b / grid[0] as usize % grid[1] as usize) as u32,
                (b / (grid[0] as usize * grid[1] as usize)) as u32,
            ];
            let env = block::BlockEnv {
                kernel: k,
                grid,
                block,
                ctaid,
                params: &params,
                global: memory,
                options,
                shared_bytes: total_shared,
            };
            let result = block::run(&env, scratch);
            if result.is_err() {
                first_fault.fetch_min(b, Ordering::AcqRel);
            }
            Some(result)
        })
        .collect();
    let mut stats = Stats::default();
    for result in results.into_iter().flatten() {
        stats += result.map_err(SimError::Fault)?;
    }
    Ok(stats)
}

fn check_geometry(k: &Kernel, grid: [u32; 3], block: [u32; 3]) -> Result<(), String> {
    if grid.contains(&0) || block.contains(&0) {
        return Err(format!(
            "grid {grid:?} and block {block:?} must be at least 1 in every dimension"
        ));
    }
    if grid[1] > 65535 || grid[2] > 65535 || grid[0] > i32::MAX as u32 {
        return Err(format!(
            "grid {grid:?} exceeds CUDA's limits (2^31-1, 65535, 65535)"
        ));
    }
    let threads: u64 = block.iter().map(|&d| d as u64).product();
    if threads > 1024 || block[2] > 64 {
        return Err(format!(
            "block {block:?} exceeds CUDA's limits (1024 threads, z at most 64)"
        ));
    }
    if let Some(max) = k.max_ntid {
        let allowed: u64 = max.iter().map(|&d| d as u64).product();
        if threads > allowed {
            return Err(format!(
                "block {block:?} has more threads than .maxntid {max:?} allows"
            ));
        }
    }
    if let Some(req) = k.req_ntid {
        if req != block {
            return Err(format!("block {block:?} differs from .reqntid {req:?}"));
        }
    }
    Ok(())
}

/// Lays the arguments out as the kernel's `.param` space.
fn param_buffer(k: &Kernel, args: &[KernelArg]) -> Result<Vec<u8>, String> {
    if args.len() != k.params.len() {
        return Err(format!(
            "{} arguments given for {} parameters",
            args.len(),
            k.params.len()
        ));
    }
    let mut buf = vec![0u8; k.param_bytes];
    for (i, (p, arg)) in k.params.iter().zip(args).enumerate() {
        let bytes = arg.bytes();
        let kind_ok = match p.ty.kind() {
            Kind::Float => arg.is_float(),
            Kind::Unsigned | Kind::Signed => !arg.is_float() && !matches!(arg, KernelArg::Bytes(_)),
            _ => true,
        };
        let array = p.bytes != p.ty.bytes() || p.ty == Ty::B8;
        if bytes.len() != p.bytes || !kind_ok {
            let wanted = if array {
                format!("{} bytes", p.bytes)
            } else {
                format!("{}", p.ty)
            };
            return Err(format!(
                "argument {i} (`{}`) is {} but the parameter is {wanted}",
                p.name,
                arg.describe()
            ));
        }
        buf[p.offset..p.offset + p.bytes].copy_from_slice(&bytes);
    }
    Ok(buf)
}
