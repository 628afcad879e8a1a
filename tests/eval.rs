//! `calib eval` of a trained model on an image folder's validation split, weights of
//! another model refused by name, and `calib train --weights` (fine-tuning) with and
//! without `--num-classes`.

mod support;

use calib::runtime::weights;
use std::path::Path;
use support::calib;
use support::images::make_folder;
use support::train::{stderr, tensors};

fn json_lines(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// `calib train` on `data` at 32x32 into `out`, with `extra` (whose flags replace the
/// defaults here).
fn train(data: &Path, out: &Path, extra: &[&str]) -> std::process::Output {
    let data_arg = format!("imagefolder:{}", data.display());
    let mut args = vec!["train", "--data", &data_arg, "--out", out.to_str().unwrap()];
    for (flag, value) in [
        ("--image-size", "32"),
        ("--batch", "12"),
        ("--epochs", "2"),
        ("--lr", "0.2"),
        ("--warmup-epochs", "0.2"),
        ("--eval-batch", "24"),
        ("--log-every", "1"),
    ] {
        if !extra.contains(&flag) {
            args.extend([flag, value]);
        }
    }
    args.extend(extra);
    calib(&args)
}

fn first_loss(run: &Path) -> f64 {
    json_lines(&run.join("metrics.jsonl"))[0]["loss"]
        .as_f64()
        .unwrap()
}

/// A convolution's weights (not the classifier's), as f32.
fn conv_weight(path: &Path) -> (String, Vec<f32>) {
    let (name, t) = tensors(path)
        .into_iter()
        .find(|(n, t)| n.ends_with(".weight") && t.shape().len() == 4)
        .unwrap();
    (name, t.to_f32_vec())
}

#[test]
fn eval_reports_the_runs_accuracy_and_train_weights_fine_tunes() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data6");
    make_folder(&data, 6, 10, 4);
    let data_arg = format!("imagefolder:{}", data.display());
    let base = tmp.path().join("base");
    let o = train(&data, &base, &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let model = base.join("model.safetensors");

    // The same numbers as the run's last evaluation.
    let lines = json_lines(&base.join("metrics.jsonl"));
    let last = lines
        .iter()
        .rev()
        .find(|l| l.get("test_accuracy").is_some())
        .unwrap();
    let o = calib(&[
        "eval",
        base.to_str().unwrap(),
        "--weights",
        model.to_str().unwrap(),
        "--data",
        &data_arg,
        "--image-size",
        "32",
        "--batch",
        "24",
        "--json",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let top1 = v["top1"].as_f64().unwrap();
    assert_eq!(
        top1,
        last["test_accuracy"].as_f64().unwrap(),
        "{v} vs {last}"
    );
    let loss = v["loss"].as_f64().unwrap();
    let run_loss = last["test_loss"].as_f64().unwrap();
    assert!(
        (loss - run_loss).abs() < 1e-4 * run_loss.max(1.0),
        "{v} vs {last}"
    );
    assert_eq!((v["k"].as_u64(), v["images"].as_u64()), (Some(5), Some(24)));
    assert!(v["top5"].as_f64().unwrap() >= top1, "{v}");
    // The run directory alone: its model, weights, data and image size; a table.
    let o = calib(&["eval", base.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let table = String::from_utf8_lossy(&o.stdout);
    assert!(
        table.contains("top-1") && table.contains("top-5") && table.contains("24 validation"),
        "{table}"
    );

    // Weights of another model: every difference named, exit 2.
    let mut other = tensors(&model);
    let (conv, _) = conv_weight(&model);
    other.remove(&conv);
    other.insert("head.extra".into(), other["fc.bias"].clone());
    let other_path = tmp.path().join("other.safetensors");
    weights::save(&other_path, &other).unwrap();
    let o = calib(&[
        "eval",
        base.to_str().unwrap(),
        "--weights",
        other_path.to_str().unwrap(),
    ]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains(&format!("missing    {conv}")) && err.contains("unexpected head.extra"),
        "{err}"
    );

    // Fine-tuning continues from the weights: a lower first loss than the fresh run's,
    // and (at a tiny rate) the loaded tensors after one step.
    let tuned = tmp.path().join("tuned");
    let o = train(
        &data,
        &tuned,
        &[
            "--weights",
            model.to_str().unwrap(),
            "--lr",
            "1e-6",
            "--max-steps",
            "1",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        first_loss(&tuned) < first_loss(&base),
        "{} vs fresh {}",
        first_loss(&tuned),
        first_loss(&base)
    );
    let (loaded, after) = (
        conv_weight(&model).1,
        conv_weight(&tuned.join("model.safetensors")).1,
    );
    let drift = loaded
        .iter()
        .zip(&after)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f32::max);
    assert!(drift < 1e-4, "{drift}");
    let o = calib(&[
        "train",
        "--resume",
        tuned.to_str().unwrap(),
        "--weights",
        model.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));

    // Three classes: without --num-classes the classifier does not fit; with it, a new one.
    let data3 = tmp.path().join("data3");
    make_folder(&data3, 3, 4, 2);
    let three = tmp.path().join("three");
    let o = train(&data3, &three, &["--weights", model.to_str().unwrap()]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("mismatched fc.weight"), "{err}");
    assert!(!three.exists(), "a failed start left {}", three.display());
    let o = train(
        &data3,
        &three,
        &[
            "--weights",
            model.to_str().unwrap(),
            "--num-classes",
            "3",
            "--lr",
            "1e-6",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let out = tensors(&three.join("model.safetensors"));
    let base_fc = tensors(&model)["fc.weight"].shape().to_vec();
    assert_eq!(out["fc.weight"].shape(), [3, base_fc[1]]);
    assert_eq!(out["fc.bias"].shape(), [3]);
    let after = conv_weight(&three.join("model.safetensors")).1;
    let drift = loaded
        .iter()
        .zip(&after)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f32::max);
    assert!(drift < 1e-4, "{drift}");
    let o = calib(&["eval", three.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let table = String::from_utf8_lossy(&o.stdout);
    assert!(table.contains("top-3 rather than top-5"), "{table}");
}

/// A PyTorch `.pth` is taken as it is, by `eval` and by `train --weights`.
#[test]
fn a_pytorch_checkpoint_is_evaluated_and_fine_tuned_directly() {
    let pth_dir = support::fixture("../pth");
    let pth = pth_dir.join("tiny_scnet.pth");
    let spec = pth_dir.join("tiny_scnet_spec.json");
    let tmp = tempfile::tempdir().unwrap();
    let data10 = tmp.path().join("data10");
    make_folder(&data10, 10, 1, 2);
    let data10_arg = format!("imagefolder:{}", data10.display());
    let o = calib(&[
        "eval",
        spec.to_str().unwrap(),
        "--weights",
        pth.to_str().unwrap(),
        "--data",
        &data10_arg,
        "--image-size",
        "32",
        "--json",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!((v["images"].as_u64(), v["k"].as_u64()), (Some(20), Some(5)));
    assert!(v["top5"].as_f64().unwrap() >= v["top1"].as_f64().unwrap());
    assert!(v["loss"].as_f64().unwrap().is_finite(), "{v}");
    // Against another model: refused, naming its tensors.
    let o = calib(&[
        "eval",
        "scnet50",
        "--weights",
        pth.to_str().unwrap(),
        "--data",
        &data10_arg,
    ]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains("1000 classes") && err.contains("--num-classes 10"),
        "{err}"
    );

    // Fine-tuned to three classes: a new classifier, the rest as PyTorch saved it.
    let data3 = tmp.path().join("data3");
    make_folder(&data3, 3, 4, 1);
    let run = tmp.path().join("run");
    let o = train(
        &data3,
        &run,
        &[
            "--model",
            spec.to_str().unwrap(),
            "--weights",
            pth.to_str().unwrap(),
            "--num-classes",
            "3",
            "--lr",
            "1e-6",
            "--max-steps",
            "1",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let out = tensors(&run.join("model.safetensors"));
    assert_eq!(out["fc.weight"].shape(), [3, 64]);
    let loaded = calib::runtime::weights::pth::load(&pth).unwrap().tensors;
    let (a, b) = (
        loaded["conv1.weight"].to_f32_vec(),
        out["conv1.weight"].to_f32_vec(),
    );
    let drift = a
        .iter()
        .zip(&b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max);
    assert!(drift < 1e-4, "{drift}");
}

/// `calib eval --backend sim` (the fused plan's PTX, simulated: what a GPU runs) gives
/// the reference interpreter's figures: the same top-1 and top-5 counts and the loss
/// within the fixtures' loss tolerance (relative 1e-5, `verify::Tolerance::LOSS`).
#[test]
fn eval_on_the_simulator_matches_the_reference() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data6");
    make_folder(&data, 6, 4, 2);
    let run = tmp.path().join("run");
    let o = train(&data, &run, &["--max-steps", "2"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let eval = |backend: &str| -> serde_json::Value {
        let o = calib(&[
            "eval",
            run.to_str().unwrap(),
            "--backend",
            backend,
            "--batch",
            "6",
            "--json",
        ]);
        assert!(o.status.success(), "{backend}: {}", stderr(&o));
        serde_json::from_slice(&o.stdout).unwrap()
    };
    let (reference, sim) = (eval("reference"), eval("sim"));
    assert_eq!(reference["images"], 12, "{reference}");
    for key in ["images", "top1", "top5", "k"] {
        assert_eq!(sim[key], reference[key], "{key}: {sim} vs {reference}");
    }
    let (a, b) = (
        sim["loss"].as_f64().unwrap(),
        reference["loss"].as_f64().unwrap(),
    );
    assert!(b > 0.0 && (a - b).abs() <= 1e-5 * b, "{a} vs {b}");
}

/// `calib eval` of a bf16 run evaluates under bf16 (the run's own policy) unless told
/// otherwise: the run's last test loss, and a different loss at `--precision f32`.
#[test]
fn eval_runs_under_the_runs_precision_unless_told() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data6");
    make_folder(&data, 6, 4, 2);
    let run = tmp.path().join("run");
    let o = train(&data, &run, &["--max-steps", "2", "--precision", "bf16"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let last = json_lines(&run.join("metrics.jsonl"))
        .into_iter()
        .rev()
        .find(|l| l.get("test_loss").is_some())
        .unwrap();
    let eval = |extra: &[&str]| -> serde_json::Value {
        let mut args = vec!["eval", run.to_str().unwrap(), "--batch", "24", "--json"];
        args.extend(extra);
        let o = calib(&args);
        assert!(o.status.success(), "{extra:?}: {}", stderr(&o));
        serde_json::from_slice(&o.stdout).unwrap()
    };
    let own = eval(&[]);
    assert_eq!(own["precision"], "bf16", "{own}");
    let loss = |v: &serde_json::Value| v["loss"].as_f64().unwrap();
    let run_loss = last["test_loss"].as_f64().unwrap();
    assert!(
        (loss(&own) - run_loss).abs() <= 1e-6 * run_loss,
        "{own} vs {last}"
    );
    let f32 = eval(&["--precision", "f32"]);
    assert_eq!(f32["precision"], "f32", "{f32}");
    assert_ne!(loss(&f32), loss(&own), "bf16 rounding changes the loss");
}
