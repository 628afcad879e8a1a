//! `metrics.jsonl`: the running totals a training line reports, and the log a resumed
//! run continues.

use anyhow::{Context, Result};
use calib_runtime::session::CopyTimes;
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
    /// Rank 0's staged batch copies measured by the window's start (cuda only).
    pub copies_before: Option<CopyTimes>,
}

impl Window {
    pub fn add(&mut self, images: usize, seconds: f64) {
        self.images += images;
        self.seconds += seconds;
    }
    pub fn images_per_second(&self) -> f64 {
        self.images as f64 / self.seconds.max(1e-9)
    }

    /// The line's figures of the batch copies that overlapped its steps, given the
    /// totals `now` (`Session::copy_times`): seconds copying, the part no step hid, and
    /// that part as a fraction of the window's step time. Absent where nothing is
    /// measured (backends without timed copies, `CALIB_STAGE_BATCHES=0`).
    pub fn copy_figures(&self, now: Option<CopyTimes>) -> Option<serde_json::Value> {
        let t = now? - self.copies_before.unwrap_or_default();
        (t.copies > 0).then(|| {
            serde_json::json!({
                "batch_copy_seconds": t.seconds,
                "batch_copy_exposed_seconds": t.exposed_seconds,
                "batch_copy_exposed_fraction": t.exposed_seconds / self.seconds.max(1e-9),
            })
        })
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_figures_cover_the_window_alone() {
        let at = |copies, seconds, exposed_seconds| CopyTimes {
            copies,
            seconds,
            exposed_seconds,
        };
        let window = Window {
            seconds: 2.0,
            copies_before: Some(at(3, 0.5, 0.25)),
            ..Window::default()
        };
        let v = window.copy_figures(Some(at(5, 1.5, 0.75))).unwrap();
        assert_eq!(v["batch_copy_seconds"], 1.0);
        assert_eq!(v["batch_copy_exposed_seconds"], 0.5);
        assert_eq!(v["batch_copy_exposed_fraction"], 0.25);
        // Nothing measured: no figures (the CPU backends, staging off, no new copies).
        assert!(window.copy_figures(None).is_none());
        assert!(window.copy_figures(Some(at(3, 0.5, 0.25))).is_none());
    }
}
