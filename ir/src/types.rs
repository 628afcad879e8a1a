//! Static tensor types: a dtype and a shape.

use crate::DType;
use serde::{Deserialize, Serialize};
use std::fmt;

/// A static shape. Activations are NCHW; a scalar has rank 0.
pub type Shape = Vec<usize>;

/// The largest tensor a graph may hold, in bytes: 2^48 (256 TiB). It is far beyond any
/// device's memory, yet small enough that a graph's sums of tensor sizes stay inside
/// `usize` and are exact as `f64`. [`crate::Graph`] refuses any node whose type is
/// larger, so element counts and byte sizes of a checked graph never overflow.
pub const MAX_TENSOR_BYTES: usize = 1 << 48;

/// Number of elements of a shape (1 for a scalar), or `None` when it does not fit
/// `usize`.
pub fn checked_numel(shape: &[usize]) -> Option<usize> {
    if shape.contains(&0) {
        return Some(0);
    }
    shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d))
}

/// Number of elements of a shape (1 for a scalar). Saturates at `usize::MAX` rather
/// than wrapping, so an unchecked shape can never pass for a small one; shapes of a
/// checked graph are far below that (see [`MAX_TENSOR_BYTES`]).
pub fn numel(shape: &[usize]) -> usize {
    checked_numel(shape).unwrap_or(usize::MAX)
}

/// Formats a shape as `[2,8,16,16]`.
pub fn fmt_shape(shape: &[usize]) -> String {
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    format!("[{}]", dims.join(","))
}

/// The type of every IR value.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TensorType {
    pub dtype: DType,
    pub shape: Shape,
}

impl TensorType {
    pub fn new(dtype: DType, shape: impl Into<Shape>) -> Self {
        TensorType {
            dtype,
            shape: shape.into(),
        }
    }

    pub fn numel(&self) -> usize {
        numel(&self.shape)
    }

    pub fn rank(&self) -> usize {
        self.shape.len()
    }

    /// Bytes of the elements; saturates like [`numel`].
    pub fn size_bytes(&self) -> usize {
        self.checked_size_bytes().unwrap_or(usize::MAX)
    }

    /// Bytes of the elements, or `None` when they do not fit `usize`.
    pub fn checked_size_bytes(&self) -> Option<usize> {
        checked_numel(&self.shape)?.checked_mul(self.dtype.size_bytes())
    }

    /// Whether a value of this type may exist: its byte size is at most
    /// [`MAX_TENSOR_BYTES`]. The error says how large it is.
    pub fn check_size(&self) -> Result<(), String> {
        match self.checked_size_bytes() {
            Some(bytes) if bytes <= MAX_TENSOR_BYTES => Ok(()),
            Some(bytes) => Err(format!(
                "type {self} has {bytes} bytes, over the limit of {MAX_TENSOR_BYTES} (2^48) \
                 bytes per tensor"
            )),
            None => Err(format!(
                "type {self} has more elements or bytes than a 64-bit count can hold \
                 (the limit is {MAX_TENSOR_BYTES} bytes per tensor)"
            )),
        }
    }
}

impl fmt::Display for TensorType {
    /// `f32[2,8,16,16]`, the form used by the text IR.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", self.dtype, fmt_shape(&self.shape))
    }
}
