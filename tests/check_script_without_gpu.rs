//! `scripts/gpu-check.sh` on a machine without a GPU: a clear message, exit code 3, and a
//! result file that says why, never a pretend pass. And its plumbing, with stand-ins for
//! `nvidia-smi` and the bundle: the order of its runs, the caches they see, and the
//! four files it returns.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
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

/// Writes an executable script.
fn script(path: &Path, body: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, body).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// A stand-in for the bundled `calib`: logs each call with the cubin cache it saw, and
/// answers as calib does (bench JSON whose first step is slow only on an empty cache,
/// the per-launch table, training metrics).
const FAKE_CALIB: &str = r#"#!/usr/bin/env bash
entries=$(ls "${CALIB_CACHE_DIR:-/nonexistent}" 2>/dev/null | wc -l)
echo "$1 entries=$entries jit_cache_off=${CUDA_CACHE_DISABLE:-0} rank=${RANK:-}/${WORLD_SIZE:-} args=$*" >> "$CALLS"
case "$1" in
  devices) echo '[{"ordinal": 0}]' ;;
  bench)
    prev=""; table=""
    for a in "$@"; do [ "$prev" = --per-kernel ] && table=$a; prev=$a; done
    [ -n "$table" ] && printf 'launch,kernel\n0,k0\n' > "$table"
    first=2.0; [ "$entries" = 0 ] && first=9.0
    mkdir -p "$CALIB_CACHE_DIR" && touch "$CALIB_CACHE_DIR/entry-$RANDOM"
    per=null; [ -n "$table" ] && per='{"launches": 1, "kernel_ms_sum": 0.5}'
    echo "{\"first_step_seconds\": $first, \"prepare_seconds\": 1.0, \"step_ms_median\": 50.0, \"session\": {\"kernels\": {\"modules\": 2, \"cubins_from_cache\": $entries}}, \"per_kernel\": $per}"
    ;;
  train)
    prev=""; dir=""
    for a in "$@"; do [ "$prev" = --out ] && dir=$a; prev=$a; done
    mkdir -p "$dir"
    copy=""; [ -z "${CALIB_STAGE_BATCHES:-}" ] && copy=', "batch_copy_seconds": 0.5, "batch_copy_exposed_seconds": 0.25, "batch_copy_exposed_fraction": 0.125'
    for ips in 100 300 200 400; do echo "{\"step\": 10, \"loss\": 1.5, \"images_per_second\": $ips$copy}"; done > "$dir/metrics.jsonl"
    echo '{"step": 40, "test_accuracy": 0.5}' >> "$dir/metrics.jsonl"
    ;;
  eval) echo '{"images": 1000, "top1": 0.5, "top5": 0.9, "loss": 1.25}' ;;
  verify) echo '[]' ;;
esac
"#;

