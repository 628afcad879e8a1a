//! NVIDIA's ptxas must accept every hand-written PTX program for sm_80 and sm_90, and
//! agree with the simulator's parse about the kernels and their static shared memory.
//!
//! ptxas is installed by scripts/setup.sh (and CI). Without it these tests fail and say
//! how to install it, unless CALIB_SKIP_PTXAS=1.

mod sim_support;

use calib_runtime::sim::{self, ptxas};
use sim_support::ptxas_or_skip;
use std::path::PathBuf;

#[test]
fn every_hand_written_program_assembles_for_sm_80_and_sm_90() {
    let Some(bin) = ptxas_or_skip() else { return };
    let mut files: Vec<PathBuf> = std::fs::read_dir(sim_support::ptx_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "ptx"))
        .collect();
    files.sort();
    assert!(
        files.len() >= 12,
        "the PTX suite is missing files: {files:?}"
    );
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        let module = sim::parse(&text).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        for arch in ["sm_80", "sm_90"] {
            let report = ptxas::assemble_with(&bin, &text, arch)
                .unwrap_or_else(|e| panic!("{}: {e}", file.display()));
            let mut assembled: Vec<&str> = report.kernels.iter().map(|k| k.name.as_str()).collect();
            let mut parsed: Vec<&str> = module.kernels.iter().map(|k| k.name.as_str()).collect();
            assembled.sort();
            parsed.sort();
            assert_eq!(assembled, parsed, "{} for {arch}", file.display());
            for k in &report.kernels {
                // ptxas counts the static variables, padded to the dynamic array's
                // alignment when the kernel uses one: where the simulator starts it.
                let parsed = module.kernel(&k.name).unwrap();
                let expected = match parsed.shared.iter().any(|v| v.bytes.is_none()) {
                    true => parsed.dynamic_shared_offset(),
                    false => parsed.static_shared_bytes,
                };
                assert_eq!(
                    k.shared_bytes,
                    expected as u64,
                    "{}: shared memory of {}",
                    file.display(),
                    k.name
                );
                assert!(
                    k.registers > 0 && k.spill_store_bytes == 0,
                    "{}: {k:?}",
                    file.display()
                );
            }
            eprintln!("{}\n{report}", file.file_name().unwrap().to_string_lossy());
        }
    }
}

#[test]
fn ptxas_rejections_carry_its_messages() {
    let Some(bin) = ptxas_or_skip() else { return };
    let bad = ".version 7.8\n.target sm_80\n.address_size 64\n.visible .entry k()\n{\n  frobnicate.u32 %r1;\n  ret;\n}\n";
    let err = ptxas::assemble_with(&bin, bad, "sm_80").unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("rejected the PTX for sm_80") && text.contains("line 6"),
        "{text}"
    );
    assert!(
        !text.contains("calib-ptxas-"),
        "temporary paths are hidden: {text}"
    );
}
