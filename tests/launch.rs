//! `calib train` as a group of processes started the way `torchrun` starts them (RANK,
//! WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT), here two processes on loopback on
//! the reference backend: they train exactly as `--replicas 2` threads do, rank 0 alone
//! writes, and a group that cannot form or loses a member fails with a clear error.

mod support;

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};
use support::train::{ok, stderr};

/// The launcher's variables; any the test process inherited are removed first.
const LAUNCH_VARS: [&str; 7] = [
    "RANK",
    "WORLD_SIZE",
    "LOCAL_RANK",
    "MASTER_ADDR",
    "MASTER_PORT",
    "CALIB_RENDEZVOUS_PORT",
    "TORCHELASTIC_USE_AGENT_STORE",
];

/// The quick settings of `support::train`, and one metrics line per step.
const QUICK: [&str; 10] = [
    "--batch",
    "32",
    "--train-limit",
    "256",
    "--test-limit",
    "200",
    "--eval-batch",
    "100",
    "--log-every",
    "1",
];

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `calib train ARGS` as a rank started by a launcher, with `vars` as its environment.
fn spawn(vars: &[(&str, String)], args: &[&str]) -> Child {
    let mut command = Command::new(env!("CARGO_BIN_EXE_calib"));
    command
        .arg("train")
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for var in LAUNCH_VARS {
        command.env_remove(var);
    }
    for (name, value) in vars {
        command.env(name, value);
    }
    command.spawn().expect("calib starts")
}

/// Rank `rank` of `world` meeting at `port` on loopback.
fn rank_vars(rank: usize, world: usize, port: u16) -> Vec<(&'static str, String)> {
    vec![
        ("RANK", rank.to_string()),
        ("WORLD_SIZE", world.to_string()),
        ("LOCAL_RANK", rank.to_string()),
        ("MASTER_ADDR", "127.0.0.1".into()),
        ("MASTER_PORT", port.to_string()),
    ]
}

/// Waits for `child`; a process still running after `limit` is killed and the test
/// fails (the property under test is that nothing hangs, not how fast it ends).
fn finish(mut child: Child, limit: Duration) -> Output {
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > limit {
            child.kill().unwrap();
            let o = child.wait_with_output().unwrap();
            panic!("calib hung; killed after {limit:?}: {}", stderr(&o));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().unwrap()
}

const LIMIT: Duration = Duration::from_secs(300);

/// Runs every rank of a group of `outs.len()` processes, rank `r` with `--out outs[r]`
/// (or `--resume` when `resume`) and `extra`; all must succeed.
fn group(outs: &[&Path], resume: bool, extra: &[&str]) {
    // `free_port` only finds a port that was free: another process may take it before
    // rank 0 listens (the group then fails before any rank trains), so a taken port
    // is retried with a new one.
    for attempt in 1..=3 {
        let port = free_port();
        let children: Vec<Child> = outs
            .iter()
            .enumerate()
            .map(|(rank, out)| {
                let flag = if resume { "--resume" } else { "--out" };
                let mut args = vec![flag, out.to_str().unwrap()];
                if !resume {
                    args.extend(QUICK);
                }
                args.extend(extra);
                spawn(&rank_vars(rank, outs.len(), port), &args)
            })
            .collect();
        let outputs: Vec<Output> = children.into_iter().map(|c| finish(c, LIMIT)).collect();
        let taken = outputs[0].status.code() != Some(0)
            && stderr(&outputs[0]).contains("cannot listen on port");
        if taken && attempt < 3 {
            continue;
        }
        for (rank, o) in outputs.iter().enumerate() {
            assert!(o.status.success(), "rank {rank}: {}", stderr(o));
        }
        return;
    }
}

/// The metrics lines without their timings.
fn metrics(run: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            let mut v: serde_json::Value = serde_json::from_str(l).unwrap();
            let fields = v.as_object_mut().unwrap();
            fields.remove("images_per_second");
            fields.remove("data_wait_seconds");
            v
        })
        .collect()
}

