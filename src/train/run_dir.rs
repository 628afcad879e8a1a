//! A run directory as the trainer holds it: locked against a second trainer, never a
//! run overwritten by accident, no empty directory left by a start that failed, and no
//! temporary files of interrupted writes piling up.

use super::generations::is_checkpoint_file;
use super::run_lock::RunLock;
use anyhow::{bail, Context, Result};
use std::fs;
use std::path::{Path, PathBuf};

/// The files a run writes besides its checkpoints.
const RUN_FILES: &[&str] = &["config.json", "metrics.jsonl", "model.safetensors"];

/// A run directory this process holds the lock of.
#[derive(Debug)]
pub struct RunDir {
    path: PathBuf,
    lock: Option<RunLock>,
    /// Directories made for this run, innermost first: removed again, if still empty,
    /// when the run is abandoned.
    created: Vec<PathBuf>,
}

impl RunDir {
    /// The directory of a new run at `path`, created if missing. One that already holds
    /// a run (a `config.json` or a checkpoint) is refused unless `overwrite`, in which
    /// case that run's files are removed (other files are left alone).
    pub fn create(path: &Path, overwrite: bool) -> Result<Self> {
        if path.exists() && !path.is_dir() {
            bail!("--out {} exists and is not a directory", path.display());
        }
        let created: Vec<PathBuf> = path
            .ancestors()
            .take_while(|p| !p.as_os_str().is_empty() && !p.exists())
            .map(Path::to_path_buf)
            .collect();
        fs::create_dir_all(path)
            .with_context(|| format!("cannot create the run directory {}", path.display()))?;
        let mut run = RunDir {
            path: path.to_path_buf(),
            lock: None,
            created,
        };
        let locked = RunLock::acquire(path).map(|lock| run.lock = Some(lock));
        if let Err(e) = locked.and_then(|()| run.claim(overwrite)) {
            run.abandon();
            return Err(e);
        }
        Ok(run)
    }

    /// The directory of an existing run, to continue it.
    pub fn open(path: &Path) -> Result<Self> {
        if !path.is_dir() {
            bail!("cannot resume from {}: not a directory", path.display());
        }
        Ok(RunDir {
            path: path.to_path_buf(),
            lock: Some(RunLock::acquire(path)?),
            created: vec![],
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Refuses a directory holding a run unless `overwrite`, then clears that run.
    fn claim(&self, overwrite: bool) -> Result<()> {
        let found = self.run_files()?;
        if found.is_empty() {
            return Ok(());
        }
        if !overwrite {
            bail!(
                "{} already holds a run ({}): continue it with --resume {}, or replace it \
                 with --overwrite",
                self.path.display(),
                found.join(", "),
                self.path.display()
            );
        }
        for name in found {
            let file = self.path.join(&name);
            fs::remove_file(&file).with_context(|| format!("removing {}", file.display()))?;
        }
        Ok(())
    }

    /// The names of the run files (config, metrics, model, checkpoints) present, sorted.
    fn run_files(&self) -> Result<Vec<String>> {
        let mut found: Vec<String> = self
            .file_names()?
            .into_iter()
            .filter(|n| RUN_FILES.contains(&n.as_str()) || is_checkpoint_file(n))
            .collect();
        found.sort();
        Ok(found)
    }

    fn file_names(&self) -> Result<Vec<String>> {
        let entries =
            fs::read_dir(&self.path).with_context(|| format!("reading {}", self.path.display()))?;
        Ok(entries
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .collect())
    }

    /// Removes the temporary files of writes that were interrupted (`.<name>.tmp.<pid>...`
    /// of `write_atomic`; `metrics.jsonl.tmp` of older versions). Safe only under the
    /// lock: no one else writes here. Returns how many were removed.
    pub fn remove_stale_temporaries(&self) -> Result<usize> {
        let stale: Vec<String> = self
            .file_names()?
            .into_iter()
            .filter(|n| (n.starts_with('.') && n.contains(".tmp.")) || n == "metrics.jsonl.tmp")
            .collect();
        for name in &stale {
            let file = self.path.join(name);
            fs::remove_file(&file).with_context(|| format!("removing {}", file.display()))?;
        }
        Ok(stale.len())
    }

    /// Gives the directory up after a failure: releases the lock and removes the
    /// directories this run created if nothing was written into them.
    pub fn abandon(mut self) {
        self.lock = None;
        for dir in &self.created {
            // `remove_dir` refuses a directory that is not empty: what was written stays.
            if fs::remove_dir(dir).is_err() {
                break;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_abandoned_start_leaves_no_directory_it_made() {
        let root = tempfile::tempdir().unwrap();
        let path = root.path().join("runs").join("a");
        RunDir::create(&path, false).unwrap().abandon();
        assert!(!root.path().join("runs").exists());
    }

    #[test]
    fn an_abandoned_run_keeps_what_it_wrote() {
        let root = tempfile::tempdir().unwrap();
        let path = root.path().join("a");
        let run = RunDir::create(&path, false).unwrap();
        fs::write(path.join("config.json"), "{}").unwrap();
        run.abandon();
        assert!(path.join("config.json").exists());
        assert!(!path.join(super::super::run_lock::LOCK_FILE).exists());
    }

    #[test]
    fn an_existing_run_is_refused_unless_overwritten() {
        let root = tempfile::tempdir().unwrap();
        let path = root.path().join("a");
        fs::create_dir(&path).unwrap();
        for f in ["config.json", "checkpoint.1.safetensors", "notes.txt"] {
            fs::write(path.join(f), "x").unwrap();
        }
        let err = RunDir::create(&path, false).unwrap_err().to_string();
        assert!(
            err.contains("already holds a run (checkpoint.1.safetensors, config.json)")
                && err.contains("--resume")
                && err.contains("--overwrite"),
            "{err}"
        );
        assert!(
            path.join("config.json").exists(),
            "a refused start removed files"
        );
        let run = RunDir::create(&path, true).unwrap();
        assert!(run.run_files().unwrap().is_empty());
        assert!(
            path.join("notes.txt").exists(),
            "--overwrite removed a file not of the run"
        );
    }

    #[test]
    fn stale_temporaries_are_removed_and_nothing_else() {
        let root = tempfile::tempdir().unwrap();
        let run = RunDir::create(root.path(), false).unwrap();
        for f in [
            ".checkpoint.safetensors.tmp.123.0",
            "metrics.jsonl.tmp",
            "metrics.jsonl",
            "tmp.txt",
        ] {
            fs::write(root.path().join(f), "x").unwrap();
        }
        assert_eq!(run.remove_stale_temporaries().unwrap(), 2);
        assert!(root.path().join("metrics.jsonl").exists() && root.path().join("tmp.txt").exists());
    }
}
