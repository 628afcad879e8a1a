//! `calib rules`: every fusion rule by name, family and phase; and the `--disable-rule` /
//! `--rules FILE` options that `compile`, `train` and `bench` take for ablation studies.

use anyhow::{Context, Result};
use calib::passes::fusion::{catalogue, RuleSet};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args, Debug, Clone, Default)]
pub struct RuleArgs {
    /// Leave a fusion rule (or a whole family: cleanup, batchnorm, batchnorm-grad, siblings,
    /// lower, plan) out; repeatable. `calib rules` lists them.
    #[arg(long = "disable-rule", value_name = "NAME")]
    pub disable_rule: Vec<String>,
    /// Run only the rules (or families) listed in FILE, one per line (`#` comments);
    /// --disable-rule then takes more out.
    #[arg(long, value_name = "FILE")]
    pub rules: Option<PathBuf>,
}

impl RuleArgs {
    /// The rules fusion runs.
    pub fn rule_set(&self) -> Result<RuleSet> {
        let base = match &self.rules {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("reading the rules file {}", path.display()))?;
                RuleSet::only(RuleSet::parse_list(&text))
                    .with_context(|| format!("in the rules file {}", path.display()))?
            }
            None => RuleSet::all(),
        };
        Ok(base.and_without(&RuleSet::without(&self.disable_rule)?))
    }
}

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Print as JSON instead of a table.
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args) -> Result<ExitCode> {
    let rules = catalogue();
    let text = if args.json {
        serde_json::to_string_pretty(&rules)? + "\n"
    } else {
        let width = rules.iter().map(|r| r.family.len()).max().unwrap_or(0);
        let mut t = format!("{:<32} {:<width$} phase\n", "rule", "family");
        for r in &rules {
            t.push_str(&format!(
                "{:<32} {:<width$} {}\n",
                r.name, r.family, r.phase
            ));
        }
        t
    };
    super::emit(&text)?;
    Ok(ExitCode::SUCCESS)
}