/// The same model, checkpoint and metrics lines after step `after`.
fn assert_same_run(processes: &Path, threads: &Path, after: u64) {
    for file in ["model.safetensors", "checkpoint.safetensors"] {
        let a = std::fs::read(processes.join(file)).unwrap();
        let b = std::fs::read(threads.join(file)).unwrap();
        assert!(
            a == b,
            "{file}: the processes' run differs from the threads'"
        );
    }
    let later = |run: &Path| -> Vec<serde_json::Value> {
        metrics(run)
            .into_iter()
            .filter(|v| v["step"].as_u64().unwrap() > after)
            .collect()
    };
    let lines = later(processes);
    assert!(!lines.is_empty());
    assert_eq!(lines, later(threads));
}

#[test]
fn two_processes_train_exactly_as_two_threads() {
    let dir = tempfile::tempdir().unwrap();
    let (zero, one, threads) = (
        dir.path().join("rank0"),
        dir.path().join("rank1"),
        dir.path().join("threads"),
    );
    group(&[&zero, &one], false, &["--max-steps", "3"]);
    ok(
        &threads,
        &[&QUICK[..], &["--max-steps", "3", "--replicas", "2"]].concat(),
    );
    assert_same_run(&zero, &threads, 0);
    assert!(!one.exists(), "only rank 0 writes a run directory");
    // The run records its group size, so it resumes as two replicas.
    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(zero.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["replicas"], 2);
}

#[test]
fn synchronized_batchnorm_across_processes_matches_the_threads() {
    let dir = tempfile::tempdir().unwrap();
    let (zero, one, threads) = (
        dir.path().join("rank0"),
        dir.path().join("rank1"),
        dir.path().join("threads"),
    );
    let extra = ["--max-steps", "2", "--sync-bn"];
    group(&[&zero, &one], false, &extra);
    ok(
        &threads,
        &[&QUICK[..], &extra, &["--replicas", "2"]].concat(),
    );
    assert_same_run(&zero, &threads, 0);
}

#[test]
fn a_group_resumes_from_rank_0s_directory_alone() {
    let dir = tempfile::tempdir().unwrap();
    let (zero, threads) = (dir.path().join("rank0"), dir.path().join("threads"));
    // Rank 1 is given a directory that does not exist: it reads nothing of its own.
    let nowhere = dir.path().join("not-on-this-machine");
    group(&[&zero, &nowhere], false, &["--max-steps", "2"]);
    group(&[&zero, &nowhere], true, &["--max-steps", "5"]);
    ok(
        &threads,
        &[&QUICK[..], &["--max-steps", "5", "--replicas", "2"]].concat(),
    );
    // A resumed run drops the lines its interrupted part marked (as one process does).
    assert_same_run(&zero, &threads, 2);
    assert!(!nowhere.exists());
}

#[test]
fn a_rank_that_never_arrives_is_named_within_the_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let out = dir.path().join("run");
    let child = spawn(
        &rank_vars(0, 2, port),
        &["--out", out.to_str().unwrap(), "--rendezvous-timeout", "2"],
    );
    let o = finish(child, LIMIT);
    let err = stderr(&o);
    assert!(!o.status.success());
    assert!(
        err.contains("rank(s) 1 of 2 did not join") && err.contains(&format!(":{port}")),
        "{err}"
    );
    assert!(
        !out.exists(),
        "a group that never formed leaves no run directory"
    );

    // And the other way round: rank 1 alone names the address it could not reach.
    let child = spawn(
        &rank_vars(1, 2, port),
        &["--out", out.to_str().unwrap(), "--rendezvous-timeout", "2"],
    );
    let o = finish(child, LIMIT);
    let err = stderr(&o);
    assert!(!o.status.success());
    assert!(
        err.contains("rank 1 could not reach rank 0") && err.contains(&format!("127.0.0.1:{port}")),
        "{err}"
    );
}

