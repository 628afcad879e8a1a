//! Measured data sets: the launches of a compiled plan (`launches.json`, written by
//! `calib compile --emit-ptx`) joined with a per-kernel timing table measured on a GPU
//! (`calib bench --per-kernel`, or Nsight Compute), by launch name.

use crate::fit::Sample;
use crate::{Census, InstructionMix, Launch};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::Path;

/// One launch of a compiled plan, with its raw instruction mix.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LaunchRecord {
    /// The entry name (`k12`, `k12_part1`).
    pub name: String,
    pub blocks: u64,
    pub threads: u32,
    pub shared_bytes: u32,
    /// Registers per thread on the measured architecture (from ptxas).
    pub registers: u32,
    pub unique_bytes: f64,
    pub mix: InstructionMix,
    /// What a thread of the last block runs after the others (see [`Launch::tail`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tail: Option<InstructionMix>,
}

impl LaunchRecord {
    pub fn launch(&self) -> Launch {
        Launch {
            blocks: self.blocks,
            threads: self.threads,
            shared_bytes: self.shared_bytes,
            registers: self.registers,
            census: Census::of(&self.mix),
            tail: self.tail.as_ref().map(Census::of),
            unique_bytes: self.unique_bytes,
        }
    }
}

/// Why a data set could not be read.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {message}")]
pub struct DataError {
    pub path: String,
    pub message: String,
}

fn fail(path: &Path, message: impl Into<String>) -> DataError {
    DataError {
        path: path.display().to_string(),
        message: message.into(),
    }
}

/// Reads the launches of a compiled plan.
pub fn read_launches(path: &Path) -> Result<Vec<LaunchRecord>, DataError> {
    let text = std::fs::read_to_string(path).map_err(|e| fail(path, e.to_string()))?;
    serde_json::from_str(&text).map_err(|e| fail(path, e.to_string()))
}

/// One row of a timing table: a launch, its measured time and, where the table gives
/// them (`block`, `grid`: `"(256,1,1)"`), the threads per block and blocks it ran with.
#[derive(Clone, Debug, PartialEq)]
pub struct Timing {
    pub kernel: String,
    pub measured_us: f64,
    pub shape: Option<LaunchShape>,
}

/// Threads per block and blocks of a launch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LaunchShape {
    pub threads: u64,
    pub blocks: u64,
}

/// Reads a timing table's `kernel` and `measured_us` columns, and `block` and `grid`
/// where it has them.
pub fn read_timings(path: &Path) -> Result<Vec<Timing>, DataError> {
    let text = std::fs::read_to_string(path).map_err(|e| fail(path, e.to_string()))?;
    let mut lines = text.lines();
    let header = split_csv(lines.next().ok_or_else(|| fail(path, "empty file"))?);
    let position = |name: &str| header.iter().position(|h| h == name);
    let column =
        |name: &str| position(name).ok_or_else(|| fail(path, format!("no `{name}` column")));
    let (kernel, measured) = (column("kernel")?, column("measured_us")?);
    let dims = position("block").zip(position("grid"));
    lines
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, line)| {
            let fields = split_csv(line);
            let at = |c: usize| {
                fields
                    .get(c)
                    .ok_or_else(|| fail(path, format!("line {}: too few fields", i + 2)))
            };
            let us: f64 = at(measured)?
                .parse()
                .map_err(|_| fail(path, format!("line {}: measured_us is not a number", i + 2)))?;
            if !(us.is_finite() && us > 0.0) {
                return Err(fail(path, format!("line {}: measured_us {us}", i + 2)));
            }
            let shape = match dims {
                None => None,
                Some((block, grid)) => {
                    let volume = |c: usize| {
                        let text = at(c)?;
                        volume(text).ok_or_else(|| {
                            fail(path, format!("line {}: {text:?} is not `(x,y,z)`", i + 2))
                        })
                    };
                    Some(LaunchShape {
                        threads: volume(block)?,
                        blocks: volume(grid)?,
                    })
                }
            };
            Ok(Timing {
                kernel: at(kernel)?.clone(),
                measured_us: us,
                shape,
            })
        })
        .collect()
}

/// The product of `(x,y,z)`.
fn volume(text: &str) -> Option<u64> {
    let inner = text.trim().strip_prefix('(')?.strip_suffix(')')?;
    inner
        .split(',')
        .map(|d| d.trim().parse::<u64>().ok())
        .product()
}

/// The fields of one CSV line (double quotes group commas; `""` is a quote).
pub fn split_csv(line: &str) -> Vec<String> {
    let mut fields = vec![String::new()];
    let mut quoted = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' if quoted && chars.peek() == Some(&'"') => {
                chars.next();
                fields.last_mut().expect("one field").push('"');
            }
            '"' => quoted = !quoted,
            ',' if !quoted => fields.push(String::new()),
            c => fields.last_mut().expect("one field").push(c),
        }
    }
    fields
}

/// Every timed launch joined with its record; a timed launch the plan does not have, or
/// has with another grid or block, is an error (the two files come from different plans:
/// a table measured under `--layout auto` joined with launches compiled row-major).
pub fn samples(launches: &Path, timings: &Path) -> Result<Vec<Sample>, DataError> {
    let records: HashMap<String, LaunchRecord> = read_launches(launches)?
        .into_iter()
        .map(|r| (r.name.clone(), r))
        .collect();
    read_timings(timings)?
        .into_iter()
        .map(|timing| {
            let name = timing.kernel;
            let record = records.get(&name).ok_or_else(|| {
                fail(
                    timings,
                    format!("launch {name} is not in {}", launches.display()),
                )
            })?;
            let planned = LaunchShape {
                threads: record.threads as u64,
                blocks: record.blocks,
            };
            if let Some(timed) = timing.shape.filter(|&s| s != planned) {
                return Err(fail(
                    timings,
                    format!(
                        "launch {name} ran {} blocks of {} threads, but {} has {} of {}: \
                         the two files come from different plans",
                        timed.blocks,
                        timed.threads,
                        launches.display(),
                        planned.blocks,
                        planned.threads
                    ),
                ));
            }
            Ok(Sample {
                name,
                launch: record.launch(),
                measured_seconds: timing.measured_us * 1e-6,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::{split_csv, volume};

    #[test]
    fn launch_dimensions_multiply() {
        assert_eq!(volume("(256,1,1)"), Some(256));
        assert_eq!(volume(" (8, 2, 3) "), Some(48));
        assert_eq!(volume("256"), None);
        assert_eq!(volume("(a,1,1)"), None);
    }

    #[test]
    fn csv_fields_keep_quoted_commas() {
        assert_eq!(
            split_csv(r#"3,k2,"(256,1,1)","(8,1,1)",3.17,,"a ""b""""#),
            ["3", "k2", "(256,1,1)", "(8,1,1)", "3.17", "", "a \"b\""]
        );
    }
}
