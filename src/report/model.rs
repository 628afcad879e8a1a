//! A `calib compile --out DIR` output read back: the summary and per-kernel figures of
//! `report.json`, the graph before fusion and the plan after it, and, when the compile
//! ran with `--emit-ptx`, ptxas's resources (`ptx_report.json`) and each launch's PTX.
//! Everything the page shows is derived from this one value.

use anyhow::{anyhow, bail, Context, Result};
use calib_cost::{blocks_per_sm, Device, Launch};
use calib_ir::{json, Graph, Program};
use serde::Deserialize;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// The files a compile output must have; the rest are optional.
const REQUIRED: [&str; 3] = ["report.json", "before.json", "after.json"];

/// Totals of a compile, before and after fusion.
#[derive(Clone, Debug, Deserialize)]
pub struct Summary {
    pub kernels_before: usize,
    pub kernels_after: usize,
    pub bytes_before: f64,
    pub bytes_after: f64,
    pub flops_before: f64,
    pub flops_after: f64,
    /// The fusion's own estimate of the unfused graph, in seconds.
    pub seconds_before: f64,
    #[serde(default)]
    pub disabled_rules: Vec<String>,
}

/// One plan kernel with everything the table shows about it.
#[derive(Clone, Debug)]
pub struct KernelFacts {
    pub name: String,
    /// The anchor op and the layer scope it came from (`conv2d@layer1.0.conv1_a`).
    pub label: String,
    pub anchor: String,
    /// Ops in the fused body.
    pub ops: usize,
    /// Ids of the original graph's nodes it computes.
    pub covers: Vec<usize>,
    pub flops: f64,
    pub bytes: f64,
    /// The cost model's time for all of the kernel's launches, as emitted.
    pub predicted_us: f64,
    /// The kernel's launches (`k12`, `k12_part1`), in order.
    pub launches: Vec<String>,
    /// Measured time of all its launches, when a timing table was joined.
    pub measured_us: Option<f64>,
    /// ptxas's sm_90 figures (the most of any launch), with `--emit-ptx`.
    pub ptxas: Option<PtxasFacts>,
    /// A GEMM's schedule (tile, split, instruction) and why it got it: tuned, or the
    /// cost model's figures (compile reports written before there were reasons lack it).
    pub schedule: Option<String>,
    pub schedule_reason: Option<String>,
}

/// ptxas's view of a kernel's launches on sm_90.
#[derive(Clone, Debug, PartialEq)]
pub struct PtxasFacts {
    pub registers: u32,
    /// Spill stores plus spill loads, bytes per thread, over all launches.
    pub spill_bytes: u64,
    /// Dynamic plus static shared memory per block.
    pub shared_bytes: u64,
    /// Resident threads over the SM's maximum, for the longest launch.
    pub occupancy: f64,
}

/// A compile output.
pub struct CompileOutput {
    pub dir: PathBuf,
    pub summary: Summary,
    pub device: Device,
    /// The predicted step, launch gaps included.
    pub step_ms: f64,
    pub graph: Graph,
    pub program: Program,
    pub kernels: Vec<KernelFacts>,
    /// Whether `--emit-ptx` files are present.
    pub has_ptx: bool,
}

#[derive(Deserialize)]
struct ReportFile {
    #[serde(flatten)]
    summary: Summary,
    device: Device,
    kernels: Vec<KernelEntry>,
    predicted_step: PredictedStep,
}

#[derive(Deserialize)]
struct KernelEntry {
    name: String,
    label: String,
    anchor: String,
    ops: usize,
    covers: Vec<usize>,
    flops: f64,
    bytes: f64,
    #[serde(default)]
    schedule: Option<String>,
    #[serde(default)]
    schedule_reason: Option<String>,
}

#[derive(Deserialize)]
struct PredictedStep {
    step_ms: f64,
    launches: Vec<LaunchEntry>,
}

#[derive(Deserialize)]
struct LaunchEntry {
    name: String,
    kernel: String,
    predicted_us: f64,
}

/// A row of `ptx_report.json`.
#[derive(Deserialize)]
struct PtxRow {
    name: String,
    block: [u32; 3],
    shared_bytes: u32,
    ptxas: Vec<(String, PtxasRow)>,
}

#[derive(Deserialize)]
struct PtxasRow {
    registers: u32,
    spill_store_bytes: u64,
    spill_load_bytes: u64,
    static_shared_bytes: u64,
}

