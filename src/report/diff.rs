//! Two compiles compared (`--against OTHER_DIR`): the totals side by side, and the
//! kernels one plan has and the other lacks. Of the same graph (as with
//! `--disable-rule`, `--rules` or another `--device`), a kernel is the set of original
//! nodes it computes, so a kernel is "the same" when the other plan has one covering
//! exactly those nodes; of different graphs, kernels are compared by label.

use super::model::{CompileOutput, KernelFacts};
use std::collections::HashMap;

/// One line of the totals.
#[derive(Clone, Debug, PartialEq)]
pub struct Total {
    pub what: &'static str,
    pub this: f64,
    pub other: f64,
}

/// What differs between this compile and the other.
#[derive(Clone, Debug)]
pub struct Diff {
    pub other_dir: String,
    /// `"covered nodes"` or `"label"`: how kernels were matched.
    pub matched_by: &'static str,
    pub totals: Vec<Total>,
    /// Kernels only this plan has (gained), and only the other has (lost), most
    /// expensive first.
    pub gained: Vec<KernelFacts>,
    pub lost: Vec<KernelFacts>,
    /// Kernels in both.
    pub common: usize,
}

/// Compares `this` with `other`.
pub fn diff(this: &CompileOutput, other: &CompileOutput) -> Diff {
    let same_graph = this.graph == other.graph;
    let key = |k: &KernelFacts| -> String {
        if same_graph {
            let mut c = k.covers.clone();
            c.sort_unstable();
            format!("{c:?}")
        } else {
            k.label.clone()
        }
    };
    // Multisets, so two kernels of one label are two kernels.
    let count = |ks: &[KernelFacts]| {
        let mut m: HashMap<String, usize> = HashMap::new();
        for k in ks {
            *m.entry(key(k)).or_default() += 1;
        }
        m
    };
    let only = |a: &[KernelFacts], b: &[KernelFacts]| {
        let mut left = count(b);
        let mut out: Vec<KernelFacts> = vec![];
        for k in a {
            match left.get_mut(&key(k)) {
                Some(n) if *n > 0 => *n -= 1,
                _ => out.push(k.clone()),
            }
        }
        out.sort_by(|x, y| y.predicted_us.total_cmp(&x.predicted_us));
        out
    };
    let gained = only(&this.kernels, &other.kernels);
    let lost = only(&other.kernels, &this.kernels);
    let total = |what, f: &dyn Fn(&CompileOutput) -> f64| Total {
        what,
        this: f(this),
        other: f(other),
    };
    Diff {
        other_dir: other.dir.display().to_string(),
        matched_by: if same_graph { "covered nodes" } else { "label" },
        totals: vec![
            total("kernels", &|c| c.kernels.len() as f64),
            total("launches", &|c| {
                c.kernels.iter().map(|k| k.launches.len()).sum::<usize>() as f64
            }),
            total("bytes moved", &|c| c.summary.bytes_after),
            total("FLOPs", &|c| c.summary.flops_after),
            total("predicted step (ms)", &|c| c.step_ms),
        ],
        common: this.kernels.len() - gained.len(),
        gained,
        lost,
    }
}
