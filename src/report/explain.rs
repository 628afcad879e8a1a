//! Each kernel's explanation (`passes::fusion::explain`) for the detail view, with a
//! time budget. Re-saturating a kernel's nodes usually takes milliseconds, but for some
//! kernels (7 of the tiny SCNet's 100 training-step kernels at this commit) egg's
//! e-graph grows without bound: tens of gigabytes within minutes. A thread cannot be
//! stopped, so with a `calib` binary at hand each kernel is explained by a `calib
//! explain DIR KERNEL` process that is killed at the budget; the page then says so.

use calib_ir::{Graph, Program};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// How long one kernel's explanation may take.
pub const BUDGET: Duration = Duration::from_secs(5);

/// Where explanations come from.
#[derive(Clone, Debug, Default)]
pub enum Explainer {
    /// `passes::fusion::explain` in this process (no time budget: for callers that
    /// know their plans, such as unit tests).
    #[default]
    InProcess,
    /// `BINARY explain DIR KERNEL`, killed after [`BUDGET`].
    Process(PathBuf),
}

impl Explainer {
    /// The explanation of `kernel`, or a sentence saying why there is none.
    pub fn explain(&self, dir: &Path, graph: &Graph, program: &Program, kernel: &str) -> String {
        match self {
            Explainer::InProcess => calib_passes::fusion::explain(graph, program, kernel)
                .unwrap_or_else(|e| format!("calib explain failed for {kernel}: {e:#}")),
            Explainer::Process(binary) => run(binary, dir, kernel),
        }
    }
}

fn run(binary: &Path, dir: &Path, kernel: &str) -> String {
    let child = Command::new(binary)
        .arg("explain")
        .arg(dir)
        .arg(kernel)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => return format!("could not run {} explain: {e}", binary.display()),
    };
    // Drain the pipes on threads so a long explanation never blocks the child.
    let mut stdout = child.stdout.take().expect("piped stdout");
    let mut stderr = child.stderr.take().expect("piped stderr");
    let out = std::thread::spawn(move || std::io::read_to_string(&mut stdout).unwrap_or_default());
    let err = std::thread::spawn(move || std::io::read_to_string(&mut stderr).unwrap_or_default());
    let start = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if start.elapsed() < BUDGET => std::thread::sleep(Duration::from_millis(5)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
        }
    };
    let (out, err) = (
        out.join().unwrap_or_default(),
        err.join().unwrap_or_default(),
    );
    match status {
        Some(s) if s.success() => out,
        Some(_) => format!("calib explain failed for {kernel}: {}", err.trim()),
        None => format!(
            "No explanation: egg's e-graph for {kernel} did not saturate within {} s and was \
             stopped (run `calib explain {} {kernel}` to watch it).",
            BUDGET.as_secs(),
            dir.display()
        ),
    }
}
