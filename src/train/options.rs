//! What determines a training run (`config.json` in its run directory), and the checks
//! that refuse a run that could only fail, or succeed meaninglessly, before anything is
//! written. Messages name the command-line flag, or for a resumed run the field of its
//! `config.json` ([`OptionNames`]).

use super::replicas::check_replicas;
use super::schedule::ScheduleKind;
use crate::data::DataSource;
use anyhow::{bail, Result};
use calib_models::ModelSpec;
use calib_passes::DataParallel;
use calib_runtime::Backend;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// Everything that determines a training run (saved as `config.json` in the run directory).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TrainOptions {
    /// What was asked for on the command line (preset, file), for the record.
    pub model: String,
    pub spec: ModelSpec,
    pub batch: usize,
    pub epochs: u64,
    pub lr: f64,
    pub schedule: ScheduleKind,
    pub warmup_epochs: f64,
    /// For the step schedule: decay by `gamma` every `step_epochs` epochs.
    pub step_epochs: u64,
    pub gamma: f64,
    pub momentum: f64,
    pub weight_decay: f64,
    pub nesterov: bool,
    pub label_smoothing: f64,
    pub seed: u64,
    pub augment: bool,
    /// Use only the first N training / test images (quick runs and tests).
    pub train_limit: Option<usize>,
    pub test_limit: Option<usize>,
    pub eval_batch: usize,
    /// The data set (Fashion-MNIST when absent, as in configs written before there was
    /// a choice).
    #[serde(default)]
    pub data: DataSource,
    /// Fashion-MNIST's directory (default: Debian's package's).
    pub data_dir: Option<PathBuf>,
    /// Write a checkpoint every this many steps (and at each epoch end); 0: epoch ends only.
    pub checkpoint_every: u64,
    /// How many checkpoints to keep: the newest (`checkpoint.safetensors`) and the ones
    /// before it (`checkpoint.1.safetensors`, ...), to roll a diverged run back.
    #[serde(default = "default_keep_checkpoints")]
    pub keep_checkpoints: usize,
    pub log_every: u64,
    /// Data-parallel replicas, each with `batch / replicas` images of every batch.
    #[serde(default = "one")]
    pub replicas: usize,
    /// BatchNorm statistics over the whole batch instead of each replica's shard.
    #[serde(default)]
    pub sync_bn: bool,
    /// Gradients are all-reduced in buckets of at most this many MiB.
    #[serde(default = "default_bucket_mb")]
    pub bucket_mb: f64,
    /// Start from these weights instead of a fresh initialisation (`--weights`:
    /// safetensors or a PyTorch `.pth`), checked against the model by name.
    #[serde(default)]
    pub init_weights: Option<PathBuf>,
    /// With `init_weights`: the classifier (`fc.weight`, `fc.bias`) is initialised
    /// afresh, for a model whose number of classes differs (`--num-classes`).
    #[serde(default)]
    pub new_classifier: bool,
    /// The precision policy (`--precision`): f32 in configs written before there was a
    /// choice. Checkpoints hold f32 master weights whatever it is, but a run's steps
    /// round as it says, so a resume keeps it.
    #[serde(default)]
    pub precision: calib_ir::Precision,
}

fn one() -> usize {
    1
}

/// The newest checkpoint and one before it.
pub fn default_keep_checkpoints() -> usize {
    2
}

fn default_bucket_mb() -> f64 {
    (DataParallel::DEFAULT_BUCKET_BYTES >> 20) as f64
}

/// How validation messages name an option: as the flag of a new run's command line, or
/// as the field of the `config.json` a resumed run reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OptionNames {
    /// `--warmup-epochs`
    Flags,
    /// `warmup_epochs`
    ConfigFields,
}

impl OptionNames {
    fn of(self, field: &str) -> String {
        match self {
            OptionNames::Flags => format!("--{}", field.replace('_', "-")),
            OptionNames::ConfigFields => format!("`{field}`"),
        }
    }
}

impl TrainOptions {
    /// Refuses values no run can use, naming the flag and the value. What depends on
    /// the data (a batch larger than the training set) or the backend (how many
    /// replicas it can run) is checked where those are known.
    pub fn validate(&self) -> Result<()> {
        self.validate_as(OptionNames::Flags)
    }

    /// [`TrainOptions::validate`], and the replicas `backend` can run, naming the
    /// options as `names` says.
    pub fn validate_for(&self, backend: &dyn Backend, names: OptionNames) -> Result<()> {
        // First: thousands of replicas is the mistake, not a batch they do not divide.
        check_replicas(self.replicas, backend, &names.of("replicas"))?;
        self.validate_as(names)
    }

