//! The checkpoints a run keeps: `checkpoint.safetensors` is the newest,
//! `checkpoint.1.safetensors` the one before, and so on, `--keep-checkpoints` in all.
//!
//! Saving rotates them so that at every instant each of these files is a complete
//! checkpoint and the newest exists: older generations move up by rename, the newest is
//! hard-linked (or copied) to `checkpoint.1`, and only then is the new one renamed over
//! it. The trainer never saves a state holding a NaN or an infinity.
//!
//! Resuming takes the newest checkpoint that decodes and holds only finite values (one
//! written by an older calib, or damaged, may not). Newer ones that fail are set aside
//! as `<name>.rejected` and the rest renumbered from 0, so that the next save rotates
//! good checkpoints only. Rolling a run back by hand is renaming an older checkpoint
//! over `checkpoint.safetensors` before `--resume`: the gap it leaves is renumbered the
//! same way.

use super::checkpoint::{self, Checkpoint, Progress};
use super::SgdState;
use anyhow::{bail, Context, Result};
use calib_runtime::write_atomic;
use std::fs;
use std::path::{Path, PathBuf};

const NEWEST: &str = "checkpoint.safetensors";
const REJECTED: &str = ".rejected";

/// The newest checkpoint inside a run directory (the one `--resume` tries first).
pub fn newest_path(dir: &Path) -> PathBuf {
    generation_path(dir, 0)
}

/// The checkpoint `generation` saves before the newest: `checkpoint.safetensors` for
/// 0, `checkpoint.<generation>.safetensors` after it.
pub fn generation_path(dir: &Path, generation: usize) -> PathBuf {
    match generation {
        0 => dir.join(NEWEST),
        g => dir.join(format!("checkpoint.{g}.safetensors")),
    }
}

/// The generation a file name is the checkpoint of.
fn generation_of(name: &str) -> Option<usize> {
    let middle = name
        .strip_prefix("checkpoint")?
        .strip_suffix(".safetensors")?;
    if middle.is_empty() {
        return Some(0);
    }
    let digits = middle.strip_prefix('.')?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok().filter(|&g| g > 0)
}

/// Whether a file name is one of a run's checkpoints, of any generation, or one that
/// was set aside as rejected.
pub fn is_checkpoint_file(name: &str) -> bool {
    let kept = name.strip_suffix(REJECTED).unwrap_or(name);
    generation_of(kept).is_some()
}

/// Where a rejected checkpoint is set aside.
pub fn rejected_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(REJECTED);
    path.with_file_name(name)
}

/// The generations present in `dir`, newest first.
fn generations(dir: &Path) -> Result<Vec<usize>> {
    let entries = fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))?;
    let mut found: Vec<usize> = entries
        .filter_map(|e| generation_of(e.ok()?.file_name().to_str()?))
        .collect();
    found.sort_unstable();
    Ok(found)
}

/// Writes a checkpoint of `sgd` at `progress` as the newest of `dir`, keeping the
/// `keep - 1` before it (`keep` is at least 1) and dropping older ones.
pub fn save(dir: &Path, sgd: &SgdState, progress: Progress, keep: usize) -> Result<()> {
    let newest = newest_path(dir);
    // Encoded before any file moves: a checkpoint that cannot be made rotates nothing.
    let bytes = checkpoint::encode(sgd, progress, &newest.display().to_string())?;
    rotate(dir, keep.max(1))?;
    write_atomic(&newest, &bytes).with_context(|| format!("writing {}", newest.display()))
}

