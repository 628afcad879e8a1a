//! The `cuda` backend. On a machine with an NVIDIA GPU these run the fused plans' PTX on
//! it and compare with the reference interpreter and the fixtures (scripts/gpu-check.sh
//! runs this binary there); without one they check that the absence is an error that
//! says why, never a panic.

use calib::runtime::cuda::{devices, CudaError};
use calib::runtime::Reference;
use calib::verify::{verify_fixture, Status};
use calib::Cuda;
use std::path::PathBuf;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/fixtures")
        .join(name)
}

/// The GPU backend, or `None` after checking that its absence is explained.
fn gpu() -> Option<Cuda> {
    match Cuda::new(0) {
        Ok(cuda) => Some(cuda),
        Err(e) => {
            assert!(
                devices().is_err(),
                "a GPU is listed but the backend failed: {e}"
            );
            let message = e.to_string();
            assert!(matches!(
                e,
                CudaError::NoDriver | CudaError::NoDevice | CudaError::Driver { .. }
            ));
            assert!(
                message.contains("NVIDIA") || message.contains("GPU"),
                "{message}"
            );
            None
        }
    }
}

#[test]
fn every_fixture_passes_on_the_gpu() {
    let Some(cuda) = gpu() else { return };
    for name in [
        "scconv",
        "scbottleneck_s1",
        "scbottleneck_s2_down",
        "tiny_scnet",
    ] {
        let report = verify_fixture(&fixture(name), &cuda).expect("verification runs");
        let bad: Vec<_> = report
            .rows
            .iter()
            .filter(|r| r.status != Status::Pass)
            .collect();
        assert!(bad.is_empty(), "{name} on cuda: {bad:#?}");
        assert_eq!(report.backend, "cuda");
    }
}

#[test]
fn gpu_and_reference_agree_row_for_row() {
    let Some(cuda) = gpu() else { return };
    let on_gpu = verify_fixture(&fixture("scconv"), &cuda).unwrap();
    let on_cpu = verify_fixture(&fixture("scconv"), &Reference::new()).unwrap();
    assert_eq!(on_gpu.rows.len(), on_cpu.rows.len());
    for (g, c) in on_gpu.rows.iter().zip(&on_cpu.rows) {
        assert_eq!(g.name, c.name);
        assert_eq!(g.status, Status::Pass, "{}", g.name);
    }
}
