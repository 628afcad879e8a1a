//! NVIDIA's `ptxas` as a second opinion on generated PTX: assemble for a real target and
//! read back the resources each kernel needs (`ptxas -v`).
//!
//! The CUDA executor assembles its kernels with it too ([`assemble_cubin`]).
//!
//! `ptxas` comes with the CUDA toolkit, or from the `nvidia-cuda-nvcc-cu12` wheel on PyPI,
//! which runs without a GPU. It is found through `CALIB_PTXAS`, then `PATH`, then
//! `/usr/local/cuda/bin/ptxas`, then a `.venv` (where `scripts/setup.sh` installs it) in
//! the current directory or one of its parents, or beside the running binary (a
//! repository's `target/release/calib` finds the repository's `.venv`).
//!
//! A training step's module holds hundreds of kernels; a `ptxas` that takes
//! `--split-compile` optimizes them on every core.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use thiserror::Error;

/// How to get `ptxas`, for error messages.
pub const INSTALL_HINT: &str = "install it with `python3 -m venv .venv && .venv/bin/pip install \
nvidia-cuda-nvcc-cu12==12.9.86` in the repository root (scripts/setup.sh does this), or point \
CALIB_PTXAS at a ptxas binary";

#[derive(Debug, Error)]
pub enum PtxasError {
    #[error("ptxas not found (looked in: {}); {INSTALL_HINT}", searched.join(", "))]
    NotFound { searched: Vec<String> },
    #[error("could not run {ptxas}: {source}")]
    Io {
        ptxas: String,
        source: std::io::Error,
    },
    #[error("ptxas rejected the PTX for {arch}:\n{log}")]
    Rejected { arch: String, log: String },
}

/// Resources `ptxas -v` reports for one kernel.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KernelResources {
    pub name: String,
    pub registers: u32,
    pub barriers: u32,
    pub stack_frame_bytes: u64,
    pub spill_store_bytes: u64,
    pub spill_load_bytes: u64,
    pub shared_bytes: u64,
}

/// The outcome of assembling one PTX module for one architecture.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PtxasReport {
    pub arch: String,
    pub kernels: Vec<KernelResources>,
    /// Everything ptxas printed (warnings included).
    pub log: String,
}

impl fmt::Display for PtxasReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{:<32} {:>5} {:>6} {:>12} {:>11}",
            format!("kernel ({})", self.arch),
            "regs",
            "smem",
            "spill st/ld",
            "stack"
        )?;
        for k in &self.kernels {
            writeln!(
                f,
                "{:<32} {:>5} {:>6} {:>12} {:>11}",
                k.name,
                k.registers,
                k.shared_bytes,
                format!("{}/{}", k.spill_store_bytes, k.spill_load_bytes),
                k.stack_frame_bytes
            )?;
        }
        Ok(())
    }
}

/// Locates `ptxas` (see the module documentation for the search order).
pub fn find_ptxas() -> Result<PathBuf, PtxasError> {
    let mut searched = Vec::new();
    if let Some(p) = std::env::var_os("CALIB_PTXAS") {
        let p = PathBuf::from(p);
        if p.is_file() {
            return Ok(p);
        }
        searched.push(format!("CALIB_PTXAS={}", p.display()));
    }
    for dir in std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()) {
        let p = dir.join("ptxas");
        if p.is_file() {
            return Ok(p);
        }
    }
    searched.push("PATH".into());
    let toolkit = PathBuf::from("/usr/local/cuda/bin/ptxas");
    if toolkit.is_file() {
        return Ok(toolkit);
    }
    searched.push(toolkit.display().to_string());
    let cwd = std::env::current_dir().ok();
    let exe = std::env::current_exe().ok();
    for start in [cwd, exe].into_iter().flatten() {
        for dir in start.ancestors() {
            let venv = dir.join(".venv");
            if let Some(p) = in_venv(&venv) {
                return Ok(p);
            }
            if venv.exists() {
                searched.push(venv.display().to_string());
            }
        }
    }
    searched.push(".venv in the current directory, the binary's, and their parents".into());
    Err(PtxasError::NotFound { searched })
}