/// Makes room for a new newest checkpoint: generation `g` becomes `g + 1` for every
/// kept one, the oldest kept being replaced. The newest stays in place (a link or copy
/// of it becomes generation 1) until the new one is renamed over it.
fn rotate(dir: &Path, keep: usize) -> Result<()> {
    // Left from a run that kept more (its config.json edited) or a crash mid-rotation.
    for g in generations(dir)?.into_iter().filter(|&g| g >= keep) {
        let path = generation_path(dir, g);
        fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
    }
    let newest = newest_path(dir);
    if keep < 2 || !newest.exists() {
        return Ok(());
    }
    for g in (1..keep - 1).rev() {
        let (from, to) = (generation_path(dir, g), generation_path(dir, g + 1));
        if from.exists() {
            fs::rename(&from, &to)
                .with_context(|| format!("renaming {} to {}", from.display(), to.display()))?;
        }
    }
    let previous = generation_path(dir, 1);
    // A temporary name that a later start removes as stale (`.<name>.tmp.<pid>...`).
    let staged = dir.join(format!(
        ".checkpoint.1.safetensors.tmp.{}.link",
        std::process::id()
    ));
    let _ = fs::remove_file(&staged);
    let staged_ok = fs::hard_link(&newest, &staged)
        .or_else(|_| fs::copy(&newest, &staged).map(|_| ()))
        .and_then(|()| fs::rename(&staged, &previous));
    if staged_ok.is_err() {
        let _ = fs::remove_file(&staged);
    }
    staged_ok.with_context(|| format!("keeping {} as {}", newest.display(), previous.display()))
}

/// A checkpoint that cannot be resumed from, and why (the message names the file).
#[derive(Clone, Debug, PartialEq)]
pub struct Rejected {
    pub path: PathBuf,
    pub why: String,
}

/// The checkpoint a resumed run continues from, and the newer ones passed over.
#[derive(Debug)]
pub struct Resumable {
    pub checkpoint: Checkpoint,
    pub generation: usize,
    pub rejected: Vec<Rejected>,
}

/// The newest checkpoint of `dir` that decodes and holds only finite values. A file
/// that cannot be read at all is an error, not a rejection: it may be fine on disk.
pub fn newest_good(dir: &Path) -> Result<Resumable> {
    let found = generations(dir)?;
    if found.is_empty() {
        bail!(
            "no checkpoint to resume from: {} does not exist",
            newest_path(dir).display()
        );
    }
    let mut rejected = vec![];
    for generation in found {
        let path = generation_path(dir, generation);
        let bytes = fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        let why = match checkpoint::decode(&bytes, &path.display().to_string()) {
            Ok(checkpoint) => match checkpoint.sgd.first_non_finite(&[]) {
                None => {
                    return Ok(Resumable {
                        checkpoint,
                        generation,
                        rejected,
                    })
                }
                Some((name, census)) => {
                    format!("{}: `{name}` is not finite ({census})", path.display())
                }
            },
            Err(e) => format!("{e:#}"),
        };
        rejected.push(Rejected { path, why });
    }
    let whys: Vec<&str> = rejected.iter().map(|r| r.why.as_str()).collect();
    bail!(
        "no checkpoint in {} can be resumed from: {}. Start the run again with --overwrite",
        dir.display(),
        whys.join("; ")
    )
}

