//! Subcommands of `calib`, one file each.

mod info;
mod ir;
mod train;
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
    /// Check a fixture directory against the authors' PyTorch numbers.
    Verify(verify::Args),
    /// Parameters, MACs and a per-layer table of a model.
    Info(info::Args),
    /// Print a model's IR as text, JSON or Graphviz DOT.
    Ir(ir::Args),
    /// Train a model on Fashion-MNIST (SGD, checkpoints, exact resume).
    Train(train::Args),
}

/// Runs one subcommand; `Ok` carries the process exit code.
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Verify(args) => verify::run(args),
        Command::Info(args) => info::run(args),
        Command::Ir(args) => ir::run(args),
        Command::Train(args) => train::run(args),
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
