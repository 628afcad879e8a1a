//! Errors raised while building, checking or reading IR.

use thiserror::Error;

#[derive(Debug, Error, Clone, PartialEq)]
pub enum IrError {
    /// An op rejected its operands: names the node, the op and the operand types (a
    /// source node has none, and its message lists none).
    #[error("node %{node} ({op}{scope}): {detail}{}", operand_list(.operands))]
    Type {
        node: usize,
        op: String,
        scope: String,
        detail: String,
        operands: String,
    },
    /// A node refers to a value that does not exist or is not defined before it.
    #[error("node %{node} ({op}): operand %{operand} is not defined before it")]
    UndefinedValue {
        node: usize,
        op: String,
        operand: usize,
    },
    /// Two inputs, two params or two outputs share a name.
    #[error("duplicate {kind} name `{name}`")]
    DuplicateName { kind: &'static str, name: String },
    /// A node's stated type differs from the one its op infers.
    #[error("node %{node} ({op}): declared type {declared} but the op produces {inferred}")]
    TypeMismatch {
        node: usize,
        op: String,
        declared: String,
        inferred: String,
    },
    /// The text form could not be parsed.
    #[error("line {line}: {message}")]
    Parse { line: usize, message: String },
    /// The JSON form could not be read.
    #[error("invalid IR JSON: {0}")]
    Json(String),
}

fn operand_list(operands: &str) -> String {
    if operands.is_empty() {
        String::new()
    } else {
        format!("; operands: {operands}")
    }
}

pub type Result<T, E = IrError> = std::result::Result<T, E>;
