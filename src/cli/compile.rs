//! `calib compile MODEL|SPEC [--train] [--batch N] [--out DIR]`: fuse a model (or its
//! whole training step) and write what happened.
//!
//! DIR gets `before.{txt,json,dot}` (the graph), `after.{txt,json,dot}` (the kernel
//! plan), `.svg` renderings of both when Graphviz's `dot` is installed and the graph
//! is small enough to draw, and `report.{json,txt}`. With `--replicas N` the training
//! step is one data-parallel replica's, and the report shows where each gradient
//! all-reduce overlaps the backward pass.

use anyhow::{bail, Context, Result};
use calib::ir::{dot, json, text, DType, Graph, Mode, Op, Value};
use calib::ir::{GraphBuilder, Precision, Program};
use calib::models::build_with;
use calib::passes::fusion::tuning::TuningCache;
use calib::passes::fusion::{fuse, Device, FusionOptions, Limits};
use calib::passes::{
    all_reduce_windows, data_parallel_step, train_step, vjp, AllReduceWindow, DataParallel,
    TrainConfig,
};
use calib::predict::predict_step;
use calib::runtime::memory::human;
use calib::{resolve_model, with_batch};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

/// Above this many nodes `dot` takes a long time; the DOT files are still written.
const SVG_MAX_NODES: usize = 400;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// A preset, a spec JSON (meta.json, *_structure.json) or a fixture directory.
    model: String,
    /// Fuse the whole SGD training step (forward, loss, backward, update) instead of
    /// the eval-mode forward; for a module without logits, its train-mode forward and
    /// backward for a `grad_output` seed.
    #[arg(long)]
    train: bool,
    /// Batch size of the input (default: 1 for presets, the file's own otherwise); with
    /// --replicas, the global batch that the replicas split.
    #[arg(long)]
    batch: Option<usize>,
    #[command(flatten)]
    data_parallel: super::data_parallel::DataParallelArgs,
    /// Where to write the results.
    #[arg(long, default_value = "calib-compile")]
    out: PathBuf,
    /// The GPU to plan and cost kernels for: a built-in description (h200, h100-sxm,
    /// a100-sxm) or a device JSON file like those in cost/devices/ (default: h200).
    #[arg(long)]
    device: Option<String>,
    /// GEMM schedules measured by `calib tune` (a cache file): used, for --device, for
    /// the GEMM shapes it covers instead of the cost model's choice.
    #[arg(long, value_name = "FILE")]
    tuning: Option<PathBuf>,
    /// E-nodes per region.
    #[arg(long)]
    node_limit: Option<usize>,
    /// Iterations per phase.
    #[arg(long)]
    iter_limit: Option<usize>,
    /// Seconds per phase of one region.
    #[arg(long)]
    time_limit: Option<f64>,
    /// Also write each kernel's PTX (`<kernel>.ptx`) and ptxas's registers, spills and
    /// shared memory per kernel (`ptx_report.txt`, appended to `report.txt`).
    #[arg(long)]
    emit_ptx: bool,
    #[command(flatten)]
    rules: super::rules::RuleArgs,
    /// Precision policy: `f32` (default), `tf32` (GEMM operands rounded to TF32) or
    /// `bf16` (GEMM operands, activations and activation gradients in bf16). Applied to
    /// the graph (after autodiff) as casts that fusion fuses; the report says which.
    #[arg(long, default_value = "f32")]
    precision: Precision,
    /// How the fused plan stores image-shaped temporaries: `row_major` (NCHW, the
    /// default), `channels_last` (NHWC, 3x3 weights OHWI on the device), or `auto`
    /// (whichever step the cost model predicts faster, both compiled; the report says
    /// which). What is bound and read back stays NCHW.
    #[arg(long, default_value = "row_major")]
    layout: calib::passes::fusion::LayoutPolicy,
    /// Also compile once per rule family with that family off, and report what the plan
    /// costs without it (`ablation.{txt,json}`, appended to `report.txt`).
    #[arg(long)]
    ablate: bool,
    /// Also write `report.html` (`calib report`) into the output directory.
    #[arg(long)]
    report: bool,
    #[command(flatten)]
    report_options: super::report::ReportArgs,
}

