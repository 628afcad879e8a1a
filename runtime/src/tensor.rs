//! Host tensors: a declared dtype, a shape, and the elements in a computing type.
//!
//! The declared dtype is the IR's; the storage is what the runtime computes in. Floating
//! tensors are held as `f32` (or `f64` by the gradient checker's interpreter); `f16` and
//! `bf16` tensors are held widened but always rounded to their declared precision, so a
//! value in memory is exactly what a half-precision tensor could hold; `tf32` tensors
//! likewise hold f32 values rounded to TF32's 10-bit mantissa.

use crate::Element;
use calib_ir::{fmt_shape, numel, DType, Shape, TensorType};
use half::{bf16, f16};
use std::fmt;
use thiserror::Error;

/// The elements of a tensor, row-major.
#[derive(Clone, PartialEq)]
pub enum Storage {
    F32(Vec<f32>),
    F64(Vec<f64>),
    I64(Vec<i64>),
}

/// The type floating tensors are computed and held in.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Precision {
    #[default]
    F32,
    F64,
}

impl Storage {
    pub fn len(&self) -> usize {
        match self {
            Storage::F32(v) => v.len(),
            Storage::F64(v) => v.len(),
            Storage::I64(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// `"f32"`, `"f64"` or `"i64"`, for messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Storage::F32(_) => "f32",
            Storage::F64(_) => "f64",
            Storage::I64(_) => "i64",
        }
    }

    /// Every element as `f64` (exact for floats, and for integers up to 2^53).
    pub fn to_f64_vec(&self) -> Vec<f64> {
        match self {
            Storage::F32(v) => v.iter().map(|&x| x as f64).collect(),
            Storage::F64(v) => v.clone(),
            Storage::I64(v) => v.iter().map(|&x| x as f64).collect(),
        }
    }

    /// Floating elements converted to `precision`; integers are left alone.
    pub fn into_precision(self, precision: Precision) -> Storage {
        match (self, precision) {
            (Storage::F32(v), Precision::F64) => {
                Storage::F64(v.into_iter().map(f64::from).collect())
            }
            (Storage::F64(v), Precision::F32) => {
                Storage::F32(v.into_iter().map(|x| x as f32).collect())
            }
            (s, _) => s,
        }
    }

    /// Floating elements in `precision`, built from `f64` values.
    pub fn float_from_f64(values: impl Iterator<Item = f64>, precision: Precision) -> Storage {
        match precision {
            Precision::F32 => Storage::F32(values.map(|x| x as f32).collect()),
            Precision::F64 => Storage::F64(values.collect()),
        }
    }
}

/// `x` rounded to TF32 from f64 in one step (the f64 interpreter's `cast` to tf32): the
/// f64 mantissa rounded to 10 bits with ties away from zero, as `cvt.rna` rounds an f32.
/// Below f32's normal range TF32 has fewer bits, so there the value goes through f32
/// first (a double rounding only the gradient checker's f64 arithmetic could see).
pub fn round_tf32_f64(x: f64) -> f64 {
    if !x.is_finite() || x.abs() < f64::from(f32::MIN_POSITIVE) {
        return f64::from(calib_ir::round_tf32(x as f32));
    }
    // 52 - 10 = 42 dropped bits; past f32's range the f32 conversion makes infinity.
    let rounded = f64::from_bits((x.to_bits() + (1 << 41)) & !((1u64 << 42) - 1));
    f64::from(rounded as f32)
}

/// Rounds every element to the nearest value of `dtype` (a no-op unless f16, bf16 or
/// tf32; tf32 rounds ties away from zero, as `cvt.rna.tf32.f32`).
fn round_to_dtype(dtype: DType, storage: &mut Storage) {
    fn each<T: Copy>(v: &mut [T], f: impl Fn(T) -> T) {
        v.iter_mut().for_each(|x| *x = f(*x));
    }
    match (dtype, storage) {
        (DType::F16, Storage::F32(v)) => each(v, |x| f16::from_f32(x).to_f32()),
        (DType::F16, Storage::F64(v)) => each(v, |x| f16::from_f64(x).to_f64()),
        (DType::BF16, Storage::F32(v)) => each(v, |x| bf16::from_f32(x).to_f32()),
        (DType::BF16, Storage::F64(v)) => each(v, |x| bf16::from_f64(x).to_f64()),
        (DType::TF32, Storage::F32(v)) => each(v, calib_ir::round_tf32),
        (DType::TF32, Storage::F64(v)) => each(v, round_tf32_f64),
        _ => {}
    }
}

/// A malformed tensor.
#[derive(Debug, Error, Clone, PartialEq)]
pub enum TensorError {
    #[error("shape {shape} holds {expected} elements but {found} were given")]
    Length {
        shape: String,
        expected: usize,
        found: usize,
    },
    #[error("a {dtype} tensor cannot be held in {storage} storage")]
    Storage { dtype: DType, storage: &'static str },
    #[error("cannot compare tensors of shapes {left} and {right}")]
    ShapeMismatch { left: String, right: String },
}

/// A tensor in host memory. Invariants: the storage length is the shape's element count,
/// `I64` tensors hold `i64`, floating tensors hold `f32` or `f64`, and `f16`/`bf16`
/// values are representable in their dtype.
#[derive(Clone, PartialEq)]
pub struct HostTensor {
    dtype: DType,
    shape: Shape,
    storage: Storage,
}

impl HostTensor {
    /// A tensor of declared `dtype`; f16/bf16 values are rounded to that precision.
    pub fn new(
        dtype: DType,
        shape: impl Into<Shape>,
        mut storage: Storage,
    ) -> Result<Self, TensorError> {
        let shape = shape.into();
        let expected = numel(&shape);
        if storage.len() != expected {
            return Err(TensorError::Length {
                shape: fmt_shape(&shape),
                expected,
                found: storage.len(),
            });
        }
        if dtype.is_float() == matches!(storage, Storage::I64(_)) {
            return Err(TensorError::Storage {
                dtype,
                storage: storage.kind(),
            });
        }
        round_to_dtype(dtype, &mut storage);
        Ok(HostTensor {
            dtype,
            shape,
            storage,
        })
    }

