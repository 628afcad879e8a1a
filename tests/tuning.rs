//! Tuned schedules: `calib compile --tuning FILE` plans each GEMM shape the file covers
//! with its measured schedule and says so; a file for another device is not used;
//! `calib tune` refuses a backend that cannot time launches, and plans the layout it is
//! asked to tune before it needs a GPU.

mod support;

use calib::ir::{GemmInstruction, GemmSchedule, Precision, Program};
use calib::passes::fusion::tuning::{shape_key, TunedSchedule, TuningCache};
use calib::passes::fusion::Device;
use std::path::Path;
use support::{calib, fixture};

fn compile(out: &Path, extra: &[&str]) -> serde_json::Value {
    let f = fixture("scbottleneck_s1");
    let mut args = vec!["compile", f.to_str().unwrap(), "--train", "--out"];
    args.push(out.to_str().unwrap());
    args.extend(extra);
    let o = calib(&args);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap()
}

fn kernel<'a>(report: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    report["kernels"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["name"] == name)
        .unwrap()
}

#[test]
fn a_tuned_schedule_replaces_the_cost_models_and_the_report_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let plain = compile(&dir.path().join("plain"), &[]);
    let program =
        Program::from_json(&std::fs::read_to_string(dir.path().join("plain/after.json")).unwrap())
            .unwrap();
    // The first GEMM kernel, and a valid schedule other than the one it got.
    let (k, chosen) = program
        .kernels
        .iter()
        .find_map(|k| Some((k, k.schedule?.gemm?)))
        .expect("a GEMM kernel");
    let (key, dims) = shape_key(&k.body, Precision::F32, &program.input_layouts(k)).unwrap();
    let other = GemmSchedule::TILES
        .iter()
        .map(|&(block_m, block_n)| GemmSchedule {
            block_m,
            block_n,
            block_k: GemmSchedule::depth(block_m, block_n),
            split_k: 1,
            instruction: GemmInstruction::Fma,
            stages: 2,
        })
        .find(|s| *s != chosen && s.check(&dims).is_ok())
        .unwrap();
    let reason = kernel(&plain, &k.name)["schedule_reason"].as_str().unwrap();
    assert!(reason.starts_with("cost model"), "{reason}");

    let cache = |device: &str| TuningCache {
        device: device.into(),
        measured_on: "a test".into(),
        entries: [(
            key.clone(),
            TunedSchedule {
                schedule: other,
                measured_us: 12.5,
                candidates: 3,
            },
        )]
        .into(),
    };
    let file = dir.path().join("tuning.json");
    std::fs::write(&file, cache(&Device::default().name).to_json()).unwrap();
    let tuned = compile(
        &dir.path().join("tuned"),
        &["--tuning", file.to_str().unwrap()],
    );
    let row = kernel(&tuned, &k.name);
    let want = calib::ir::Schedule::gemm(other).to_string();
    assert!(
        row["schedule"].as_str().unwrap().starts_with(&want),
        "{row}"
    );
    let reason = row["schedule_reason"].as_str().unwrap();
    assert!(
        reason.contains("tuned") && reason.contains("3 schedules") && reason.contains("a test"),
        "{reason}"
    );

    // Measured on another device: warned about, not used.
    std::fs::write(&file, cache("some other GPU").to_json()).unwrap();
    let elsewhere = dir.path().join("elsewhere");
    let f = fixture("scbottleneck_s1");
    let o = calib(&[
        "compile",
        f.to_str().unwrap(),
        "--train",
        "--tuning",
        file.to_str().unwrap(),
        "--out",
        elsewhere.to_str().unwrap(),
    ]);
    assert!(o.status.success());
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        stderr.contains("some other GPU") && stderr.contains("none of them is used"),
        "{stderr}"
    );
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(elsewhere.join("report.json")).unwrap())
            .unwrap();
    assert_eq!(
        kernel(&report, &k.name)["schedule"],
        kernel(&plain, &k.name)["schedule"]
    );
}

#[test]
fn bad_tuning_files_and_backends_are_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("broken.json");
    std::fs::write(&file, "{\"device\": 3}").unwrap();
    let f = fixture("scconv");
    let out = dir.path().join("out");
    let o = calib(&[
        "compile",
        f.to_str().unwrap(),
        "--tuning",
        file.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(stderr.contains("broken.json"), "{stderr}");

    let o = calib(&[
        "tune",
        "scnet50",
        "--backend",
        "sim",
        "--out",
        file.to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(stderr.contains("needs --backend cuda"), "{stderr}");
}

/// `calib tune` plans the step in the layout `train` would run (here channels-last),
/// before it looks for a GPU; without one it says so and writes nothing.
#[test]
fn tune_plans_the_layout_it_is_asked_to_tune() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tuned.json");
    let f = fixture("tiny_scnet");
    for (layout, planned) in [
        ("channels_last", "layout channels_last"),
        ("row_major", "layout row_major"),
    ] {
        let o = calib(&[
            "tune",
            f.to_str().unwrap(),
            "--precision",
            "tf32",
            "--layout",
            layout,
            "--out",
            file.to_str().unwrap(),
        ]);
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert!(stderr.contains(planned), "{stderr}");
        if !o.status.success() {
            assert!(stderr.contains("backend cuda"), "{stderr}");
            assert!(!file.exists(), "a failed tune wrote {}", file.display());
        }
    }
}
