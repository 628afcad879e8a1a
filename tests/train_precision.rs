//! `calib train --precision bf16`: a short Fashion-MNIST run learns, records its
//! precision, keeps f32 checkpoints with PyTorch's names, and a resume keeps the
//! precision and refuses another one.

mod support;

use calib::ir::DType;
use support::train::{ok, resume, stderr, tensors};

#[test]
fn a_bf16_run_learns_keeps_f32_checkpoints_and_resumes_only_in_bf16() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    ok(
        &out,
        &[
            "--precision",
            "bf16",
            "--epochs",
            "4",
            "--no-augment",
            "--max-steps",
            "24",
        ],
    );
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["precision"], "bf16");
    let losses: Vec<f64> = std::fs::read_to_string(out.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|l| l.get("test_accuracy").is_none())
        .map(|l| l["loss"].as_f64().unwrap())
        .collect();
    let (first, last) = (losses[0], losses[losses.len() - 1]);
    assert!(last < first - 0.3, "loss did not fall at bf16: {losses:?}");
    // Master weights and optimizer state are f32, by PyTorch name.
    let checkpoint = tensors(&out.join("checkpoint.safetensors"));
    for name in ["conv1.weight", "fc.weight", "momentum.fc.weight"] {
        let t = checkpoint
            .get(name)
            .unwrap_or_else(|| panic!("{name} missing"));
        assert_eq!(t.dtype(), DType::F32, "{name}");
    }

    let o = resume(&out, &["--precision", "tf32"]);
    let err = stderr(&o);
    assert!(!o.status.success() && !err.contains("panicked"), "{err}");
    assert!(
        err.contains("--precision tf32") && err.contains("bf16"),
        "{err}"
    );
    // Resumed without the flag, or with the same one, it continues in bf16.
    let o = resume(&out, &["--precision", "bf16", "--max-steps", "26"]);
    assert!(o.status.success(), "{}", stderr(&o));
}

#[test]
fn an_unknown_precision_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let o = support::train::run(&dir.path().join("run"), &["--precision", "fp8"]);
    let err = stderr(&o);
    assert!(!o.status.success() && !err.contains("panicked"), "{err}");
    assert!(err.contains("unknown precision `fp8`"), "{err}");
}
