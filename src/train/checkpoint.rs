//! Training checkpoints: one safetensors file holding the model's `state_dict` (so
//! PyTorch can read it), the SGD momentum buffers (`momentum.<name>`) and the progress
//! counters (`calib.*`, i64 scalars). Written atomically by `weights::save`.

use anyhow::{bail, Context, Result};
use calib_passes::momentum_name;
use calib_runtime::{weights, HostTensor, TensorMap};
use std::path::{Path, PathBuf};

/// The checkpoint file inside a run directory.
pub fn checkpoint_path(dir: &Path) -> PathBuf {
    dir.join("checkpoint.safetensors")
}

const STEP: &str = "calib.step";
const SEED: &str = "calib.seed";

/// Where training stands. Every random draw is a function of `seed` and the step (see
/// `trainer.rs`), so these two numbers are the whole generator state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Progress {
    pub step: u64,
    pub seed: u64,
}

/// Everything a run needs to continue bit-identically.
pub struct Checkpoint {
    /// Parameters and buffers by `state_dict` name.
    pub state: TensorMap,
    /// Momentum buffers by parameter name.
    pub momentum: TensorMap,
    pub progress: Progress,
}

fn scalar(v: u64) -> HostTensor {
    HostTensor::from_i64(Vec::<usize>::new(), vec![v as i64]).expect("a scalar has one element")
}

/// Writes `checkpoint` to `dir/checkpoint.safetensors`, replacing any older one atomically.
pub fn save(dir: &Path, checkpoint: &Checkpoint) -> Result<()> {
    let mut all = checkpoint.state.clone();
    for (name, t) in &checkpoint.momentum {
        all.insert(momentum_name(name), t.clone());
    }
    all.insert(STEP.into(), scalar(checkpoint.progress.step));
    all.insert(SEED.into(), scalar(checkpoint.progress.seed));
    weights::save(checkpoint_path(dir), &all)?;
    Ok(())
}

/// Reads the checkpoint of a run directory.
pub fn load(dir: &Path) -> Result<Checkpoint> {
    let path = checkpoint_path(dir);
    if !path.exists() {
        bail!(
            "no checkpoint to resume from: {} does not exist",
            path.display()
        );
    }
    let mut all = weights::load(&path).with_context(|| format!("reading {}", path.display()))?;
    let mut counter = |name: &str| -> Result<u64> {
        let t = all
            .remove(name)
            .with_context(|| format!("{} lacks `{name}`", path.display()))?;
        match t.as_i64() {
            Some([v]) => Ok(*v as u64),
            _ => bail!("{}: `{name}` must be one i64", path.display()),
        }
    };
    let progress = Progress {
        step: counter(STEP)?,
        seed: counter(SEED)?,
    };
    let (momentum, state): (TensorMap, TensorMap) = all
        .into_iter()
        .partition(|(n, _)| n.starts_with("momentum."));
    let momentum = momentum
        .into_iter()
        .map(|(n, t)| (n["momentum.".len()..].to_string(), t))
        .collect();
    Ok(Checkpoint {
        state,
        momentum,
        progress,
    })
}
