//! What a model argument on the command line names: a preset, a spec file, or a fixture
//! directory.

use anyhow::{bail, Result};
use calib_models::{load_spec_file, presets, ModelSpec};
use std::path::{Path, PathBuf};

/// A model named on the command line, with the input shape it is built for.
#[derive(Clone, Debug)]
pub struct ModelSource {
    /// How to refer to it in messages: the preset name or the path.
    pub label: String,
    pub spec: ModelSpec,
    /// NCHW; presets use batch 1 at 224x224, files state their own.
    pub input_shape: Vec<usize>,
    /// Set when the argument was a fixture directory (it has tensors to compare with).
    pub fixture_dir: Option<PathBuf>,
}

/// Resolves a preset name, a spec JSON file, or a fixture directory.
pub fn resolve_model(arg: &str) -> Result<ModelSource> {
    if let Some(spec) = presets::preset(arg) {
        let input_shape = spec.default_input_shape();
        return Ok(ModelSource {
            label: arg.to_string(),
            spec,
            input_shape,
            fixture_dir: None,
        });
    }
    let path = Path::new(arg);
    if !path.exists() {
        bail!(
            "`{arg}` is neither a preset ({}) nor an existing spec file or fixture directory",
            presets::PRESETS
                .iter()
                .map(|(n, _)| *n)
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    // Every error of a spec file names the file (a fixture directory's meta.json).
    let file = load_spec_file(path)?;
    let input_shape = file.input_shape_or_default();
    let fixture_dir =
        (path.is_dir() && path.join("params.safetensors").exists()).then(|| path.to_path_buf());
    Ok(ModelSource {
        label: arg.to_string(),
        spec: file.spec,
        input_shape,
        fixture_dir,
    })
}

/// Replaces the batch size of an NCHW shape.
pub fn with_batch(mut shape: Vec<usize>, batch: Option<usize>) -> Result<Vec<usize>> {
    if let Some(b) = batch {
        if b == 0 {
            bail!("--batch must be at least 1");
        }
        shape[0] = b;
    }
    Ok(shape)
}
