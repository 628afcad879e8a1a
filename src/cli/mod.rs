//! Subcommands of `calib`, one file each.

mod ablate;
mod bench;
mod compile;
mod data_parallel;
mod devices;
mod eval;
mod explain;
mod fixture;
mod fuzz;
mod import;
mod info;
mod ir;
mod loader;
mod loader_bench;
mod report;
mod rules;
mod train;
mod tune;
mod verify;

use clap::{Parser, Subcommand};
use std::io::Write;
use std::process::ExitCode;

/// calib: compile, train and inspect convolutional networks (SCNet first).
#[derive(Parser, Debug)]
#[command(name = "calib", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Time training steps of a model on a backend (synthetic data), or the data loader.
    Bench(bench::Args),
    /// List the GPUs calib can use, or say why there are none (exit code 3).
    Devices(devices::Args),
    /// Top-1/top-5 accuracy and loss of given weights on a data set's validation split.
    Eval(eval::Args),
    /// Check a fixture directory against the authors' PyTorch numbers.
    Verify(verify::Args),
    /// Parameters, MACs and a per-layer table of a model.
    Info(info::Args),
    /// Print a model's IR (or convert a graph file) as text, JSON or Graphviz DOT.
    Ir(ir::Args),
    /// Train a model on Fashion-MNIST or an image folder (SGD, checkpoints, exact resume).
    Train(Box<train::Args>),
    /// Fuse a model (or its training step) into kernels and report what happened.
    Compile(compile::Args),
    /// One self-contained HTML page about a `calib compile` output (report.html).
    Report(report::Args),
    /// Explain why a kernel of a `calib compile` output equals the nodes it replaces.
    Explain(explain::Args),
    /// Write a fixture directory for any spec, computed by the f64 interpreter.
    Fixture(fixture::Args),
    /// Differential testing: random networks on every backend against the f64 interpreter.
    Fuzz(fuzz::Args),
    /// List the fusion rules by name and family (for --disable-rule and --rules).
    Rules(rules::Args),
    /// Convert a PyTorch checkpoint (.pth, zip or legacy) to safetensors, checked by name.
    Import(import::Args),
    /// Measure GEMM schedules on the GPU and keep the fastest per shape (a cache file).
    Tune(tune::Args),
}

/// Runs one subcommand; `Ok` carries the process exit code.
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Bench(args) => bench::run(args),
        Command::Devices(args) => devices::run(args),
        Command::Eval(args) => eval::run(args),
        Command::Verify(args) => verify::run(args),
        Command::Info(args) => info::run(args),
        Command::Ir(args) => ir::run(args),
        Command::Train(args) => train::run(*args),
        Command::Compile(args) => compile::run(args),
        Command::Report(args) => report::run(args),
        Command::Explain(args) => explain::run(args),
        Command::Fixture(args) => fixture::run(args),
        Command::Fuzz(args) => fuzz::run(args),
        Command::Rules(args) => rules::run(args),
        Command::Import(args) => import::run(args),
        Command::Tune(args) => tune::run(args),
    }
}

/// Writes a command's whole output to stdout. A closed pipe (`calib ir ... | head`) is
/// not an error: the reader has what it wanted.
pub fn emit(text: &str) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|_| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(()),
    }
}
