//! `calib tune`: measures GEMM schedules on the GPU and keeps the fastest per shape in a
//! cache file that `calib compile --tuning` (and the planner behind every backend that
//! is given it) uses instead of the cost model's choice.
//!
//! The search runs whole training steps: round `r` plans every GEMM with its shape's
//! `r`-th best schedule by the cost model (the plan's kernels stay the same, only their
//! schedules change), and times every launch with CUDA events. Kernels of one shape
//! share an entry, won by the schedule whose summed time over them is least.
//!
//! The step is planned as `train` and `bench` plan it with the same `--precision` and
//! `--layout`: prepared (a channels-last plan pads images of a few channels), and under
//! `auto` in the layout the cost model picks, which every round then keeps. A kernel
//! over channels-last images has its own shape key.

use anyhow::{bail, Context, Result};
use calib::data::rng::Rng;
use calib::ir::{DType, GemmSchedule, Mode, Precision};
use calib::kernel_times;
use calib::models::build;
use calib::passes::fusion::tuning::{ranked_candidates, shape_key, winners, TuningCache};
use calib::passes::fusion::{fuse, prepare, Device, FusionOptions, LayoutPolicy};
use calib::passes::{train_step, TrainConfig};
use calib::runtime::write_atomic;
use calib::train::{carry, init_state, SgdState};
use calib::{resolve_model, with_batch};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// A preset, a spec JSON or a fixture directory.
    model: String,
    #[arg(long)]
    batch: Option<usize>,
    /// The precision policy the schedules are for (`f32`, `tf32`, `bf16`).
    #[arg(long, default_value = "f32")]
    precision: Precision,
    /// How the plan stores image-shaped temporaries (`row_major`, `channels_last`, or
    /// `auto`: the layout the cost model predicts faster): tune the layout `train` and
    /// `bench` will run.
    #[arg(long, default_value = "row_major")]
    layout: LayoutPolicy,
    /// The cost-model device the GPU is (h200, h100-sxm, a100-sxm, or a device file):
    /// what the cache's entries serve.
    #[arg(long, default_value = "h200")]
    device: String,
    /// Schedules measured per GEMM shape: the cost model's fastest few.
    #[arg(long, default_value_t = 4)]
    candidates: usize,
    /// Timed steps per round (the median per launch is kept).
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// The cache file to write; entries already in it for the same device are kept
    /// unless re-measured.
    #[arg(long)]
    out: PathBuf,
    /// Executor; tuning measures launches with CUDA events, so only `cuda` can.
    #[arg(long, default_value = "cuda")]
    backend: String,
}

