//! Writing a fixture directory in the format of `shared/fixtures` from a protocol run,
//! so that any spec gets a fixture `calib verify` can check every backend against.

use super::protocol::{Case, Files};
use anyhow::{Context, Result};
use calib_runtime::{weights, Precision, TensorMap};
use serde_json::json;
use std::path::Path;

/// Writes `meta.json`, `params.safetensors` and every file of `files` (with the case's
/// inputs added to `eval_io` and `train_io`) into `dir`, creating it. Values are
/// stored in f32, as PyTorch's fixtures are.
pub fn write_fixture(dir: &Path, case: &Case, files: &Files, generator: &str) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let save = |stem: &str, tensors: &TensorMap| -> Result<()> {
        let narrowed: TensorMap = tensors
            .iter()
            .map(|(n, t)| (n.clone(), t.clone().into_precision(Precision::F32)))
            .collect();
        let path = dir.join(format!("{stem}.safetensors"));
        weights::save(&path, &narrowed).with_context(|| format!("writing {}", path.display()))
    };
    save("params", &case.params)?;
    for (stem, tensors) in files {
        let mut tensors = tensors.clone();
        match stem.as_str() {
            "eval_io" => {
                tensors.insert("input".into(), case.eval_input.clone());
            }
            "train_io" => tensors.extend(case.train.clone()),
            _ => {}
        }
        save(stem, &tensors)?;
    }
    let mut meta = json!({
        "generator": generator,
        "spec": case.spec,
        "input_shape": case.input_shape,
        "dtype": "float32",
    });
    if let Some(steps) = &case.sgd {
        meta["optimizer"] = json!({
            "lr": steps.lr,
            "momentum": steps.sgd.momentum,
            "weight_decay": steps.sgd.weight_decay,
            "nesterov": steps.sgd.nesterov,
            "dampening": 0.0,
        });
    }
    let path = dir.join("meta.json");
    std::fs::write(&path, serde_json::to_string_pretty(&meta)? + "\n")
        .with_context(|| format!("writing {}", path.display()))
}
