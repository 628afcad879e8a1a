//! Fusion by equality saturation: a graph in, a kernel plan ([`calib_ir::Program`]) out.
//!
//! ```text
//! graph ─► regions (one per module) ─► per region, an e-graph (egg):
//!            simplify  (exact clean-ups)                      rules/cleanup.rs
//!            explore   (BN folding, one-pass statistics,      rules/batchnorm.rs
//!                       merged sibling convolutions)          rules/siblings.rs
//!            choose    one primitive op per class             dag.rs
//!            lower     kernel-forming rules add fused kernels kernels.rs, group.rs
//!            extract   the cheapest kernels, DAG-aware        plan.rs, extract.rs
//!        ─► stitch regions, fold side outputs, concat views   program.rs, horizontal.rs
//!           merge sibling maps                                maps.rs
//!           fold a GEMM's one consumer into its epilogue      epilogue_consumers.rs
//!           store bf16 round trips as bf16                    narrow.rs
//! ```
//!
//! Every kernel's cost is `max(FLOPs / peak, bytes / bandwidth) + launch` on a
//! [`Device`] (an H100 unless overridden). Saturation runs under [`Limits`]; hitting
//! one leaves a valid, less fused plan and a warning in the [`FusionReport`].

mod algebra;
mod analysis;
mod cost;
mod dag;
mod epilogue_consumers;
pub mod estimate;
mod explain;
mod extract;
mod foreach;
mod group;
mod horizontal;
mod kernels;
mod language;
pub mod layout;
mod limits;
mod maps;
mod narrow;
pub mod pad_channels;
mod partition;
mod plan;
mod program;
mod rebuild;
mod region;
mod report;
mod rule_set;
mod rules;
mod schedule;
mod shared_rounding;
pub mod tuning;

pub use calib_cost::Device;
pub use cost::{kernel_cost, roofline_seconds, KernelCost};
pub use egg::Id;
pub use explain::explain;
pub use layout::LayoutPolicy;
pub use limits::Limits;
pub use pad_channels::{padded_convolutions, prepare, PAD_CHANNELS};
pub use report::{kernel_rows, FusionReport, KernelReport, PhaseReport};
pub use rule_set::{catalogue, families, RuleInfo, RuleSet};
pub use rules::{ExtraRule, Rhs};
pub use schedule::{reassign_with, workspace_bytes};

use crate::{renumber::check_structure, PassError, Result};
use calib_ir::{Graph, Program};
use dag::Dag;
use partition::Partition;
use plan::RegionPlan;
use region::{PhaseStats, RegionGraph};
use rules::{rules, Phase};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Instant;

/// How to fuse.
#[derive(Clone, Debug, Default)]
pub struct FusionOptions {
    pub device: Device,
    pub limits: Limits,
    /// Rules added to the explore phase, after calib's own: rules under study, and the
    /// planted bugs that show the differential tester finds a wrong rewrite.
    pub extra_rules: Vec<ExtraRule>,
    /// Which of calib's own rules run (all by default): ablation studies turn some off.
    pub rules: RuleSet,
    /// The precision policy the graph was built under (`passes::precision` applies it
    /// as casts): with `tf32` or `bf16`, GEMM kernels are scheduled on tensor cores.
    pub precision: calib_ir::Precision,
    /// Schedules measured by `calib tune`: used for the GEMMs whose shape they cover on
    /// this device, in place of the cost model's choice.
    pub tuning: Option<tuning::TuningCache>,
    /// How image-shaped temporaries are stored (`layout`): row-major (NCHW, the
    /// default), channels-last (NHWC), or whichever compiles faster (`Auto`, decided
    /// after fusion by `calib::device::choose_layout`).
    pub layout: LayoutPolicy,
}

/// A fused program and the report of how it was found.
#[derive(Clone, Debug)]
pub struct Fusion {
    pub program: Program,
    pub report: FusionReport,
}

/// The names of the phases, in order.
pub const PHASES: [&str; 3] = ["simplify", "explore", "lower"];

