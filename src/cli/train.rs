//! `calib train`: train a model on Fashion-MNIST or an ImageNet-style image folder.

use anyhow::{bail, Context, Result};
use calib::data::imagefolder::scan::list_classes;
use calib::data::DataSource;
use calib::ir::Precision;
use calib::models::{parse_spec_file, ModelSpec};
use calib::resolve_model;
use calib::train::launch::agree_on_options;
use calib::train::{
    train, train_in_group, Launch, OptionNames, ProcessGroup, ScheduleKind, Start, TrainOptions,
};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

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
    /// Precision policy: `f32` (default), `tf32` (GEMM operands rounded to TF32) or
    /// `bf16` (GEMM operands, activations and their gradients in bf16; weights,
    /// optimizer state, BN statistics and the loss in f32). Recorded in config.json; a
    /// resumed run keeps its own, and refuses a different one.
    #[arg(long)]
    precision: Option<Precision>,
    /// How the fused plan stores image-shaped temporaries: `row_major` (NCHW, the
    /// default), `channels_last` (NHWC, 3x3 weights OHWI on the device), or `auto`
    /// (whichever step the cost model predicts faster). What is bound and read back,
    /// and checkpoints, stay NCHW; the numbers are the same bits either way.
    #[arg(long, default_value = "row_major")]
    layout: calib::passes::fusion::LayoutPolicy,
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
    /// Started by a launcher (RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT set): how long
    /// the processes may take to meet before the run fails, naming the ranks missing.
    #[arg(
        long,
        value_name = "SECS",
        default_value_t = 300,
        allow_negative_numbers = true
    )]
    rendezvous_timeout: i64,
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
    // First: a launcher's environment decides this process's GPU and its group.
    let launch = Launch::from_env()?;
    if let Some(l) = &launch {
        if args.data_parallel.replicas != 1 {
            bail!(
                "--replicas {} with a launcher's WORLD_SIZE={}: each process runs one \
                 replica, and WORLD_SIZE says how many",
                args.data_parallel.replicas,
                l.world
            );
        }
    }
    let precision = run_precision(args)?;
    let backend = calib::backend_with(
        &args.backend,
        calib::BackendOptions {
            cuda_graph: args.cuda_graph,
            check_finite: args.check_finite,
            rules: args.rules.rule_set()?,
            process_gpu: launch.as_ref().map(|l| l.local_rank),
            precision,
            layout: args.layout,
            ..Default::default()
        },
    )?;
    let group = match &launch {
        Some(l) => Some(join_group(args, l)?),
        None => None,
    };
    let is_rank0 = group.as_ref().is_none_or(ProcessGroup::is_primary);
    let (out, start, mine) = match &args.resume {
        // Other ranks take a resumed run's options from rank 0, which holds its directory.
        Some(dir) if !is_rank0 => (dir.clone(), Start::Resume, None),
        Some(dir) => {
            let opts = resumed_options(dir)?;
            match &group {
                // In a group the replicas are processes, each with its own devices.
                Some(_) => opts.validate_as(OptionNames::ConfigFields),
                None => opts.validate_for(backend.as_ref(), OptionNames::ConfigFields),
            }
            .with_context(|| {
                format!(
                    "{} holds a value no run can use",
                    dir.join("config.json").display()
                )
            })?;
            (dir.clone(), Start::Resume, Some(opts))
        }
        None => {
            let mut opts = new_options(args)?;
            if let Some(l) = &launch {
                opts.replicas = l.world;
            }
            let start = if args.overwrite {
                Start::Overwrite
            } else {
                Start::Fresh
            };
            (args.out.clone(), start, Some(opts))
        }
    };
    match &group {
        Some(group) => {
            let opts = agree_on_options(group.host(), mine.as_ref())?;
            train_in_group(&opts, backend.as_ref(), &out, start, args.max_steps, group)?;
        }
        None => {
            let opts = mine.expect("a process outside a group has its options");
            train(&opts, backend.as_ref(), &out, start, args.max_steps)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Meets the other processes `launch` names; on `cuda` with NCCL, also forms the NCCL
/// communicator on this process's GPU (`LOCAL_RANK`).
fn join_group(args: &Args, launch: &Launch) -> Result<ProcessGroup> {
    if args.rendezvous_timeout < 1 {
        bail!(
            "--rendezvous-timeout {}: must be at least 1 second",
            args.rendezvous_timeout
        );
    }
    let nccl_gpu = if args.backend == "cuda" && calib::runtime::cuda::nccl_present() {
        Some(launch.local_rank)
    } else {
        if args.backend == "cuda" {
            eprintln!(
                "rank {}: libnccl.so does not load; all-reduces go through the host and TCP",
                launch.rank
            );
        }
        None
    };
    let timeout = Duration::from_secs(args.rendezvous_timeout as u64);
    ProcessGroup::join(launch, timeout, nccl_gpu).with_context(|| {
        format!(
            "rank {} of {}: forming the group at {}:{}",
            launch.rank, launch.world, launch.master_addr, launch.port
        )
    })
}

/// The precision the run trains in: `--precision` (f32 by default) for a new run, the
/// one in its `config.json` for a resumed run, where a different `--precision` is
/// refused (its checkpoints were trained in the other one).
fn run_precision(args: &Args) -> Result<Precision> {
    let Some(dir) = &args.resume else {
        return Ok(args.precision.unwrap_or_default());
    };
    if !dir.join("config.json").is_file() {
        // Ranks of a group without the run directory get rank 0's options later.
        return Ok(args.precision.unwrap_or_default());
    }
    let theirs = resumed_options(dir)?.precision;
    match args.precision {
        Some(ours) if ours != theirs => bail!(
            "--precision {ours}: the run in {} trains in {theirs} (its config.json); \
             resume it without --precision or with --precision {theirs}",
            dir.display()
        ),
        _ => Ok(theirs),
    }
}

/// The options of the run in `dir`, from its `config.json`.
fn resumed_options(dir: &Path) -> Result<TrainOptions> {
    let config = dir.join("config.json");
    let text = std::fs::read_to_string(&config)
        .map_err(|e| anyhow::anyhow!("cannot resume from {}: {e}", config.display()))?;
    serde_json::from_str(&text)
        .map_err(|e| anyhow::anyhow!("{} is not a calib training config: {e}", config.display()))
}

/// The options of a new run, from the command line.
fn new_options(args: &Args) -> Result<TrainOptions> {
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
    Ok(TrainOptions {
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
        precision: args.precision.unwrap_or_default(),
    })
}

/// The number of classes of the image folder in `dir` (its training split's).
fn class_count(dir: &std::path::Path) -> Result<usize> {
    Ok(list_classes(&dir.join("train"))?.len())
}
