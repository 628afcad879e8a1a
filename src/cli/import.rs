//! `calib import FILE.pth --out FILE.safetensors [--model MODEL]`: a PyTorch checkpoint's
//! state_dict as a safetensors file, names as the model's `state_dict` has them.
//!
//! Both of `torch.save`'s containers are read (`calib::runtime::weights::pth`), a plain
//! state_dict or a checkpoint dict's `state_dict` entry, DataParallel's `module.`
//! prefix stripped. With `--model`, every missing, unexpected or mis-shaped tensor is
//! reported by name and nothing is written.

use anyhow::{Context, Result};
use calib::ir::{DType, Mode};
use calib::models::build;
use calib::resolve_model;
use calib::runtime::weights::{self, pth};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The PyTorch checkpoint (`torch.save` output, zip or legacy format).
    file: PathBuf,
    /// The safetensors file to write (replaced atomically).
    #[arg(long)]
    out: PathBuf,
    /// Check the tensors against this model's state_dict: a preset, a spec JSON or a
    /// fixture directory, as `calib compile` takes.
    #[arg(long)]
    model: Option<String>,
}

pub fn run(args: Args) -> Result<ExitCode> {
    let imported = pth::load(&args.file)?;
    let n = imported.tensors.len();
    if let Some(model) = &args.model {
        let source = resolve_model(model)?;
        let built = build(&source.spec, &source.input_shape, Mode::Eval, DType::F32)?;
        let expected: Vec<_> = built
            .state
            .iter()
            .map(|e| (e.name.clone(), e.ty.clone()))
            .collect();
        weights::check_state(&expected, &imported.tensors).with_context(|| {
            format!(
                "{} against model {}: nothing written",
                args.file.display(),
                source.label
            )
        })?;
    }
    weights::save(&args.out, &imported.tensors)?;
    let mut report = format!(
        "{}: {} format, {n} tensors{}{}",
        args.file.display(),
        imported.format,
        imported
            .entry
            .as_ref()
            .map_or(String::new(), |e| format!(" from entry `{e}`")),
        imported
            .stripped
            .map_or(String::new(), |p| format!(", prefix `{p}` stripped")),
    );
    if let Some(model) = &args.model {
        report += &format!("; every tensor matches model {model}");
    }
    for skipped in &imported.skipped {
        report += &format!("\n  not imported: {skipped}");
    }
    report += &format!("\nwrote {}\n", args.out.display());
    super::emit(&report)?;
    Ok(ExitCode::SUCCESS)
}
