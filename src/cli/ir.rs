//! `calib ir MODEL|GRAPH [--format text|json|dot] [--train] [--step]`.

use anyhow::{bail, Context, Result};
use calib::ir::{dot, json, text, DType, Graph, Mode};
use calib::models::build;
use calib::passes::{train_step, TrainConfig};
use calib::{resolve_model, with_batch};
use std::path::Path;
use std::process::ExitCode;

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
enum Format {
    Text,
    Json,
    Dot,
}

#[derive(clap::Args, Debug)]
pub struct Args {
    /// A preset, a spec JSON (meta.json, *_structure.json), a fixture directory, or a
    /// graph in calib's text (`*.ir`) or JSON form (converted to --format).
    model: String,
    #[arg(long, value_enum, default_value = "text")]
    format: Format,
    /// Train-mode graph (batch statistics, running-stat outputs) instead of eval.
    #[arg(long)]
    train: bool,
    /// The whole SGD training step (forward, loss, backward, update) as one graph.
    #[arg(long, conflicts_with = "train")]
    step: bool,
    /// Batch size of the input (default: 1 for presets, the file's own otherwise).
    #[arg(long)]
    batch: Option<usize>,
}

pub fn run(args: Args) -> Result<ExitCode> {
    let graph = match read_graph_file(Path::new(&args.model))? {
        Some(graph) => graph,
        None => {
            let source = resolve_model(&args.model)?;
            let shape = with_batch(source.input_shape.clone(), args.batch)?;
            let mode = if args.train || args.step {
                Mode::Train
            } else {
                Mode::Eval
            };
            let graph = build(&source.spec, &shape, mode, DType::F32)?.graph;
            if args.step {
                train_step(&graph, &TrainConfig::default())?.graph
            } else {
                graph
            }
        }
    };
    let out = match args.format {
        Format::Text => text::print(&graph),
        Format::Json => json::to_string(&graph),
        Format::Dot => dot::to_dot(&graph),
    };
    super::emit(&out)?;
    if !out.ends_with('\n') {
        super::emit("\n")?;
    }
    Ok(ExitCode::SUCCESS)
}

/// A graph file: text form (`graph {`), or JSON with `nodes`, or anything named `*.ir`.
/// `None` for anything else (model specs, directories, preset names), which the model
/// resolver handles.
fn read_graph_file(path: &Path) -> Result<Option<Graph>> {
    if !path.is_file() {
        return Ok(None);
    }
    let content =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let what = || format!("{} is not a valid calib graph", path.display());
    let parse_json = || json::from_str(&content).with_context(what);
    let trimmed = content.trim_start();
    let is_ir = path.extension().is_some_and(|e| e == "ir");
    if is_ir && trimmed.is_empty() {
        bail!(
            "{} is empty: a graph file holds calib's text form (`graph {{ ... }}`) or its JSON \
             form (an object with `nodes` and `outputs`)",
            path.display()
        );
    }
    if trimmed.starts_with("graph") || (is_ir && !trimmed.starts_with('{')) {
        return Ok(Some(text::parse(&content).with_context(what)?));
    }
    // A spec never has `nodes`; a graph cut short still shows it, and is then reported
    // as a graph that does not parse rather than as a model spec.
    if is_ir || content.contains("\"nodes\"") {
        return Ok(Some(parse_json()?));
    }
    Ok(None)
}
