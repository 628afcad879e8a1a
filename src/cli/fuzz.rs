//! `calib fuzz`: differential testing over random networks (see `calib::differential`).

use anyhow::{bail, Context, Result};
use calib::differential::{self, specs::Shape, BackendResult, Outcome};
use calib::ir::Precision;
use calib::models::parse_spec_file;
use calib::passes::fusion::FusionOptions;
use calib::runtime::Backend;
use std::collections::BTreeMap;
use std::process::ExitCode;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// How many seeds to run.
    #[arg(long, default_value_t = 20)]
    seeds: u64,
    /// The first seed.
    #[arg(long, default_value_t = 0)]
    from: u64,
    /// Backends under test, compared with the f64 interpreter: reference, fused, sim.
    #[arg(long, value_delimiter = ',', default_value = "reference,fused,sim")]
    backends: Vec<String>,
    /// Rerun one case: this spec (JSON, as a fixture's `spec`) instead of drawn ones,
    /// with --input and --seed.
    #[arg(long, requires = "input")]
    spec: Option<String>,
    /// The input shape N,C,H,W of --spec.
    #[arg(long, value_delimiter = ',')]
    input: Option<Vec<usize>>,
    /// With --spec: the seed of the case's state and batch.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// How many smaller variants to try when shrinking a failure (0: do not shrink).
    #[arg(long, default_value_t = 40)]
    shrink_budget: usize,
    /// The precision policy the backends run under (`f32`, `tf32`, `bf16`), held to the
    /// tolerances derived for it (docs/precision.md) against the exact oracle.
    #[arg(long, default_value = "f32")]
    precision: Precision,
    /// Print the per-family error table as JSON.
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args) -> Result<ExitCode> {
    let fusion = FusionOptions {
        precision: args.precision,
        ..FusionOptions::default()
    };
    let owned: Vec<(String, Box<dyn Backend>)> = args
        .backends
        .iter()
        .map(|n| Ok((n.clone(), differential::backend(n, &fusion)?)))
        .collect::<Result<_>>()?;
    let backends: Vec<(&str, &dyn Backend)> = owned
        .iter()
        .map(|(n, b)| (n.as_str(), b.as_ref()))
        .collect();
    // A given spec runs exactly its --seed; a drawn shape may redraw its case.
    let cases: Vec<(Shape, Vec<u64>)> = match &args.spec {
        Some(text) => {
            let spec = parse_spec_file(text).context("--spec")?.spec;
            let input = args.input.clone().unwrap_or_default();
            if input.len() != 4 {
                bail!(
                    "--input must be N,C,H,W (4 sizes), got {} sizes",
                    input.len()
                );
            }
            vec![(Shape { spec, input }, vec![args.seed])]
        }
        None => (args.from..args.from + args.seeds)
            .map(|s| (differential::draw(s), differential::case_seeds(s).collect()))
            .collect(),
    };
    let mut worst: BTreeMap<String, BTreeMap<String, f64>> = BTreeMap::new();
    let (mut failures, mut ill_conditioned) = (0, 0);
    for (shape, seeds) in &cases {
        let label = format!("{} {:?}", shape.spec.kind(), shape.input);
        let outcome = differential::check(shape, seeds.iter().copied(), &backends, args.precision)
            .with_context(|| format!("{label}, case seed {}", seeds[0]))?;
        let (case_seed, results) = match outcome {
            Outcome::IllConditioned(kink) => {
                ill_conditioned += 1;
                eprintln!("seed {}: {label}: not comparable in f32: {kink}", seeds[0]);
                continue;
            }
            Outcome::Checked { case_seed, results } => (case_seed, results),
        };
        let verdicts: Vec<String> = results
            .iter()
            .map(|(n, r)| format!("{n} {}", if r.passed() { "ok" } else { "FAIL" }))
            .collect();
        eprintln!("seed {case_seed}: {label}: {}", verdicts.join(", "));
        for (name, result) in &results {
            let table = worst.entry(name.clone()).or_default();
            for (family, used) in &result.worst {
                let w = table.entry(family.clone()).or_insert(0.0);
                *w = w.max(*used);
            }
            if !result.passed() {
                failures += 1;
                report_failure(&args, shape, case_seed, name, result, &backends);
            }
        }
    }
    if args.json {
        super::emit(&(serde_json::to_string_pretty(&worst)? + "\n"))?;
    } else {
        let mut text = format!(
            "{} cases, {failures} failures, {ill_conditioned} too close to a ReLU or max-pool \
             kink to compare.\nLargest error per family, as a fraction of its \
             tolerance (the f64 interpreter is exact):\n",
            cases.len()
        );
        for (backend, table) in &worst {
            text += &format!("  {backend}\n");
            for (family, used) in table {
                text += &format!("    {family:<22} {used:>10.3e}\n");
            }
        }
        super::emit(&text)?;
    }
    Ok(if failures == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn report_failure(
    args: &Args,
    shape: &Shape,
    seed: u64,
    name: &str,
    result: &BackendResult,
    backends: &[(&str, &dyn Backend)],
) {
    if let Some(e) = &result.error {
        eprintln!("  {name} failed to run: {e}");
    }
    for m in result.mismatches.iter().take(5) {
        eprintln!(
            "  {name}: {} off by {:.3e} (tolerance {:.3e})",
            m.tensor, m.max_abs_err, m.tolerance
        );
    }
    if result.mismatches.len() > 5 {
        eprintln!("  {name}: ... {} tensors in all", result.mismatches.len());
    }
    let failing: Vec<(&str, &dyn Backend)> = backends
        .iter()
        .filter(|(n, _)| *n == name)
        .copied()
        .collect();
    let (small, seed) = if args.shrink_budget > 0 {
        eprintln!("  shrinking ...");
        differential::shrink(shape, seed, &failing, args.precision, args.shrink_budget)
    } else {
        (shape.clone(), seed)
    };
    eprintln!(
        "  reproduce: {}",
        differential::reproduce(&small, seed, name, args.precision)
    );
}
