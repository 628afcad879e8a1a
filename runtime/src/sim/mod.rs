//! `sim`: a PTX simulator. It parses the PTX subset that calib's code generator emits
//! and runs a launch on the CPU with CUDA semantics, checking the kernel as it goes.
//!
//! ```text
//!   PTX text ──parse──► Module ──simulate(kernel, grid, block, args)──► Stats | SimError
//!                                   │ blocks in parallel (rayon)
//!                                   │ warps of 32, divergence by groups of lanes
//!                                   ▼
//!                              GlobalMemory (device buffers at fake addresses)
//! ```
//!
//! Faults carry the kernel, block, thread, source line and instruction: out-of-bounds and
//! misaligned global, shared and parameter accesses, reads of uninitialized registers,
//! barrier divergence, shared-memory races between barriers, misuse of warp-synchronous
//! instructions, integer division by zero and runaway loops. An instruction or modifier
//! outside the subset is a parse error, never a silent approximation.
//!
//! The modules: [`lex`](self) and `parse` read text, `decode` is the instruction table,
//! `alu` holds scalar semantics, `exec` runs launches, and [`ptxas`] drives NVIDIA's
//! assembler to cross-check the same PTX.

mod alu;
mod ast;
mod decode;
mod error;
mod exec;
mod lex;
mod memory;
mod parse;
pub mod ptxas;
mod types;

pub use ast::{Instruction, Kernel, Module, Op, Param, Register, SharedVar, Space};
pub use error::{Access, Fault, FaultKind, MemoryError, OtherThread, ParseError, SimError};
pub use exec::{simulate, simulate_with, KernelArg, SimOptions, Stats, MAX_SHARED_BYTES};
pub use memory::{DeviceValue, GlobalMemory};
pub use parse::parse;
pub use types::Ty;
