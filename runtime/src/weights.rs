//! Safetensors checkpoints: load into, and save from, a map of state_dict name -> tensor.
//!
//! Reading never trusts the file: the header is checked entry by entry before
//! safetensors parses it (`header.rs`), sizes again after, and every error names the
//! file (and the tensor, when one is at fault); two tensors of one name are an error.
//! PyTorch's own `.pth` checkpoints are read by [`pth`] (no Python, no code run).
//! Saving is atomic: a temporary file in the target directory is written, synced and
//! renamed over the target, so a crash never leaves a half-written checkpoint.

mod header;
pub mod pth;

use crate::{HostTensor, Storage};
use calib_ir::{DType, Graph, TensorType};
use half::{bf16, f16};
use safetensors::tensor::{Dtype as StDtype, SafeTensorError, SafeTensors, View};
use std::borrow::Cow;
use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::fs;
use std::io;
use std::path::Path;
use thiserror::Error;

/// Tensors by state_dict name, in name order.
pub type TensorMap = BTreeMap<String, HostTensor>;

/// A checkpoint that could not be read or written.
#[derive(Debug, Error)]
pub enum WeightsError {
    #[error("{file}: {source}")]
    Io { file: String, source: io::Error },
    #[error("{file}: not a valid safetensors file: {detail}")]
    Corrupt { file: String, detail: String },
    #[error("{file}: tensor `{name}` has dtype {dtype}; calib reads F32, F16, BF16 and I64")]
    UnsupportedDType {
        file: String,
        name: String,
        dtype: String,
    },
    #[error("{file}: cannot serialize: {detail}")]
    Serialize { file: String, detail: String },
}

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> WeightsError + '_ {
    move |source| WeightsError::Io {
        file: path.display().to_string(),
        source,
    }
}

/// Reads a safetensors file. F16/BF16 tensors are widened to f32 in memory and keep
/// their dtype.
pub fn load(path: impl AsRef<Path>) -> Result<TensorMap, WeightsError> {
    let path = path.as_ref();
    let bytes = fs::read(path).map_err(io_error(path))?;
    parse(&bytes, &path.display().to_string())
}

/// Decodes the bytes of a safetensors file; `file` names it in errors.
pub fn parse(bytes: &[u8], file: &str) -> Result<TensorMap, WeightsError> {
    let corrupt = |detail: String| WeightsError::Corrupt {
        file: file.to_string(),
        detail,
    };
    // safetensors checks these too, but its messages do not say how far off the file is.
    if bytes.len() < 8 {
        return Err(corrupt(format!(
            "{} bytes is too short for the 8-byte header length",
            bytes.len()
        )));
    }
    let header_len = u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes"));
    if header_len > (bytes.len() - 8) as u64 {
        return Err(corrupt(format!(
            "header claims {header_len} bytes but only {} follow (truncated?)",
            bytes.len() - 8
        )));
    }
    let data = 8 + header_len as usize;
    header::check(&bytes[8..data], bytes.len() - data).map_err(corrupt)?;
    let st = SafeTensors::deserialize(bytes).map_err(|e| corrupt(describe(e)))?;
    let mut map = TensorMap::new();
    for (name, view) in st.iter() {
        let dtype = match view.dtype() {
            StDtype::F32 => DType::F32,
            StDtype::F16 => DType::F16,
            StDtype::BF16 => DType::BF16,
            StDtype::I64 => DType::I64,
            other => {
                return Err(WeightsError::UnsupportedDType {
                    file: file.to_string(),
                    name: name.to_string(),
                    dtype: format!("{other:?}"),
                })
            }
        };
        let data = view.data();
        let expected = calib_ir::numel(view.shape()) * dtype.size_bytes();
        if data.len() != expected {
            return Err(corrupt(format!(
                "tensor `{name}` has {} bytes, its shape needs {expected}",
                data.len()
            )));
        }
        let tensor = HostTensor::new(dtype, view.shape().to_vec(), decode(dtype, data))
            .map_err(|e| corrupt(format!("tensor `{name}`: {e}")))?;
        map.insert(name.to_string(), tensor);
    }
    Ok(map)
}

pub(crate) fn decode(dtype: DType, data: &[u8]) -> Storage {
    fn words<const N: usize, T>(data: &[u8], f: impl Fn([u8; N]) -> T) -> Vec<T> {
        data.chunks_exact(N)
            .map(|c| f(c.try_into().expect("exact chunk")))
            .collect()
    }
    match dtype {
        // TF32 is stored as the f32 it is (4 bytes, the dropped bits zero).
        DType::F32 | DType::TF32 => Storage::F32(words(data, f32::from_le_bytes)),
        DType::F16 => Storage::F32(words(data, |b| f16::from_le_bytes(b).to_f32())),
        DType::BF16 => Storage::F32(words(data, |b| bf16::from_le_bytes(b).to_f32())),
        DType::I64 => Storage::I64(words(data, i64::from_le_bytes)),
    }
}

fn describe(e: SafeTensorError) -> String {
    match e {
        SafeTensorError::InvalidHeader => "the header is not UTF-8".into(),
        SafeTensorError::InvalidHeaderDeserialization => {
            "the header is not valid safetensors JSON".into()
        }
        SafeTensorError::HeaderTooLarge => "the header length is implausibly large".into(),
        SafeTensorError::MetadataIncompleteBuffer => {
            "the data section is not the size the header describes (truncated or padded)".into()
        }
        SafeTensorError::InvalidOffset(name) => format!("tensor `{name}` has invalid data offsets"),
        SafeTensorError::TensorInvalidInfo => {
            "a tensor's byte range does not match its shape and dtype".into()
        }
        other => format!("{other:?}"),
    }
}