    /// An `f32` tensor.
    pub fn from_f32(shape: impl Into<Shape>, data: Vec<f32>) -> Result<Self, TensorError> {
        Self::new(DType::F32, shape, Storage::F32(data))
    }

    /// An `f32`-typed tensor held in `f64` (what the f64 interpreter computes with).
    pub fn from_f64(shape: impl Into<Shape>, data: Vec<f64>) -> Result<Self, TensorError> {
        Self::new(DType::F32, shape, Storage::F64(data))
    }

    pub fn from_i64(shape: impl Into<Shape>, data: Vec<i64>) -> Result<Self, TensorError> {
        Self::new(DType::I64, shape, Storage::I64(data))
    }

    /// A tensor of type `ty` filled with `value` (truncated toward zero for `I64`), held in
    /// `precision` if floating.
    pub fn full(ty: &TensorType, value: f64, precision: Precision) -> Self {
        let n = ty.numel();
        let storage = if ty.dtype.is_float() {
            Storage::float_from_f64(std::iter::repeat_n(value, n), precision)
        } else {
            Storage::I64(vec![i64::from_f64(value); n])
        };
        Self::new(ty.dtype, ty.shape.clone(), storage)
            .expect("length and storage kind match by construction")
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }

    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    pub fn ty(&self) -> TensorType {
        TensorType::new(self.dtype, self.shape.clone())
    }

    pub fn numel(&self) -> usize {
        self.storage.len()
    }

    pub fn storage(&self) -> &Storage {
        &self.storage
    }

    pub fn into_storage(self) -> Storage {
        self.storage
    }

    /// The elements, if they are held as `E`.
    pub fn view<E: Element>(&self) -> Option<&[E]> {
        E::view(&self.storage)
    }

