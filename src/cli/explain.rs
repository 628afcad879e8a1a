//! `calib explain DIR [KERNEL]`: egg's rewrite chain showing that a kernel of a
//! `calib compile` output computes what the original nodes it replaces computed; with
//! no kernel named, every kernel in plan order.

use anyhow::{Context, Result};
use calib::ir::{json, Program};
use calib::passes::fusion::explain;
use rayon::prelude::*;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// A directory written by `calib compile` (with before.json and after.json).
    dir: PathBuf,
    /// A kernel name from after.txt or report.txt (`k12`); every kernel if omitted.
    kernel: Option<String>,
}

pub fn run(args: Args) -> Result<ExitCode> {
    let read = |name: &str| {
        let path = args.dir.join(name);
        std::fs::read_to_string(&path).with_context(|| {
            format!(
                "reading {} (is {} a `calib compile` output?)",
                path.display(),
                args.dir.display()
            )
        })
    };
    let graph = json::from_str(&read("before.json")?).context("before.json")?;
    let program = Program::from_json(&read("after.json")?).context("after.json")?;
    if let Some(kernel) = &args.kernel {
        super::emit(&explain(&graph, &program, kernel)?)?;
        return Ok(ExitCode::SUCCESS);
    }
    // Each kernel's explanation saturates its own small e-graph: independent work.
    let texts: Vec<String> = program
        .kernels
        .par_iter()
        .map(|k| explain(&graph, &program, &k.name).map_err(anyhow::Error::from))
        .collect::<Result<_>>()?;
    super::emit(&texts.join("\n"))?;
    Ok(ExitCode::SUCCESS)
}
