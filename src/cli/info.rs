//! `calib info MODEL [--json]`.

use anyhow::Result;
use calib::ir::{fmt_shape, DType, Mode};
use calib::models::{build, summarize};
use calib::{resolve_model, with_batch};
use serde_json::json;
use std::fmt::Write as _;
use std::process::ExitCode;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// A preset, a spec JSON (meta.json, *_structure.json), or a fixture directory.
    model: String,
    /// Batch size of the input (default: 1 for presets, the file's own otherwise).
    #[arg(long)]
    batch: Option<usize>,
    /// Print JSON (fields `parameters`, `macs`, `input_shape`, `layers`).
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args) -> Result<ExitCode> {
    let source = resolve_model(&args.model)?;
    let shape = with_batch(source.input_shape.clone(), args.batch)?;
    let model = build(&source.spec, &shape, Mode::Eval, DType::F32)?;
    let summary = summarize(&model.graph);
    if args.json {
        let layers: Vec<_> = summary
            .layers
            .iter()
            .map(|l| json!({"layer": l.scope, "op": l.op, "output_shape": l.shape, "parameters": l.params, "macs": l.macs}))
            .collect();
        let out = json!({
            "model": source.label,
            "kind": source.spec.kind(),
            "input_shape": shape,
            "parameters": summary.parameters,
            "macs": summary.macs,
            "state_dict_entries": model.state.len(),
            "nodes": model.graph.nodes.len(),
            "layers": layers,
        });
        super::emit(&(serde_json::to_string_pretty(&out)? + "\n"))?;
        return Ok(ExitCode::SUCCESS);
    }
    let mut buf = String::new();
    writeln!(buf, "model       {} ({})", source.label, source.spec.kind())?;
    writeln!(buf, "input       f32{}", fmt_shape(&shape))?;
    writeln!(
        buf,
        "parameters  {} ({:.2}M)",
        summary.parameters,
        summary.parameters as f64 / 1e6
    )?;
    writeln!(
        buf,
        "MACs        {} ({:.2}G, conv + linear)",
        summary.macs,
        summary.macs as f64 / 1e9
    )?;
    writeln!(
        buf,
        "state_dict  {} entries; IR {} nodes",
        model.state.len(),
        model.graph.nodes.len()
    )?;
    writeln!(buf)?;
    writeln!(
        buf,
        "{:<34} {:<36} {:<18} {:>10} {:>14}",
        "layer", "op", "output", "params", "MACs"
    )?;
    for l in &summary.layers {
        writeln!(
            buf,
            "{:<34} {:<36} {:<18} {:>10} {:>14}",
            l.scope,
            l.op,
            fmt_shape(&l.shape),
            l.params,
            l.macs
        )?;
    }
    super::emit(&buf)?;
    Ok(ExitCode::SUCCESS)
}