pub fn run(args: Args) -> Result<ExitCode> {
    let source = resolve_model(&args.model)?;
    let mut shape = with_batch(source.input_shape.clone(), args.batch)?;
    let dp = &args.data_parallel;
    if dp.is_data_parallel() && !args.train {
        bail!("--replicas and --sync-bn describe a training step: add --train");
    }
    let report_only = &args.report_options;
    if !args.report && (report_only.timings.is_some() || report_only.against.is_some()) {
        bail!("--timings and --against shape the HTML report: add --report");
    }
    // Checked even for one replica: `--replicas 0` is not one.
    shape[0] = dp.shard(shape[0])?;
    let mode = if args.train { Mode::Train } else { Mode::Eval };
    let mut builder = GraphBuilder::new(mode, DType::F32);
    if dp.sync_bn {
        builder = builder.with_sync_bn(dp.replicas);
    }
    let model = build_with(&source.spec, &shape, builder)?;
    // A training step gets the policy as the trainer applies it (under bf16, with its
    // rounded weights carried); any other graph gets it as a graph.
    let step = |step| calib::passes::precision::apply_step(&step, args.precision);
    let graph = match (args.train, model.graph.ty(model.output()).rank()) {
        (false, _) => calib::passes::precision::apply(&model.graph, args.precision)?,
        (true, 2) if dp.is_data_parallel() => {
            let group = DataParallel {
                replicas: dp.replicas,
                bucket_bytes: (dp.bucket_mb * 1048576.0) as usize,
            };
            step(data_parallel_step(&model.graph, &TrainConfig::default(), &group)?.step)?.graph
        }
        (true, 2) => step(train_step(&model.graph, &TrainConfig::default())?)?.graph,
        (true, _) if dp.is_data_parallel() => {
            bail!("--replicas needs a classifier (a model with logits) to train")
        }
        (true, _) => calib::passes::precision::apply(
            &with_backward(&model.graph, model.output())?,
            args.precision,
        )?,
    };
    let mut options = FusionOptions {
        precision: args.precision,
        layout: args.layout,
        ..FusionOptions::default()
    };
    if let Some(path) = &args.device {
        options.device = Device::load(path)?;
    }
    options.limits = limits(&args)?;
    options.rules = args.rules.rule_set()?;
    if let Some(path) = &args.tuning {
        let cache = TuningCache::read(path).map_err(anyhow::Error::msg)?;
        if cache.device != options.device.name {
            eprintln!(
                "warning: {} holds schedules measured on {}, not {}: none of them is used",
                path.display(),
                cache.device,
                options.device.name
            );
        }
        options.tuning = Some(cache);
    }
    // The graph as fusion plans it (images padded for a channels-last layout): what
    // `before.*` shows and the plan's `covers` number.
    let unprepared = graph;
    let graph = calib::passes::fusion::prepare(&unprepared, &options)?.into_owned();
    let mut fusion = fuse(&graph, &options)?;
    // Before code generation, which may refuse a plan that large: the plan as fused
    // needs more device memory than there is.
    let per_replica = if dp.is_data_parallel() {
        " per replica"
    } else {
        ""
    };
    let early_warning = memory_warning(
        &calib::passes::plan_arena(&fusion.program),
        &options.device,
        per_replica,
        args.train,
    );
    if let Some(w) = &early_warning {
        eprintln!("{w}");
    }
    // The plan as compiled: channels-last where `auto` finds it faster, and each GEMM
    // and reduction kernel's schedule checked against the code it emits. Each layout's
    // plan is priced with ptxas's registers under --emit-ptx, as the step below is.
    let ptxas_registers = |c: &calib::codegen::CompiledProgram| match args.emit_ptx {
        true => calib::ptx_report::sm90_registers(c).unwrap_or_default(),
        false => HashMap::new(),
    };
    let plan = calib::device::choose_layout(fusion.program.clone(), &options, ptxas_registers)?;
    let (compiled, choice, refined) = (plan.compiled, plan.layout, plan.refined_schedules);
    if plan.program != fusion.program {
        fusion.program = plan.program;
        fusion.report.kernels = calib::passes::fusion::kernel_rows(&fusion.program, &options);
    }

    let out = &args.out;
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let write = |name: &str, content: &str| {
        std::fs::write(out.join(name), content)
            .with_context(|| format!("writing {}", out.join(name).display()))
    };
    write("before.txt", &text::print(&graph))?;
    write("before.json", &json::to_string(&graph))?;
    write("before.dot", &dot::to_dot(&graph))?;
    write("after.txt", &fusion.program.to_text())?;
    write("after.json", &fusion.program.to_json())?;
    write("after.dot", &fusion.program.to_dot())?;
    // Device memory of the plan: one arena, temporaries sharing bytes by lifetime.
    let arena = calib::passes::plan_arena(&fusion.program);
    let device = &options.device;
    let fits = arena.arena_bytes as u64 <= device.memory_bytes;
    let mut report_json: serde_json::Value = serde_json::from_str(&fusion.report.to_json())?;
    report_json["precision"] = serde_json::to_value(args.precision)?;
    report_json["layout"] = serde_json::to_value(args.layout.to_string())?;
    report_json["memory"] = serde_json::json!({
        "arena_bytes": arena.arena_bytes,
        "unshared_bytes": arena.unshared_bytes,
        "peak_live_bytes": arena.peak_live_bytes,
        "device_memory_bytes": device.memory_bytes,
        "fits_device": fits,
    });
    let windows = all_reduce_windows(&fusion.program);
    if !windows.is_empty() {
        report_json["all_reduces"] = serde_json::to_value(&windows)?;
    }
    let mut report = format!("precision: {}\nlayout: {}\n", args.precision, args.layout);
    report.push_str(&fusion.report.to_text());
    report.push_str(&format!(
        "\ndevice memory{per_replica}: arena {:.1} MiB (peak live {:.1} MiB; {:.1} MiB without \
         sharing) of the {}'s {}\n",
        arena.arena_bytes as f64 / 1048576.0,
        arena.peak_live_bytes as f64 / 1048576.0,
        arena.unshared_bytes as f64 / 1048576.0,
        device.name,
        human(device.memory_bytes),
    ));
    let warning = memory_warning(&arena, device, per_replica, args.train);
    if let Some(w) = &warning {
        if early_warning.is_none() {
            eprintln!("{w}");
        }
        report.push_str(&format!("{w}\n"));
    }
    report.push_str(&overlap_report(&fusion.program, &windows));
    if let Some(choice) = &choice {
        let registers = if args.emit_ptx {
            "from ptxas"
        } else {
            "estimated"
        };
        report.push_str(&format!(
            "layout auto: {} (predicted step, registers {registers}: row_major {:.2} ms, \
             channels_last {:.2} ms)\n",
            choice.chosen, choice.row_major_ms, choice.channels_last_ms
        ));
        report_json["layout_choice"] = serde_json::json!({
            "chosen": choice.chosen,
            "row_major_ms": choice.row_major_ms,
            "channels_last_ms": choice.channels_last_ms,
        });
    }
    report.push_str(&format!(
        "GEMM and reduction schedules changed by pricing the emitted code: {refined}\n"
    ));
    report_json["schedules_refined"] = serde_json::to_value(refined)?;
    let mut registers = HashMap::new();
    if args.emit_ptx {
        let (text, regs) = calib::ptx_report::emit_ptx(&compiled, out)?;
        report.push_str(&text);
        registers = regs;
    }
    let step = predict_step(&fusion.program, &compiled, &options.device, &registers);
    report.push_str(&step.to_text(10));
    report_json["predicted_step"] = serde_json::to_value(&step)?;
    if args.ablate {
        let ablation = super::ablate::ablate(&unprepared, &options, &fusion, step.step_ms)?;
        write("ablation.txt", &ablation.to_text())?;
        write("ablation.json", &serde_json::to_string_pretty(&ablation)?)?;
        report.push_str(&format!("\n{}", ablation.to_text()));
        report_json["ablation"] = serde_json::to_value(&ablation)?;
    }
    write("report.json", &serde_json::to_string_pretty(&report_json)?)?;
    write("report.txt", &report)?;
    let svg = render_svgs(out, graph.nodes.len());
    let summary = report.split("\nkernels:").next().unwrap_or(&report);
    super::emit(&format!(
        "{}: {} nodes fused into {} kernels; wrote {}\n{summary}\n{svg}\n",
        source.label,
        graph.nodes.len(),
        fusion.program.kernels.len(),
        out.display()
    ))?;
    if args.report {
        super::report::write(out, &args.report_options)?;
    }
    Ok(ExitCode::SUCCESS)
}

