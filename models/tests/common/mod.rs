//! Helpers shared by the integration tests: fixture paths and order-preserving readers
//! for the fixture JSON (serde_json's `Value` sorts object keys, and tensor order matters).

#![allow(dead_code)] // each test binary uses a different subset

use calib_ir::{DType, Mode};
use calib_models::{build, load_spec_file, Model};
use serde::de::{MapAccess, Visitor};
use serde::{Deserialize, Deserializer};
use std::fmt;
use std::path::PathBuf;

/// `shared/fixtures`, beside the repository.
pub fn fixtures() -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../shared/fixtures"
    ))
}

/// `shared/models`, beside the repository.
pub fn shared_models() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/models"))
}

pub fn read_json<T: for<'de> Deserialize<'de>>(path: &PathBuf) -> T {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Loads a spec file (or fixture directory) and builds it at the file's input shape.
pub fn build_file(path: &PathBuf, mode: Mode) -> Model {
    let file = load_spec_file(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let shape = file
        .input_shape
        .clone()
        .expect("the file states an input shape");
    build(&file.spec, &shape, mode, DType::F32)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The dtype names the fixtures use.
pub fn fixture_dtype(d: DType) -> &'static str {
    match d {
        // TF32 is f32 storage (the precision policy's, never a fixture's).
        DType::F32 | DType::TF32 => "float32",
        DType::I64 => "int64",
        DType::F16 => "float16",
        DType::BF16 => "bfloat16",
    }
}

/// A model's state as `(name, shape, dtype)` in order.
pub fn state_list(model: &Model) -> Vec<(String, Vec<usize>, String)> {
    model
        .state
        .iter()
        .map(|e| {
            (
                e.name.clone(),
                e.ty.shape.clone(),
                fixture_dtype(e.ty.dtype).to_string(),
            )
        })
        .collect()
}

#[derive(Deserialize)]
pub struct TensorInfo {
    pub shape: Vec<usize>,
    pub dtype: String,
}

/// A JSON object of tensors read in file order.
pub struct OrderedTensors(pub Vec<(String, TensorInfo)>);

impl<'de> Deserialize<'de> for OrderedTensors {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Entries;
        impl<'de> Visitor<'de> for Entries {
            type Value = OrderedTensors;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an object of tensors")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<OrderedTensors, A::Error> {
                let mut out = Vec::new();
                while let Some(entry) = map.next_entry()? {
                    out.push(entry);
                }
                Ok(OrderedTensors(out))
            }
        }
        d.deserialize_map(Entries)
    }
}

#[derive(Deserialize)]
pub struct FileEntry {
    pub file: String,
    pub tensors: OrderedTensors,
}

/// The parts of a fixture `meta.json` the tests read.
#[derive(Deserialize)]
pub struct Meta {
    pub input_shape: Vec<usize>,
    pub output_shape: Vec<usize>,
    pub files: Vec<FileEntry>,
    #[serde(default)]
    pub shape_trace_eval: Option<std::collections::HashMap<String, InOut>>,
}

#[derive(Deserialize)]
pub struct InOut {
    #[serde(rename = "in")]
    pub input: Vec<usize>,
    pub out: Vec<usize>,
}
