//! `calib train` end to end on a slice of Fashion-MNIST: it learns, writes its files,
//! and a resumed run is bit-identical to an uninterrupted one.

mod support;

use std::path::Path;
use std::process::Output;
use support::calib;

fn train(out: &Path, extra: &[&str]) -> Output {
    support::train::ok(out, extra)
}

#[test]
fn resumed_run_is_bit_identical_to_an_uninterrupted_one() {
    let dir = tempfile::tempdir().unwrap();
    let (whole, parts) = (dir.path().join("whole"), dir.path().join("parts"));
    // 2 epochs of 8 steps; the interrupted run stops mid-epoch at step 5.
    train(&whole, &["--epochs", "2"]);
    train(&parts, &["--epochs", "2", "--max-steps", "5"]);
    let o = calib(&["train", "--resume", parts.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    for file in ["model.safetensors", "checkpoint.safetensors"] {
        let a = std::fs::read(whole.join(file)).unwrap();
        let b = std::fs::read(parts.join(file)).unwrap();
        assert!(a == b, "{file} differs after resume");
    }
    // The resumed log reads as one run: the same evaluations, and no interruption lines.
    let evals = |p: &Path| -> Vec<serde_json::Value> {
        std::fs::read_to_string(p.join("metrics.jsonl"))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .inspect(|v| assert!(v.get("interrupted").is_none(), "{v}"))
            .filter(|v| v.get("test_accuracy").is_some())
            .collect()
    };
    assert_eq!(evals(&whole), evals(&parts));
    assert_eq!(evals(&whole).len(), 2);
}

#[test]
fn training_writes_metrics_and_checkpoints_and_lowers_the_loss() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    train(&out, &["--epochs", "4", "--no-augment"]);
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(out.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    for l in &lines {
        assert!(
            l["epoch"].is_u64() && l["step"].is_u64() && l["loss"].is_f64(),
            "{l}"
        );
    }
    let evals: Vec<&serde_json::Value> = lines
        .iter()
        .filter(|l| l.get("test_accuracy").is_some())
        .collect();
    assert_eq!(evals.len(), 4, "one evaluation per epoch");
    let train_losses: Vec<f64> = lines
        .iter()
        .filter(|l| l.get("test_accuracy").is_none())
        .map(|l| l["loss"].as_f64().unwrap())
        .collect();
    let (first, last) = (train_losses[0], train_losses[train_losses.len() - 1]);
    assert!(last < first - 0.3, "loss did not fall: {train_losses:?}");
    assert!(
        evals[3]["test_accuracy"].as_f64().unwrap() > 0.4,
        "{}",
        evals[3]
    );
    for f in ["config.json", "checkpoint.safetensors", "model.safetensors"] {
        assert!(out.join(f).exists(), "{f} missing");
    }
    // The model file is a state_dict that `calib verify`-style loading accepts by name.
    let state = calib::runtime::weights::load(out.join("model.safetensors")).unwrap();
    assert!(state.contains_key("layer1.0.scconv.k2.1.weight") && state.contains_key("fc.bias"));
    assert!(!out.join("checkpoint.safetensors.tmp").exists());
}

#[test]
fn resume_without_a_checkpoint_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let o = calib(&["train", "--resume", dir.path().to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("config.json"));
}

#[test]
fn a_model_for_three_channels_is_refused() {
    let o = calib(&["train", "--model", "scnet50", "--max-steps", "1"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("input channels"));
}

#[test]
fn a_data_parallel_run_resumes_bit_identically() {
    let dir = tempfile::tempdir().unwrap();
    let (whole, parts) = (dir.path().join("whole"), dir.path().join("parts"));
    train(&whole, &["--epochs", "1", "--replicas", "2"]);
    train(
        &parts,
        &["--epochs", "1", "--replicas", "2", "--max-steps", "3"],
    );
    let o = calib(&["train", "--resume", parts.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    for file in ["model.safetensors", "checkpoint.safetensors"] {
        let a = std::fs::read(whole.join(file)).unwrap();
        let b = std::fs::read(parts.join(file)).unwrap();
        assert!(a == b, "{file} differs after resume");
    }
}

/// Every tensor of a run's checkpoint (state, momentum, counters).
fn checkpoint(run: &Path) -> calib::runtime::TensorMap {
    calib::runtime::weights::load(run.join("checkpoint.safetensors")).unwrap()
}

#[test]
fn synchronized_replicas_take_the_step_of_one_process() {
    let dir = tempfile::tempdir().unwrap();
    let (one, four) = (dir.path().join("one"), dir.path().join("four"));
    let step = ["--max-steps", "1", "--no-augment"];
    train(&one, &step);
    train(
        &four,
        &[&step[..], &["--replicas", "4", "--sync-bn"]].concat(),
    );
    let (want, got) = (checkpoint(&one), checkpoint(&four));
    assert_eq!(want.len(), got.len());
    for (name, w) in &want {
        // Two f32 computations of the same step that sum in different orders (per-shard
        // statistics and gradients, then their means): rounding differences only. A
        // real difference (per-shard BatchNorm, a gradient not averaged) is 1e-2 or more.
        let scale = w.max_abs().max(1e-30);
        let err = got[name].max_abs_diff(w).unwrap() / scale;
        assert!(err < 1e-4, "{name}: relative difference {err:e}");
    }
}

#[test]
fn a_batch_that_does_not_split_across_the_replicas_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let o = support::train::run(&out, &["--replicas", "3"]);
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("--batch 32 does not split evenly across --replicas 3"),
        "{err}"
    );
}

/// `calib train` hands each step the next batch before waiting for its results
/// (`Session::step_and_stage`); with `CALIB_STAGE_BATCHES=0` it binds each batch at its
/// own step, the old path. Both give the same bits: model, checkpoint, every metrics line
/// but its timings. Here on the reference backend, with two replicas for the threads'
/// shards too.
#[test]
fn staging_the_next_batch_changes_no_bit() {
    let dir = tempfile::tempdir().unwrap();
    for replicas in ["1", "2"] {
        let (staged, unstaged) = (
            dir.path().join(format!("staged{replicas}")),
            dir.path().join(format!("unstaged{replicas}")),
        );
        let extra = [
            "--max-steps",
            "3",
            "--replicas",
            replicas,
            "--log-every",
            "1",
        ];
        train(&staged, &extra);
        let mut args = vec!["train", "--out", unstaged.to_str().unwrap()];
        args.extend([
            "--batch",
            "32",
            "--train-limit",
            "256",
            "--test-limit",
            "200",
        ]);
        args.extend(["--eval-batch", "100"]);
        args.extend(extra);
        let o = std::process::Command::new(env!("CARGO_BIN_EXE_calib"))
            .args(&args)
            .env("CALIB_STAGE_BATCHES", "0")
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        for file in ["model.safetensors", "checkpoint.safetensors"] {
            let a = std::fs::read(staged.join(file)).unwrap();
            let b = std::fs::read(unstaged.join(file)).unwrap();
            assert!(a == b, "{file} differs with staging (replicas {replicas})");
        }
        let lines = |run: &Path| -> Vec<serde_json::Value> {
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
        };
        let (a, b) = (lines(&staged), lines(&unstaged));
        assert_eq!(a.len(), 4, "three step lines and an evaluation: {a:?}");
        assert_eq!(a, b, "replicas {replicas}");
    }
}