/// The warning for a plan whose `arena` needs more device memory than `device` has.
fn memory_warning(
    arena: &calib::passes::ArenaPlan,
    device: &Device,
    per_replica: &str,
    train: bool,
) -> Option<String> {
    (arena.arena_bytes as u64 > device.memory_bytes).then(|| {
        format!(
            "warning: the plan needs {} bytes ({}) of device memory{per_replica} at its peak, \
             more than the {} has ({} bytes, {}): it cannot run there (try a smaller --batch{})",
            arena.arena_bytes,
            human(arena.arena_bytes as u64),
            device.name,
            device.memory_bytes,
            human(device.memory_bytes),
            if train { " or more --replicas" } else { "" },
        )
    })
}

/// Where each all-reduce of a data-parallel plan runs beside the backward pass.
fn overlap_report(program: &Program, windows: &[AllReduceWindow]) -> String {
    if windows.is_empty() {
        return String::new();
    }
    let mut text = format!(
        "\nall-reduces: {} ({:.2} MiB in all); each runs on the communication stream while the \
         kernels between it and its first reader run\n",
        windows.len(),
        windows.iter().map(|w| w.bytes).sum::<usize>() as f64 / 1048576.0
    );
    for w in windows {
        let k = &program.kernels[w.kernel];
        let joined = program
            .kernels
            .get(w.join)
            .map_or("the end".to_string(), |j| j.name.clone());
        text.push_str(&format!(
            "  {} {:<32} {:>9.3} MiB  overlaps {:>4} kernels, joined before {joined}\n",
            k.name,
            k.label,
            w.bytes as f64 / 1048576.0,
            w.join - w.kernel - 1,
        ));
    }
    text
}

