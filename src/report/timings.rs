//! Measured times (a `calib bench --per-kernel` or Nsight table, `kernel_times::parse`)
//! joined to the plan's kernels.
//!
//! A table names plan kernels (`k12`), but names are positions in one plan: a table
//! measured at another commit names other kernels `k12`. So the join is by *label and
//! order*: the n-th kernel labelled `conv2d@layer1.0.conv1_a` in the table is the n-th
//! so labelled in the plan. For a table of this very plan that is the join by name; for
//! another plan it keeps a layer's kernels on that layer, and the page says how many
//! kernels matched and whether the names agreed.

use super::model::KernelFacts;
use crate::kernel_times::TimedLaunch;
use std::collections::HashMap;

/// How a table met the plan.
#[derive(Clone, Debug, PartialEq)]
pub struct Join {
    /// Plan kernels the table has rows for.
    pub table_kernels: usize,
    /// Plan kernels that got a measured time.
    pub matched: usize,
    /// Of those, the ones whose name in the table is also theirs.
    pub same_name: usize,
    /// Sum of every launch of the table.
    pub table_us: f64,
}

impl Join {
    /// A sentence for the page when the table is not of this exact plan.
    pub fn note(&self, kernels: usize) -> Option<String> {
        (self.same_name < kernels || self.table_kernels != kernels).then(|| {
            format!(
                "The timing table is of another plan ({} kernels; {} of this plan's {} kernels \
                 have the same name and label there). Times are matched by label and order of \
                 appearance: {} kernels have a measured time.",
                self.table_kernels, self.same_name, kernels, self.matched
            )
        })
    }
}

/// Sets `measured_us` of every kernel the table times, summing each kernel's launches.
pub fn join(kernels: &mut [KernelFacts], table: &[TimedLaunch]) -> Join {
    // Plan kernels of the table in order of first launch, with their summed time.
    let mut order: Vec<(&str, &str, f64)> = vec![];
    let mut index: HashMap<&str, usize> = HashMap::new();
    for row in table {
        let i = *index.entry(&row.plan_kernel).or_insert_with(|| {
            order.push((&row.plan_kernel, &row.label, 0.0));
            order.len() - 1
        });
        order[i].2 += row.measured_us;
    }
    let mut by_label: HashMap<(&str, usize), (&str, f64)> = HashMap::new();
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for &(name, label, us) in &order {
        let n = seen.entry(label).or_default();
        by_label.insert((label, *n), (name, us));
        *n += 1;
    }
    let mut seen: HashMap<String, usize> = HashMap::new();
    let (mut matched, mut same_name) = (0, 0);
    for k in kernels.iter_mut() {
        let n = seen.entry(k.label.clone()).or_default();
        k.measured_us = by_label.get(&(k.label.as_str(), *n)).map(|&(name, us)| {
            matched += 1;
            same_name += usize::from(name == k.name);
            us
        });
        *n += 1;
    }
    Join {
        table_kernels: order.len(),
        matched,
        same_name,
        table_us: table.iter().map(|r| r.measured_us).sum(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kernel(name: &str, label: &str) -> KernelFacts {
        KernelFacts {
            name: name.into(),
            label: label.into(),
            anchor: "pointwise".into(),
            ops: 1,
            covers: vec![],
            flops: 0.0,
            bytes: 0.0,
            predicted_us: 0.0,
            launches: vec![name.into()],
            measured_us: None,
            ptxas: None,
            schedule: None,
            schedule_reason: None,
        }
    }

    fn row(kernel: &str, plan_kernel: &str, label: &str, us: f64) -> TimedLaunch {
        TimedLaunch {
            kernel: kernel.into(),
            plan_kernel: plan_kernel.into(),
            label: label.into(),
            measured_us: us,
        }
    }

    #[test]
    fn launches_sum_per_kernel_and_labels_match_in_order() {
        let mut plan = vec![
            kernel("k0", "conv@a"),
            kernel("k1", "relu@a"),
            kernel("k2", "conv@a"),
        ];
        // Another plan: an extra kernel first shifts every name by one.
        let table = vec![
            row("k0", "k0", "add@x", 1.0),
            row("k1", "k1", "conv@a", 10.0),
            row("k1_part1", "k1", "conv@a", 5.0),
            row("k2", "k2", "conv@a", 7.0),
        ];
        let j = join(&mut plan, &table);
        assert_eq!(plan[0].measured_us, Some(15.0));
        assert_eq!(plan[1].measured_us, None);
        assert_eq!(plan[2].measured_us, Some(7.0));
        assert_eq!((j.table_kernels, j.matched, j.same_name), (3, 2, 1));
        assert_eq!(j.table_us, 23.0);
        assert!(j
            .note(3)
            .unwrap()
            .contains("2 kernels have a measured time"));
    }

    #[test]
    fn a_table_of_the_same_plan_needs_no_note() {
        let mut plan = vec![kernel("k0", "conv@a"), kernel("k1", "relu@a")];
        let table = vec![
            row("k0", "k0", "conv@a", 3.0),
            row("k1", "k1", "relu@a", 1.0),
        ];
        let j = join(&mut plan, &table);
        assert_eq!(j.note(2), None);
        assert_eq!(plan[1].measured_us, Some(1.0));
    }
}
