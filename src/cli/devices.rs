//! `calib devices [--json]`: the GPUs calib can use, or why there are none.

use anyhow::Result;
use calib::runtime::cuda::{devices, nccl_present};
use std::fmt::Write as _;
use std::process::ExitCode;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args) -> Result<ExitCode> {
    let found = devices();
    if args.json {
        let v = match &found {
            Ok(list) => serde_json::json!({"devices": list, "nccl": nccl_present()}),
            Err(e) => serde_json::json!({"devices": [], "error": e.to_string()}),
        };
        super::emit(&(serde_json::to_string_pretty(&v)? + "\n"))?;
    } else {
        let mut buf = String::new();
        match &found {
            Ok(list) => {
                for d in list {
                    let (major, minor) = d.compute_capability;
                    writeln!(
                        buf,
                        "cuda:{}  {}  sm_{major}{minor}  {:.1} GiB",
                        d.ordinal,
                        d.name,
                        d.total_memory_bytes as f64 / (1u64 << 30) as f64
                    )?;
                }
                writeln!(
                    buf,
                    "NCCL: {}",
                    if nccl_present() {
                        "found"
                    } else {
                        "not found (replicas all-reduce through the host; link libnccl.so.2 as libnccl.so on \
                         LD_LIBRARY_PATH for NCCL)"
                    }
                )?;
            }
            Err(e) => writeln!(buf, "no GPU available: {e}")?,
        }
        super::emit(&buf)?;
    }
    Ok(if found.is_ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(3)
    })
}