#[test]
fn gpu_check_runs_cold_then_warm_and_returns_its_files() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    script(
        &root.join("path/nvidia-smi"),
        "#!/bin/sh\nif [ \"$1\" = -L ]; then echo 'GPU 0: Fake (UUID: GPU-0)'; else echo 'name, compute_cap'; echo 'Fake, 9.0'; fi\n",
    );
    let bundle = root.join("bundle");
    script(&bundle.join("bin/calib"), FAKE_CALIB);
    script(
        &bundle.join("bin/tests/gpu_cuda-0123456789abcdef"),
        "#!/bin/sh\necho 'test result: ok. 1 passed; 0 failed'\n",
    );
    std::fs::create_dir_all(bundle.join("fixtures/tiny")).unwrap();
    std::fs::write(bundle.join("fixtures/tiny/meta.json"), "{}").unwrap();
    std::fs::create_dir_all(bundle.join("fashion-mnist")).unwrap();
    std::fs::write(bundle.join("COMMIT"), "abc123\n").unwrap();
    std::fs::write(bundle.join("scnet50-b64-launches.json"), "[]\n").unwrap();
    let (out, tmp, calls) = (root.join("out"), root.join("tmp"), root.join("calls.log"));
    std::fs::create_dir_all(&tmp).unwrap();
    let path = format!(
        "{}:{}",
        root.join("path").display(),
        std::env::var("PATH").unwrap()
    );
    let o = Command::new("bash")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/gpu-check.sh"))
        .args([&out, &bundle])
        .env("PATH", path)
        .env("TMPDIR", &tmp)
        .env("CALLS", &calls)
        .env_remove("CALIB_CACHE_DIR")
        .output()
        .expect("bash runs");
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(matches!(o.status.code(), Some(0 | 1)), "{log}");

    // Six files come back (eight with the bundle's tensor-core launches), nothing else;
    // the work directory is gone.
    let mut files: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    files.sort();
    assert_eq!(
        files,
        [
            "gpu-check-logs.tar.gz",
            "gpu-check.json",
            "scnet50-b64-bf16-kernels.csv",
            "scnet50-b64-kernels.csv",
            "scnet50-b64-launches.json",
            "scnet50-b64-tf32-kernels.csv"
        ],
        "{log}"
    );
    assert_eq!(std::fs::read_dir(&tmp).unwrap().count(), 0, "work dir left");

    // Speed first: the bf16 step as `auto` plans it is the first thing timed. The cold
    // start, after the tensor-core steps (their own cubin cache), still saw an empty
    // cubin cache and no driver JIT cache; the warm process the cache the cold one
    // filled, and it wrote the per-launch table.
    let calls = std::fs::read_to_string(&calls).unwrap();
    let benches: Vec<&str> = calls.lines().filter(|l| l.starts_with("bench")).collect();
    assert!(
        benches[0].contains("--precision bf16") && benches[0].contains("--layout auto"),
        "{calls}"
    );
    let cold = (benches.iter())
        .position(|l| l.contains("jit_cache_off=1"))
        .unwrap_or_else(|| panic!("no cold start: {calls}"));
    assert!(cold >= 3, "the tensor-core steps come first: {calls}");
    assert!(
        benches[cold].contains("entries=0") && benches[cold].contains("scnet50"),
        "{calls}"
    );
    let warm = benches[cold + 1];
    assert!(
        !warm.contains("entries=0") && warm.contains("jit_cache_off=0"),
        "{calls}"
    );
    // One GPU: the launcher's path runs as a group of one process.
    let launched: Vec<&str> = calls.lines().filter(|l| l.contains("rank=0/1")).collect();
    assert!(
        launched.len() == 1
            && launched[0].starts_with("train")
            && launched[0].contains("--rendezvous-timeout"),
        "{calls}"
    );
    let table = out.join("scnet50-b64-kernels.csv");
    assert!(
        warm.contains(&format!("--per-kernel {}", table.display())),
        "{calls}"
    );

    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("gpu-check.json")).unwrap())
            .unwrap();
    assert_eq!(v["passed"], o.status.success());
    assert_eq!(v["commit"], "abc123");
    assert_eq!(v["cold_start"]["first_step_seconds"], 9.0, "{v}");
    assert_eq!(v["cold_start"]["kernels"]["cubins_from_cache"], 0, "{v}");
    assert_eq!(v["warm_start"]["first_step_seconds"], 2.0, "{v}");
    assert_eq!(v["per_kernel"]["written"], true, "{v}");
    assert_eq!(v["per_kernel"]["launches"], 1, "{v}");
    for run in ["train_cuda", "train_cuda_graph", "train_cuda_replicas"] {
        // The first window (first step, capture) is left out: median of 300, 200, 400.
        assert_eq!(v[run]["images_per_second_median"], 300.0, "{run}: {v}");
    }
    // Staging: the copy figures summed over the staged run's lines; the run with
    // staging off (CALIB_STAGE_BATCHES=0) logged none and the same losses.
    assert_eq!(v["staging"]["batch_copy_seconds"], 2.0, "{v}");
    assert_eq!(v["staging"]["batch_copy_exposed_seconds"], 1.0, "{v}");
    assert_eq!(
        v["staging"]["batch_copy_exposed_fraction_median"], 0.125,
        "{v}"
    );
    assert_eq!(v["staging"]["same_losses_as_unstaged"], true, "{v}");
    assert!(
        calls.contains("train") && calls.contains("train-cuda-unstaged"),
        "{calls}"
    );
    // Tensor cores: the step timed per launch at tf32 and bf16, the fixtures verified
    // at both, and the GEMM schedules tuned at tf32.
    for precision in ["tf32", "bf16"] {
        assert!(
            calls.lines().any(|l| l.starts_with("bench")
                && l.contains(&format!("--precision {precision}"))
                && l.contains(&format!("scnet50-b64-{precision}-kernels.csv"))),
            "{calls}"
        );
        assert!(
            calls.lines().any(|l| l.starts_with("verify") && l.contains(&format!("--precision {precision}"))),
            "{calls}"
        );
    }
    assert!(
        calls
            .lines()
            .any(|l| l.starts_with("tune") && l.contains("--precision tf32")),
        "{calls}"
    );
    assert!(
        calls.lines().any(|l| l.starts_with("bench")
            && l.contains("--precision tf32")
            && l.contains("tf32-255-registers-kernels.csv")),
        "{calls}"
    );
    // ResNet-50 at bf16, for the issue's images/s criterion.
    assert!(
        calls.lines().any(|l| l.starts_with("bench")
            && l.contains("--model resnet50")
            && l.contains("--precision bf16")),
        "{calls}"
    );
    assert_eq!(v["calib_resnet50_bf16"]["step_ms_median"], 50.0, "{v}");
    assert_eq!(v["eval_cuda"]["same_top1_top5"], true, "{v}");
    assert_eq!(v["eval_cuda"]["loss_relative_error"], 0.0, "{v}");
    for step in [
        "bench-calib-tf32-255-registers",
        "bench-calib-resnet50-bf16",
        "train-cuda-unstaged",
        "eval-cuda",
        "eval-reference",
        "cold-start",
        "warm-start",
        "test-gpu_cuda",
        "train-cuda-graph",
        "train-cuda-launch",
    ] {
        assert_eq!(v["steps"][step]["result"], "ok", "{step}: {v}");
    }
    let archive = Command::new("tar")
        .arg("-tzf")
        .arg(out.join("gpu-check-logs.tar.gz"))
        .output()
        .unwrap();
    let listed = String::from_utf8_lossy(&archive.stdout);
    for name in [
        "logs/cold-start.out",
        "logs/steps.tsv",
        "logs/train-cuda.metrics.jsonl",
        "logs/ptxas.txt",
    ] {
        assert!(listed.contains(name), "{name} not archived: {listed}");
    }
}