/// One tensor encoded for safetensors in its declared dtype.
pub(crate) struct Encoded {
    dtype: StDtype,
    shape: Vec<usize>,
    pub(crate) bytes: Vec<u8>,
}

impl View for &Encoded {
    fn dtype(&self) -> StDtype {
        self.dtype
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> Cow<'_, [u8]> {
        Cow::Borrowed(&self.bytes)
    }
    fn data_len(&self) -> usize {
        self.bytes.len()
    }
}

pub(crate) fn encode(t: &HostTensor) -> Encoded {
    let values = || t.to_f64_vec().into_iter();
    let (dtype, bytes): (StDtype, Vec<u8>) = match (t.dtype(), t.storage()) {
        (DType::I64, Storage::I64(v)) => (
            StDtype::I64,
            v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        ),
        (DType::F32 | DType::TF32, Storage::F32(v)) => (
            StDtype::F32,
            v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        ),
        (DType::F32 | DType::TF32, _) => (
            StDtype::F32,
            values().flat_map(|x| (x as f32).to_le_bytes()).collect(),
        ),
        (DType::F16, _) => (
            StDtype::F16,
            values()
                .flat_map(|x| f16::from_f64(x).to_le_bytes())
                .collect(),
        ),
        (DType::BF16, _) => (
            StDtype::BF16,
            values()
                .flat_map(|x| bf16::from_f64(x).to_le_bytes())
                .collect(),
        ),
        (DType::I64, _) => unreachable!("HostTensor keeps I64 tensors in I64 storage"),
    };
    Encoded {
        dtype,
        shape: t.shape().to_vec(),
        bytes,
    }
}

/// Writes `tensors` to `path` atomically (temporary file, fsync, rename). Floating
/// tensors are written in their declared dtype, rounding f64 storage to f32.
pub fn save(path: impl AsRef<Path>, tensors: &TensorMap) -> Result<(), WeightsError> {
    let path = path.as_ref();
    let file = path.display().to_string();
    let bytes = to_bytes(tensors, &file)?;
    crate::atomic_file::write_atomic(path, &bytes)
        .map_err(|source| WeightsError::Io { file, source })?;
    Ok(())
}

/// The safetensors bytes [`save`] writes, for a caller that must know they can be made
/// before it touches the files already there; `file` names the target in errors.
pub fn to_bytes(tensors: &TensorMap, file: &str) -> Result<Vec<u8>, WeightsError> {
    let encoded: Vec<(&str, Encoded)> = tensors
        .iter()
        .map(|(n, t)| (n.as_str(), encode(t)))
        .collect();
    safetensors::serialize(encoded.iter().map(|(n, e)| (*n, e)), &None).map_err(|e| {
        WeightsError::Serialize {
            file: file.to_string(),
            detail: describe(e),
        }
    })
}

/// The state a graph expects: each `Param` node's name and type, in graph order.
pub fn expected_state(graph: &Graph) -> Vec<(String, TensorType)> {
    graph
        .params()
        .map(|(name, v)| (name.to_string(), graph.ty(v).clone()))
        .collect()
}

/// Every way a checkpoint differs from the state a model expects.
#[derive(Debug, Clone, Default, PartialEq, Error)]
pub struct WeightsMismatch {
    /// Expected but absent: name and expected type.
    pub missing: Vec<(String, TensorType)>,
    /// Present but not expected: name and found type.
    pub unexpected: Vec<(String, TensorType)>,
    /// Present with another shape or dtype: name, expected and found type.
    pub mismatched: Vec<(String, TensorType, TensorType)>,
}

impl fmt::Display for WeightsMismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "checkpoint does not match the model ({} missing, {} unexpected, {} mismatched):",
            self.missing.len(),
            self.unexpected.len(),
            self.mismatched.len()
        )?;
        for (name, ty) in &self.missing {
            write!(f, "\n  missing    {name}: {ty}")?;
        }
        for (name, ty) in &self.unexpected {
            write!(f, "\n  unexpected {name}: {ty}")?;
        }
        for (name, want, got) in &self.mismatched {
            write!(f, "\n  mismatched {name}: expected {want}, found {got}")?;
        }
        Ok(())
    }
}

/// Checks that `found` holds exactly the `expected` tensors with the expected types,
/// reporting every difference at once.
pub fn check_state(
    expected: &[(String, TensorType)],
    found: &TensorMap,
) -> Result<(), WeightsMismatch> {
    let mut report = WeightsMismatch::default();
    for (name, want) in expected {
        match found.get(name) {
            None => report.missing.push((name.clone(), want.clone())),
            Some(t) if t.ty() != *want => {
                report.mismatched.push((name.clone(), want.clone(), t.ty()))
            }
            Some(_) => {}
        }
    }
    let known: HashSet<&str> = expected.iter().map(|(n, _)| n.as_str()).collect();
    for (name, t) in found {
        if !known.contains(name.as_str()) {
            report.unexpected.push((name.clone(), t.ty()));
        }
    }
    if report.missing.is_empty() && report.unexpected.is_empty() && report.mismatched.is_empty() {
        Ok(())
    } else {
        Err(report)
    }
}
