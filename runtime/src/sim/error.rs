//! What can go wrong: malformed or unsupported PTX, a bad launch, and faults found while
//! a kernel runs. Faults name the kernel, block, thread, source line and instruction.

use std::fmt;
use thiserror::Error;

/// PTX the parser rejects: malformed text, or an instruction, modifier or directive the
/// simulator does not implement.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[error("line {line}: `{text}`: {message}")]
pub struct ParseError {
    pub line: usize,
    /// The statement or token at fault.
    pub text: String,
    pub message: String,
}

impl ParseError {
    pub(crate) fn new(line: usize, text: &str, message: impl Into<String>) -> Self {
        ParseError {
            line,
            text: text.to_string(),
            message: message.into(),
        }
    }
}

/// Why a simulated launch did not complete.
#[derive(Debug, Error, Clone, PartialEq)]
pub enum SimError {
    #[error("PTX parse error: {0}")]
    Parse(#[from] ParseError),
    #[error("no kernel `{name}` in the module (kernels: {available})")]
    NoKernel { name: String, available: String },
    #[error("cannot launch kernel `{kernel}`: {reason}")]
    Launch { kernel: String, reason: String },
    #[error(transparent)]
    Fault(Box<Fault>),
    #[error(transparent)]
    Memory(#[from] MemoryError),
}

impl SimError {
    /// The fault, when the kernel ran and faulted.
    pub fn fault(&self) -> Option<&Fault> {
        match self {
            SimError::Fault(f) => Some(f),
            _ => None,
        }
    }
}

impl From<Fault> for SimError {
    fn from(f: Fault) -> Self {
        SimError::Fault(Box::new(f))
    }
}

/// A host-side request the simulated device memory cannot serve.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum MemoryError {
    #[error("device range {addr:#x}+{bytes} is not inside one allocation")]
    OutOfBounds { addr: u64, bytes: usize },
    #[error("cannot allocate {bytes} bytes: the simulated address space is exhausted")]
    Exhausted { bytes: usize },
}

/// A bug a kernel exhibited at run time, with where it happened.
#[derive(Debug, Clone, PartialEq)]
pub struct Fault {
    pub kernel: String,
    /// `%ctaid` of the faulting block.
    pub block: [u32; 3],
    /// `%tid` of the faulting thread.
    pub thread: [u32; 3],
    pub line: usize,
    pub instruction: String,
    pub kind: FaultKind,
}

impl std::error::Error for Fault {}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [bx, by, bz] = self.block;
        let [tx, ty, tz] = self.thread;
        write!(
            f,
            "kernel `{}`, block ({bx},{by},{bz}), thread ({tx},{ty},{tz}), line {} `{}`: {}",
            self.kernel, self.line, self.instruction, self.kind
        )
    }
}

/// Which kind of memory access faulted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Load,
    Store,
    Atomic,
    /// The shared-memory write of a `cp.async`, or its global read.
    AsyncCopy,
}

impl fmt::Display for Access {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Access::Load => "load",
            Access::Store => "store",
            Access::Atomic => "atomic",
            Access::AsyncCopy => "cp.async",
        })
    }
}

/// Another thread's access, quoted by race and barrier reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OtherThread {
    pub thread: [u32; 3],
    pub line: usize,
    pub instruction: String,
}

impl fmt::Display for OtherThread {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [x, y, z] = self.thread;
        write!(
            f,
            "thread ({x},{y},{z}) at line {} `{}`",
            self.line, self.instruction
        )
    }
}

/// The classes of run-time bugs the simulator detects.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum FaultKind {
    #[error("out-of-bounds {space} {access} of {bytes} bytes at {addr:#x} ({detail})")]
    OutOfBounds {
        space: &'static str,
        access: Access,
        addr: u64,
        bytes: usize,
        detail: String,
    },
    #[error("misaligned {space} {access}: {bytes}-byte access at {addr:#x}")]
    Misaligned {
        space: &'static str,
        access: Access,
        addr: u64,
        bytes: usize,
    },
    #[error("read of uninitialized register {register}")]
    UninitializedRegister { register: String },
    #[error(
        "barrier divergence: this thread waits at this barrier while {other} waits at another"
    )]
    BarrierDivergence { other: OtherThread },
    #[error(
        "shared-memory race on byte {addr:#x}: {what} by {other} in the same barrier interval"
    )]
    SharedRace {
        addr: u64,
        /// `write after read`, `read after write` or `write after write`.
        what: &'static str,
        other: OtherThread,
    },
    #[error(
        "cp.async hazard: {access} of shared byte {addr:#x} while it is the destination of the cp.async by {copy}, which no cp.async.wait_group of that thread has retired"
    )]
    AsyncCopyPending {
        addr: u64,
        access: Access,
        /// The copy in flight.
        copy: OtherThread,
    },
    #[error("invalid operand value: {detail}")]
    BadOperand { detail: String },
    #[error("warp-synchronous instruction: {detail}")]
    WarpSync { detail: String },
    #[error("integer division by zero")]
    DivideByZero,
    #[error("a warp exceeded the limit of {limit} instructions (an endless loop, or raise SimOptions::max_warp_steps)")]
    StepLimit { limit: u64 },
}