impl CompileOutput {
    /// Reads `dir`. A directory that is not a compile output, or a file that does not
    /// parse, is an error naming the file.
    pub fn load(dir: &Path) -> Result<CompileOutput> {
        if !dir.is_dir() {
            bail!(
                "{} is not a directory (give a `calib compile --out DIR` output)",
                dir.display()
            );
        }
        let missing: Vec<&str> = REQUIRED
            .into_iter()
            .filter(|f| !dir.join(f).is_file())
            .collect();
        if !missing.is_empty() {
            bail!(
                "{} is not a `calib compile --out DIR` output: {} missing",
                dir.display(),
                missing.join(", ")
            );
        }
        let read = |name: &str| {
            let path = dir.join(name);
            std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))
        };
        let report: ReportFile =
            serde_json::from_str(&read("report.json")?).with_context(|| {
                format!(
                    "{}: not a compile report",
                    dir.join("report.json").display()
                )
            })?;
        let graph = json::from_str(&read("before.json")?)
            .with_context(|| format!("{}", dir.join("before.json").display()))?;
        let program = Program::from_json(&read("after.json")?)
            .with_context(|| format!("{}", dir.join("after.json").display()))?;
        if program.kernels.len() != report.kernels.len() {
            bail!(
                "{}: report.json lists {} kernels, after.json has {}: the files are of different compiles",
                dir.display(),
                report.kernels.len(),
                program.kernels.len()
            );
        }
        let ptx_rows = match dir.join("ptx_report.json") {
            p if p.is_file() => Some(
                serde_json::from_str::<Vec<PtxRow>>(&read("ptx_report.json")?)
                    .with_context(|| format!("{}", p.display()))?,
            ),
            _ => None,
        };
        let has_ptx = ptx_rows.is_some();
        let kernels = kernel_facts(&report, ptx_rows.as_deref(), &report.device);
        Ok(CompileOutput {
            dir: dir.to_path_buf(),
            summary: report.summary,
            device: report.device,
            step_ms: report.predicted_step.step_ms,
            graph,
            program,
            kernels,
            has_ptx,
        })
    }

    /// The PTX of every launch of `kernel`, one after another; `None` without
    /// `--emit-ptx`. A launch whose file is missing is an error naming it.
    pub fn ptx(&self, kernel: &KernelFacts) -> Result<Option<String>> {
        if !self.has_ptx {
            return Ok(None);
        }
        let mut text = String::new();
        for launch in &kernel.launches {
            let path = self.dir.join(format!("{launch}.ptx"));
            let ptx = std::fs::read_to_string(&path).map_err(|e| {
                anyhow!(
                    "{}: {e} (ptx_report.json is there, so the compile ran with --emit-ptx \
                     and wrote it)",
                    path.display()
                )
            })?;
            text.push_str(&ptx);
        }
        Ok(Some(text))
    }

    /// Sum of the kernels' predicted times, without launch gaps.
    pub fn kernel_ms(&self) -> f64 {
        self.kernels.iter().map(|k| k.predicted_us).sum::<f64>() / 1e3
    }
}

fn kernel_facts(report: &ReportFile, ptx: Option<&[PtxRow]>, device: &Device) -> Vec<KernelFacts> {
    let mut launches: HashMap<&str, Vec<&LaunchEntry>> = HashMap::new();
    for l in &report.predicted_step.launches {
        launches.entry(l.kernel.as_str()).or_default().push(l);
    }
    let ptx: HashMap<&str, &PtxRow> = ptx
        .unwrap_or_default()
        .iter()
        .map(|r| (r.name.as_str(), r))
        .collect();
    report
        .kernels
        .iter()
        .map(|k| {
            let own = launches.get(k.name.as_str()).cloned().unwrap_or_default();
            let rows: Vec<(&LaunchEntry, &PtxRow)> = own
                .iter()
                .filter_map(|l| Some((*l, *ptx.get(l.name.as_str())?)))
                .collect();
            KernelFacts {
                name: k.name.clone(),
                label: k.label.clone(),
                anchor: k.anchor.clone(),
                ops: k.ops,
                covers: k.covers.clone(),
                flops: k.flops,
                bytes: k.bytes,
                predicted_us: own.iter().map(|l| l.predicted_us).sum(),
                launches: own.iter().map(|l| l.name.clone()).collect(),
                measured_us: None,
                ptxas: ptxas_facts(&rows, device),
                schedule: k.schedule.clone(),
                schedule_reason: k.schedule_reason.clone(),
            }
        })
        .collect()
}

/// The sm_90 figures over a kernel's launches; `None` when ptxas gave none.
fn ptxas_facts(rows: &[(&LaunchEntry, &PtxRow)], device: &Device) -> Option<PtxasFacts> {
    fn sm90(r: &PtxRow) -> Option<&PtxasRow> {
        r.ptxas.iter().find(|(a, _)| a == "sm_90").map(|(_, p)| p)
    }
    let with: Vec<(&LaunchEntry, &PtxRow, &PtxasRow)> = rows
        .iter()
        .filter_map(|(l, r)| Some((*l, *r, sm90(r)?)))
        .collect();
    let (_, longest, res) = with
        .iter()
        .max_by(|a, b| a.0.predicted_us.total_cmp(&b.0.predicted_us))?;
    let threads = longest.block.iter().product::<u32>();
    let launch = Launch {
        blocks: 1,
        threads,
        shared_bytes: longest.shared_bytes,
        registers: res.registers,
        ..Launch::default()
    };
    let resident = blocks_per_sm(&launch, device) * threads;
    Some(PtxasFacts {
        registers: with.iter().map(|(_, _, p)| p.registers).max().unwrap_or(0),
        spill_bytes: with
            .iter()
            .map(|(_, _, p)| p.spill_store_bytes + p.spill_load_bytes)
            .sum(),
        shared_bytes: with
            .iter()
            .map(|(_, r, p)| r.shared_bytes as u64 + p.static_shared_bytes)
            .max()
            .unwrap_or(0),
        occupancy: (resident as f64 / device.max_threads_per_sm as f64).min(1.0),
    })
}
