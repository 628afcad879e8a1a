//! Reading specs from the files that carry them.
//!
//! Four shapes of input are accepted: a fixture `meta.json` and a `*_structure.json` (a
//! `spec` plus an `input_shape` with batch), a model file such as
//! `shared/models/fashion_scnet.json` (a `spec` plus an `input_shape` without batch), a
//! bare spec object, and a fixture directory (its `meta.json`).

use crate::{ModelError, ModelSpec};
use serde_json::Value as Json;
use std::path::Path;

/// A validated spec and the input shape its file states, if any.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpecFile {
    pub spec: ModelSpec,
    /// NCHW; a batch-less `[C, H, W]` in the file gets batch 1.
    pub input_shape: Option<Vec<usize>>,
}

impl SpecFile {
    /// The file's input shape, or the spec's default when the file states none.
    pub fn input_shape_or_default(&self) -> Vec<usize> {
        self.input_shape
            .clone()
            .unwrap_or_else(|| self.spec.default_input_shape())
    }
}

/// Parses a spec document (see the module docs) and validates the spec.
pub fn parse_spec_file(json: &str) -> Result<SpecFile, ModelError> {
    parse(json, "")
}

/// Reads a spec file, or the `meta.json` of a fixture directory.
pub fn load_spec_file(path: impl AsRef<Path>) -> Result<SpecFile, ModelError> {
    let path = path.as_ref();
    let file = if path.is_dir() {
        path.join("meta.json")
    } else {
        path.to_path_buf()
    };
    let text = std::fs::read_to_string(&file).map_err(|source| ModelError::Io {
        path: file.clone(),
        source,
    })?;
    parse(&text, &format!(" from `{}`", file.display()))
}

fn parse(json: &str, origin: &str) -> Result<SpecFile, ModelError> {
    let fail = |message: String| ModelError::Parse {
        origin: origin.to_string(),
        message,
    };
    let mut doc: Json = serde_json::from_str(json).map_err(|e| fail(e.to_string()))?;
    let Some(object) = doc.as_object_mut() else {
        return Err(fail("expected a JSON object".into()));
    };
    let (spec, input_shape) = match object.remove("spec") {
        Some(spec) => (spec, object.remove("input_shape")),
        None => (doc, None),
    };
    let spec: ModelSpec = serde_json::from_value(spec).map_err(|e| fail(e.to_string()))?;
    spec.validate()?;
    let input_shape = input_shape
        .map(|v| batched_shape(v).map_err(fail))
        .transpose()?;
    Ok(SpecFile { spec, input_shape })
}

fn batched_shape(value: Json) -> Result<Vec<usize>, String> {
    let dims: Vec<usize> = serde_json::from_value(value)
        .map_err(|e| format!("input_shape must be a list of sizes: {e}"))?;
    match dims.len() {
        3 => Ok([1].into_iter().chain(dims).collect()),
        4 => Ok(dims),
        n => Err(format!(
            "input_shape must have 3 (C,H,W) or 4 (N,C,H,W) entries, got {n}"
        )),
    }
}