/// Fuses `graph` into a kernel plan that computes the same outputs from the same
/// inputs and parameters.
pub fn fuse(graph: &Graph, options: &FusionOptions) -> Result<Fusion> {
    let start = Instant::now();
    graph.validate()?;
    check_structure(graph)?;
    let part = Partition::new(graph);
    let mut results = run_regions(graph, &part, options, true, start)?;
    let mut warnings: Vec<String> = results.iter().flat_map(|r| r.warnings.clone()).collect();
    let mut program = loop {
        let plans: Vec<RegionPlan> = results.iter().map(|r| r.plan.clone()).collect();
        match program::assemble(graph, &part, &plans) {
            Ok(p) => break p,
            Err(cyclic) if cyclic.iter().any(|&r| results[r].multi_output) => {
                for r in cyclic {
                    let res = &mut results[r];
                    res.multi_output = false;
                    if let Some((rg, dag)) = &res.state {
                        res.plan = plan::plan(
                            rg,
                            dag,
                            graph,
                            &options.device,
                            options.precision,
                            r,
                            false,
                        );
                    }
                    warnings.push(format!("region {}: multi-output kernels formed a cycle across regions; planned with single-output kernels", part.regions[r].name));
                }
            }
            Err(_) => {
                return Err(PassError::Fusion(
                    "single-output kernels formed a cycle (a bug in kernel formation)".into(),
                ))
            }
        }
    };
    let on = |pass: &str| options.rules.enabled(pass);
    let side_outputs = if on(rule_set::SIDE_OUTPUTS) {
        horizontal::merge_side_outputs(&mut program)
    } else {
        0
    };
    let concat_views = if on(rule_set::CONCAT_VIEWS) {
        horizontal::concat_views(&mut program)
    } else {
        0
    };
    let updates_merged = if on(rule_set::FOREACH_UPDATES) {
        foreach::merge_updates(&mut program)
    } else {
        0
    };
    let maps_merged = if on(rule_set::SIBLING_MAPS) {
        maps::merge_sibling_maps(&mut program, &options.device, options.precision)
    } else {
        0
    };
    let epilogue_consumers = if on(rule_set::EPILOGUE_CONSUMERS) {
        epilogue_consumers::fold_consumers(&mut program, &options.device, options.precision)
    } else {
        0
    };
    // After the passes that move outputs between kernels, before schedules are chosen
    // for the bodies as they will be generated.
    let narrow_stores = if on(rule_set::NARROW_STORES) {
        narrow::narrow_stores(&mut program)
    } else {
        0
    };
    let shared_roundings = if on(rule_set::SHARED_ROUNDING) {
        shared_rounding::share_roundings(&mut program)
    } else {
        0
    };
    // Layouts first: a GEMM's schedule depends on which way its operands lie.
    let channels_last = layout::assign(&mut program, options.layout.planned());
    let (split_k, split_reductions) = schedule::assign(&mut program, options);
    for (n, k) in program.kernels.iter_mut().enumerate() {
        k.name = format!("k{n}");
    }
    program
        .validate()
        .map_err(|e| PassError::Fusion(format!("the fused program is invalid (a bug): {e}")))?;

    let mut phases: Vec<PhaseReport> = PHASES
        .iter()
        .map(|p| PhaseReport {
            name: p.to_string(),
            ..Default::default()
        })
        .collect();
    for r in &results {
        for (k, s) in r.stats.iter().enumerate() {
            phases[k].add(s);
        }
    }
    let before = unfused(graph)?;
    let (kb, bb, fb, sb) = report::totals(&before, &options.device);
    let (ka, ba, fa, sa) = report::totals(&program, &options.device);
    let report = FusionReport {
        device: options.device.clone(),
        limits: options.limits.clone(),
        regions: part.regions.len(),
        kernels_before: kb,
        kernels_after: ka,
        bytes_before: bb,
        bytes_after: ba,
        flops_before: fb,
        flops_after: fa,
        seconds_before: sb,
        seconds_after: sa,
        fusion_seconds: start.elapsed().as_secs_f64(),
        phases,
        side_outputs,
        concat_views,
        updates_merged,
        maps_merged,
        epilogue_consumers,
        narrow_stores,
        shared_roundings,
        split_k,
        split_reductions,
        channels_last,
        warnings,
        disabled_rules: options.rules.disabled().map(str::to_string).collect(),
        kernels: report::kernel_rows(&program, options),
    };
    Ok(Fusion { program, report })
}

