//! `calib train`: train a model on Fashion-MNIST or an ImageNet-style image folder.

use anyhow::{bail, Context, Result};
use calib::data::imagefolder::scan::list_classes;
use calib::data::DataSource;
use calib::models::{parse_spec_file, ModelSpec};
use calib::resolve_model;
use calib::train::{train, OptionNames, ScheduleKind, Start, TrainOptions};
use std::path::PathBuf;
use std::process::ExitCode;

/// The default model: a 33.6k-parameter SCNet for 28x28 grey images.
const FASHION_SCNET: &str = include_str!("../../models/specs/fashion_scnet.json");

#[derive(clap::Args, Debug)]
pub struct Args {
    /// A preset, a spec JSON, or a fixture directory (default: the built-in fashion_scnet).
    #[arg(long)]
    model: Option<String>,
    #[command(flatten)]
    rules: super::rules::RuleArgs,
    /// Executor: `reference` (the CPU interpreter), `sim` (the PTX simulator) or `cuda`.
    #[arg(long, default_value = "reference")]
    backend: String,
    /// With --backend cuda: capture each step as a CUDA graph on the first run and
    /// replay it (one driver call per step instead of one per kernel).
    #[arg(long)]
    cuda_graph: bool,
    // Numbers may be negative on the command line (`--lr -1`), so that a bad one is
    // refused with the reason rather than taken for an unknown flag.
    #[arg(long, default_value_t = 128, allow_negative_numbers = true)]
    batch: usize,
    #[arg(long, default_value_t = 3, allow_negative_numbers = true)]
    epochs: u64,
    /// Stop after this many optimizer steps in all (a checkpoint is written there).
    #[arg(long, allow_negative_numbers = true)]
    max_steps: Option<u64>,
    /// Peak learning rate.
    #[arg(long, default_value_t = 0.1, allow_negative_numbers = true)]
    lr: f64,
    #[arg(long, value_enum, default_value = "cosine")]
    schedule: ScheduleKind,
    /// Linear warmup length, in epochs (fractions allowed).
    #[arg(long, default_value_t = 0.3, allow_negative_numbers = true)]
    warmup_epochs: f64,
    /// Step schedule: multiply the rate by --gamma every this many epochs.
    #[arg(long, default_value_t = 30, allow_negative_numbers = true)]
    step_epochs: u64,
    #[arg(long, default_value_t = 0.1, allow_negative_numbers = true)]
    gamma: f64,
    #[arg(long, default_value_t = 0.9, allow_negative_numbers = true)]
    momentum: f64,
    #[arg(long, default_value_t = 1e-4, allow_negative_numbers = true)]
    weight_decay: f64,
    /// Plain momentum instead of Nesterov's.
    #[arg(long)]
    no_nesterov: bool,
    #[arg(long, default_value_t = 0.0, allow_negative_numbers = true)]
    label_smoothing: f64,
    #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
    seed: u64,
    /// Turn off random crop (pad 2) and horizontal flip.
    #[arg(long)]
    no_augment: bool,
    /// Train on the first N training images only.
    #[arg(long, allow_negative_numbers = true)]
    train_limit: Option<usize>,
    /// Evaluate on the first N test images only.
    #[arg(long, allow_negative_numbers = true)]
    test_limit: Option<usize>,
    #[arg(long, default_value_t = 500, allow_negative_numbers = true)]
    eval_batch: usize,
    /// Directory with the gzipped IDX files (default: Debian's dataset-fashion-mnist).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// The data set: `fashion-mnist`, or `imagefolder:DIR` for torchvision's ImageFolder
    /// layout (DIR/train/<class>/*.JPEG, DIR/val/<class>/*.JPEG; JPEG and PNG), trained
    /// with RandomResizedCrop and flips, evaluated with Resize + CenterCrop, ImageNet's
    /// normalization. Without --model, an image folder trains the fashion_scnet layout
    /// with 3 input channels and one output per class.
    #[arg(long, default_value = "fashion-mnist")]
    data: String,
    #[command(flatten)]
    loader: super::loader::LoaderArgs,
    /// Checkpoint every N steps as well as at each epoch end (0: epoch ends only).
    #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
    checkpoint_every: u64,
    /// Keep the newest N checkpoints: checkpoint.safetensors, then checkpoint.1.safetensors
    /// and so on (older first to go), to roll a diverged run back.
    #[arg(long, default_value_t = 2, allow_negative_numbers = true)]
    keep_checkpoints: usize,
    /// Write a metrics line every N steps.
    #[arg(long, default_value_t = 50, allow_negative_numbers = true)]
    log_every: u64,
    /// Run directory: config.json, metrics.jsonl, checkpoints, model.safetensors. One that
    /// already holds a run is refused unless --overwrite.
    #[arg(long, default_value = "runs/fashion")]
    out: PathBuf,
    /// Replace the run already in --out (its config, metrics, checkpoints and model).
    #[arg(long, conflicts_with = "resume")]
    overwrite: bool,
    #[command(flatten)]
    data_parallel: super::data_parallel::DataParallelArgs,
    /// Time the reference interpreter per op and print the table at the end.
    #[arg(long)]
    profile: bool,
    /// Debugging a diverging run (--backend reference): check every op's output and stop
    /// at the first op (node, op, scope) that makes a NaN or an infinity. Slower.
    #[arg(long)]
    check_finite: bool,
    /// Continue the run in DIR from its newest checkpoint (its config.json is used;
    /// --max-steps, --backend, --check-finite may differ). A run already at its end is
    /// left as it is.
    #[arg(long, value_name = "DIR")]
    resume: Option<PathBuf>,
    /// Start from these weights instead of a fresh initialisation (fine-tuning): a
    /// safetensors file (a run's model.safetensors, `calib import`'s output) or a
    /// PyTorch .pth, every tensor checked against the model by name and shape.
    #[arg(long, value_name = "FILE", conflicts_with = "resume")]
    weights: Option<PathBuf>,
    /// With --weights: give the model N classes, its classifier (fc.weight, fc.bias)
    /// initialised afresh and every other tensor loaded.
    #[arg(
        long,
        value_name = "N",
        requires = "weights",
        allow_negative_numbers = true
    )]
    num_classes: Option<usize>,
}

