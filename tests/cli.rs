//! The `calib` binary: outputs a user relies on, and bad input that must give a clear
//! error (exit code 2, a message naming the problem) and never a panic.

mod support;

use std::process::Output;
use support::calib;

/// A fixture directory as a command-line argument.
fn fixture(name: &str) -> String {
    support::fixture(name).display().to_string()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Fails on a panic message and on any exit other than a clean error.
fn assert_clean_error(o: &Output, needle: &str) {
    let err = stderr(o);
    assert!(!err.contains("panicked"), "panic: {err}");
    assert_eq!(o.status.code(), Some(2), "stderr: {err}");
    assert!(err.contains(needle), "expected `{needle}` in: {err}");
}

#[test]
fn info_json_has_the_structure_file_totals() {
    let o = calib(&["info", "scnet50_v1d", "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["parameters"], 25_583_816);
    assert_eq!(v["macs"], 4_685_152_256u64);
    let o = calib(&["info", &fixture("scnet101_structure.json"), "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["parameters"], 44_565_416);
    assert_eq!(v["macs"], 7_168_745_472u64);
}

#[test]
fn verify_prints_rows_and_json() {
    let o = calib(&["verify", &fixture("scconv")]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        text.contains("eval_io/output") && text.contains("pass"),
        "{text}"
    );
    let o = calib(&["verify", &fixture("scconv"), "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let rows = v["rows"].as_array().unwrap();
    assert!(rows
        .iter()
        .any(|r| r["name"] == "train_buffers_after/k2.2.running_var" && r["status"] == "pass"));
}

#[test]
fn ir_text_of_a_fixture_parses_back() {
    let o = calib(&["ir", &fixture("scbottleneck_s1"), "--train"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = String::from_utf8(o.stdout).unwrap();
    let g = calib::ir::text::parse(&text).expect("printed IR parses");
    assert_eq!(calib::ir::text::print(&g), text);
    let o = calib(&["ir", "scnet50", "--format", "dot"]);
    assert!(String::from_utf8_lossy(&o.stdout).starts_with("digraph"));
}

#[test]
fn unknown_model_lists_the_presets() {
    assert_clean_error(&calib(&["info", "scnet77"]), "scnet50");
}

#[test]
fn malformed_spec_json_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("bad.json");
    std::fs::write(&p, "{\"spec\": {\"kind\": \"scnet\", ").unwrap();
    assert_clean_error(&calib(&["info", p.to_str().unwrap()]), "bad.json");
}

#[test]
fn impossible_spec_values_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("zero.json");
    std::fs::write(&p, r#"{"kind":"scconv","channels":0,"stride":1,"padding":1,"dilation":1,"groups":1,"pooling_r":4}"#).unwrap();
    assert_clean_error(&calib(&["info", p.to_str().unwrap()]), "channels");
}

#[test]
fn verify_rejects_a_directory_without_meta_json() {
    let dir = tempfile::tempdir().unwrap();
    assert_clean_error(
        &calib(&["verify", dir.path().to_str().unwrap()]),
        "meta.json",
    );
}

/// A copy of a fixture directory in which one file is replaced.
fn fixture_with(file: &str, bytes: &[u8]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(fixture("scconv")).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, dir.path().join(path.file_name().unwrap())).unwrap();
    }
    std::fs::write(dir.path().join(file), bytes).unwrap();
    dir
}

#[test]
fn truncated_weights_are_a_clear_error() {
    let full = std::fs::read(support::fixture("scconv").join("params.safetensors")).unwrap();
    let dir = fixture_with("params.safetensors", &full[..full.len() / 2]);
    assert_clean_error(
        &calib(&["verify", dir.path().to_str().unwrap()]),
        "params.safetensors",
    );
}

#[test]
fn corrupt_weights_header_is_a_clear_error() {
    let dir = fixture_with(
        "params.safetensors",
        b"\xff\xff\xff\xff\xff\xff\xff\x7fgarbage",
    );
    assert_clean_error(
        &calib(&["verify", dir.path().to_str().unwrap()]),
        "params.safetensors",
    );
}

#[test]
fn weights_of_another_model_list_every_mismatch() {
    let other =
        std::fs::read(support::fixture("scbottleneck_s1").join("params.safetensors")).unwrap();
    let dir = fixture_with("params.safetensors", &other);
    let o = calib(&["verify", dir.path().to_str().unwrap()]);
    assert_clean_error(&o, "missing");
    let err = stderr(&o);
    // Every missing SCConv tensor and every unexpected bottleneck tensor is named.
    for name in [
        "k2.1.weight",
        "k4.1.running_var",
        "conv1_a.weight",
        "bn3.bias",
    ] {
        assert!(err.contains(name), "{name} not reported in: {err}");
    }
}

#[test]
fn unknown_backend_is_named() {
    assert_clean_error(
        &calib(&["verify", &fixture("scconv"), "--backend", "tpu"]),
        "tpu",
    );
}

#[test]
fn zero_batch_is_rejected() {
    assert_clean_error(&calib(&["info", "scnet50", "--batch", "0"]), "batch");
}

#[test]
fn ir_files_convert_between_forms_and_bad_ones_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let text_path = dir.path().join("scconv.ir");
    let o = calib(&["ir", &fixture("scconv")]);
    std::fs::write(&text_path, &o.stdout).unwrap();
    let o = calib(&["ir", text_path.to_str().unwrap(), "--format", "json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let json_path = dir.path().join("scconv.json");
    std::fs::write(&json_path, &o.stdout).unwrap();
    let back = calib(&["ir", json_path.to_str().unwrap()]);
    assert_eq!(
        std::fs::read(&text_path).unwrap(),
        back.stdout,
        "text -> json -> text"
    );

    let bad = dir.path().join("bad.ir");
    std::fs::write(&bad, "graph {\n  %0 = input name=\"x\" : f32[2,3]\n  %1 = frobnicate(%0) : f32[2,3]\n  return y=%1\n}\n").unwrap();
    assert_clean_error(&calib(&["ir", bad.to_str().unwrap()]), "frobnicate");
    std::fs::write(&bad, "graph {\n  %0 = input name=\"x\" : f32[2,3]\n  %1 = input name=\"y\" : f32[3,2]\n  %2 = add(%0, %1) : f32[2,3]\n  return z=%2\n}\n").unwrap();
    assert_clean_error(&calib(&["ir", bad.to_str().unwrap()]), "line 4");
    let bad_json = dir.path().join("bad.json");
    std::fs::write(&bad_json, r#"{"nodes": [{"op": "input", "name": "x", "type": {"dtype": "f32", "shape": [2]}}, {"op": "exp", "inputs": [0], "type": {"dtype": "i64", "shape": [2]}}], "outputs": []}"#).unwrap();
    assert_clean_error(&calib(&["ir", bad_json.to_str().unwrap()]), "declared type");
}

#[test]
fn the_training_step_graph_prints() {
    let o = calib(&["ir", &fixture("scconv"), "--step"]);
    // scconv has no classifier: the step needs logits, and says so.
    assert_clean_error(&o, "logits");
    let o = calib(&["ir", &fixture("tiny_scnet"), "--step"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = String::from_utf8(o.stdout).unwrap();
    assert!(text.contains("conv2d_backward_weight") && text.contains("momentum.fc.weight"));
}

#[test]
fn devices_says_why_there_is_no_gpu_instead_of_panicking() {
    let o = calib(&["devices", "--json"]);
    let err = stderr(&o);
    assert!(!err.contains("panicked"), "{err}");
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    match o.status.code() {
        Some(0) => assert!(!v["devices"].as_array().unwrap().is_empty()),
        Some(3) => assert!(
            v["error"].as_str().unwrap().contains("NVIDIA")
                || v["error"].as_str().unwrap().contains("GPU")
        ),
        other => panic!("unexpected exit {other:?}: {err}"),
    }
}

#[test]
fn bench_times_a_training_step() {
    let o = calib(&[
        "bench",
        "--model",
        &fixture("tiny_scnet"),
        "--batch",
        "4",
        "--steps",
        "2",
        "--json",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["batch"], 4);
    assert!(v["images_per_second"].as_f64().unwrap() > 0.0);
    assert_clean_error(
        &calib(&["bench", "--model", "scnet50", "--backend", "tpu"]),
        "tpu",
    );
}

/// `calib train` flags with a value no run can use, and what the refusal must say.
fn bad_train_flags() -> Vec<(Vec<&'static str>, String)> {
    let too_many = calib::train::MAX_HOST_REPLICAS + 1;
    let replicas: &'static str = Box::leak(too_many.to_string().into_boxed_str());
    let cases: [(&[&'static str], String); 14] = [
        (
            &["--warmup-epochs", "-1"],
            "--warmup-epochs -1: must be".into(),
        ),
        (&["--lr", "1e39"], "--lr 1e39: too large for f32".into()),
        (&["--lr", "-1"], "--lr -1: must be a positive number".into()),
        (
            &["--test-limit", "0"],
            "--test-limit 0: must be at least 1".into(),
        ),
        (
            &["--train-limit", "0"],
            "--train-limit 0: must be at least 1".into(),
        ),
        (&["--keep-checkpoints", "0"], "--keep-checkpoints 0".into()),
        (
            &["--max-steps", "0"],
            "--max-steps 0: must be at least 1".into(),
        ),
        (
            &["--batch", "130", "--replicas", replicas],
            format!("at most {}", too_many - 1),
        ),
        (
            &["--check-finite", "--backend", "sim"],
            "--check-finite needs --backend reference".into(),
        ),
        (&["--batch", "-4"], "--batch".into()),
        (
            &["--disable-rule", "lower"],
            "they need --backend sim or cuda".into(),
        ),
        (
            &["--disable-rule", "fuse-all", "--backend", "sim"],
            "unknown rule `fuse-all`".into(),
        ),
        (
            &["--layout", "channels_last"],
            "--layout channels_last is how a fused plan stores its temporaries".into(),
        ),
        (&["--layout", "nchw4"], "unknown layout `nchw4`".into()),
    ];
    cases.into_iter().map(|(a, m)| (a.to_vec(), m)).collect()
}

#[test]
fn train_flags_no_run_can_use_are_refused_before_anything_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    for (flags, message) in bad_train_flags() {
        let mut args = vec!["train", "--out", out.to_str().unwrap()];
        args.extend(&flags);
        assert_clean_error(&calib(&args), &message);
        assert!(!out.exists(), "{flags:?} left {}", out.display());
    }
}

#[test]
fn a_resumed_config_holding_a_value_no_run_can_use_names_the_file_and_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    support::train::ok(&out, &["--train-limit", "64", "--max-steps", "1"]);
    let config = out.join("config.json");
    let good: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&config).unwrap()).unwrap();
    let cases = [
        (
            "warmup_epochs",
            serde_json::json!(-1.0),
            "`warmup_epochs` -1",
        ),
        ("lr", serde_json::json!(1e39), "`lr` 1e39"),
        ("lr", serde_json::json!(-1.0), "`lr` -1"),
        ("test_limit", serde_json::json!(0), "`test_limit` 0"),
        ("train_limit", serde_json::json!(0), "`train_limit` 0"),
        ("replicas", serde_json::json!(1000), "`replicas` 1000"),
    ];
    for (field, value, message) in cases {
        let mut bad = good.clone();
        bad[field] = value;
        std::fs::write(&config, serde_json::to_string_pretty(&bad).unwrap()).unwrap();
        let o = calib(&[
            "train",
            "--resume",
            out.to_str().unwrap(),
            "--max-steps",
            "2",
        ]);
        assert_clean_error(&o, message);
        let err = stderr(&o);
        assert!(err.contains(config.to_str().unwrap()), "{err}");
    }
}

#[test]
fn bench_refuses_zero_steps() {
    assert_clean_error(
        &calib(&["bench", "--model", &fixture("tiny_scnet"), "--steps", "0"]),
        "--steps 0",
    );
}

/// The number right after `word` in `message`.
fn number_after(message: &str, word: &str) -> u64 {
    let at = message
        .find(word)
        .unwrap_or_else(|| panic!("no `{word}` in: {message}"));
    let digits: String = message[at + word.len()..]
        .trim_start()
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits
        .parse()
        .unwrap_or_else(|_| panic!("no number after `{word}` in: {message}"))
}

#[test]
fn bench_refuses_a_batch_the_host_cannot_hold_before_allocating_it() {
    // The input alone is 60 GB; the step's peak is far beyond any host. Allocating it
    // would abort the process, so a clean exit shows the refusal came first.
    let o = calib(&["bench", "--model", "scnet50", "--batch", "100000"]);
    assert_clean_error(&o, "not enough memory");
    let err = stderr(&o);
    let (required, available) = (number_after(&err, "it needs"), number_after(&err, "but"));
    assert!(required > 100_000 * 3 * 224 * 224 * 4, "{err}");
    assert!(required > available, "{err}");
    assert!(err.contains("MemAvailable"), "{err}");
}

#[test]
fn compile_warns_when_the_plan_exceeds_the_device() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    // SCNet-50's training step for 100000 images: terabytes, on a 141 GB H200. Code
    // generation may refuse such a plan afterwards; the warning comes first.
    let o = calib(&[
        "compile",
        "scnet50",
        "--train",
        "--batch",
        "100000",
        "--out",
        out.to_str().unwrap(),
    ]);
    let err = stderr(&o);
    assert!(
        !err.contains("panicked") && o.status.code().is_some(),
        "{err}"
    );
    let h200 = calib::passes::fusion::Device::named("h200").unwrap();
    let warning = err.lines().find(|l| l.starts_with("warning:")).expect(&err);
    assert!(
        warning.contains(&format!("({} bytes", h200.memory_bytes)),
        "{warning}"
    );
    assert!(
        number_after(warning, "the plan needs") > h200.memory_bytes,
        "{warning}"
    );

    // A plan that fits the H200 but not a device file's 1 KiB: a warning, a report
    // that says so, and exit 0.
    let mut small = serde_json::to_value(&h200).unwrap();
    small["memory_bytes"] = 1024.into();
    let device = dir.path().join("small.json");
    std::fs::write(&device, small.to_string()).unwrap();
    let o = calib(&[
        "compile",
        &fixture("scconv"),
        "--device",
        device.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("report.json")).unwrap()).unwrap();
    let memory = &report["memory"];
    assert_eq!(memory["fits_device"], false, "{memory}");
    assert_eq!(memory["device_memory_bytes"], 1024);
    let arena = memory["arena_bytes"].as_u64().unwrap();
    assert!(arena > 1024, "{memory}");
    let err = stderr(&o);
    assert!(err.contains(&format!("needs {arena} bytes")), "{err}");
    let text = std::fs::read_to_string(out.join("report.txt")).unwrap();
    assert!(text.contains("warning: the plan needs"), "{text}");
    // On the H200 it fits, and nothing is said.
    let o = calib(&[
        "compile",
        &fixture("scconv"),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(
        o.status.success() && !stderr(&o).contains("warning"),
        "{}",
        stderr(&o)
    );
}