/// What `ptxas --version` says (its release, e.g. `Cuda compilation tools, release
/// 12.9, V12.9.86`), for keying caches of what it assembles.
pub fn version(ptxas: &Path) -> Result<String, PtxasError> {
    let run = Command::new(ptxas)
        .arg("--version")
        .output()
        .map_err(|source| PtxasError::Io {
            ptxas: ptxas.display().to_string(),
            source,
        })?;
    let text = String::from_utf8_lossy(&run.stdout).trim().to_string();
    if !run.status.success() || text.is_empty() {
        return Err(PtxasError::Io {
            ptxas: ptxas.display().to_string(),
            source: std::io::Error::other(format!(
                "`--version` failed: {}",
                String::from_utf8_lossy(&run.stderr).trim()
            )),
        });
    }
    Ok(text)
}

/// `<venv>/lib/python3*/site-packages/nvidia/cuda_nvcc/bin/ptxas`, if present.
fn in_venv(venv: &Path) -> Option<PathBuf> {
    let lib = std::fs::read_dir(venv.join("lib")).ok()?;
    lib.flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("python3"))
        .map(|e| e.path().join("site-packages/nvidia/cuda_nvcc/bin/ptxas"))
        .find(|p| p.is_file())
}

/// Assembles `ptx` for `arch` (`sm_80`, `sm_90`) with the `ptxas` [`find_ptxas`] finds.
pub fn assemble(ptx: &str, arch: &str) -> Result<PtxasReport, PtxasError> {
    assemble_with(&find_ptxas()?, ptx, arch)
}

/// Assembles `ptx` for `arch` with a given `ptxas` binary.
pub fn assemble_with(ptxas: &Path, ptx: &str, arch: &str) -> Result<PtxasReport, PtxasError> {
    let (log, _) = run(ptxas, ptx, arch, &["-v"], false)?;
    Ok(PtxasReport {
        arch: arch.to_string(),
        kernels: parse_verbose(&log),
        log,
    })
}

/// Assembles `ptx` for `arch` with a given `ptxas` binary and returns the cubin (an
/// ELF image the CUDA driver loads as it is).
pub fn assemble_cubin(ptxas: &Path, ptx: &str, arch: &str) -> Result<Vec<u8>, PtxasError> {
    let (_, cubin) = run(ptxas, ptx, arch, &[], true)?;
    Ok(cubin.expect("asked for the cubin"))
}

/// Runs `ptxas -arch=<arch> <flags> in.ptx -o out.cubin` on temporary files; returns its
/// log (file names replaced by `<input>`) and, if `keep`, the cubin.
fn run(
    ptxas: &Path,
    ptx: &str,
    arch: &str,
    flags: &[&str],
    keep: bool,
) -> Result<(String, Option<Vec<u8>>), PtxasError> {
    static UNIQUE: AtomicU64 = AtomicU64::new(0);
    let stem = std::env::temp_dir().join(format!(
        "calib-ptxas-{}-{}",
        std::process::id(),
        UNIQUE.fetch_add(1, Ordering::Relaxed)
    ));
    let input = stem.with_extension("ptx");
    let output = stem.with_extension("cubin");
    let io_err = |source| PtxasError::Io {
        ptxas: ptxas.display().to_string(),
        source,
    };
    std::fs::write(&input, ptx).map_err(io_err)?;
    let parallel: &[&str] = match splits_compile(ptxas) {
        true => &["--split-compile", "0"],
        false => &[],
    };
    let run = Command::new(ptxas)
        .arg(format!("-arch={arch}"))
        .args(parallel)
        .args(flags)
        .arg(&input)
        .arg("-o")
        .arg(&output)
        .output();
    let _ = std::fs::remove_file(&input);
    let cubin = match (&run, keep) {
        (Ok(r), true) if r.status.success() => Some(std::fs::read(&output)),
        _ => None,
    };
    let _ = std::fs::remove_file(&output);
    let run = run.map_err(io_err)?;
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr)
    )
    .replace(&input.display().to_string(), "<input>");
    if !run.status.success() {
        return Err(PtxasError::Rejected {
            arch: arch.to_string(),
            log,
        });
    }
    Ok((log, cubin.transpose().map_err(io_err)?))
}

