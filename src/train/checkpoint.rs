//! What a training checkpoint holds, as one safetensors file: the model's `state_dict`
//! (so PyTorch can read it), the SGD momentum buffers (`momentum.<name>`) and the
//! progress counters (`calib.*`, i64 scalars). Which checkpoint files a run keeps, and
//! which one it resumes from, is `generations.rs`'s concern.

use super::SgdState;
use anyhow::{bail, Context, Result};
use calib_passes::momentum_name;
use calib_runtime::{weights, HostTensor, TensorMap};

const STEP: &str = "calib.step";
const SEED: &str = "calib.seed";
const MOMENTUM: &str = "momentum.";

/// Where training stands. Every random draw is a function of `seed` and the step (see
/// `trainer.rs`), so these two numbers are the whole generator state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Progress {
    pub step: u64,
    pub seed: u64,
}

/// Everything a run needs to continue bit-identically.
#[derive(Clone, Debug, PartialEq)]
pub struct Checkpoint {
    pub sgd: SgdState,
    pub progress: Progress,
}

fn scalar(v: u64) -> HostTensor {
    HostTensor::from_i64(Vec::<usize>::new(), vec![v as i64]).expect("a scalar has one element")
}

/// The file contents of a checkpoint of `sgd` at `progress`; `file` names it in errors.
pub fn encode(sgd: &SgdState, progress: Progress, file: &str) -> Result<Vec<u8>> {
    let mut all = sgd.state.clone();
    for (name, t) in &sgd.momentum {
        all.insert(momentum_name(name), t.clone());
    }
    all.insert(STEP.into(), scalar(progress.step));
    all.insert(SEED.into(), scalar(progress.seed));
    Ok(weights::to_bytes(&all, file)?)
}

/// Decodes the contents of a checkpoint file; `file` names it in errors.
pub fn decode(bytes: &[u8], file: &str) -> Result<Checkpoint> {
    let mut all = weights::parse(bytes, file)?;
    let mut counter = |name: &str| -> Result<u64> {
        let t = all
            .remove(name)
            .with_context(|| format!("{file} lacks `{name}`"))?;
        match t.as_i64() {
            Some([v]) => Ok(*v as u64),
            _ => bail!("{file}: `{name}` must be one i64"),
        }
    };
    let progress = Progress {
        step: counter(STEP)?,
        seed: counter(SEED)?,
    };
    let (momentum, state): (TensorMap, TensorMap) =
        all.into_iter().partition(|(n, _)| n.starts_with(MOMENTUM));
    let momentum = momentum
        .into_iter()
        .map(|(n, t)| (n[MOMENTUM.len()..].to_string(), t))
        .collect();
    Ok(Checkpoint {
        // No weight copies: a checkpoint holds none; `SgdState::resident` rounds them.
        sgd: SgdState {
            state,
            momentum,
            copies: TensorMap::new(),
        },
        progress,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_checkpoint_reads_back_as_written() {
        let w = HostTensor::from_f32(vec![2], vec![1.5, -2.0]).unwrap();
        let sgd = SgdState {
            state: [("fc.weight".to_string(), w.clone())].into(),
            momentum: [("fc.weight".to_string(), w)].into(),
            copies: TensorMap::new(),
        };
        let progress = Progress { step: 9, seed: 3 };
        let bytes = encode(&sgd, progress, "ck").unwrap();
        // PyTorch reads the state_dict by its own names, momentum beside it.
        let names: Vec<String> = weights::parse(&bytes, "ck").unwrap().into_keys().collect();
        assert_eq!(
            names,
            [
                "calib.seed",
                "calib.step",
                "fc.weight",
                "momentum.fc.weight"
            ]
        );
        assert_eq!(decode(&bytes, "ck").unwrap(), Checkpoint { sgd, progress });
    }

    #[test]
    fn a_file_without_the_counters_is_named() {
        let bytes = weights::to_bytes(&TensorMap::new(), "x").unwrap();
        let err = decode(&bytes, "run/ck.safetensors")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("run/ck.safetensors lacks `calib.step`"),
            "{err}"
        );
    }
}
