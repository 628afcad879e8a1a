//! Reading specs from the files that carry them.
//!
//! Four shapes of input are accepted: a fixture `meta.json` and a `*_structure.json` (a
//! `spec` plus an `input_shape` with batch), a model file such as
//! `shared/models/fashion_scnet.json` (a `spec` plus an `input_shape` without batch), a
//! bare spec object, and a fixture directory (its `meta.json`).

use crate::{check_input_shape, ModelError, ModelSpec};
use calib_ir::fmt_shape;
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
    parse(&text, &format!(" from `{}`", file.display())).map_err(|e| match e {
        // A parse error names the file already.
        ModelError::Parse { .. } => e,
        _ => ModelError::File {
            path: file,
            cause: Box::new(e),
        },
    })
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
    let nested = object.contains_key("spec");
    let (spec, input_shape) = match object.remove("spec") {
        Some(spec) => (spec, object.remove("input_shape")),
        // Without `kind` this is not a bare spec either: serde would only say that
        // `kind` is missing, which misleads the owner of a meta.json.
        None if !object.contains_key("kind") => {
            return Err(fail(
                "no `spec` field (which a meta.json or model file has) and no `kind` \
                 (which a bare spec has)"
                    .into(),
            ))
        }
        None => (doc, None),
    };
    let spec: ModelSpec = serde_json::from_value(spec).map_err(|e| match nested {
        true => fail(format!("`spec`: {e}")),
        false => fail(e.to_string()),
    })?;
    spec.validate()?;
    let input_shape = input_shape.map(|v| batched_shape(&spec, v)).transpose()?;
    Ok(SpecFile { spec, input_shape })
}

/// The file's `input_shape` as NCHW, checked against `spec`; errors quote it as
/// written (a `[C, H, W]` gets batch 1, which the file never said).
fn batched_shape(spec: &ModelSpec, value: Json) -> Result<Vec<usize>, ModelError> {
    let fail = |message: String| ModelError::invalid("input_shape", message);
    let dims: Vec<usize> = serde_json::from_value(value.clone())
        .map_err(|e| fail(format!("= {value} is not a list of sizes: {e}")))?;
    let shape = match dims.len() {
        3 => [1].into_iter().chain(dims.iter().copied()).collect(),
        4 => dims.clone(),
        n => {
            return Err(fail(format!(
                "= {value} must have 3 (C,H,W) or 4 (N,C,H,W) entries, got {n}"
            )))
        }
    };
    check_input_shape(spec, &shape).map_err(|e| match e {
        ModelError::InputShape { message, .. } if dims.len() == 3 => fail(format!(
            "= {} (C,H,W) does not fit the model: {message}",
            fmt_shape(&dims)
        )),
        ModelError::InputShape { message, .. } => fail(format!(
            "= {} (N,C,H,W) does not fit the model: {message}",
            fmt_shape(&dims)
        )),
        other => other,
    })?;
    Ok(shape)
}
