//! Which rules a fusion runs, for ablation studies: every rule calib has, by name and
//! family, and the set a user turns off (`--disable-rule NAME`, `--rules FILE`).
//!
//! Four kinds of rule share one namespace:
//! * rewrites of the *simplify* and *explore* phases (`rules/`), by family;
//! * the *layout* pass that [`super::prepare`] runs on the graph before fusion
//!   (`pad_channels.rs`);
//! * the *lower* phase's kernel-forming rules (`kernels.rs`): turning off
//!   `fuse-epilogue` leaves every reduction of a convolution's result to a kernel of its
//!   own;
//! * the *plan* passes after extraction (`horizontal.rs`, `foreach.rs`, `narrow.rs`,
//!   `shared_rounding.rs`).
//!
//! Turning a rule off never makes a plan wrong, only less fused: the primitive op of
//! every class stays available to extraction.

use super::kernels::KERNEL_RULES;
use super::pad_channels::PAD_CHANNELS;
use super::rules::{batchnorm, batchnorm_grad, cleanup, siblings, Rule};
use crate::{PassError, Result};
use serde::Serialize;
use std::collections::BTreeSet;

/// Plan passes, by the names a rule set uses for them.
pub const SIDE_OUTPUTS: &str = "side-outputs";
pub const CONCAT_VIEWS: &str = "concat-views";
pub const FOREACH_UPDATES: &str = "foreach-updates";
pub const SIBLING_MAPS: &str = "sibling-maps";
pub const EPILOGUE_CONSUMERS: &str = "epilogue-consumers";
pub const NARROW_STORES: &str = "narrow-stores";
pub const SHARED_ROUNDING: &str = "shared-rounding";

/// A rule of the catalogue.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RuleInfo {
    pub name: String,
    /// `cleanup`, `batchnorm`, `batchnorm-grad`, `siblings`, `layout`, `lower` or `plan`.
    pub family: &'static str,
    /// Where it runs: `simplify+explore`, `explore`, `layout`, `lower` or `plan`.
    pub phase: &'static str,
}

/// Every rule calib has, family by family, in the order the phases run them.
pub fn catalogue() -> Vec<RuleInfo> {
    let rewrites = |family: &'static str, phase: &'static str, rules: Vec<Rule>| {
        rules.into_iter().map(move |r| RuleInfo {
            name: r.name.to_string(),
            family,
            phase,
        })
    };
    let named = |family: &'static str, names: &[&str]| {
        names
            .iter()
            .map(|n| RuleInfo {
                name: n.to_string(),
                family,
                phase: family,
            })
            .collect::<Vec<_>>()
    };
    rewrites("cleanup", "simplify+explore", cleanup::rules())
        .chain(rewrites("batchnorm", "explore", batchnorm::rules()))
        .chain(rewrites(
            "batchnorm-grad",
            "explore",
            batchnorm_grad::rules(),
        ))
        .chain(rewrites("siblings", "explore", siblings::rules()))
        .chain(named("layout", &[PAD_CHANNELS]))
        .chain(named("lower", KERNEL_RULES))
        .chain(named(
            "plan",
            &[
                SIDE_OUTPUTS,
                CONCAT_VIEWS,
                FOREACH_UPDATES,
                SIBLING_MAPS,
                EPILOGUE_CONSUMERS,
                NARROW_STORES,
                SHARED_ROUNDING,
            ],
        ))
        .collect()
}

/// The families of [`catalogue`], in order.
pub fn families() -> Vec<&'static str> {
    let mut out: Vec<&'static str> = vec![];
    for r in catalogue() {
        if !out.contains(&r.family) {
            out.push(r.family);
        }
    }
    out
}

/// The rules a fusion leaves out (none by default).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RuleSet {
    disabled: BTreeSet<String>,
}

impl RuleSet {
    /// Every rule on.
    pub fn all() -> Self {
        Self::default()
    }

    /// Every rule but `names`, each of which must be a rule or a family of the catalogue
    /// (a family stands for all its rules).
    pub fn without<S: AsRef<str>>(names: impl IntoIterator<Item = S>) -> Result<Self> {
        let catalogue = catalogue();
        let mut disabled = BTreeSet::new();
        for name in names {
            disabled.extend(expand(&catalogue, name.as_ref())?);
        }
        Ok(RuleSet { disabled })
    }

    /// Only `names` (rules or families) on: what a `--rules FILE` lists.
    pub fn only<S: AsRef<str>>(names: impl IntoIterator<Item = S>) -> Result<Self> {
        let catalogue = catalogue();
        let mut enabled = BTreeSet::new();
        for name in names {
            enabled.extend(expand(&catalogue, name.as_ref())?);
        }
        let disabled = catalogue
            .into_iter()
            .map(|r| r.name)
            .filter(|n| !enabled.contains(n))
            .collect();
        Ok(RuleSet { disabled })
    }

    /// The names of a rules file: one rule or family per line, `#` starts a comment.
    pub fn parse_list(text: &str) -> Vec<String> {
        text.lines()
            .map(|l| l.split('#').next().unwrap_or("").trim())
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect()
    }

    /// This set with `other`'s rules off too.
    pub fn and_without(mut self, other: &RuleSet) -> Self {
        self.disabled.extend(other.disabled.iter().cloned());
        self
    }

    pub fn enabled(&self, name: &str) -> bool {
        !self.disabled.contains(name)
    }

    /// The rules left out, by name.
    pub fn disabled(&self) -> impl Iterator<Item = &str> {
        self.disabled.iter().map(String::as_str)
    }

    pub fn is_all(&self) -> bool {
        self.disabled.is_empty()
    }
}

/// The rule names `name` stands for: itself, or every rule of the family it names.
fn expand(catalogue: &[RuleInfo], name: &str) -> Result<Vec<String>> {
    if catalogue.iter().any(|r| r.name == name) {
        return Ok(vec![name.to_string()]);
    }
    let family: Vec<String> = catalogue
        .iter()
        .filter(|r| r.family == name)
        .map(|r| r.name.clone())
        .collect();
    if !family.is_empty() {
        return Ok(family);
    }
    Err(PassError::Fusion(format!(
        "unknown rule `{name}`: `calib rules` lists them (families: {})",
        families().join(", ")
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_families_expand() {
        let all = catalogue();
        let names: BTreeSet<&str> = all.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names.len(), all.len(), "a rule name is used twice");
        let lower = RuleSet::without(["lower"]).unwrap();
        assert!(!lower.enabled("fuse-epilogue") && lower.enabled("bn-fold-eval"));
        let only = RuleSet::only(["bn-fold-eval", "plan"]).unwrap();
        assert!(only.enabled("bn-fold-eval") && only.enabled(SIDE_OUTPUTS));
        assert!(!only.enabled("merge-sibling-convs") && !only.enabled("fuse-prologue"));
    }

    #[test]
    fn an_unknown_name_is_refused_naming_it() {
        let e = RuleSet::without(["fuse-everything"])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("`fuse-everything`") && e.contains("batchnorm"),
            "{e}"
        );
    }

    #[test]
    fn rules_files_take_comments_and_blank_lines() {
        let names = RuleSet::parse_list("# study\nbn-fold-eval  # folding\n\n  lower\n");
        assert_eq!(names, ["bn-fold-eval", "lower"]);
    }
}
