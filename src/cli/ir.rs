//! `calib ir MODEL [--format text|json|dot] [--train]`.

use anyhow::Result;
use calib::ir::{dot, json, text, DType, Mode};
use calib::models::build;
use calib::{resolve_model, with_batch};
use std::process::ExitCode;

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
enum Format {
    Text,
    Json,
    Dot,
}

#[derive(clap::Args, Debug)]
pub struct Args {
    /// A preset, a spec JSON (meta.json, *_structure.json), or a fixture directory.
    model: String,
    #[arg(long, value_enum, default_value = "text")]
    format: Format,
    /// Train-mode graph (batch statistics, running-stat outputs) instead of eval.
    #[arg(long)]
    train: bool,
    /// Batch size of the input (default: 1 for presets, the file's own otherwise).
    #[arg(long)]
    batch: Option<usize>,
}

pub fn run(args: Args) -> Result<ExitCode> {
    let source = resolve_model(&args.model)?;
    let shape = with_batch(source.input_shape.clone(), args.batch)?;
    let mode = if args.train { Mode::Train } else { Mode::Eval };
    let model = build(&source.spec, &shape, mode, DType::F32)?;
    let out = match args.format {
        Format::Text => text::print(&model.graph),
        Format::Json => json::to_string(&model.graph),
        Format::Dot => dot::to_dot(&model.graph),
    };
    super::emit(&out)?;
    if !out.ends_with('\n') {
        super::emit("\n")?;
    }
    Ok(ExitCode::SUCCESS)
}
