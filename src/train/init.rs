//! Fresh parameters for training from scratch, following SCNet's initialisation:
//! convolutions kaiming-normal (fan_out, ReLU gain), BatchNorm weight 1 and bias 0,
//! running statistics 0 and 1, linear layers PyTorch's default uniform(±1/sqrt(fan_in)).

use crate::data::rng::Rng;
use anyhow::{Context, Result};
use calib_models::StateEntry;
use calib_runtime::weights::{self, pth};
use calib_runtime::{HostTensor, Storage, TensorMap};
use std::path::Path;

/// The state entries of the layer that maps to the logits (`fc`, in every model with
/// classes), which `--num-classes` initialises afresh.
pub const CLASSIFIER: [&str; 2] = ["fc.weight", "fc.bias"];

/// A model's weights from `path`: a safetensors file (`model.safetensors` of a run,
/// `calib import`'s output, or a training checkpoint, whose `momentum.*` and `calib.*`
/// entries are left out), or a PyTorch `.pth`/`.pt` checkpoint read as `calib import`
/// reads it.
pub fn read_weights(path: &Path) -> Result<TensorMap> {
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
    let mut tensors = if matches!(ext, "pth" | "pt") {
        pth::load(path)
            .with_context(|| format!("reading {}", path.display()))?
            .tensors
    } else {
        weights::load(path).with_context(|| format!("reading {}", path.display()))?
    };
    if tensors.contains_key("calib.step") {
        tensors.retain(|name, _| !name.starts_with("calib.") && !name.starts_with("momentum."));
    }
    Ok(tensors)
}

/// The state a run starts from: every entry of `loaded`, which must hold exactly the
/// model's `state` (checked by name, shape and dtype, every difference reported), except
/// the entries named in `fresh_names`, which come from `fresh` (and whatever `loaded`
/// holds under those names is ignored).
pub fn start_from(
    state: &[StateEntry],
    mut fresh: TensorMap,
    mut loaded: TensorMap,
    fresh_names: &[&str],
) -> Result<TensorMap> {
    loaded.retain(|name, _| !fresh_names.contains(&name.as_str()));
    let expected: Vec<_> = state
        .iter()
        .filter(|e| !fresh_names.contains(&e.name.as_str()))
        .map(|e| (e.name.clone(), e.ty.clone()))
        .collect();
    weights::check_state(&expected, &loaded)?;
    fresh.extend(loaded);
    Ok(fresh)
}

/// Initial values for every entry of `state`, drawn from `rng` in state order.
pub fn init_state(state: &[StateEntry], rng: &mut Rng) -> TensorMap {
    let has = |name: &str| state.iter().any(|e| e.name == name);
    let mut out = TensorMap::new();
    for e in state {
        let (module, leaf) = e.name.rsplit_once('.').unwrap_or(("", &e.name));
        let is_bn = has(&format!("{module}.running_mean"));
        let n = e.ty.numel();
        let shape = &e.ty.shape;
        let values: Vec<f64> = match (leaf, shape.len()) {
            ("num_batches_tracked", _) => {
                let t =
                    HostTensor::from_i64(shape.clone(), vec![0; n]).expect("shape and data agree");
                out.insert(e.name.clone(), t);
                continue;
            }
            ("running_var", _) => vec![1.0; n],
            ("running_mean", _) => vec![0.0; n],
            ("weight", 1) | ("bias", 1) if is_bn => {
                vec![if leaf == "weight" { 1.0 } else { 0.0 }; n]
            }
            ("weight", 4) => {
                let fan_out = (shape[0] * shape[2] * shape[3]) as f64;
                let std = (2.0 / fan_out).sqrt();
                (0..n).map(|_| rng.normal() * std).collect()
            }
            ("weight", 2) => uniform(rng, n, shape[1]),
            ("bias", 1) => {
                let fan_in = state
                    .iter()
                    .find(|w| w.name == format!("{module}.weight"))
                    .map_or(1, |w| w.ty.shape[1..].iter().product());
                uniform(rng, n, fan_in)
            }
            _ => vec![0.0; n],
        };
        let storage = Storage::F32(values.into_iter().map(|v| v as f32).collect());
        let t = HostTensor::new(e.ty.dtype, shape.clone(), storage).expect("shape and data agree");
        out.insert(e.name.clone(), t);
    }
    out
}

fn uniform(rng: &mut Rng, n: usize, fan_in: usize) -> Vec<f64> {
    let bound = 1.0 / (fan_in.max(1) as f64).sqrt();
    (0..n)
        .map(|_| (2.0 * rng.unit_f64() - 1.0) * bound)
        .collect()
}
