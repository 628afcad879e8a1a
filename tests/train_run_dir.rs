//! `calib train`'s run directory: one trainer at a time, no run overwritten by
//! accident, no empty directory left by a failed start, nothing changed by resuming a
//! finished run, no temporary files left from interrupted writes.

mod support;

use calib::train::LOCK_FILE;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use support::train::{files, ok, resume, run, snapshot, stderr};

fn assert_refused(o: &std::process::Output, needles: &[&str]) {
    let err = stderr(o);
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(o.status.code(), Some(2), "{err}");
    for needle in needles {
        assert!(err.contains(needle), "expected `{needle}` in: {err}");
    }
}

#[test]
fn a_new_run_into_a_run_directory_is_refused_unless_overwrite() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    ok(&out, &["--max-steps", "1"]);
    let before = snapshot(&out);
    let o = run(&out, &["--max-steps", "2"]);
    assert_refused(&o, &["already holds a run", "--resume", "--overwrite"]);
    assert_eq!(
        snapshot(&out),
        before,
        "a refused run changed the directory"
    );

    ok(&out, &["--max-steps", "2", "--overwrite"]);
    let metrics = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
    assert!(metrics.contains("\"step\":2"), "{metrics}");
    let o = run(&out, &["--overwrite", "--resume", out.to_str().unwrap()]);
    assert_refused(&o, &["--overwrite", "--resume"]);
}

/// A child process killed when the test is done with it, or fails.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Waits until `lock` names `pid`, or `child` exits.
fn wait_for_lock(lock: &Path, pid: u32, child: &mut Child) {
    let start = Instant::now();
    while std::fs::read_to_string(lock).map_or(true, |t| t.trim() != pid.to_string()) {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("the first trainer exited ({status}) before its lock was seen");
        }
        assert!(start.elapsed() < Duration::from_secs(120), "no lock");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_second_trainer_is_refused_naming_the_first_and_a_dead_ones_lock_is_taken_over() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let lock = out.join(LOCK_FILE);
    // A first trainer that would run for a long time.
    let mut first = Killed(
        Command::new(env!("CARGO_BIN_EXE_calib"))
            .args(["train", "--batch", "32", "--train-limit", "64", "--epochs"])
            .args(["100000", "--out", out.to_str().unwrap()])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let pid = first.0.id();
    wait_for_lock(&lock, pid, &mut first.0);

    let o = run(&out, &["--overwrite", "--max-steps", "1"]);
    let holder = format!("pid {pid}");
    drop(first);
    assert_refused(&o, &["in use by another trainer", &holder]);

    // Killed, it could not remove its lock file; the next trainer takes it over.
    assert!(lock.exists(), "the killed trainer's lock file is gone");
    let o = ok(&out, &["--overwrite", "--max-steps", "1"]);
    assert!(
        stderr(&o).contains(&format!(
            "taking over the lock of {}: {holder}",
            out.display()
        )),
        "{}",
        stderr(&o)
    );
    assert!(!lock.exists(), "the lock file outlived its trainer");
}

#[test]
fn a_start_that_fails_leaves_no_directory_behind() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("no-data");
    std::fs::create_dir(&empty).unwrap();
    let out = dir.path().join("runs").join("a");
    let o = run(&out, &["--data-dir", empty.to_str().unwrap()]);
    assert_refused(&o, &["Fashion-MNIST not found"]);
    assert!(
        !dir.path().join("runs").exists(),
        "an empty run directory was left"
    );
}

#[test]
fn an_out_that_cannot_be_written_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("file");
    std::fs::write(&file, "not a directory").unwrap();
    let out = file.join("run");
    assert_refused(&run(&out, &[]), &[out.to_str().unwrap()]);

    let read_only = dir.path().join("read-only");
    std::fs::create_dir(&read_only).unwrap();
    let mut permissions = std::fs::metadata(&read_only).unwrap().permissions();
    permissions.set_readonly(true);
    std::fs::set_permissions(&read_only, permissions).unwrap();
    if std::fs::write(read_only.join("probe"), "").is_ok() {
        eprintln!("skipping the read-only directory: this user writes into one anyway");
        return;
    }
    // Into it, and the directory itself.
    let inside = read_only.join("run");
    assert_refused(&run(&inside, &[]), &[inside.to_str().unwrap()]);
    assert_refused(
        &run(&read_only, &[]),
        &["not writable", read_only.to_str().unwrap()],
    );
}

#[test]
fn resuming_a_finished_run_says_so_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    // Stopped mid-epoch by --max-steps: its last lines are marked interrupted.
    let stopped = dir.path().join("stopped");
    ok(&stopped, &["--max-steps", "3"]);
    // At the end of its epochs: 64 images are two steps.
    let done = dir.path().join("done");
    ok(&done, &["--train-limit", "64", "--epochs", "1"]);
    let cases: [(&Path, &[&str], &str); 3] = [
        (
            &stopped,
            &["--max-steps", "3"],
            "--max-steps 3 asks for no more",
        ),
        (&done, &[], "the end of its 1 epochs"),
        (&done, &["--max-steps", "5"], "the end of its 1 epochs"),
    ];
    for (run, extra, why) in cases {
        let before = snapshot(run);
        let o = resume(run, extra);
        assert!(o.status.success(), "{}", stderr(&o));
        assert!(
            stderr(&o).contains("is already at step") && stderr(&o).contains(why),
            "{}",
            stderr(&o)
        );
        assert_eq!(snapshot(run), before, "{extra:?} changed {}", run.display());
    }
}

#[test]
fn temporary_files_of_interrupted_writes_are_removed_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    ok(&out, &["--train-limit", "64", "--max-steps", "1"]);
    let stale = [
        ".checkpoint.safetensors.tmp.4194303.0",
        ".checkpoint.1.safetensors.tmp.4194303.link",
        ".metrics.jsonl.tmp.4194303.7",
    ];
    for name in stale {
        std::fs::write(out.join(name), "interrupted").unwrap();
    }
    let o = resume(&out, &["--max-steps", "2"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("removed 3 temporary file(s)"),
        "{}",
        stderr(&o)
    );
    let left: Vec<String> = files(&out)
        .into_iter()
        .filter(|f| f.contains(".tmp"))
        .collect();
    assert_eq!(left, Vec::<String>::new());
}
