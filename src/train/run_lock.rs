//! One trainer per run directory: `train.lock` holds the owner's pid under an exclusive
//! advisory lock (`flock`). The operating system releases the lock when its holder
//! exits, however it exits, so a lock file left by a killed trainer is taken over by
//! the next one (which says so) instead of blocking the directory forever.

use anyhow::{bail, Context, Result};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// The lock file's name inside a run directory.
pub const LOCK_FILE: &str = "train.lock";

/// The held lock of a run directory; released (and its file removed) when dropped.
#[derive(Debug)]
pub struct RunLock {
    /// Held open for as long as the lock is: closing it releases the lock.
    _file: File,
    path: PathBuf,
}

impl RunLock {
    /// Takes the lock of `dir`, or says which process holds it.
    pub fn acquire(dir: &Path) -> Result<Self> {
        let path = dir.join(LOCK_FILE);
        // A holder that exits between our open and our lock removes the file we opened;
        // locking that orphan would let a third trainer in beside us, so look again.
        for _ in 0..8 {
            let mut file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(&path)
                .with_context(|| {
                    format!(
                        "run directory {} is not writable: cannot create {}",
                        dir.display(),
                        path.display()
                    )
                })?;
            match try_lock(&file) {
                Ok(true) => {}
                Ok(false) => {
                    let holder = read_pid(&mut file)
                        .map_or("an unknown process".into(), |pid| format!("pid {pid}"));
                    bail!(
                        "run directory {} is in use by another trainer ({holder}, holding {}); \
                         wait for it to finish or stop it",
                        dir.display(),
                        path.display()
                    );
                }
                Err(e) => return Err(e).with_context(|| format!("locking {}", path.display())),
            }
            if !same_file(&file, &path) {
                continue;
            }
            if let Some(pid) = read_pid(&mut file) {
                eprintln!(
                    "taking over the lock of {}: pid {pid} left it behind and no longer holds it",
                    dir.display()
                );
            }
            write_pid(&mut file).with_context(|| format!("writing {}", path.display()))?;
            return Ok(RunLock { _file: file, path });
        }
        bail!(
            "could not lock {}: its lock file keeps being replaced",
            path.display()
        )
    }
}

impl Drop for RunLock {
    fn drop(&mut self) {
        // Removed while still locked (closing `_file` after this unlocks it), so no one
        // can lock this file in between; a trainer that opened it just before finds it
        // gone and looks again (`same_file`).
        let _ = fs::remove_file(&self.path);
    }
}

/// Takes `file`'s exclusive lock if no one holds it: `Ok(false)` when someone does. The
/// lock lasts until the file is closed. (`File::try_lock` would do, from Rust 1.89 on;
/// the workspace supports 1.85.)
#[cfg(unix)]
fn try_lock(file: &File) -> io::Result<bool> {
    use std::os::unix::io::AsRawFd;
    // SAFETY: flock(2) only operates on the descriptor, which `file` keeps open.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
        return Ok(true);
    }
    match io::Error::last_os_error() {
        e if e.kind() == io::ErrorKind::WouldBlock => Ok(false),
        e => Err(e),
    }
}

/// Without flock(2) trainers are not kept apart: the lock file only records the pid.
#[cfg(not(unix))]
fn try_lock(_: &File) -> io::Result<bool> {
    Ok(true)
}

/// The pid recorded in a lock file, if it holds one.
fn read_pid(file: &mut File) -> Option<u32> {
    let mut text = String::new();
    file.seek(SeekFrom::Start(0)).ok()?;
    file.read_to_string(&mut text).ok()?;
    text.trim().parse().ok()
}

fn write_pid(file: &mut File) -> std::io::Result<()> {
    file.set_len(0)?;
    file.seek(SeekFrom::Start(0))?;
    writeln!(file, "{}", std::process::id())?;
    file.sync_all()
}

/// Whether `path` still names the file `file` has open.
#[cfg(unix)]
fn same_file(file: &File, path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (file.metadata(), fs::metadata(path)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

#[cfg(not(unix))]
fn same_file(_: &File, path: &Path) -> bool {
    path.exists()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_is_refused_with_the_holders_pid_and_released_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let lock = RunLock::acquire(dir.path()).unwrap();
        let err = RunLock::acquire(dir.path()).unwrap_err().to_string();
        assert!(
            err.contains("in use by another trainer")
                && err.contains(&format!("pid {}", std::process::id())),
            "{err}"
        );
        drop(lock);
        assert!(!dir.path().join(LOCK_FILE).exists());
        RunLock::acquire(dir.path()).unwrap();
    }

    #[test]
    fn a_lock_file_nobody_holds_is_taken_over() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(LOCK_FILE), "4194999\n").unwrap();
        let _lock = RunLock::acquire(dir.path()).unwrap();
        let pid = fs::read_to_string(dir.path().join(LOCK_FILE)).unwrap();
        assert_eq!(pid.trim(), std::process::id().to_string());
    }
}
