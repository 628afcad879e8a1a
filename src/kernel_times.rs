//! Per-kernel timing tables (`calib bench --per-kernel FILE`): every launch of a device
//! program with its measured time beside what the plan says about it, in the columns of
//! the Nsight Compute tables under `shared/gpu/`, so the two can be joined and compared.

use calib_runtime::DeviceProgram;
use std::fmt::Write;

/// The table's columns, as in `shared/gpu/h200-2026-12-04-scnet50-b64-kernels.csv`.
pub const HEADER: &str =
    "launch,kernel,block,grid,measured_us,plan_kernel,anchor,label,flops,bytes,estimated_us";

/// The median of each launch's times over several timed steps (`runs[r][launch]`).
pub fn median_per_launch(runs: &[Vec<f64>]) -> Vec<f64> {
    let launches = runs.iter().map(Vec::len).min().unwrap_or(0);
    (0..launches)
        .map(|i| {
            let mut times: Vec<f64> = runs.iter().map(|r| r[i]).collect();
            times.sort_by(f64::total_cmp);
            let mid = times.len() / 2;
            match times.len() % 2 {
                1 => times[mid],
                _ => (times[mid - 1] + times[mid]) / 2.0,
            }
        })
        .collect()
}

/// The table for `plan` with `measured_us[i]` the time of launch `i`. An estimate of 0
/// (a plan kernel's later launches carry none) is left empty.
pub fn csv(plan: &DeviceProgram, measured_us: &[f64]) -> Result<String, String> {
    if measured_us.len() != plan.kernels.len() {
        return Err(format!(
            "{} measured times for the {} launches of the plan",
            measured_us.len(),
            plan.kernels.len()
        ));
    }
    let mut out = format!("{HEADER}\n");
    for (i, (launch, &us)) in plan.kernels.iter().zip(measured_us).enumerate() {
        let anchor = plan
            .program
            .kernel(&launch.kernel)
            .map_or("", |k| k.anchor.name());
        let info = &launch.info;
        let estimated = if info.estimated_us == 0.0 {
            String::new()
        } else {
            format!("{:.2}", info.estimated_us)
        };
        writeln!(
            out,
            "{i},{},{},{},{us:.2},{},{anchor},{},{:.1},{:.1},{estimated}",
            field(&launch.name),
            field(&dims(launch.block)),
            field(&dims(launch.grid)),
            field(&launch.kernel),
            field(&info.label),
            info.flops,
            info.bytes,
        )
        .expect("writing to a String");
    }
    Ok(out)
}

/// `(x,y,z)`, as the reference tables write launch geometry.
fn dims(d: [u32; 3]) -> String {
    format!("({},{},{})", d[0], d[1], d[2])
}

/// A CSV field: quoted when it holds a comma, a quote or a line break.
fn field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_with_commas_or_quotes_are_quoted() {
        assert_eq!(field("(256,1,1)"), "\"(256,1,1)\"");
        assert_eq!(field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(field("conv2d@layer1.0.conv1_a"), "conv2d@layer1.0.conv1_a");
    }

    #[test]
    fn medians_take_the_middle_run_of_each_launch() {
        let runs = vec![vec![3.0, 10.0], vec![1.0, 30.0], vec![2.0, 20.0]];
        assert_eq!(median_per_launch(&runs), vec![2.0, 20.0]);
        let even = vec![vec![1.0], vec![4.0]];
        assert_eq!(median_per_launch(&even), vec![2.5]);
        assert!(median_per_launch(&[]).is_empty());
    }
}
