//! `calib explain DIR KERNEL`: egg's rewrite chain showing that a kernel of a
//! `calib compile` output computes what the original nodes it replaces computed.

use anyhow::{Context, Result};
use calib::ir::{json, Program};
use calib::passes::fusion::explain;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// A directory written by `calib compile` (with before.json and after.json).
    dir: PathBuf,
    /// A kernel name from after.txt or report.txt (`k12`).
    kernel: String,
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
    super::emit(&explain(&graph, &program, &args.kernel)?)?;
    Ok(ExitCode::SUCCESS)
}
