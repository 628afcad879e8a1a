//! `calib compile --emit-ptx`: a `.ptx` file per launch beside the report, headed by the
//! IR it implements, and ptxas's resources per kernel in the report.

mod support;

use support::{calib, fixture};

#[test]
fn compile_writes_each_kernels_ptx_and_the_ptxas_report() {
    let out = tempfile::tempdir().unwrap();
    let run = calib(&[
        "compile",
        fixture("scconv").to_str().unwrap(),
        "--emit-ptx",
        "--out",
        out.path().to_str().unwrap(),
    ]);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let plan = std::fs::read_to_string(out.path().join("after.txt")).unwrap();
    let kernels: Vec<&str> = plan
        .lines()
        .filter_map(|l| l.trim().strip_prefix("kernel "))
        .map(|l| l.split_whitespace().next().unwrap())
        .collect();
    assert!(!kernels.is_empty());
    for k in &kernels {
        let ptx = std::fs::read_to_string(out.path().join(format!("{k}.ptx"))).unwrap();
        assert!(ptx.starts_with(&format!("// {k}: kernel {k} (")), "{ptx}");
        assert!(ptx.contains("// implements graph nodes %"), "{ptx}");
        assert!(ptx.contains(&format!(".visible .entry {k}(")));
    }
    let report = std::fs::read_to_string(out.path().join("report.txt")).unwrap();
    let ptx_report = std::fs::read_to_string(out.path().join("ptx_report.txt")).unwrap();
    assert!(report.contains(&ptx_report));
    // The cost model's view of the code as emitted, registers from ptxas.
    assert!(report.contains("\npredicted step on "), "{report}");
    let launches = std::fs::read_to_string(out.path().join("launches.json")).unwrap();
    let launches: Vec<calib_cost::data::LaunchRecord> = serde_json::from_str(&launches).unwrap();
    assert!(launches.len() >= kernels.len());
    let skip = std::env::var("CALIB_SKIP_PTXAS").is_ok_and(|v| v == "1");
    if !skip {
        // Every launch has registers and spills for both architectures.
        for k in &kernels {
            let row = ptx_report
                .lines()
                .find(|l| l.split_whitespace().next() == Some(k))
                .unwrap();
            assert!(row.contains("sm_80:") && row.contains("sm_90:"), "{row}");
        }
        assert!(ptx_report.contains(" with spills"));
    }
}