/// `forward` plus the gradients of `sum(out * grad_output)` with respect to its input
/// and every trained parameter, as outputs `grad.<name>`.
fn with_backward(forward: &Graph, out: Value) -> Result<Graph> {
    let mut graph = forward.clone();
    let seed = graph.push_source(
        Op::Input {
            name: "grad_output".into(),
        },
        graph.ty(out).clone(),
        "",
    )?;
    let trained = |(name, v): &(&str, Value)| {
        forward.ty(*v).dtype.is_float() && forward.output(name).is_none()
    };
    let wrt: Vec<(String, Value)> = forward
        .inputs()
        .chain(forward.params().filter(trained))
        .map(|(n, v)| (n.to_string(), v))
        .collect();
    let values: Vec<Value> = wrt.iter().map(|(_, v)| *v).collect();
    let (mut graph, grads) = vjp(&graph, out, seed, &values)?;
    for ((name, _), g) in wrt.iter().zip(grads) {
        graph.add_output(format!("grad.{name}"), g)?;
    }
    Ok(graph)
}

fn limits(args: &Args) -> Result<Limits> {
    let mut limits = Limits::default();
    if let Some(n) = args.node_limit {
        limits.nodes = n;
    }
    if let Some(n) = args.iter_limit {
        limits.iterations = n;
    }
    if let Some(s) = args.time_limit {
        if !(s.is_finite() && s > 0.0) {
            bail!("--time-limit must be a positive number of seconds");
        }
        limits.phase_seconds = s;
    }
    Ok(limits)
}

/// Renders `before.dot` and `after.dot` to SVG when `dot` exists; says what it did.
fn render_svgs(out: &Path, nodes: usize) -> String {
    if nodes > SVG_MAX_NODES {
        return format!(
            "SVG skipped: {nodes} nodes is too many for Graphviz (the .dot files are written)"
        );
    }
    let mut done = vec![];
    for stem in ["before", "after"] {
        let status = Command::new("dot")
            .arg("-Tsvg")
            .arg(out.join(format!("{stem}.dot")))
            .arg("-o")
            .arg(out.join(format!("{stem}.svg")))
            .status();
        match status {
            Ok(s) if s.success() => done.push(format!("{stem}.svg")),
            Ok(_) => return format!("Graphviz failed on {stem}.dot; no SVG"),
            Err(_) => {
                return "Graphviz `dot` is not installed; no SVG (scripts/setup.sh installs it)"
                    .into()
            }
        }
    }
    format!("wrote {}", done.join(", "))
}
