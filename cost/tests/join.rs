//! Joining a timing table with a plan's launches: a launch timed with another grid or
//! block than the plan gives it means the two files come from different plans (a table
//! measured under `--layout auto`, launches compiled row-major), which would fit the
//! model to the wrong kernels, so the join refuses it.

use calib_cost::data::{read_launches, samples};
use std::path::{Path, PathBuf};

/// The measured data set's first launch, alone in a launches file in `dir`.
fn one_launch(dir: &Path) -> (PathBuf, String, u64, u32) {
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("data");
    let records = read_launches(&data.join("h200-2026-12-04-scnet50-b64.launches.json")).unwrap();
    let first = records[0].clone();
    let path = dir.join("launches.json");
    std::fs::write(&path, serde_json::to_string(&vec![&first]).unwrap()).unwrap();
    (path, first.name, first.blocks, first.threads)
}

fn table(dir: &Path, name: &str, threads: u32, blocks: u64) -> PathBuf {
    let path = dir.join(format!("{name}-{threads}-{blocks}.csv"));
    let text = format!(
        "launch,kernel,block,grid,measured_us\n0,{name},\"({threads},1,1)\",\"({blocks},1,1)\",12.5\n"
    );
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn a_launch_timed_with_the_plans_grid_joins() {
    let dir = tempfile::tempdir().unwrap();
    let (launches, name, blocks, threads) = one_launch(dir.path());
    let joined = samples(&launches, &table(dir.path(), &name, threads, blocks)).unwrap();
    assert_eq!(joined.len(), 1);
    assert!((joined[0].measured_seconds - 12.5e-6).abs() < 1e-15);
}

#[test]
fn a_launch_timed_with_another_grid_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (launches, name, blocks, threads) = one_launch(dir.path());
    for (t, b) in [(threads, blocks + 1), (threads * 2, blocks)] {
        let err = samples(&launches, &table(dir.path(), &name, t, b)).unwrap_err();
        let message = err.to_string();
        assert!(message.contains("different plans"), "{message}");
        assert!(message.contains(&name), "{message}");
    }
}
