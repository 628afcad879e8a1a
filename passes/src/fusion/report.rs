//! What fusion did, for people (`report.txt`) and tools (`report.json`).

use super::cost::kernel_cost;
use super::estimate::{fastest_per_instruction, program_kernel_seconds};
use super::limits::Limits;
use super::region::PhaseStats;
use calib_cost::Device;
use calib_ir::Program;
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write;

/// The whole story of one fusion.
#[derive(Clone, Debug, Serialize)]
pub struct FusionReport {
    pub device: Device,
    pub limits: Limits,
    pub regions: usize,
    pub kernels_before: usize,
    pub kernels_after: usize,
    /// Estimated bytes moved (every kernel's reads and writes).
    pub bytes_before: f64,
    pub bytes_after: f64,
    pub flops_before: f64,
    pub flops_after: f64,
    /// Estimated run time on `device`.
    pub seconds_before: f64,
    pub seconds_after: f64,
    /// Wall-clock time fusion took.
    pub fusion_seconds: f64,
    pub phases: Vec<PhaseReport>,
    /// Kernels folded into others by the plan-level fusions.
    pub side_outputs: usize,
    pub concat_views: usize,
    /// Optimizer updates merged into multi-tensor launches.
    pub updates_merged: usize,
    /// Pointwise kernels merged into a sibling that reads the same tensors (`maps.rs`).
    pub maps_merged: usize,
    /// Pointwise kernels folded into the GEMM whose result they alone read
    /// (`epilogue_consumers.rs`).
    pub epilogue_consumers: usize,
    /// Buffers holding bf16 round trips stored as bf16 (`narrow.rs`).
    pub narrow_stores: usize,
    /// Stored TF32 round trips whose readers round the value they round instead
    /// (`shared_rounding.rs`).
    pub shared_roundings: usize,
    /// GEMM kernels whose `k` is split across blocks (a second pass adds the slices).
    pub split_k: usize,
    /// Reduction kernels whose reduced elements are split across teams.
    pub split_reductions: usize,
    /// Temporaries stored channels-last (`FusionOptions::layout`).
    pub channels_last: usize,
    pub warnings: Vec<String>,
    /// Rules the fusion left out (`--disable-rule`, `--rules`): empty for calib's plan.
    pub disabled_rules: Vec<String>,
    pub kernels: Vec<KernelReport>,
}

/// One phase, summed over regions.
#[derive(Clone, Debug, Default, Serialize)]
pub struct PhaseReport {
    pub name: String,
    /// E-graph size at the end of the phase.
    pub egraph_nodes: usize,
    pub egraph_classes: usize,
    pub iterations: usize,
    pub seconds: f64,
    /// How many regions stopped for each reason.
    pub stop_reasons: BTreeMap<String, usize>,
    /// How often each rule fired.
    pub rules: BTreeMap<String, usize>,
}

impl PhaseReport {
    pub fn add(&mut self, s: &PhaseStats) {
        self.egraph_nodes += s.nodes;
        self.egraph_classes += s.classes;
        self.iterations += s.iterations;
        self.seconds += s.seconds;
        *self.stop_reasons.entry(s.stop.clone()).or_insert(0) += 1;
        for (rule, n) in &s.applied {
            *self.rules.entry(rule.clone()).or_insert(0) += n;
        }
    }
}

/// One kernel of the fused program.
#[derive(Clone, Debug, Serialize)]
pub struct KernelReport {
    pub name: String,
    pub label: String,
    pub anchor: String,
    pub ops: usize,
    pub flops: f64,
    pub bytes: f64,
    /// Predicted by the planner's estimate (the compile report also gives the cost
    /// model's figure for the code generation really emits).
    pub seconds: f64,
    /// The loop-nest layout the planner chose (GEMM tile, split of k).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub schedule: Option<String>,
    /// Why the GEMM got its schedule: the cost model's figure for the fastest schedule
    /// on each instruction the precision allows.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub schedule_reason: Option<String>,
    /// The original graph's nodes it computes.
    pub covers: Vec<usize>,
}

/// Totals of a program under `device`: (kernels, bytes, FLOPs, seconds).
pub fn totals(program: &Program, device: &Device) -> (usize, f64, f64, f64) {
    program
        .kernels
        .iter()
        .fold((0, 0.0, 0.0, 0.0), |(n, b, f, s), k| {
            let c = kernel_cost(&k.body);
            (
                n + 1,
                b + c.bytes,
                f + c.flops,
                s + program_kernel_seconds(k, &program.input_layouts(k), device),
            )
        })
}

/// Per-kernel rows of a program.
pub fn kernel_rows(program: &Program, options: &super::FusionOptions) -> Vec<KernelReport> {
    let device = &options.device;
    program
        .kernels
        .iter()
        .map(|k| {
            let c = kernel_cost(&k.body);
            KernelReport {
                name: k.name.clone(),
                label: k.label.clone(),
                anchor: k.anchor.name().into(),
                ops: k
                    .body
                    .nodes
                    .iter()
                    .filter(|n| n.op.arity() != Some(0))
                    .count(),
                flops: c.flops,
                bytes: c.bytes,
                seconds: program_kernel_seconds(k, &program.input_layouts(k), device),
                schedule: k.schedule.map(|s| s.to_string()),
                schedule_reason: schedule_reason(k, &program.input_layouts(k), options),
                covers: k.covers.clone(),
            }
        })
        .collect()
}