pub fn run(args: Args) -> Result<ExitCode> {
    if args.profile {
        calib::runtime::reference::profile::enable();
    }
    let code = run_training(&args)?;
    if args.profile {
        print_profile();
    }
    Ok(code)
}

fn print_profile() {
    let rows = calib::runtime::reference::profile::report();
    let total: f64 = rows.iter().map(|r| r.seconds).sum();
    eprintln!(
        "{:<24} {:>8} {:>10} {:>7} {:>10}",
        "op", "calls", "seconds", "share", "GB/s out"
    );
    for r in rows {
        let gbs = r.elements as f64 * 4.0 / r.seconds.max(1e-12) / 1e9;
        eprintln!(
            "{:<24} {:>8} {:>10.3} {:>6.1}% {:>10.2}",
            r.op,
            r.calls,
            r.seconds,
            100.0 * r.seconds / total.max(1e-12),
            gbs
        );
    }
}

fn run_training(args: &Args) -> Result<ExitCode> {
    let backend = calib::backend_with(
        &args.backend,
        calib::BackendOptions {
            cuda_graph: args.cuda_graph,
            check_finite: args.check_finite,
            rules: args.rules.rule_set()?,
        },
    )?;
    if let Some(dir) = &args.resume {
        let config = dir.join("config.json");
        let text = std::fs::read_to_string(&config)
            .map_err(|e| anyhow::anyhow!("cannot resume from {}: {e}", config.display()))?;
        let opts: TrainOptions = serde_json::from_str(&text).map_err(|e| {
            anyhow::anyhow!("{} is not a calib training config: {e}", config.display())
        })?;
        opts.validate_for(backend.as_ref(), OptionNames::ConfigFields)
            .with_context(|| format!("{} holds a value no run can use", config.display()))?;
        train(&opts, backend.as_ref(), dir, Start::Resume, args.max_steps)?;
        return Ok(ExitCode::SUCCESS);
    }
    let data = DataSource::parse(
        &args.data,
        args.loader.image_size,
        args.loader.loader_workers,
    )?;
    let (label, spec) = match (&args.model, &data) {
        (Some(m), _) => (m.clone(), resolve_model(m)?.spec),
        (None, DataSource::FashionMnist) => (
            "fashion_scnet".to_string(),
            parse_spec_file(FASHION_SCNET)?.spec,
        ),
        (None, DataSource::ImageFolder { dir, .. }) => {
            let classes = class_count(dir)?;
            let mut spec = parse_spec_file(FASHION_SCNET)?.spec;
            if let ModelSpec::ScNet(s) = &mut spec {
                s.in_channels = 3;
                s.num_classes = classes;
            }
            (
                format!("fashion_scnet (3 channels, {classes} classes)"),
                spec,
            )
        }
    };
    let (mut label, mut spec) = (label, spec);
    if let Some(n) = args.num_classes {
        if n == 0 {
            bail!("--num-classes 0: must be at least 1");
        }
        match &mut spec {
            ModelSpec::ScNet(s) => s.num_classes = n,
            ModelSpec::ResNet(s) => s.num_classes = n,
            ModelSpec::ScConv(_) | ModelSpec::ScBottleneck(_) => {
                bail!("--num-classes: {label} has no classifier (it is a single block)")
            }
        }
        label = format!("{label}, classifier for {n} classes");
    }
    let opts = TrainOptions {
        model: label,
        spec,
        batch: args.batch,
        epochs: args.epochs,
        lr: args.lr,
        schedule: args.schedule,
        warmup_epochs: args.warmup_epochs,
        step_epochs: args.step_epochs,
        gamma: args.gamma,
        momentum: args.momentum,
        weight_decay: args.weight_decay,
        nesterov: !args.no_nesterov,
        label_smoothing: args.label_smoothing,
        seed: args.seed,
        augment: !args.no_augment,
        train_limit: args.train_limit,
        test_limit: args.test_limit,
        eval_batch: args.eval_batch,
        data,
        data_dir: args.data_dir.clone(),
        checkpoint_every: args.checkpoint_every,
        keep_checkpoints: args.keep_checkpoints,
        log_every: args.log_every,
        replicas: args.data_parallel.replicas,
        sync_bn: args.data_parallel.sync_bn,
        bucket_mb: args.data_parallel.bucket_mb,
        init_weights: args.weights.clone(),
        new_classifier: args.num_classes.is_some(),
    };
    let start = if args.overwrite {
        Start::Overwrite
    } else {
        Start::Fresh
    };
    train(&opts, backend.as_ref(), &args.out, start, args.max_steps)?;
    Ok(ExitCode::SUCCESS)
}

/// The number of classes of the image folder in `dir` (its training split's).
fn class_count(dir: &std::path::Path) -> Result<usize> {
    Ok(list_classes(&dir.join("train"))?.len())
}
