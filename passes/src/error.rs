//! Errors of the graph passes.

use calib_ir::IrError;
use thiserror::Error;

#[derive(Debug, Error, Clone, PartialEq)]
pub enum PassError {
    /// A node the pass emitted (or the graph it was given) failed the IR's checks.
    #[error(transparent)]
    Ir(#[from] IrError),
    /// A value handle that does not name a node of the graph.
    #[error("{what} %{value} is not a node of the graph ({len} nodes)")]
    UnknownValue {
        what: &'static str,
        value: usize,
        len: usize,
    },
    /// Differentiation was asked of, or through, a value that has no gradient.
    #[error("cannot differentiate {what} %{value}: {reason}")]
    NotDifferentiable {
        what: &'static str,
        value: usize,
        reason: String,
    },
    /// The seed of a vector-Jacobian product must have the type of the value it seeds.
    #[error("seed %{seed} has type {seed_type} but the differentiated value has type {of_type}")]
    SeedType {
        seed: usize,
        seed_type: String,
        of_type: String,
    },
    /// Fusion could not produce a plan, or an explanation.
    #[error("fusion: {0}")]
    Fusion(String),
    /// A graph lacks an input or output that the pass needs.
    #[error("graph has no {kind} named {names}")]
    Missing { kind: &'static str, names: String },
    /// Data-parallel options that cannot work (no replicas, a mismatched group).
    #[error("data parallelism: {0}")]
    DataParallel(String),
    /// A bound or required value has the wrong type.
    #[error("{what} must have type {expected}, got {found}")]
    WrongType {
        what: String,
        expected: String,
        found: String,
    },
}

pub type Result<T, E = PassError> = std::result::Result<T, E>;