#[test]
fn a_rank_that_dies_mid_run_stops_the_others_with_its_name() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let zero = dir.path().join("rank0");
    let long = ["--epochs", "100"];
    let args = |out: &Path| -> Vec<String> {
        [&["--out", out.to_str().unwrap()], &QUICK[..], &long[..]]
            .concat()
            .into_iter()
            .map(String::from)
            .collect()
    };
    let (a0, a1) = (args(&zero), args(&dir.path().join("rank1")));
    let rank0 = spawn(
        &rank_vars(0, 2, port),
        &a0.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    let mut rank1 = spawn(
        &rank_vars(1, 2, port),
        &a1.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    // Training is under way once rank 0 has logged a step.
    let start = Instant::now();
    while !std::fs::read_to_string(zero.join("metrics.jsonl")).is_ok_and(|m| m.contains("\"step\""))
    {
        assert!(start.elapsed() < LIMIT, "rank 0 logged no step");
        std::thread::sleep(Duration::from_millis(50));
    }
    rank1.kill().unwrap();
    rank1.wait().unwrap();
    let o = finish(rank0, LIMIT);
    let err = stderr(&o);
    assert!(!o.status.success());
    assert!(err.contains("replica 1 left the group"), "{err}");
}

#[test]
fn bad_launcher_environments_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let out = out.to_str().unwrap();
    let mut rank_too_high = rank_vars(0, 2, 29500);
    rank_too_high[0].1 = "2".into();
    let mut port_not_a_number = rank_vars(0, 2, 29500);
    port_not_a_number[4].1 = "twenty".into();
    let without_addr: Vec<_> = rank_vars(0, 2, 29500)
        .into_iter()
        .filter(|(n, _)| *n != "MASTER_ADDR")
        .collect();
    let cases = [
        (rank_too_high, &[][..], "RANK=2 is not below WORLD_SIZE=2"),
        (
            port_not_a_number,
            &[][..],
            "MASTER_PORT=`twenty` is not a TCP port",
        ),
        (without_addr, &[][..], "MASTER_ADDR is not"),
        (
            rank_vars(0, 2, 29500),
            &["--replicas", "2"][..],
            "--replicas 2 with a launcher's WORLD_SIZE=2",
        ),
    ];
    for (vars, extra, expected) in cases {
        let o = finish(spawn(&vars, &[&["--out", out][..], extra].concat()), LIMIT);
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(2), "{vars:?}: {err}");
        assert!(err.contains(expected), "{vars:?}: {err}");
    }
    assert!(!dir.path().join("run").exists());
}

/// On an image folder each rank decodes only its own shard of every batch, yet the
/// group reports what `--replicas 2` threads do, digests and unreadable files included:
/// one training file is garbage, so a slot of one rank's shard is filled by the next
/// readable image there and counted.
#[test]
fn ranks_decode_only_their_shards_of_an_image_folder_as_the_threads_do() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    support::images::make_folder(&data, 4, 8, 2);
    std::fs::write(data.join("train/class_01/img_003.jpg"), b"not a jpeg").unwrap();
    let data_arg = format!("imagefolder:{}", data.display());
    let (zero, one, threads) = (
        dir.path().join("rank0"),
        dir.path().join("rank1"),
        dir.path().join("threads"),
    );
    // One epoch of 4 steps: every training file is read once, by one rank.
    let args = |out: &Path| -> Vec<String> {
        let mut a: Vec<String> = ["--out", out.to_str().unwrap(), "--data", &data_arg]
            .iter()
            .map(|s| s.to_string())
            .collect();
        for s in [
            "--image-size",
            "16",
            "--batch",
            "8",
            "--epochs",
            "1",
            "--eval-batch",
            "8",
            "--log-every",
            "1",
            "--loader-workers",
            "1",
        ] {
            a.push(s.into());
        }
        a
    };
    let port = free_port();
    let children: Vec<Child> = [&zero, &one]
        .iter()
        .enumerate()
        .map(|(rank, out)| {
            let a = args(out);
            let a: Vec<&str> = a.iter().map(String::as_str).collect();
            spawn(&rank_vars(rank, 2, port), &a)
        })
        .collect();
    for (rank, child) in children.into_iter().enumerate() {
        let o = finish(child, LIMIT);
        assert!(o.status.success(), "rank {rank}: {}", stderr(&o));
    }
    let a = args(&threads);
    let mut a: Vec<&str> = a.iter().map(String::as_str).collect();
    a.extend(["--replicas", "2"]);
    let mut all = vec!["train"];
    all.extend(a);
    let o = support::calib(&all);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_same_run(&zero, &threads, 0);
    let last = metrics(&zero)
        .into_iter()
        .rev()
        .find(|l| l.get("batch_digest").is_some())
        .unwrap();
    assert_eq!(last["skipped_images"], 1, "{last}");
}
