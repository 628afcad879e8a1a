//! Why a kernel could not be compiled.

use calib_ir::ProgramError;
use thiserror::Error;

#[derive(Debug, Error, Clone, PartialEq)]
pub enum CodegenError {
    /// The plan itself is malformed.
    #[error(transparent)]
    Program(#[from] ProgramError),
    /// A body node code generation does not handle.
    #[error("kernel {kernel}: node %{node} ({op}) is not supported: {detail}")]
    Unsupported {
        kernel: String,
        node: usize,
        op: &'static str,
        detail: String,
    },
    /// The kernel as a whole cannot be emitted (too large, a shape out of range).
    #[error("kernel {kernel}: {detail}")]
    Kernel { kernel: String, detail: String },
}

pub type Result<T> = std::result::Result<T, CodegenError>;
