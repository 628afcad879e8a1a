//! A compiled plan as the cost model sees it: every launch code generation emitted,
//! priced on a device ([`calib_cost::predict`]), summed into a predicted step time.
//! `calib compile` reports it; without a GPU it is the only figure there is, so it
//! says which device and which measurements its coefficients come from.

use calib_codegen::{CompiledProgram, Family};
use calib_cost::{predict, Bound, Device};
use calib_ir::{gemm_anchor, GemmDims, Program};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use std::fmt::Write;

/// One launch's prediction.
#[derive(Clone, Debug, Serialize)]
pub struct LaunchPrediction {
    pub name: String,
    pub kernel: String,
    pub family: &'static str,
    pub blocks: u64,
    pub registers: u32,
    /// Whether `registers` came from ptxas (else estimated).
    pub measured_registers: bool,
    pub predicted_us: f64,
    pub bound: Bound,
    /// GEMM FLOPs this launch performs (a split GEMM's partial launch carries them).
    pub gemm_flops: f64,
}

/// A whole step's prediction.
#[derive(Clone, Debug, Serialize)]
pub struct StepPrediction {
    pub device: String,
    /// The measurements the device's timing coefficients were fitted to.
    pub fitted_to: Vec<String>,
    /// Every launch plus the gap between launches.
    pub step_ms: f64,
    pub launches: Vec<LaunchPrediction>,
    /// Launches and milliseconds per family (`gemm`, `reduction`, `pointwise`).
    pub families: BTreeMap<String, (usize, f64)>,
    /// The share of GEMM FLOPs in launches with fewer blocks than the device has SMs.
    pub gemm_flops_in_small_grids: f64,
}

/// Predicts every launch of `compiled` (the code of `program`) on `device`, with
/// ptxas's register counts where given (by launch name).
pub fn predict_step(
    program: &Program,
    compiled: &CompiledProgram,
    device: &Device,
    registers: &HashMap<String, u32>,
) -> StepPrediction {
    let gemm_flops = |kernel: &str| {
        let k = program.kernel(kernel)?;
        let anchor = gemm_anchor(&k.body)?;
        Some(GemmDims::of(&k.body, anchor)?.flops())
    };
    let launches: Vec<LaunchPrediction> = compiled
        .kernels
        .iter()
        .map(|k| {
            let known = registers.get(&k.name).copied();
            let regs = known.unwrap_or_else(|| k.estimated_registers());
            let p = predict(&k.launch(regs), device);
            let first_gemm = k.family == Family::Gemm;
            LaunchPrediction {
                name: k.name.clone(),
                kernel: k.kernel.clone(),
                family: k.family.name(),
                blocks: k.grid.iter().map(|&g| g as u64).product(),
                registers: regs,
                measured_registers: known.is_some(),
                predicted_us: p.seconds * 1e6,
                bound: p.bound,
                gemm_flops: if first_gemm {
                    gemm_flops(&k.kernel).unwrap_or(0.0)
                } else {
                    0.0
                },
            }
        })
        .collect();
    let mut families: BTreeMap<String, (usize, f64)> = BTreeMap::new();
    for l in &launches {
        let f = families.entry(l.family.to_string()).or_default();
        f.0 += 1;
        f.1 += l.predicted_us / 1e3;
    }
    let total_gemm: f64 = launches.iter().map(|l| l.gemm_flops).sum();
    let small: f64 = launches
        .iter()
        .filter(|l| l.blocks < device.sms as u64)
        .map(|l| l.gemm_flops)
        .sum();
    let gap = device.timing.launch_gap_us * launches.len() as f64;
    StepPrediction {
        device: device.name.clone(),
        fitted_to: device.timing.fitted_to.clone(),
        step_ms: (launches.iter().map(|l| l.predicted_us).sum::<f64>() + gap) / 1e3,
        families,
        gemm_flops_in_small_grids: if total_gemm > 0.0 {
            small / total_gemm
        } else {
            0.0
        },
        launches,
    }
}

impl StepPrediction {
    /// The summary `calib compile` prints, with the `top` slowest launches.
    pub fn to_text(&self, top: usize) -> String {
        let mut t = String::new();
        let registers = match self.launches.iter().all(|l| l.measured_registers) {
            true => "registers from ptxas",
            false => "registers estimated (--emit-ptx takes them from ptxas)",
        };
        writeln!(
            t,
            "\npredicted step on {}: {:.1} ms over {} launches (cost model fitted to {}; {registers})",
            self.device,
            self.step_ms,
            self.launches.len(),
            self.fitted_to.join(", ")
        )
        .unwrap();
        for (family, (n, ms)) in &self.families {
            writeln!(t, "  {family:<10} {n:>5} launches {ms:>10.2} ms").unwrap();
        }
        writeln!(
            t,
            "  GEMM FLOPs in launches with fewer blocks than SMs: {:.1}%",
            100.0 * self.gemm_flops_in_small_grids
        )
        .unwrap();
        let mut slow: Vec<&LaunchPrediction> = self.launches.iter().collect();
        slow.sort_by(|a, b| b.predicted_us.total_cmp(&a.predicted_us));
        writeln!(t, "  slowest launches:").unwrap();
        for l in slow.iter().take(top) {
            writeln!(
                t,
                "    {:<12} {:<10} {:>7} blocks {:>4} regs {:>10.1} us  {:?}",
                l.name, l.family, l.blocks, l.registers, l.predicted_us, l.bound
            )
            .unwrap();
        }
        t
    }
}
