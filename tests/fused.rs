//! Fusion end to end: every public fixture through `calib verify --fused`'s backend,
//! and `calib compile` / `calib explain` as a user runs them.

use calib::verify::{verify_fixture, Fused, Status};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/fixtures")
        .join(name)
}

fn calib(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_calib"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("calib runs")
}

#[test]
fn every_fixture_passes_with_fusion() {
    for name in [
        "scconv",
        "scbottleneck_s1",
        "scbottleneck_s2_down",
        "tiny_scnet",
    ] {
        let report = verify_fixture(&fixture(name), &Fused::default()).unwrap();
        let failed: Vec<&str> = report
            .rows
            .iter()
            .filter(|r| r.status != Status::Pass)
            .map(|r| r.name.as_str())
            .collect();
        assert!(report.passed() && failed.is_empty(), "{name}: {failed:?}");
    }
}

#[test]
fn compile_writes_the_plan_and_explain_reads_it() {
    let out = tempfile::tempdir().unwrap();
    let dir = out.path().to_str().unwrap();
    let o = calib(&[
        "compile",
        fixture("scbottleneck_s1").to_str().unwrap(),
        "--train",
        "--out",
        dir,
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    for file in [
        "before.txt",
        "before.json",
        "before.dot",
        "after.txt",
        "after.json",
        "after.dot",
        "report.json",
        "report.txt",
    ] {
        assert!(Path::new(dir).join(file).is_file(), "{file}");
    }
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.path().join("report.json")).unwrap())
            .unwrap();
    for field in [
        "kernels_before",
        "kernels_after",
        "bytes_before",
        "bytes_after",
        "fusion_seconds",
    ] {
        assert!(report[field].as_f64().is_some(), "report.json has {field}");
    }
    assert!(report["kernels_after"].as_f64() < report["kernels_before"].as_f64());
    let memory = &report["memory"];
    let (arena, peak, unshared) = (
        memory["arena_bytes"].as_u64().unwrap(),
        memory["peak_live_bytes"].as_u64().unwrap(),
        memory["unshared_bytes"].as_u64().unwrap(),
    );
    assert!(peak <= arena && arena <= unshared, "{memory}");
    let o = calib(&["explain", dir, "k3"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stdout).starts_with("kernel k3 "));

    let o = calib(&["explain", dir, "k9999"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains("no kernel `k9999`") && !err.contains("panicked"),
        "{err}"
    );
    let o = calib(&["explain", "/nonexistent-calib-dir", "k0"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("calib compile"));
}
