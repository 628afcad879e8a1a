//! An image-folder run killed with SIGKILL just after a mid-epoch checkpoint, then
//! resumed, trains on exactly the batches an uninterrupted run does: the same samples
//! in the same order with the same crops and flips (each metrics line's
//! `batch_digest`), and the same model.

mod support;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use support::images::make_folder;
use support::train::{stderr, step_of};

/// 4 classes of 12 images, batches of 8: 6 steps an epoch, 3 epochs.
const STEPS_PER_EPOCH: i64 = 6;

fn args<'a>(data: &'a str, out: &'a str) -> Vec<&'a str> {
    vec![
        "train",
        "--data",
        data,
        "--image-size",
        "24",
        "--batch",
        "8",
        "--epochs",
        "3",
        "--eval-batch",
        "16",
        "--log-every",
        "1",
        "--checkpoint-every",
        "1",
        "--keep-checkpoints",
        "1",
        "--loader-workers",
        "2",
        "--out",
        out,
    ]
}

/// Each step's metrics line: step, batch digest and loss.
fn steps(run: &Path) -> Vec<(u64, String, f64)> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v.get("batch_digest").is_some())
        .map(|v| {
            (
                v["step"].as_u64().unwrap(),
                v["batch_digest"].as_str().unwrap().to_string(),
                v["loss"].as_f64().unwrap(),
            )
        })
        .collect()
}

#[test]
fn a_run_killed_mid_epoch_resumes_with_the_same_batches() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    make_folder(&data, 4, 12, 2);
    let data = format!("imagefolder:{}", data.display());
    let (whole, killed) = (tmp.path().join("whole"), tmp.path().join("killed"));

    let o = support::calib(&args(&data, whole.to_str().unwrap()));
    assert!(o.status.success(), "{}", stderr(&o));

    let mut child = Command::new(env!("CARGO_BIN_EXE_calib"))
        .args(args(&data, killed.to_str().unwrap()))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Checkpoints are renamed into place whole, so one that exists can be read.
    let checkpoint = killed.join("checkpoint.safetensors");
    let start = Instant::now();
    let killed_at = loop {
        if checkpoint.exists() {
            let step = step_of(&checkpoint);
            // In the second epoch: its order was drawn after the run started.
            if step > STEPS_PER_EPOCH && step % STEPS_PER_EPOCH != 0 {
                child.kill().unwrap(); // SIGKILL
                break step;
            }
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "the run ended before a mid-epoch checkpoint was seen"
        );
        assert!(
            start.elapsed() < Duration::from_secs(300),
            "no checkpoint appeared"
        );
        std::thread::sleep(Duration::from_millis(2));
    };
    child.wait().unwrap();
    eprintln!("killed after the checkpoint of step {killed_at}");

    let o = support::calib(&["train", "--resume", killed.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let (a, b) = (steps(&whole), steps(&killed));
    assert_eq!(a.len(), 3 * STEPS_PER_EPOCH as usize);
    assert_eq!(
        a, b,
        "the resumed run saw other batches or computed other losses"
    );
    // The digests tell batches apart (they are not all one value).
    let distinct: std::collections::BTreeSet<&String> = a.iter().map(|(_, d, _)| d).collect();
    assert_eq!(distinct.len(), a.len());
    let model = |p: &Path| std::fs::read(p.join("model.safetensors")).unwrap();
    assert!(model(&whole) == model(&killed), "the resumed model differs");
}
