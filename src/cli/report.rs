//! `calib report DIR [--timings FILE] [--against OTHER_DIR]`: one self-contained HTML
//! page (`DIR/report.html`) about a `calib compile --out DIR` output (`src/report/`).

use anyhow::Result;
use calib::report::{write_report, Options};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// A directory written by `calib compile --out DIR` (best with --emit-ptx).
    dir: PathBuf,
    #[command(flatten)]
    options: ReportArgs,
}

/// The report's options, shared with `calib compile --report`.
#[derive(clap::Args, Debug, Default)]
pub struct ReportArgs {
    /// A per-kernel timing table (`calib bench --per-kernel`, or the Nsight tables
    /// under shared/gpu/): measured times beside the predicted ones.
    #[arg(long, value_name = "FILE")]
    pub timings: Option<PathBuf>,
    /// Another compile output to compare with (kernels gained and lost, bytes, time).
    #[arg(long, value_name = "OTHER_DIR")]
    pub against: Option<PathBuf>,
}

impl ReportArgs {
    pub fn options(&self) -> Options {
        Options {
            timings: self.timings.clone(),
            against: self.against.clone(),
        }
    }
}

pub fn run(args: Args) -> Result<ExitCode> {
    write(&args.dir, &args.options)?;
    Ok(ExitCode::SUCCESS)
}

/// Writes the report and says where, and how large it is.
pub fn write(dir: &std::path::Path, options: &ReportArgs) -> Result<()> {
    let (path, bytes) = write_report(dir, &options.options())?;
    super::emit(&format!(
        "wrote {} ({:.1} MB)\n",
        path.display(),
        bytes as f64 / 1e6
    ))
}