/// The cost model's case for a GEMM kernel's schedule: the fastest candidate on each
/// instruction, `"cost model: mma.tf32 128x128x16 41.2 us, fma 64x128x8 97.0 us"`.
fn schedule_reason(
    kernel: &calib_ir::Kernel,
    layouts: calib_ir::InputLayouts,
    options: &super::FusionOptions,
) -> Option<String> {
    let (device, precision) = (&options.device, options.precision);
    let chosen = kernel.schedule?.gemm?;
    if let Some(cache) = &options.tuning {
        if let Some(t) = cache.lookup(&kernel.body, device, precision, layouts) {
            if t.schedule == chosen {
                return Some(format!(
                    "tuned: fastest of {} schedules measured for its shape, {:.1} us{}",
                    t.candidates,
                    t.measured_us,
                    match cache.measured_on.as_str() {
                        "" => String::new(),
                        on => format!(" on {on}"),
                    }
                ));
            }
        }
    }
    let best = fastest_per_instruction(&kernel.body, device, precision, layouts);
    let mut parts: Vec<(f64, String)> = best
        .into_iter()
        .map(|(s, t)| {
            let text = format!(
                "{} {}x{}x{} {:.1} us",
                s.instruction.name(),
                s.block_m,
                s.block_n,
                s.block_k,
                t * 1e6
            );
            (t, text)
        })
        .collect();
    parts.sort_by(|a, b| a.0.total_cmp(&b.0));
    let parts: Vec<String> = parts.into_iter().map(|p| p.1).collect();
    Some(format!(
        "cost model, fastest per instruction: {}",
        parts.join(", ")
    ))
}

impl FusionReport {
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("reports serialize")
    }

    /// The readable form.
    pub fn to_text(&self) -> String {
        let mut t = String::new();
        let pct = |a: f64, b: f64| if a > 0.0 { 100.0 * (a - b) / a } else { 0.0 };
        writeln!(
            t,
            "fusion report ({} regions, {:.2} s, costed for {})",
            self.regions, self.fusion_seconds, self.device.name
        )
        .unwrap();
        writeln!(
            t,
            "  kernels        {:>14} -> {:<14} ({:.1}% fewer)",
            self.kernels_before,
            self.kernels_after,
            pct(self.kernels_before as f64, self.kernels_after as f64)
        )
        .unwrap();
        writeln!(
            t,
            "  bytes moved    {:>14.3e} -> {:<14.3e} ({:.1}% less)",
            self.bytes_before,
            self.bytes_after,
            pct(self.bytes_before, self.bytes_after)
        )
        .unwrap();
        writeln!(
            t,
            "  FLOPs          {:>14.3e} -> {:<14.3e}",
            self.flops_before, self.flops_after
        )
        .unwrap();
        writeln!(
            t,
            "  est. time      {:>12.3} ms -> {:.3} ms",
            1e3 * self.seconds_before,
            1e3 * self.seconds_after
        )
        .unwrap();
        writeln!(
            t,
            "  side outputs folded: {}, concats as views: {}, updates merged: {}, sibling maps merged: {}, \
             consumers as epilogues: {}, bf16 stores: {}, shared roundings: {}, split GEMMs: {}, split reductions: {}, channels-last buffers: {}",
            self.side_outputs,
            self.concat_views,
            self.updates_merged,
            self.maps_merged,
            self.epilogue_consumers,
            self.narrow_stores,
            self.shared_roundings,
            self.split_k,
            self.split_reductions,
            self.channels_last
        )
        .unwrap();
        if !self.disabled_rules.is_empty() {
            writeln!(t, "  rules off: {}", self.disabled_rules.join(", ")).unwrap();
        }
        for p in &self.phases {
            writeln!(
                t,
                "phase {}: {} e-nodes, {} e-classes, {} iterations, {:.3} s",
                p.name, p.egraph_nodes, p.egraph_classes, p.iterations, p.seconds
            )
            .unwrap();
            let stops: Vec<String> = p
                .stop_reasons
                .iter()
                .map(|(r, n)| format!("{r}: {n}"))
                .collect();
            writeln!(t, "  stopped: {}", stops.join(", ")).unwrap();
            for (rule, n) in &p.rules {
                writeln!(t, "  {rule:<32} {n:>8}").unwrap();
            }
        }
        for w in &self.warnings {
            writeln!(t, "warning: {w}").unwrap();
        }
        writeln!(t, "kernels:").unwrap();
        for k in &self.kernels {
            let covers: Vec<String> = k.covers.iter().map(|c| format!("%{c}")).collect();
            writeln!(
                t,
                "  {:<6} {:<12} {:<44} {:>4} ops {:>10.3e} B {:>8.2} us  covers {}",
                k.name,
                k.anchor,
                k.label,
                k.ops,
                k.bytes,
                1e6 * k.seconds,
                covers.join(" ")
            )
            .unwrap();
            if let (Some(schedule), Some(reason)) = (&k.schedule, &k.schedule_reason) {
                writeln!(t, "         {schedule} ({reason})").unwrap();
            }
        }
        t
    }
}
