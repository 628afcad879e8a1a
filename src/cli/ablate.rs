//! `calib compile --ablate`: what each rule family is worth. The plan is compiled again
//! once per family with that family off, and priced by the same cost model as the full
//! plan (the code generation emits, without ptxas's registers); each rule's firings in
//! the full plan are listed beside.

use anyhow::Result;
use calib::ir::Graph;
use calib::passes::fusion::{
    catalogue, families, fuse, padded_convolutions, prepare, Fusion, FusionOptions, RuleSet,
    PAD_CHANNELS,
};
use calib::predict::predict_step;
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use std::fmt::Write;
use std::time::Instant;

/// The plan without one family.
#[derive(Debug, Serialize)]
pub struct Ablated {
    pub family: String,
    pub rules: Vec<String>,
    /// Firings of the family's rewrites in the full plan (kernel-forming rules count the
    /// kernels they proposed).
    pub firings: usize,
    pub kernels: usize,
    pub launches: usize,
    pub bytes: f64,
    pub predicted_ms: f64,
    /// Or why the plan could not be compiled.
    pub error: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct Ablation {
    pub full_kernels: usize,
    pub full_launches: usize,
    pub full_bytes: f64,
    pub full_predicted_ms: f64,
    pub families: Vec<Ablated>,
    /// Every rule's firings in the full plan, by name.
    pub firings: BTreeMap<String, usize>,
}

/// Compiles `graph` once per rule family left on in `options`, that family off too.
pub fn ablate(
    graph: &Graph,
    options: &FusionOptions,
    full: &Fusion,
    full_ms: f64,
) -> Result<Ablation> {
    let mut firings: BTreeMap<String, usize> = BTreeMap::new();
    for p in &full.report.phases {
        for (rule, n) in &p.rules {
            *firings.entry(rule.clone()).or_default() += n;
        }
    }
    let r = &full.report;
    for (pass, n) in [
        ("side-outputs", r.side_outputs),
        ("concat-views", r.concat_views),
        ("foreach-updates", r.updates_merged),
        ("sibling-maps", r.maps_merged),
        ("epilogue-consumers", r.epilogue_consumers),
        ("narrow-stores", r.narrow_stores),
        ("shared-rounding", r.shared_roundings),
        (PAD_CHANNELS, padded_convolutions(graph, options)),
    ] {
        firings.insert(pass.to_string(), n);
    }
    let catalogue = catalogue();
    let full_launches = calib::codegen::compile(&full.program)?.kernels.len();
    let mut rows = vec![];
    for family in families() {
        let rules: Vec<String> = catalogue
            .iter()
            .filter(|r| r.family == family && options.rules.enabled(&r.name))
            .map(|r| r.name.clone())
            .collect();
        if rules.is_empty() {
            continue;
        }
        let start = Instant::now();
        eprintln!(
            "ablation: compiling without {family} ({} rules)",
            rules.len()
        );
        let mut without = options.clone();
        without.rules = options
            .rules
            .clone()
            .and_without(&RuleSet::without(&rules)?);
        let row = |kernels, launches, bytes, predicted_ms, error| Ablated {
            family: family.to_string(),
            firings: rules.iter().filter_map(|r| firings.get(r)).sum(),
            rules: rules.clone(),
            kernels,
            launches,
            bytes,
            predicted_ms,
            error,
        };
        let priced = prepare(graph, &without)
            .and_then(|g| fuse(&g, &without))
            .map_err(anyhow::Error::from)
            .and_then(|f| {
                let compiled = calib::codegen::compile(&f.program)?;
                let step = predict_step(&f.program, &compiled, &without.device, &HashMap::new());
                Ok((f, compiled.kernels.len(), step.step_ms))
            });
        rows.push(match priced {
            Ok((f, launches, ms)) => row(
                f.program.kernels.len(),
                launches,
                f.report.bytes_after,
                ms,
                None,
            ),
            Err(e) => row(0, 0, 0.0, 0.0, Some(format!("{e:#}"))),
        });
        eprintln!(
            "ablation: without {family}: {:.1} s",
            start.elapsed().as_secs_f64()
        );
    }
    Ok(Ablation {
        full_kernels: full.program.kernels.len(),
        full_launches,
        full_bytes: full.report.bytes_after,
        full_predicted_ms: full_ms,
        families: rows,
        firings,
    })
}

impl Ablation {
    pub fn to_text(&self) -> String {
        let mut t = String::new();
        writeln!(
            t,
            "ablation: the plan with one rule family off (predicted by the cost model, \
             without ptxas registers)"
        )
        .unwrap();
        writeln!(
            t,
            "  {:<10} {:>6} {:>8} {:>8} {:>9} {:>12} {:>11} {:>9}",
            "family", "rules", "firings", "kernels", "launches", "bytes", "step ms", "vs full"
        )
        .unwrap();
        writeln!(
            t,
            "  {:<10} {:>6} {:>8} {:>8} {:>9} {:>12.3e} {:>11.2} {:>9}",
            "(none)",
            "",
            "",
            self.full_kernels,
            self.full_launches,
            self.full_bytes,
            self.full_predicted_ms,
            "1.00x"
        )
        .unwrap();
        for r in &self.families {
            match &r.error {
                Some(e) => writeln!(t, "  {:<10} no plan: {e}", r.family).unwrap(),
                None => writeln!(
                    t,
                    "  {:<10} {:>6} {:>8} {:>8} {:>9} {:>12.3e} {:>11.2} {:>8.2}x",
                    r.family,
                    r.rules.len(),
                    r.firings,
                    r.kernels,
                    r.launches,
                    r.bytes,
                    r.predicted_ms,
                    r.predicted_ms / self.full_predicted_ms
                )
                .unwrap(),
            }
        }
        writeln!(t, "firings per rule in the full plan:").unwrap();
        for (rule, n) in &self.firings {
            writeln!(t, "  {rule:<32} {n:>8}").unwrap();
        }
        t
    }
}
