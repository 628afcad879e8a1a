//! `sim`: a PTX simulator. It parses the PTX subset that calib's code generator emits
//! and runs a launch on the CPU with CUDA semantics, checking the kernel as it goes.
//!
//! ```text
//!   PTX text ──parse──► ast::Module ──simulate(kernel, grid, block, args)──► Stats | SimError
//!                                        │ blocks in parallel (rayon)
//!                                        │ warps of 32; divergence as groups of lanes
//!                                        ▼
//!                                   GlobalMemory (device buffers at fake addresses)
//! ```
//!
//! ```
//! use calib_runtime::sim::{parse, simulate, GlobalMemory, KernelArg};
//!
//! let module = parse(r#"
//!     .version 7.8
//!     .target sm_80
//!     .address_size 64
//!     .visible .entry twice(.param .u64 p) {
//!         .reg .b32 %r<3>;
//!         .reg .b64 %rd<4>;
//!         ld.param.u64 %rd1, [p];
//!         mov.u32 %r1, %tid.x;
//!         mul.wide.u32 %rd2, %r1, 4;
//!         add.s64 %rd3, %rd1, %rd2;
//!         shl.b32 %r2, %r1, 1;
//!         st.global.u32 [%rd3], %r2;
//!         ret;
//!     }"#).unwrap();
//! let mut memory = GlobalMemory::new();
//! let out = memory.alloc(4 * 64).unwrap();
//! let stats = simulate(&module, "twice", [1, 1, 1], [64, 1, 1], 0, &[KernelArg::U64(out)], &mut memory).unwrap();
//! assert_eq!(memory.read::<u32>(out, 64).unwrap()[5], 10);
//! assert_eq!(stats.thread_instructions, 64 * 7);
//! ```
//!
//! Faults carry the kernel, block, thread, source line and instruction: out-of-bounds and
//! misaligned global, shared and parameter accesses, reads of uninitialized registers,
//! barrier divergence, shared-memory races between barriers, accesses of `cp.async`
//! destinations before a `wait_group` retires the copy, misuse of warp-synchronous
//! instructions (`mma.sync` and `ldmatrix` need the whole warp), integer division by zero
//! and runaway loops. An instruction or modifier outside the subset is a parse error,
//! never a silent approximation. `exec/mma.rs` documents the fixed accumulation order of
//! `mma`, and `exec/async_copy.rs` when a `cp.async` lands.
//!
//! Inside: `lex` and `parse` read text, `decode` is the instruction table, `alu` holds
//! the scalar semantics, `exec` runs launches (its `warp` module documents the divergence
//! model), and [`ptxas`] drives NVIDIA's assembler over the same PTX.

mod alu;
pub mod ast;
mod decode;
mod error;
mod exec;
mod lex;
mod memory;
mod parse;
pub mod ptxas;
mod types;

pub use ast::{Kernel, Module};
pub use error::{Access, Fault, FaultKind, MemoryError, OtherThread, ParseError, SimError};
pub use exec::{simulate, simulate_with, KernelArg, SimOptions, Stats, MAX_SHARED_BYTES};
pub use memory::{DeviceValue, GlobalMemory};
pub use parse::parse;
pub use types::{Kind, Ty};
