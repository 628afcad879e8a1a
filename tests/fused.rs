//! Fusion end to end: every public fixture through `calib verify --fused`'s backend,
//! and `calib compile` / `calib explain` as a user runs them.

mod support;

use calib::verify::{verify_fixture, Fused, Status};
use std::path::Path;
use support::{calib, fixture};

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
    // With no kernel named, every kernel, in plan order.
    let o = calib(&["explain", dir]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let all = String::from_utf8_lossy(&o.stdout);
    let kernels = report["kernels_after"].as_u64().unwrap() as usize;
    assert_eq!(all.matches("\nkernel k").count() + 1, kernels, "{all}");
    assert!(all.starts_with("kernel k0 ") && all.contains("\nkernel k3 "));

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

#[test]
fn compile_shows_where_a_data_parallel_step_overlaps_its_all_reduces() {
    let out = tempfile::tempdir().unwrap();
    let dir = out.path().to_str().unwrap();
    let spec = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/models/specs/fashion_scnet.json"
    );
    let args = [
        "compile",
        spec,
        "--train",
        "--batch",
        "8",
        "--replicas",
        "2",
    ];
    let o = calib(&[&args[..], &["--bucket-mb", "0.05", "--out", dir]].concat());
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.path().join("report.json")).unwrap())
            .unwrap();
    let windows = report["all_reduces"]
        .as_array()
        .expect("all_reduces listed");
    assert!(windows.len() > 1, "{windows:?}");
    let total: u64 = windows.iter().map(|w| w["bytes"].as_u64().unwrap()).sum();
    // The windows are the step's buckets: the same bytes in all.
    let forward = calib::models::build(
        &calib::models::load_spec_file(spec).unwrap().spec,
        &[4, 1, 28, 28],
        calib::ir::Mode::Train,
        calib::ir::DType::F32,
    )
    .unwrap()
    .graph;
    let group = calib::passes::DataParallel {
        replicas: 2,
        bucket_bytes: (0.05 * 1048576.0) as usize,
    };
    let dp = calib::passes::data_parallel_step(&forward, &Default::default(), &group).unwrap();
    assert_eq!(windows.len(), dp.buckets.len());
    let bucket_bytes: usize = dp.buckets.iter().map(|b| b.bytes).sum();
    assert_eq!(total as usize, bucket_bytes, "{windows:?}");
    assert!(windows
        .iter()
        .any(|w| w["join"].as_u64().unwrap() > w["kernel"].as_u64().unwrap() + 1));
    let text = std::fs::read_to_string(out.path().join("report.txt")).unwrap();
    assert!(
        text.contains("all-reduces:") && text.contains("overlaps"),
        "{text}"
    );

    let o = calib(&["compile", spec, "--replicas", "2", "--out", dir]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("add --train"));
}