    pub fn as_f32(&self) -> Option<&[f32]> {
        self.view()
    }

    pub fn as_f64(&self) -> Option<&[f64]> {
        self.view()
    }

    pub fn as_i64(&self) -> Option<&[i64]> {
        self.view()
    }

    /// Every element as `f64`.
    pub fn to_f64_vec(&self) -> Vec<f64> {
        self.storage.to_f64_vec()
    }

    /// Every element as `f32` (rounded if held in `f64`).
    pub fn to_f32_vec(&self) -> Vec<f32> {
        match &self.storage {
            Storage::F32(v) => v.clone(),
            other => other.to_f64_vec().into_iter().map(|x| x as f32).collect(),
        }
    }

    /// The same tensor with floating elements held in `precision`.
    pub fn into_precision(self, precision: Precision) -> Self {
        let storage = self.storage.into_precision(precision);
        HostTensor { storage, ..self }
    }

    /// The same elements under a new shape with the same element count.
    pub fn reshape(self, shape: impl Into<Shape>) -> Result<Self, TensorError> {
        Self::new(self.dtype, shape, self.storage)
    }

    /// Converts to `to` like PyTorch's `.to(dtype)`: floats round to the target precision,
    /// floats become integers by truncation toward zero. Floats stay in their storage
    /// precision; integers cast to a float are held in `f32`.
    pub fn cast(&self, to: DType) -> Self {
        let precision = match self.storage {
            Storage::F64(_) => Precision::F64,
            _ => Precision::F32,
        };
        let storage = cast_storage(&self.storage, to, precision);
        Self::new(to, self.shape.clone(), storage).expect("cast keeps the element count")
    }

    /// The largest `|a - b|` over all elements (NaN if either side has a NaN where the
    /// other differs), for comparing against references.
    pub fn max_abs_diff(&self, other: &HostTensor) -> Result<f64, TensorError> {
        if self.shape != other.shape {
            return Err(TensorError::ShapeMismatch {
                left: fmt_shape(&self.shape),
                right: fmt_shape(&other.shape),
            });
        }
        let (a, b) = (self.to_f64_vec(), other.to_f64_vec());
        Ok(a.iter()
            .zip(&b)
            .map(|(&x, &y)| if x == y { 0.0 } else { (x - y).abs() })
            .fold(0.0, f64::max_nan))
    }

    /// The largest `|x|` (NaN if any element is NaN); 0 for an empty tensor.
    pub fn max_abs(&self) -> f64 {
        self.to_f64_vec()
            .iter()
            .map(|x| x.abs())
            .fold(0.0, f64::max_nan)
    }
}

/// The elements of `storage` converted to `to`; floating results are held in `precision`.
pub(crate) fn cast_storage(storage: &Storage, to: DType, precision: Precision) -> Storage {
    match (storage, to.is_float()) {
        (Storage::I64(v), false) => Storage::I64(v.clone()),
        (s, false) => Storage::I64(s.to_f64_vec().into_iter().map(i64::from_f64).collect()),
        (Storage::F32(v), true) if precision == Precision::F32 => Storage::F32(v.clone()),
        (Storage::F64(v), true) if precision == Precision::F64 => Storage::F64(v.clone()),
        (s, true) => Storage::float_from_f64(s.to_f64_vec().into_iter(), precision),
    }
}

impl fmt::Debug for HostTensor {
    /// `HostTensor(f32[2,3] in f32: [1.0, 2.0, ...])`, never the whole buffer.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const SHOWN: usize = 8;
        let head: Vec<String> = self
            .to_f64_vec()
            .iter()
            .take(SHOWN)
            .map(|x| format!("{x}"))
            .collect();
        let more = if self.numel() > SHOWN { ", ..." } else { "" };
        write!(
            f,
            "HostTensor({}{} in {}: [{}{more}])",
            self.dtype,
            fmt_shape(&self.shape),
            self.storage.kind(),
            head.join(", ")
        )
    }
}
