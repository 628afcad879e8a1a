//! `calib bench`: times training steps of a model on a backend with synthetic data.

use anyhow::Result;
use calib::data::rng::Rng;
use calib::ir::{DType, Mode};
use calib::models::build;
use calib::passes::{train_step, TrainConfig};
use calib::runtime::HostTensor;
use calib::train::{init_state, SgdState};
use calib::{resolve_model, with_batch};
use std::process::ExitCode;
use std::time::Instant;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// A preset, a spec JSON, or a fixture directory.
    #[arg(long)]
    model: String,
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
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args) -> Result<ExitCode> {
    let backend = calib::backend_with(
        &args.backend,
        calib::BackendOptions {
            cuda_graph: args.cuda_graph,
        },
    )?;
    let source = resolve_model(&args.model)?;
    let shape = with_batch(source.input_shape.clone(), args.batch)?;
    let started = Instant::now();
    let model = build(&source.spec, &shape, Mode::Train, DType::F32)?;
    let step = train_step(&model.graph, &TrainConfig::default())?;
    let build_seconds = started.elapsed().as_secs_f64();

    let mut rng = Rng::new(0);
    let sgd = SgdState::new(&step, init_state(&model.state, &mut rng));
    let x: Vec<f32> = (0..shape.iter().product::<usize>())
        .map(|_| rng.normal() as f32)
        .collect();
    let x = HostTensor::from_f32(shape.clone(), x)?;
    let classes = model.graph.ty(model.output()).shape[1] as i64;
    let y = HostTensor::from_i64(
        vec![shape[0]],
        (0..shape[0] as i64).map(|i| i % classes).collect(),
    )?;
    let lr = HostTensor::from_f32(Vec::<usize>::new(), vec![0.01])?;
    let bindings = sgd.bindings(&step, &x, &y, &lr);
    let t0 = Instant::now();
    backend.run(&step.graph, &bindings)?;
    let first_step_seconds = t0.elapsed().as_secs_f64();
    let mut times = Vec::with_capacity(args.steps);
    for _ in 0..args.steps.max(1) {
        let t = Instant::now();
        backend.run(&step.graph, &bindings)?;
        times.push(t.elapsed().as_secs_f64());
    }
    times.sort_by(f64::total_cmp);
    let median = times[times.len() / 2];
    let v = serde_json::json!({
        "model": source.label, "backend": backend.name(), "cuda_graph": args.cuda_graph,
        "batch": shape[0], "input_shape": shape,
        "dtype": "f32", "graph_nodes": step.graph.nodes.len(), "build_seconds": build_seconds,
        "first_step_seconds": first_step_seconds, "step_ms_median": median * 1e3,
        "step_ms_min": times[0] * 1e3, "images_per_second": shape[0] as f64 / median,
    });
    if args.json {
        super::emit(&(serde_json::to_string_pretty(&v)? + "\n"))?;
    } else {
        super::emit(&format!(
            "{} on {}: batch {}, {:.1} ms/step (median of {}), {:.0} images/s; step graph {} nodes built in {:.2} s, first step {:.2} s\n",
            source.label, backend.name(), shape[0], median * 1e3, times.len(), shape[0] as f64 / median,
            step.graph.nodes.len(), build_seconds, first_step_seconds
        ))?;
    }
    Ok(ExitCode::SUCCESS)
}
