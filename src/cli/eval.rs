//! `calib eval MODEL --weights FILE --data imagefolder:DIR`: top-1 and top-5 accuracy and
//! the mean cross-entropy of given weights on the validation split, with the
//! validation transform (Resize + CenterCrop), by the evaluator training uses.

use anyhow::{bail, Context, Result};
use calib::data::{source, DataSource};
use calib::ir::{DType, Mode, Precision};
use calib::models::{build, ModelSpec};
use calib::resolve_model;
use calib::runtime::weights;
use calib::train::{read_weights, Evaluator, TrainOptions};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// A preset, a spec JSON, a fixture directory, or a `calib train` run directory (its
    /// config.json's model; then --weights defaults to its model.safetensors, --data
    /// and --image-size to the run's).
    model: String,
    /// The weights: safetensors (a run's model.safetensors or a checkpoint, `calib
    /// import`'s output) or a PyTorch .pth, checked against the model by name and shape.
    #[arg(long, value_name = "FILE")]
    weights: Option<PathBuf>,
    /// The data set whose validation split is evaluated: `imagefolder:DIR` (DIR/val) or
    /// `fashion-mnist` (its test set).
    #[arg(long)]
    data: Option<String>,
    #[arg(long, default_value = "reference")]
    backend: String,
    /// The precision policy the eval graph runs under (`f32`, `tf32`, `bf16`;
    /// docs/precision.md). Default: a run directory's own, else f32.
    #[arg(long)]
    precision: Option<Precision>,
    /// Images per evaluation batch.
    #[arg(long, default_value_t = 100, allow_negative_numbers = true)]
    batch: usize,
    #[command(flatten)]
    loader: super::loader::LoaderArgs,
    /// Evaluate the first N validation images only (spread over the split for an image
    /// folder).
    #[arg(long, allow_negative_numbers = true)]
    limit: Option<usize>,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

/// A run directory's config, when `model` names one.
fn run_config(model: &str) -> Result<Option<TrainOptions>> {
    let config = Path::new(model).join("config.json");
    if !config.is_file() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(&config)
        .with_context(|| format!("reading {}", config.display()))?;
    let opts = serde_json::from_str(&text)
        .with_context(|| format!("{} is not a calib training config", config.display()))?;
    Ok(Some(opts))
}

pub fn run(args: Args) -> Result<ExitCode> {
    for (name, value) in [("--batch", Some(args.batch)), ("--limit", args.limit)] {
        if value == Some(0) {
            bail!("{name} 0: must be at least 1");
        }
    }
    let run = run_config(&args.model)?;
    let (label, spec) = match &run {
        Some(opts) => (
            format!("{} ({})", args.model, opts.model),
            opts.spec.clone(),
        ),
        None => (args.model.clone(), resolve_model(&args.model)?.spec),
    };
    let weights_path = match (&args.weights, &run) {
        (Some(w), _) => w.clone(),
        (None, Some(_)) => Path::new(&args.model).join("model.safetensors"),
        (None, None) => bail!("--weights FILE is needed unless MODEL is a run directory"),
    };
    let data = match (&args.data, &run) {
        (Some(d), _) => DataSource::parse(d, args.loader.image_size, args.loader.loader_workers)?,
        (None, Some(opts)) => match opts.data.clone() {
            DataSource::ImageFolder { dir, size, .. } => DataSource::ImageFolder {
                dir,
                size: args.loader.image_size.unwrap_or(size),
                workers: args.loader.loader_workers.unwrap_or(0),
            },
            d => d,
        },
        (None, None) => bail!("--data imagefolder:DIR (or fashion-mnist) is needed"),
    };
    let fashion_dir = run.as_ref().and_then(|o| o.data_dir.clone());
    let splits = source::open(&data, fashion_dir.as_deref(), None, args.limit)?;
    let set = splits.test;
    let [c, h, w] = set.image_shape();
    if spec.in_channels() != c {
        bail!(
            "{label} expects {} input channels; the images of the data set have {c}",
            spec.in_channels()
        );
    }
    let declared = match &spec {
        ModelSpec::ScNet(s) => Some(s.num_classes),
        ModelSpec::ResNet(s) => Some(s.num_classes),
        ModelSpec::ScConv(_) | ModelSpec::ScBottleneck(_) => None,
    };
    match declared {
        Some(k) if k != set.classes() => bail!(
            "{label} has {k} classes; the data set has {} (calib train --weights FILE \
             --num-classes {} fine-tunes it to them)",
            set.classes(),
            set.classes()
        ),
        Some(_) => {}
        None => bail!("{label} is a single block, with no classifier to evaluate"),
    }

    let state = read_weights(&weights_path)?;
    let built = build(&spec, &[1, c, h, w], Mode::Eval, DType::F32)?;
    let expected: Vec<_> = built
        .state
        .iter()
        .map(|e| (e.name.clone(), e.ty.clone()))
        .collect();
    weights::check_state(&expected, &state)
        .with_context(|| format!("--weights {} against model {label}", weights_path.display()))?;

    let backend = calib::backend(&args.backend)?;
    let precision = args
        .precision
        .or(run.as_ref().map(|o| o.precision))
        .unwrap_or_default();
    let mut evaluator = Evaluator::new(&spec, set.as_ref(), args.batch).with_precision(precision);
    let e = evaluator.evaluate(backend.as_ref(), &state)?;
    let classes = set.classes();
    if args.json {
        let v = json!({
            "model": label,
            "weights": weights_path,
            "images": e.images,
            "classes": classes,
            "image_size": [h, w],
            "loss": e.loss,
            "top1": e.accuracy,
            "top_k": e.top_k,
            "k": e.k,
            "top5": (e.k == 5).then_some(e.top_k),
            "skipped_images": set.skipped(),
            "precision": precision,
        });
        super::emit(&format!("{}\n", serde_json::to_string_pretty(&v)?))?;
        return Ok(ExitCode::SUCCESS);
    }
    let mut out = format!(
        "{label} with {} on {} validation images ({classes} classes, {h}x{w}), precision {precision}\n",
        weights_path.display(),
        e.images
    );
    out += &format!("  {:<10} {:>9.4}\n", "loss", e.loss);
    out += &format!("  {:<10} {:>8.2}%\n", "top-1", 100.0 * e.accuracy);
    out += &format!(
        "  {:<10} {:>8.2}%\n",
        format!("top-{}", e.k),
        100.0 * e.top_k
    );
    if e.k < 5 {
        out += &format!(
            "  (top-{} rather than top-5: only {classes} classes)\n",
            e.k
        );
    }
    if set.skipped() > 0 {
        out += &format!("  {} unreadable images replaced\n", set.skipped());
    }
    super::emit(&out)?;
    Ok(ExitCode::SUCCESS)
}
