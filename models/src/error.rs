//! Errors raised while reading, checking or building a model.

use calib_ir::{DType, IrError};
use std::path::PathBuf;
use thiserror::Error;

/// Everything that can go wrong between a spec file and a built [`crate::Model`].
#[derive(Debug, Error)]
pub enum ModelError {
    /// A spec value that no module could be built from; `field` is its path in the spec
    /// object (`stages[1].planes`, `stem.width`, `downsample.stride`).
    #[error("invalid model spec: `{field}` {message}")]
    InvalidSpec { field: String, message: String },
    /// The JSON did not match the spec schema (unknown `kind`, missing or misspelled field).
    #[error("cannot read model spec{origin}: {message}")]
    Parse { origin: String, message: String },
    /// A spec file whose content is wrong (a value out of range, an input shape that
    /// does not fit): `source` says what, this says where.
    #[error("{}: {cause}", path.display())]
    File {
        path: PathBuf,
        /// Not the error's `source`: the message already includes it.
        cause: Box<ModelError>,
    },
    /// A spec file or fixture directory could not be read.
    #[error("cannot read `{}`: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The input shape does not fit the model (rank, channels, zero extents).
    #[error("input shape {shape:?} does not fit the model: {message}")]
    InputShape { shape: Vec<usize>, message: String },
    /// A part of a network cannot be built for the input: a stride or window of the spec
    /// entry `field` (`stages[1]`, `stem`) meets a feature map too small for it. `values`
    /// are the entry's, `entering` the map it was given (`HxW`), and the IR error names
    /// the layer.
    #[error(
        "input {shape} is too small for `{field}` ({values}) of the spec: the feature map \
         entering it is {entering}; {cause}"
    )]
    DoesNotFit {
        field: String,
        values: String,
        shape: String,
        entering: String,
        /// Not the error's `source`: the message already includes it.
        cause: Box<IrError>,
    },
    /// Models compute in a floating-point dtype.
    #[error("activations need a floating-point dtype, got {0}")]
    NotFloat(DType),
    /// Graph construction failed; the IR error names the node, its scope and operand types
    /// (for example an input too small for a pooling window).
    #[error(transparent)]
    Ir(#[from] IrError),
}

impl ModelError {
    pub(crate) fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        ModelError::InvalidSpec {
            field: field.into(),
            message: message.into(),
        }
    }
}