pub fn run(args: Args) -> Result<ExitCode> {
    if args.backend != "cuda" {
        bail!(
            "calib tune times launches with CUDA events: it needs --backend cuda, not `{}` \
             (without a GPU the cost model chooses every schedule)",
            args.backend
        );
    }
    if args.candidates == 0 || args.runs == 0 {
        bail!("--candidates and --runs must be at least 1");
    }
    let device = Device::load(&args.device)?;
    let mut cache = match args.out.exists() {
        true => TuningCache::read(&args.out).map_err(anyhow::Error::msg)?,
        false => TuningCache::default(),
    };
    if !cache.device.is_empty() && cache.device != device.name {
        bail!(
            "{} holds schedules for {}, not {}: write them to another file",
            args.out.display(),
            cache.device,
            device.name
        );
    }
    let source = resolve_model(&args.model)?;
    let shape = with_batch(source.input_shape.clone(), args.batch)?;
    let model = build(&source.spec, &shape, Mode::Train, DType::F32)?;
    let step = train_step(&model.graph, &TrainConfig::default())?;
    let step = calib::passes::precision::apply_step(&step, args.precision)?;

    // The plan once, for its GEMM shapes and each shape's candidates.
    let started = Instant::now();
    let base = FusionOptions {
        device: device.clone(),
        precision: args.precision,
        layout: args.layout,
        ..FusionOptions::default()
    };
    let graph = prepare(&step.graph, &base)?;
    let planned = fuse(&graph, &base)?.program;
    let estimated = |_: &calib::codegen::CompiledProgram| Default::default();
    let compiled = calib::device::choose_layout(planned, &base, estimated)?;
    let (plan, choice) = (compiled.program, compiled.layout);
    // Every round runs the layout planned here.
    let layout = match choice.map(|c| c.chosen) {
        Some(calib::ir::Layout::ChannelsLast) => LayoutPolicy::ChannelsLast,
        Some(_) => LayoutPolicy::RowMajor,
        None => args.layout,
    };
    let mut candidates: BTreeMap<String, Vec<GemmSchedule>> = BTreeMap::new();
    for k in &plan.kernels {
        let layouts = plan.input_layouts(k);
        if let Some((key, _)) = shape_key(&k.body, args.precision, &layouts) {
            candidates.entry(key).or_insert_with(|| {
                ranked_candidates(&k.body, &device, args.precision, args.candidates, &layouts)
            });
        }
    }
    let rounds = candidates.values().map(Vec::len).max().unwrap_or(0);
    eprintln!(
        "tune: {} GEMM shapes, up to {rounds} schedules each, layout {layout} (planned in {:.1} s)",
        candidates.len(),
        started.elapsed().as_secs_f64()
    );

    let mut rng = Rng::new(0);
    let sgd = SgdState::new(&step, init_state(&model.state, &mut rng));
    let synthetic = super::bench::SyntheticBatch::new(&model, &shape, &mut rng, 0.0)?;
    let batch = synthetic.bindings();

    let mut measured: BTreeMap<String, Vec<(GemmSchedule, Vec<f64>)>> = BTreeMap::new();
    let mut measured_on = String::new();
    for round in 0..rounds {
        let t0 = Instant::now();
        // Round `round`: every shape at its `round`-th candidate (its last, once a
        // shape has fewer).
        let forced = TuningCache {
            device: device.name.clone(),
            measured_on: String::new(),
            entries: candidates
                .iter()
                .map(|(key, c)| {
                    let s = c[round.min(c.len() - 1)];
                    (key.clone(), tuned(s))
                })
                .collect(),
        };
        let backend = calib::backend_with(
            "cuda",
            calib::BackendOptions {
                tuning: Some(forced.clone()),
                device: Some(device.clone()),
                precision: args.precision,
                layout,
                ..Default::default()
            },
        )?;
        let mut session = backend.session(&step.graph, &carry(&step), 0)?;
        session.load(&sgd.resident(&step))?;
        session.step(&batch, &[])?;
        let runs = (0..args.runs)
            .map(|_| session.time_launches(&batch))
            .collect::<Result<Vec<_>, _>>()?;
        let times = kernel_times::median_per_launch(&runs);
        let device_plan = session
            .plan()
            .context("the cuda session runs no device program")?;
        if measured_on.is_empty() {
            measured_on = session.stats()["device"]
                .as_str()
                .unwrap_or("a CUDA GPU")
                .to_string();
        }
        // Each plan kernel's launches, summed, under its shape's schedule this round.
        let mut per_kernel: BTreeMap<&str, f64> = BTreeMap::new();
        for (launch, us) in device_plan.kernels.iter().zip(&times) {
            *per_kernel.entry(launch.kernel.as_str()).or_default() += us;
        }
        let mut per_shape: BTreeMap<String, Vec<f64>> = BTreeMap::new();
        let program = &device_plan.program;
        for k in &program.kernels {
            let layouts = program.input_layouts(k);
            let (Some((key, _)), Some(&us)) = (
                shape_key(&k.body, args.precision, &layouts),
                per_kernel.get(k.name.as_str()),
            ) else {
                continue;
            };
            per_shape.entry(key).or_default().push(us);
        }
        for (key, us) in per_shape {
            // A shape the session planned and this plan did not would be timed under
            // the cost model's schedule: nothing to learn from it.
            let Some(c) = candidates.get(&key) else {
                eprintln!("tune: {key} is not in the planned step; its times are left out");
                continue;
            };
            if round < c.len() {
                measured.entry(key).or_default().push((c[round], us));
            }
        }
        eprintln!(
            "tune: round {}/{rounds} planned, run and timed in {:.1} s",
            round + 1,
            t0.elapsed().as_secs_f64()
        );
    }

    let found = winners(&measured);
    let changed = found
        .iter()
        .filter(|(key, w)| candidates[*key].first() != Some(&w.schedule))
        .count();
    let before: f64 = measured
        .values()
        .filter_map(|t| t.first())
        .map(|t| t.1.iter().sum::<f64>())
        .sum();
    let after: f64 = found.values().map(|w| w.measured_us).sum();
    cache.device = device.name.clone();
    cache.measured_on = measured_on;
    cache.entries.extend(found);
    write_atomic(&args.out, cache.to_json().as_bytes())
        .with_context(|| format!("writing {}", args.out.display()))?;
    super::emit(&format!(
        "{} GEMM shapes tuned on {}: {changed} differ from the cost model's choice; their \
         kernels take {:.0} us measured under the cost model's schedules, {:.0} us tuned \
         ({:.2}x); written to {}\n",
        measured.len(),
        cache.measured_on,
        before,
        after,
        before / after.max(f64::MIN_POSITIVE),
        args.out.display()
    ))?;
    Ok(ExitCode::SUCCESS)
}

/// A forced entry: a schedule to run this round, not yet measured.
fn tuned(schedule: GemmSchedule) -> calib::passes::fusion::tuning::TunedSchedule {
    calib::passes::fusion::tuning::TunedSchedule {
        schedule,
        measured_us: 0.0,
        candidates: 0,
    }
}
