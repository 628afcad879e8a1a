//! `calib bench`: times training steps of a model on a backend with synthetic data,
//! through a session as training runs them (state kept on the backend, the batch in and
//! the loss and logits out per step); optionally every launch, with CUDA events. With
//! `--data imagefolder:DIR` it times the data loader instead (`loader_bench.rs`).

use anyhow::{bail, Context, Result};
use calib::data::rng::Rng;
use calib::ir::{DType, Mode};
use calib::kernel_times;
use calib::models::build;
use calib::passes::{train_step, TrainConfig, LR};
use calib::runtime::{write_atomic, Bindings, HostTensor};
use calib::train::{carry, init_state, SgdState, STEP_FETCH};
use calib::{resolve_model, with_batch};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// A preset, a spec JSON, or a fixture directory (required unless --data).
    #[arg(long, required_unless_present = "data")]
    model: Option<String>,
    /// Time the data loader on an image folder (`imagefolder:DIR`) instead of a model:
    /// decoded and augmented training images per second, with one loader thread and with
    /// --loader-workers (default: one per core).
    #[arg(long, conflicts_with_all = ["model", "per_kernel"])]
    data: Option<String>,
    #[command(flatten)]
    loader: super::loader::LoaderArgs,
    /// With --data: how many training images to time (spread over the classes).
    #[arg(long, default_value_t = 1024)]
    images: usize,
    #[command(flatten)]
    rules: super::rules::RuleArgs,
    #[arg(long)]
    batch: Option<usize>,
    /// Executor: `reference`, `sim` or `cuda`.
    #[arg(long, default_value = "reference")]
    backend: String,
    /// With --backend cuda: capture each step as a CUDA graph on the first run and
    /// replay it (one driver call per step instead of one per kernel).
    #[arg(long)]
    cuda_graph: bool,
    /// Timed steps (after one untimed warm-up step).
    #[arg(long, default_value_t = 5)]
    steps: usize,
    /// With --backend cuda: after the timed steps, time every launch with CUDA events
    /// over --per-kernel-runs more steps and write the median per launch to FILE (CSV:
    /// launch, kernel, block, grid, measured_us, plan_kernel, anchor, label, flops,
    /// bytes, estimated_us).
    #[arg(long, value_name = "FILE")]
    per_kernel: Option<PathBuf>,
    /// Steps timed launch by launch for --per-kernel.
    #[arg(long, default_value_t = 5)]
    per_kernel_runs: usize,
    /// Precision policy of the step: `f32` (default), `tf32` or `bf16`
    /// (docs/precision.md).
    #[arg(long, default_value = "f32")]
    precision: calib::ir::Precision,
    /// How the fused plan stores image-shaped temporaries: `row_major` (NCHW, the
    /// default), `channels_last` (NHWC, 3x3 weights OHWI on the device), or `auto`
    /// (whichever step the cost model predicts faster). What is bound and read back
    /// stays NCHW.
    #[arg(long, default_value = "row_major")]
    layout: calib::passes::fusion::LayoutPolicy,
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args) -> Result<ExitCode> {
    let Some(model) = &args.model else {
        let data = args
            .data
            .as_deref()
            .expect("clap requires --model or --data");
        super::loader_bench::run(data, &args.loader, args.images, args.json)?;
        return Ok(ExitCode::SUCCESS);
    };
    if args.per_kernel.is_some() && args.backend != "cuda" {
        bail!(
            "--per-kernel times every launch with CUDA events: it needs --backend cuda, not `{}`",
            args.backend
        );
    }
    if args.steps == 0 {
        bail!("--steps 0: must be at least 1 (a median of no steps is no time)");
    }
    if args.per_kernel_runs == 0 {
        bail!("--per-kernel-runs must be at least 1");
    }
    let backend = calib::backend_with(
        &args.backend,
        calib::BackendOptions {
            cuda_graph: args.cuda_graph,
            rules: args.rules.rule_set()?,
            precision: args.precision,
            layout: args.layout,
            ..Default::default()
        },
    )?;
    let source = resolve_model(model)?;
    let shape = with_batch(source.input_shape.clone(), args.batch)?;
    let started = Instant::now();
    let model = build(&source.spec, &shape, Mode::Train, DType::F32)?;
    let step = train_step(&model.graph, &TrainConfig::default())?;
    let step = calib::passes::precision::apply_step(&step, args.precision)?;
    let build_seconds = started.elapsed().as_secs_f64();
    // Before the state and the batch are made: a batch too large for the machine is
    // refused with the figures instead of ending in the allocator.
    backend.check_memory(&step.graph, 1)?;

    let mut rng = Rng::new(0);
    let sgd = SgdState::new(&step, init_state(&model.state, &mut rng));
    let synthetic = SyntheticBatch::new(&model, &shape, &mut rng, 0.01)?;
    let batch = synthetic.bindings();

    // The first step pays for compiling, loading the kernels and the state.
    let t0 = Instant::now();
    let mut session = backend.session(&step.graph, &carry(&step), 0)?;
    session.load(&sgd.resident(&step))?;
    let prepare_seconds = t0.elapsed().as_secs_f64();
    session.step(&batch, STEP_FETCH)?;
    let first_step_seconds = t0.elapsed().as_secs_f64();

    let before = session.transfers();
    let mut times = Vec::with_capacity(args.steps);
    for _ in 0..args.steps {
        let t = Instant::now();
        session.step(&batch, STEP_FETCH)?;
        times.push(t.elapsed().as_secs_f64());
    }
    let moved = session.transfers() - before;
    times.sort_by(f64::total_cmp);
    let median = times[times.len() / 2];

    let per_kernel = match &args.per_kernel {
        Some(file) => {
            let runs = (0..args.per_kernel_runs)
                .map(|_| session.time_launches(&batch))
                .collect::<Result<Vec<_>, _>>()?;
            let measured = kernel_times::median_per_launch(&runs);
            let plan = session
                .plan()
                .context("the session runs no device program to time")?;
            let table = kernel_times::csv(plan, &measured).map_err(anyhow::Error::msg)?;
            write_atomic(file, table.as_bytes())
                .with_context(|| format!("writing {}", file.display()))?;
            serde_json::json!({
                "file": file.display().to_string(), "launches": measured.len(),
                "runs": args.per_kernel_runs,
                "kernel_ms_sum": measured.iter().sum::<f64>() / 1e3,
            })
        }
        None => serde_json::Value::Null,
    };
    let steps = times.len() as u64;
    let v = serde_json::json!({
        "model": source.label, "backend": backend.name(), "cuda_graph": args.cuda_graph,
        "batch": shape[0], "input_shape": shape,
        "dtype": "f32", "precision": args.precision, "graph_nodes": step.graph.nodes.len(), "build_seconds": build_seconds,
        "prepare_seconds": prepare_seconds,
        "first_step_seconds": first_step_seconds, "step_ms_median": median * 1e3,
        "step_ms_min": times[0] * 1e3, "images_per_second": shape[0] as f64 / median,
        "uploaded_bytes_per_step": moved.uploaded_bytes / steps,
        "downloaded_bytes_per_step": moved.downloaded_bytes / steps,
        "session": session.stats(), "per_kernel": per_kernel,
    });
    if args.json {
        super::emit(&(serde_json::to_string_pretty(&v)? + "\n"))?;
    } else {
        super::emit(&format!(
            "{} on {} ({}): batch {}, {:.1} ms/step (median of {}), {:.0} images/s; step graph {} nodes built in {:.2} s, first step {:.2} s (of which compile and load {:.2} s); per step {} bytes in, {} out\n",
            source.label, backend.name(), args.precision, shape[0], median * 1e3, times.len(), shape[0] as f64 / median,
            step.graph.nodes.len(), build_seconds, first_step_seconds, prepare_seconds,
            moved.uploaded_bytes / steps, moved.downloaded_bytes / steps
        ))?;
        if let Some(file) = &args.per_kernel {
            super::emit(&format!("per-launch medians: {}\n", file.display()))?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// A batch of normal noise with labels cycling through the classes, for timing steps.
pub(super) struct SyntheticBatch {
    input: HostTensor,
    labels: HostTensor,
    lr: HostTensor,
}

impl SyntheticBatch {
    pub(super) fn new(
        model: &calib::models::Model,
        shape: &[usize],
        rng: &mut Rng,
        lr: f32,
    ) -> Result<SyntheticBatch> {
        let x: Vec<f32> = (0..shape.iter().product::<usize>())
            .map(|_| rng.normal() as f32)
            .collect();
        let classes = model.graph.ty(model.output()).shape[1] as i64;
        Ok(SyntheticBatch {
            input: HostTensor::from_f32(shape.to_vec(), x)?,
            labels: HostTensor::from_i64(
                vec![shape[0]],
                (0..shape[0] as i64).map(|i| i % classes).collect(),
            )?,
            lr: HostTensor::from_f32(Vec::<usize>::new(), vec![lr])?,
        })
    }

    pub(super) fn bindings(&self) -> Bindings<'_> {
        Bindings::new()
            .input("input", &self.input)
            .input("labels", &self.labels)
            .input(LR, &self.lr)
    }
}
