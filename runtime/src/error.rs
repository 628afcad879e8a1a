//! Errors raised while executing a graph.

use crate::{CollectiveError, Finiteness, TensorError};
use calib_ir::{IrError, ProgramError, TensorType};
use thiserror::Error;

/// Why a graph could not be run.
#[derive(Debug, Error, Clone, PartialEq)]
pub enum RuntimeError {
    /// The graph itself is malformed (bad operands, a declared type that disagrees with
    /// inference, duplicate names).
    #[error("invalid graph: {0}")]
    Graph(#[from] IrError),
    /// An input or parameter node has no tensor bound to its name.
    #[error("no tensor bound to {kind} `{name}` (the graph expects {expected})")]
    Unbound {
        kind: &'static str,
        name: String,
        expected: TensorType,
    },
    /// A bound tensor's dtype or shape differs from the node's type.
    #[error("{kind} `{name}` is bound to a {found} tensor but the graph expects {expected}")]
    BindingType {
        kind: &'static str,
        name: String,
        expected: TensorType,
        found: TensorType,
    },
    /// A session was asked for something its graph or state cannot give (an unknown
    /// output, a value never loaded, a carry between mismatched values).
    #[error("session: {0}")]
    Session(String),
    /// A device backend failed (driver, memory, launch); the message says which step.
    #[error("device: {0}")]
    Device(String),
    /// A kernel plan is malformed (see [`calib_ir::Program::validate`]).
    #[error(transparent)]
    Program(#[from] ProgramError),
    /// A kernel of a plan failed; `source` says where in its body.
    #[error("kernel {kernel}: {source}")]
    Kernel {
        kernel: String,
        source: Box<RuntimeError>,
    },
    /// A plan could not be compiled to device code.
    #[error("code generation: {0}")]
    Codegen(String),
    /// A kernel of a compiled plan failed to parse, launch or run on the PTX simulator.
    #[error("kernel {kernel} on the simulator: {message}")]
    Simulator { kernel: String, message: String },
    /// With the finite check on, a bound tensor holds NaN or infinite values.
    #[error("{kind} `{name}`: {census}")]
    NonFiniteBinding {
        kind: &'static str,
        name: String,
        census: Finiteness,
    },
    /// An op failed on the values it was given.
    #[error("node %{node} ({op}{scope}): {source}")]
    Op {
        node: usize,
        op: &'static str,
        scope: String,
        source: OpError,
    },
}

/// Why one op could not be evaluated.
#[derive(Debug, Error, Clone, PartialEq)]
pub enum OpError {
    #[error("label {label} at position {index} is outside 0..{classes}")]
    LabelOutOfRange {
        index: usize,
        label: i64,
        classes: usize,
    },
    /// Operands held in an element type the op cannot use; the IR's type rules make this
    /// unreachable for validated graphs, so it signals a runtime bug.
    #[error("operand held in {found} storage, expected {expected}")]
    Storage {
        found: &'static str,
        expected: &'static str,
    },
    #[error("{0} is not a computed op")]
    NotComputed(&'static str),
    #[error(transparent)]
    Tensor(#[from] TensorError),
    #[error(transparent)]
    Collective(#[from] CollectiveError),
    /// With the finite check on: the op made NaN or infinite values out of operands that
    /// held none of that kind.
    #[error("the output went non-finite: {0}")]
    NonFinite(Finiteness),
}