    /// [`TrainOptions::validate`], naming the options as `names` says.
    pub fn validate_as(&self, names: OptionNames) -> Result<()> {
        let name = |field: &str| names.of(field);
        // Counts of things a run cannot do without (a limit of 0 images would train on
        // nothing or report the accuracy of no evaluation as 0%).
        let counts = [
            ("batch", Some(self.batch as u64)),
            ("epochs", Some(self.epochs)),
            ("eval_batch", Some(self.eval_batch as u64)),
            ("keep_checkpoints", Some(self.keep_checkpoints as u64)),
            ("replicas", Some(self.replicas as u64)),
            ("train_limit", self.train_limit.map(|n| n as u64)),
            ("test_limit", self.test_limit.map(|n| n as u64)),
        ];
        for (field, value) in counts {
            if value == Some(0) {
                bail!("{} 0: must be at least 1", name(field));
            }
        }
        learning_rate(&name("lr"), self.lr)?;
        let at_least_zero = [
            ("warmup_epochs", self.warmup_epochs),
            ("weight_decay", self.weight_decay),
        ];
        for (field, value) in at_least_zero {
            if !(value.is_finite() && value >= 0.0) {
                bail!("{} {value}: must be a number of at least 0", name(field));
            }
        }
        let positive = [("gamma", self.gamma), ("bucket_mb", self.bucket_mb)];
        for (field, value) in positive {
            if !(value.is_finite() && value > 0.0) {
                bail!("{} {value}: must be a positive number", name(field));
            }
        }
        let fractions = [
            ("momentum", self.momentum),
            ("label_smoothing", self.label_smoothing),
        ];
        for (field, value) in fractions {
            if !(0.0..1.0).contains(&value) {
                bail!("{} {value}: must be in [0, 1)", name(field));
            }
        }
        if !self.batch.is_multiple_of(self.replicas) {
            bail!(
                "{} {} does not split evenly across {} {}",
                name("batch"),
                self.batch,
                name("replicas"),
                self.replicas
            );
        }
        Ok(())
    }
}

/// The step takes the learning rate as an f32 scalar: a rate that rounds to infinity
/// or to zero there would train on something else than was asked for.
fn learning_rate(name: &str, lr: f64) -> Result<()> {
    if !(lr.is_finite() && lr > 0.0) {
        bail!("{name} {lr}: must be a positive number");
    }
    if (lr as f32).is_infinite() {
        bail!(
            "{name} {lr:e}: too large for f32, in which the step computes (at most {:e})",
            f32::MAX
        );
    }
    if lr as f32 == 0.0 {
        bail!("{name} {lr:e}: rounds to zero in f32, in which the step computes");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::ScheduleKind;

    fn options() -> TrainOptions {
        let spec = include_str!("../../models/specs/fashion_scnet.json");
        TrainOptions {
            model: "fashion_scnet".into(),
            spec: calib_models::parse_spec_file(spec).unwrap().spec,
            batch: 32,
            epochs: 1,
            lr: 0.1,
            schedule: ScheduleKind::Cosine,
            warmup_epochs: 0.3,
            step_epochs: 30,
            gamma: 0.1,
            momentum: 0.9,
            weight_decay: 1e-4,
            nesterov: true,
            label_smoothing: 0.0,
            seed: 0,
            augment: true,
            train_limit: None,
            test_limit: None,
            eval_batch: 100,
            data: DataSource::FashionMnist,
            data_dir: None,
            checkpoint_every: 0,
            keep_checkpoints: 2,
            log_every: 50,
            replicas: 1,
            sync_bn: false,
            bucket_mb: 25.0,
            precision: calib_ir::Precision::F32,
            init_weights: None,
            new_classifier: false,
        }
    }

    /// Each bad value and the start of the message that refuses it, as a flag.
    #[allow(clippy::type_complexity)]
    fn bad_values() -> Vec<(fn(&mut TrainOptions), &'static str)> {
        vec![
            (|o| o.batch = 0, "--batch 0: must be at least 1"),
            (|o| o.epochs = 0, "--epochs 0: must be at least 1"),
            (
                |o| o.train_limit = Some(0),
                "--train-limit 0: must be at least 1",
            ),
            (
                |o| o.test_limit = Some(0),
                "--test-limit 0: must be at least 1",
            ),
            (|o| o.keep_checkpoints = 0, "--keep-checkpoints 0"),
            (|o| o.lr = -1.0, "--lr -1: must be a positive number"),
            (|o| o.lr = f64::NAN, "--lr NaN: must be a positive number"),
            (|o| o.lr = 1e39, "--lr 1e39: too large for f32"),
            (|o| o.lr = 1e-50, "--lr 1e-50: rounds to zero in f32"),
            (
                |o| o.warmup_epochs = -1.0,
                "--warmup-epochs -1: must be a number of at least 0",
            ),
            (|o| o.weight_decay = f64::INFINITY, "--weight-decay inf"),
            (|o| o.gamma = 0.0, "--gamma 0: must be a positive number"),
            (|o| o.bucket_mb = -2.0, "--bucket-mb -2"),
            (|o| o.momentum = 1.0, "--momentum 1: must be in [0, 1)"),
            (|o| o.label_smoothing = -0.1, "--label-smoothing -0.1"),
            (
                |o| o.replicas = 3,
                "--batch 32 does not split evenly across --replicas 3",
            ),
        ]
    }

    #[test]
    fn the_defaults_are_valid() {
        options().validate().unwrap();
    }

    #[test]
    fn each_bad_value_is_refused_naming_its_flag() {
        for (spoil, message) in bad_values() {
            let mut o = options();
            spoil(&mut o);
            let err = o.validate().unwrap_err().to_string();
            assert!(
                err.starts_with(message),
                "expected `{message}`, got `{err}`"
            );
        }
    }

    #[test]
    fn a_config_file_s_bad_value_is_refused_naming_its_field() {
        for (spoil, message) in bad_values() {
            let mut o = options();
            spoil(&mut o);
            let err = o
                .validate_as(OptionNames::ConfigFields)
                .unwrap_err()
                .to_string();
            let field = message[2..message.find(' ').unwrap()].replace('-', "_");
            assert!(
                err.starts_with(&format!("`{field}` ")) && !err.contains("--"),
                "expected the field `{field}`, got `{err}`"
            );
        }
    }
}
