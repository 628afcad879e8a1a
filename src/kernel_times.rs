//! Per-kernel timing tables (`calib bench --per-kernel FILE`): every launch of a device
//! program with its measured time beside what the plan says about it, in the columns of
//! the Nsight Compute tables under `shared/gpu/`, so the two can be joined and compared;
//! [`parse`] reads such a table back (`calib report --timings`).

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

/// One launch of a timing table read back (the columns a join with a plan needs).
#[derive(Clone, Debug, PartialEq)]
pub struct TimedLaunch {
    /// The launch's entry name (`k12_part1`).
    pub kernel: String,
    /// The plan kernel the launch belongs to (`k12`).
    pub plan_kernel: String,
    pub label: String,
    pub measured_us: f64,
}

/// Reads a table in [`HEADER`]'s columns (in any order, extra columns ignored). Errors
/// name the line and the field: a missing column, a row with too few fields, a time
/// that is not a finite non-negative number.
pub fn parse(text: &str) -> Result<Vec<TimedLaunch>, String> {
    let mut lines = text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty());
    let (_, header) = lines.next().ok_or("the table is empty (no header line)")?;
    let columns = split_fields(header).map_err(|e| format!("line 1: {e}"))?;
    let column = |name: &str| {
        columns
            .iter()
            .position(|c| c.trim() == name)
            .ok_or_else(|| format!("line 1: no `{name}` column (expected the columns {HEADER})"))
    };
    let (kernel, plan_kernel, label, measured) = (
        column("kernel")?,
        column("plan_kernel")?,
        column("label")?,
        column("measured_us")?,
    );
    let mut rows = vec![];
    for (i, line) in lines {
        let at = i + 1;
        let fields = split_fields(line).map_err(|e| format!("line {at}: {e}"))?;
        let get = |c: usize| {
            fields.get(c).map(String::as_str).ok_or_else(|| {
                format!(
                    "line {at}: {} fields, the header has {}",
                    fields.len(),
                    columns.len()
                )
            })
        };
        let us_text = get(measured)?;
        let measured_us: f64 = us_text
            .trim()
            .parse()
            .ok()
            .filter(|v: &f64| v.is_finite() && *v >= 0.0)
            .ok_or_else(|| {
                format!("line {at}: measured_us `{us_text}` is not a non-negative number")
            })?;
        rows.push(TimedLaunch {
            kernel: get(kernel)?.to_string(),
            plan_kernel: get(plan_kernel)?.to_string(),
            label: get(label)?.to_string(),
            measured_us,
        });
    }
    Ok(rows)
}

/// The fields of one CSV line, with [`field`]'s quoting undone.
fn split_fields(line: &str) -> Result<Vec<String>, String> {
    let mut fields = vec![];
    let mut current = String::new();
    let mut chars = line.chars().peekable();
    let mut quoted = false;
    while let Some(c) = chars.next() {
        match (c, quoted) {
            ('"', true) if chars.peek() == Some(&'"') => {
                chars.next();
                current.push('"');
            }
            ('"', true) => quoted = false,
            ('"', false) if current.is_empty() => quoted = true,
            (',', false) => fields.push(std::mem::take(&mut current)),
            _ => current.push(c),
        }
    }
    if quoted {
        return Err("a quoted field is not closed".into());
    }
    fields.push(current);
    Ok(fields)
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
    fn tables_read_back_with_quoted_fields_and_errors_name_the_line() {
        let text = format!("{HEADER}\n0,k0,\"(256,1,1)\",\"(8,1,1)\",12.5,k0,convolution,conv2d@conv1,1.0,2.0,3.0\n");
        let rows = parse(&text).unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].plan_kernel, "k0");
        assert_eq!(rows[0].label, "conv2d@conv1");
        assert_eq!(rows[0].measured_us, 12.5);
        let bad = text.replace("12.5", "fast");
        assert!(parse(&bad)
            .unwrap_err()
            .contains("line 2: measured_us `fast`"));
        let short = format!("{HEADER}\n0,k0\n");
        assert!(parse(&short).unwrap_err().starts_with("line 2:"));
        assert!(parse("a,b\n").unwrap_err().contains("no `kernel` column"));
        assert!(parse("").is_err());
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
