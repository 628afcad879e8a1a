//! What the integration tests share: running the `calib` binary, finding the fixtures,
//! a small data-parallel training step, stepping a plain one through sessions, and tiny
//! `calib train` runs, and headless Chromium for the HTML report.

#![allow(dead_code)] // each test binary uses its own part

pub mod cdp;
pub mod data_parallel;
pub mod images;
pub mod planner;
pub mod session;
pub mod train;

use std::path::PathBuf;
use std::process::{Command, Output};

/// Runs the `calib` binary from the repository root.
pub fn calib(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_calib"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("calib runs")
}

/// A fixture directory: under `CALIB_FIXTURES` if set (the GPU bundle), else the
/// repository's `../shared/fixtures`.
pub fn fixture(name: &str) -> PathBuf {
    std::env::var_os("CALIB_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures"))
        .join(name)
}
