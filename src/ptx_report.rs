//! `calib compile --emit-ptx`: every kernel's PTX beside the compile report, and what
//! NVIDIA's ptxas says each one needs (registers, spills, shared memory) on sm_80 and
//! sm_90, and each launch's features for the cost model (`launches.json`).

use anyhow::{bail, Context, Result};
use calib_codegen::CompiledProgram;
use calib_cost::data::LaunchRecord;
use calib_runtime::sim::ptxas::{self, KernelResources, PtxasError};
use serde::Serialize;
use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::Path;

/// The architectures every kernel is assembled for.
pub const ARCHS: [&str; 2] = ["sm_80", "sm_90"];

/// One kernel's row of the report.
#[derive(Clone, Debug, Serialize)]
pub struct KernelRow {
    pub name: String,
    pub family: &'static str,
    pub grid: [u32; 3],
    pub block: [u32; 3],
    /// Dynamic shared memory the kernel is launched with.
    pub shared_bytes: usize,
    /// `ptxas -v` per architecture, when ptxas was found.
    pub ptxas: Vec<(String, Resources)>,
}

/// What `ptxas -v` reports for one kernel.
#[derive(Clone, Debug, Serialize)]
pub struct Resources {
    pub registers: u32,
    pub spill_store_bytes: u64,
    pub spill_load_bytes: u64,
    pub static_shared_bytes: u64,
}

impl From<&KernelResources> for Resources {
    fn from(k: &KernelResources) -> Self {
        Resources {
            registers: k.registers,
            spill_store_bytes: k.spill_store_bytes,
            spill_load_bytes: k.spill_load_bytes,
            static_shared_bytes: k.shared_bytes,
        }
    }
}

/// Writes `<kernel>.ptx` for every kernel of `compiled` into `dir` with
/// `ptx_report.{txt,json}` and `launches.json`, and returns the text report and ptxas's
/// sm_90 register count of every launch. Without ptxas the report says so; PTX that
/// ptxas rejects is an error.
/// The registers ptxas gives each kernel of `compiled` for sm_90, as the cost model
/// reads them; empty where no ptxas is found (the model then estimates them).
pub fn sm90_registers(compiled: &CompiledProgram) -> Result<HashMap<String, u32>> {
    let Ok(binary) = ptxas::find_ptxas() else {
        return Ok(HashMap::new());
    };
    let (module, representative) = compiled.distinct_module();
    let report = ptxas::assemble_with(&binary, &module, "sm_90")?;
    let by_name: HashMap<String, u32> = (report.kernels.into_iter())
        .map(|k| (k.name.clone(), k.registers))
        .collect();
    Ok((compiled.kernels.iter().zip(&representative))
        .filter_map(|(k, r)| Some((k.name.clone(), *by_name.get(r)?)))
        .collect())
}

pub fn emit_ptx(compiled: &CompiledProgram, dir: &Path) -> Result<(String, HashMap<String, u32>)> {
    for k in &compiled.kernels {
        let path = dir.join(format!("{}.ptx", k.name));
        std::fs::write(&path, &k.ptx).with_context(|| format!("writing {}", path.display()))?;
    }
    let mut note = String::new();
    let mut per_arch: Vec<(String, HashMap<String, KernelResources>)> = vec![];
    match ptxas::find_ptxas() {
        Ok(binary) => {
            let (module, representative) = compiled.distinct_module();
            for arch in ARCHS {
                let report = match ptxas::assemble_with(&binary, &module, arch) {
                    Ok(r) => r,
                    Err(e @ PtxasError::Rejected { .. }) => bail!("{e}"),
                    Err(e) => return Err(e.into()),
                };
                let by_name: HashMap<String, KernelResources> = report
                    .kernels
                    .into_iter()
                    .map(|k| (k.name.clone(), k))
                    .collect();
                let rows = compiled
                    .kernels
                    .iter()
                    .zip(&representative)
                    .filter_map(|(k, r)| Some((k.name.clone(), by_name.get(r)?.clone())))
                    .collect();
                per_arch.push((arch.to_string(), rows));
            }
        }
        Err(e) => note = format!("no ptxas resources: {e}\n"),
    }
    let rows: Vec<KernelRow> = compiled
        .kernels
        .iter()
        .map(|k| KernelRow {
            name: k.name.clone(),
            family: k.family.name(),
            grid: k.grid,
            block: k.block,
            shared_bytes: k.shared_bytes,
            ptxas: per_arch
                .iter()
                .filter_map(|(arch, m)| Some((arch.clone(), Resources::from(m.get(&k.name)?))))
                .collect(),
        })
        .collect();
    // What the cost model needs of every launch, to join with a GPU's timing table.
    let launches: Vec<LaunchRecord> = compiled
        .kernels
        .iter()
        .zip(&rows)
        .map(|(k, row)| {
            let registers = row
                .ptxas
                .iter()
                .find(|(arch, _)| arch == "sm_90")
                .map_or(k.estimated_registers(), |(_, r)| r.registers);
            let launch = k.launch(registers);
            LaunchRecord {
                name: k.name.clone(),
                blocks: launch.blocks,
                threads: launch.threads,
                shared_bytes: launch.shared_bytes,
                registers,
                unique_bytes: k.unique_bytes,
                mix: k.mix.clone(),
                tail: k.tail.clone(),
            }
        })
        .collect();
    std::fs::write(
        dir.join("launches.json"),
        serde_json::to_string(&launches)? + "\n",
    )?;
    let text = format!("{note}{}", table(&rows));
    std::fs::write(dir.join("ptx_report.txt"), &text)?;
    std::fs::write(
        dir.join("ptx_report.json"),
        serde_json::to_string_pretty(&rows)? + "\n",
    )?;
    let registers = launches
        .iter()
        .filter(|l| rows.iter().any(|r| r.name == l.name && !r.ptxas.is_empty()))
        .map(|l| (l.name.clone(), l.registers))
        .collect();
    Ok((text, registers))
}

/// One line per kernel: launch shape, then registers, spills and static shared memory
/// per architecture.
fn table(rows: &[KernelRow]) -> String {
    let mut out = String::from("ptx kernels:\n");
    let mut head = format!(
        "  {:<12} {:<10} {:>9} {:>6} {:>7}",
        "kernel", "family", "grid", "block", "smem"
    );
    for arch in ARCHS {
        write!(
            head,
            "  {arch}: {:>4} {:>11} {:>6}",
            "regs", "spill st/ld", "smem"
        )
        .unwrap();
    }
    out.push_str(head.trim_end());
    out.push('\n');
    for r in rows {
        let mut line = format!(
            "  {:<12} {:<10} {:>9} {:>6} {:>7}",
            r.name, r.family, r.grid[0], r.block[0], r.shared_bytes
        );
        for (arch, res) in &r.ptxas {
            write!(
                line,
                "  {arch}: {:>4} {:>11} {:>6}",
                res.registers,
                format!("{}/{}", res.spill_store_bytes, res.spill_load_bytes),
                res.static_shared_bytes
            )
            .unwrap();
        }
        out.push_str(&line);
        out.push('\n');
    }
    let spilling = rows
        .iter()
        .filter(|r| {
            r.ptxas
                .iter()
                .any(|(_, s)| s.spill_store_bytes + s.spill_load_bytes > 0)
        })
        .count();
    writeln!(out, "  {} kernels, {spilling} with spills", rows.len()).unwrap();
    out
}
