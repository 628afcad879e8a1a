//! `scripts/gpu-check.sh` on a machine without a GPU: a clear message, exit code 3, and a
//! result file that says why, never a pretend pass.

use std::process::Command;

#[test]
fn gpu_check_explains_a_missing_gpu() {
    if Command::new("nvidia-smi")
        .arg("-L")
        .output()
        .is_ok_and(|o| o.status.success())
    {
        return; // A GPU is here: the script's real path is exercised by hand on it.
    }
    let out = tempfile::tempdir().unwrap();
    let o = Command::new("bash")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/gpu-check.sh"))
        .arg(out.path())
        .output()
        .expect("bash runs");
    assert_eq!(
        o.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(String::from_utf8_lossy(&o.stderr).contains("no NVIDIA GPU"));
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.path().join("gpu-check.json")).unwrap())
            .unwrap();
    assert!(v["gpu"].is_null() && v["reason"].as_str().unwrap().contains("no NVIDIA GPU"));
}