/// `graph` as an eager framework runs it: one kernel per op, with constants,
/// broadcasts and reshapes folded into the ops that read them. The baseline that
/// [`FusionReport`] compares against.
pub fn unfused(graph: &Graph) -> Result<Program> {
    graph.validate()?;
    check_structure(graph)?;
    let part = Partition::new(graph);
    let options = FusionOptions::default();
    let results = run_regions(graph, &part, &options, false, Instant::now())?;
    let plans: Vec<RegionPlan> = results.into_iter().map(|r| r.plan).collect();
    let mut program = program::assemble(graph, &part, &plans)
        .map_err(|_| PassError::Fusion("unfused kernels formed a cycle (a bug)".into()))?;
    schedule::assign(&mut program, &options);
    Ok(program)
}

/// What became of one region.
struct RegionResult {
    plan: RegionPlan,
    stats: Vec<PhaseStats>,
    warnings: Vec<String>,
    multi_output: bool,
    state: Option<(RegionGraph, Dag)>,
}

/// Fuses every region (on two threads), or with `saturate` false only lowers each op
/// to its own kernel.
fn run_regions(
    graph: &Graph,
    part: &Partition,
    options: &FusionOptions,
    saturate: bool,
    start: Instant,
) -> Result<Vec<RegionResult>> {
    let next = AtomicUsize::new(0);
    let done: Mutex<Vec<(usize, Result<RegionResult>)>> = Mutex::new(vec![]);
    let workers = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, 2);
    std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| loop {
                let r = next.fetch_add(1, Ordering::Relaxed);
                if r >= part.regions.len() {
                    break;
                }
                let result = fuse_region(graph, part, r, options, saturate, start);
                done.lock()
                    .expect("no worker panics holding the lock")
                    .push((r, result));
            });
        }
    });
    let mut done = done.into_inner().expect("workers finished");
    done.sort_by_key(|(r, _)| *r);
    done.into_iter().map(|(_, res)| res).collect()
}

fn fuse_region(
    graph: &Graph,
    part: &Partition,
    r: usize,
    options: &FusionOptions,
    saturate: bool,
    start: Instant,
) -> Result<RegionResult> {
    let limits = &options.limits;
    let name = &part.regions[r].name;
    let mut rg = RegionGraph::build(graph, part, r, false)?;
    let mut stats = vec![];
    let mut warnings = vec![];
    let in_time = start.elapsed().as_secs_f64() < limits.total_seconds;
    if saturate && !in_time {
        warnings.push(format!("region {name}: total time limit ({} s) reached before it started; its ops stay unfused", limits.total_seconds));
    }
    let saturate = saturate && in_time;
    if saturate {
        for phase in [Phase::Simplify, Phase::Explore] {
            let mut set = rules(phase);
            set.retain(|r| options.rules.enabled(r.name.as_str()));
            if phase == Phase::Explore {
                set.extend(options.extra_rules.iter().map(ExtraRule::rule));
            }
            let s = rg.saturate(&set, limits, limits.nodes);
            if s.stop != "saturated" {
                warnings.push(format!(
                    "region {name}: phase {} stopped by {}; the plan is valid but less fused",
                    PHASES[stats.len()],
                    s.stop
                ));
            }
            stats.push(s);
        }
    }
    let external = part.external_deps(graph, r);
    let dag = Dag::choose(&rg, &options.device, &external);
    if saturate {
        let s = kernels::form_kernels(
            &mut rg,
            &dag,
            graph,
            &options.rules,
            limits.nodes,
            limits.phase_time(),
        );
        if s.stop != "saturated" {
            warnings.push(format!(
                "region {name}: phase lower stopped by {}; the plan is valid but less fused",
                s.stop
            ));
        }
        stats.push(s);
    }
    let plan = plan::plan(
        &rg,
        &dag,
        graph,
        &options.device,
        options.precision,
        r,
        true,
    );
    Ok(RegionResult {
        plan,
        stats,
        warnings,
        multi_output: true,
        state: Some((rg, dag)),
    })
}