/// Whether `ptxas` takes `--split-compile` (it says so in `--help`), asked once per
/// binary. The option spreads a module's kernels over the machine's cores without
/// changing what each one assembles to, registers included.
fn splits_compile(ptxas: &Path) -> bool {
    static ASKED: OnceLock<Mutex<HashMap<PathBuf, bool>>> = OnceLock::new();
    let asked = ASKED.get_or_init(Default::default);
    if let Some(&known) = asked.lock().unwrap_or_else(|e| e.into_inner()).get(ptxas) {
        return known;
    }
    let takes = Command::new(ptxas)
        .arg("--help")
        .output()
        .is_ok_and(|r| String::from_utf8_lossy(&r.stdout).contains("--split-compile"));
    (asked.lock().unwrap_or_else(|e| e.into_inner())).insert(ptxas.to_path_buf(), takes);
    takes
}

/// Reads the per-kernel lines of `ptxas -v`:
///
/// ```text
/// ptxas info    : Compiling entry function 'k' for 'sm_80'
///     0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
/// ptxas info    : Used 8 registers, used 0 barriers, 128 bytes smem, 364 bytes cmem[0]
/// ```
pub fn parse_verbose(log: &str) -> Vec<KernelResources> {
    let mut kernels: Vec<KernelResources> = Vec::new();
    for line in log.lines() {
        if let Some(rest) = line.split("Compiling entry function '").nth(1) {
            let name = rest.split('\'').next().unwrap_or_default();
            kernels.push(KernelResources {
                name: name.to_string(),
                ..KernelResources::default()
            });
            continue;
        }
        let Some(k) = kernels.last_mut() else {
            continue;
        };
        let body = line.rsplit(" : ").next().unwrap_or(line);
        for field in body.split(',') {
            let words: Vec<&str> = field.split_whitespace().collect();
            let number = |i: usize| words.get(i).and_then(|w| w.parse::<u64>().ok());
            match words.as_slice() {
                ["Used", _, "registers"] => k.registers = number(1).unwrap_or(0) as u32,
                ["used", _, "barriers"] => k.barriers = number(1).unwrap_or(0) as u32,
                [_, "bytes", "smem"] => k.shared_bytes = number(0).unwrap_or(0),
                [_, "bytes", "stack", "frame"] => k.stack_frame_bytes = number(0).unwrap_or(0),
                [_, "bytes", "spill", "stores"] => k.spill_store_bytes = number(0).unwrap_or(0),
                [_, "bytes", "spill", "loads"] => k.spill_load_bytes = number(0).unwrap_or(0),
                _ => {}
            }
        }
    }
    kernels
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verbose_output_is_read_per_kernel() {
        let log = "ptxas info    : 0 bytes gmem
ptxas info    : Compiling entry function 'k2' for 'sm_80'
ptxas info    : Function properties for k2
    0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
ptxas info    : Used 4 registers, used 0 barriers, 352 bytes cmem[0]
ptxas info    : Compiling entry function 'k' for 'sm_80'
ptxas info    : Function properties for k
    16 bytes stack frame, 8 bytes spill stores, 12 bytes spill loads
ptxas info    : Used 40 registers, used 1 barriers, 128 bytes smem, 364 bytes cmem[0]
";
        let ks = parse_verbose(log);
        assert_eq!(ks.len(), 2);
        assert_eq!(ks[0].name, "k2");
        assert_eq!(ks[0].registers, 4);
        assert_eq!(ks[0].shared_bytes, 0);
        assert_eq!(
            ks[1],
            KernelResources {
                name: "k".into(),
                registers: 40,
                barriers: 1,
                stack_frame_bytes: 16,
                spill_store_bytes: 8,
                spill_load_bytes: 12,
                shared_bytes: 128,
            }
        );
    }
}
