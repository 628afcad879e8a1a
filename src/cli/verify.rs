//! `calib verify DIR [--json]`.

use anyhow::{bail, Result};
use calib::ir::Precision;
use calib::passes::fusion::FusionOptions;
use calib::runtime::{Backend, Reference};
use calib::verify::{verify_fixture_at, Status};
use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Fixture directories (each with meta.json and safetensors files).
    #[arg(required = true)]
    dirs: Vec<PathBuf>,
    /// Print the rows as JSON instead of a table.
    #[arg(long)]
    json: bool,
    /// Executor: `reference` (the CPU interpreter), `sim` (the fused plan compiled to PTX
    /// and run on the PTX simulator) or `cuda` (an NVIDIA GPU).
    #[arg(long, default_value = "reference")]
    backend: String,
    /// Fuse every graph first and run the kernel plan (each kernel's body on the
    /// executor).
    #[arg(long)]
    fused: bool,
    /// Precision policy: `f32`, `tf32` (GEMM operands rounded to TF32) or `bf16` (GEMM
    /// operands and activations in bf16); reduced precisions are checked against the
    /// f32 fixtures with the tolerances of docs/precision.md.
    #[arg(long, default_value = "f32")]
    precision: Precision,
    #[command(flatten)]
    rules: super::rules::RuleArgs,
}

pub fn run(args: Args) -> Result<ExitCode> {
    let rules = args.rules.rule_set()?;
    let backend: Box<dyn Backend> = match args.backend.as_str() {
        "reference" if args.fused => Box::new(calib::verify::Fused {
            options: FusionOptions {
                rules,
                precision: args.precision,
                ..FusionOptions::default()
            },
        }),
        "reference" if !rules.is_all() => {
            bail!("--disable-rule and --rules shape the fused plan: add --fused")
        }
        "reference" => Box::new(Reference::new()),
        other => calib::backend_with(
            other,
            calib::BackendOptions {
                rules,
                precision: args.precision,
                ..Default::default()
            },
        )?,
    };
    let mut reports = vec![];
    for dir in &args.dirs {
        if !dir.join("meta.json").is_file() {
            bail!(
                "{} is not a fixture directory (no meta.json)",
                dir.display()
            );
        }
        reports.push(verify_fixture_at(dir, backend.as_ref(), args.precision)?);
    }
    if args.json {
        let value = if reports.len() == 1 {
            serde_json::to_value(&reports[0])?
        } else {
            serde_json::to_value(&reports)?
        };
        super::emit(&(serde_json::to_string_pretty(&value)? + "\n"))?;
    } else {
        let mut buf = String::new();
        for r in &reports {
            writeln!(
                buf,
                "{} (backend {}, precision {}: {} GEMMs deep, {} decision layers)",
                r.fixture, r.backend, r.precision, r.gemm_depth, r.decision_layers
            )?;
            writeln!(
                buf,
                "  {:<52} {:>12} {:>12}  result",
                "tensor", "error", "tolerance"
            )?;
            for row in &r.rows {
                let num = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.3e}"));
                let status = match row.status {
                    Status::Pass => "pass",
                    Status::Fail => "FAIL",
                    Status::NotChecked => "not checked",
                };
                writeln!(
                    buf,
                    "  {:<52} {:>12} {:>12}  {status}",
                    row.name,
                    num(row.max_abs_err),
                    num(row.tolerance)
                )?;
            }
            writeln!(
                buf,
                "  {} passed, {} failed, {} not checked",
                r.count(Status::Pass),
                r.count(Status::Fail),
                r.count(Status::NotChecked)
            )?;
        }
        super::emit(&buf)?;
    }
    Ok(if reports.iter().all(|r| r.passed()) {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
