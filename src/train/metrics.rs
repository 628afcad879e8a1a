//! `metrics.jsonl`: the running totals a training line reports, and the log a resumed
//! run continues.

use anyhow::{Context, Result};
use calib_runtime::write_atomic;
use std::path::Path;

/// Running totals between two metrics lines.
#[derive(Default)]
pub struct Window {
    pub images: usize,
    pub seconds: f64,
    /// Time the step waited for its batch (the loader not keeping up).
    pub data_seconds: f64,
    pub correct: usize,
    pub loss: f64,
    /// The batches' digests chained in step order (`data::digest`).
    pub digest: Option<u64>,
}

impl Window {
    pub fn add(&mut self, images: usize, seconds: f64) {
        self.images += images;
        self.seconds += seconds;
    }
    pub fn images_per_second(&self) -> f64 {
        self.images as f64 / self.seconds.max(1e-9)
    }
}

/// Drops metrics lines written after `step` or at an interruption, so a resumed run's
/// log reads as one run (a train line right after the resume point covers fewer steps).
pub fn truncate_metrics(out: &Path, step: u64) -> Result<()> {
    let path = out.join("metrics.jsonl");
    let Ok(text) = std::fs::read_to_string(&path) else {
        return Ok(());
    };
    let kept: Vec<&str> = text
        .lines()
        .filter(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap_or_default();
            v["step"].as_u64().is_some_and(|s| s <= step) && v.get("interrupted").is_none()
        })
        .collect();
    let text: String = kept.iter().map(|l| format!("{l}\n")).collect();
    write_atomic(&path, text.as_bytes()).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}