/// Makes `found`'s checkpoint the newest: the rejected ones are set aside
/// ([`rejected_path`]) and the generations left renumbered from 0 in order.
pub fn promote(dir: &Path, found: &Resumable) -> Result<()> {
    for r in &found.rejected {
        let aside = rejected_path(&r.path);
        fs::rename(&r.path, &aside)
            .with_context(|| format!("renaming {} to {}", r.path.display(), aside.display()))?;
    }
    // In ascending order each target is free: its old holder was rejected or has moved.
    for (to, from) in generations(dir)?.into_iter().enumerate() {
        if to != from {
            let (from, to) = (generation_path(dir, from), generation_path(dir, to));
            fs::rename(&from, &to)
                .with_context(|| format!("renaming {} to {}", from.display(), to.display()))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use calib_runtime::HostTensor;

    fn sgd(value: f32) -> SgdState {
        let w = HostTensor::from_f32(vec![1], vec![value]).unwrap();
        SgdState {
            state: [("w".to_string(), w.clone())].into(),
            momentum: [("w".to_string(), w)].into(),
            copies: Default::default(),
        }
    }

    fn save_step(dir: &Path, step: u64, keep: usize) {
        let progress = Progress { step, seed: 7 };
        save(dir, &sgd(step as f32), progress, keep).unwrap();
    }

    fn step_of(path: &Path) -> u64 {
        let bytes = fs::read(path).unwrap();
        checkpoint::decode(&bytes, "").unwrap().progress.step
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn saving_keeps_the_newest_generations_in_order() {
        let dir = tempfile::tempdir().unwrap();
        for step in 1..=4 {
            save_step(dir.path(), step, 3);
        }
        let steps: Vec<u64> = (0..3)
            .map(|g| step_of(&generation_path(dir.path(), g)))
            .collect();
        assert_eq!(steps, [4, 3, 2]);
        assert_eq!(
            names(dir.path()),
            [
                "checkpoint.1.safetensors",
                "checkpoint.2.safetensors",
                "checkpoint.safetensors"
            ]
        );
        let found = newest_good(dir.path()).unwrap();
        assert_eq!(found.checkpoint.progress, Progress { step: 4, seed: 7 });
    }

    #[test]
    fn keeping_fewer_drops_the_generations_beyond() {
        let dir = tempfile::tempdir().unwrap();
        for step in 1..=3 {
            save_step(dir.path(), step, 3);
        }
        save_step(dir.path(), 4, 1);
        assert_eq!(names(dir.path()), ["checkpoint.safetensors"]);
        assert_eq!(step_of(&newest_path(dir.path())), 4);
    }

    #[test]
    fn resuming_passes_over_newer_checkpoints_that_are_not_finite_or_damaged() {
        let dir = tempfile::tempdir().unwrap();
        for step in 1..=3 {
            save_step(dir.path(), step, 3);
        }
        // Written as an older calib would have: a NaN in the state.
        let poisoned =
            checkpoint::encode(&sgd(f32::NAN), Progress { step: 4, seed: 7 }, "").unwrap();
        fs::write(newest_path(dir.path()), poisoned).unwrap();
        fs::write(generation_path(dir.path(), 1), b"truncated").unwrap();

        let found = newest_good(dir.path()).unwrap();
        assert_eq!((found.generation, found.checkpoint.progress.step), (2, 1));
        let whys: Vec<&str> = found.rejected.iter().map(|r| r.why.as_str()).collect();
        assert!(
            whys[0].contains("checkpoint.safetensors: `w` is not finite")
                && whys[1].contains("checkpoint.1.safetensors"),
            "{whys:?}"
        );
        promote(dir.path(), &found).unwrap();
        assert_eq!(
            names(dir.path()),
            [
                "checkpoint.1.safetensors.rejected",
                "checkpoint.safetensors",
                "checkpoint.safetensors.rejected"
            ]
        );
        assert_eq!(step_of(&newest_path(dir.path())), 1);
    }

    #[test]
    fn a_checkpoint_renamed_over_the_newest_by_hand_closes_its_gap() {
        let dir = tempfile::tempdir().unwrap();
        for step in 1..=3 {
            save_step(dir.path(), step, 3);
        }
        fs::rename(generation_path(dir.path(), 1), newest_path(dir.path())).unwrap();
        let found = newest_good(dir.path()).unwrap();
        assert!(found.rejected.is_empty());
        promote(dir.path(), &found).unwrap();
        let steps: Vec<u64> = (0..2)
            .map(|g| step_of(&generation_path(dir.path(), g)))
            .collect();
        assert_eq!(steps, [2, 1]);
        assert!(!generation_path(dir.path(), 2).exists());
    }

    #[test]
    fn no_usable_checkpoint_is_an_error_naming_each() {
        let dir = tempfile::tempdir().unwrap();
        let err = newest_good(dir.path()).unwrap_err().to_string();
        assert!(
            err.contains("checkpoint.safetensors does not exist"),
            "{err}"
        );
        fs::write(newest_path(dir.path()), b"x").unwrap();
        let err = newest_good(dir.path()).unwrap_err().to_string();
        assert!(
            err.contains("checkpoint.safetensors: not a valid safetensors file")
                && err.contains("--overwrite"),
            "{err}"
        );
    }

    #[test]
    fn checkpoint_names_of_every_generation_are_recognized() {
        for name in [
            "checkpoint.safetensors",
            "checkpoint.1.safetensors",
            "checkpoint.12.safetensors",
            "checkpoint.safetensors.rejected",
        ] {
            assert!(is_checkpoint_file(name), "{name}");
        }
        for name in [
            "checkpoint.x.safetensors",
            "checkpoint..safetensors",
            "checkpoint.0.safetensors",
            "model.safetensors",
            ".checkpoint.safetensors.tmp.1.0",
        ] {
            assert!(!is_checkpoint_file(name), "{name}");
        }
    }
}
