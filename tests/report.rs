//! `calib report` on the tiny SCNet fixture: the kernel table filters in the browser,
//! `--against` lists the kernels two plans differ in, and bad input is named, never a
//! panic. The SCNet-50 page is tested in `report_browser.rs`.

mod support;

use calib::ir::Program;
use serde_json::json;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use support::{calib, cdp, fixture};

fn compile(out: &Path, extra: &[&str]) {
    let mut args: Vec<String> = vec![
        "compile".into(),
        fixture("tiny_scnet").to_str().unwrap().to_owned(),
        "--train".into(),
        "--out".into(),
        out.to_str().unwrap().to_owned(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let run = calib(&args);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
}

/// Two compiles of the tiny step, the full plan (with PTX) and one without the sibling
/// merges, made once per test binary.
fn compiles() -> &'static (PathBuf, PathBuf) {
    static DIRS: OnceLock<(PathBuf, PathBuf)> = OnceLock::new();
    DIRS.get_or_init(|| {
        let root = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("report-tiny");
        let (full, ablated) = (root.join("full"), root.join("no-siblings"));
        compile(&full, &["--emit-ptx"]);
        compile(&ablated, &["--disable-rule", "siblings"]);
        (full, ablated)
    })
}

fn program(dir: &Path) -> Program {
    Program::from_json(&std::fs::read_to_string(dir.join("after.json")).unwrap()).unwrap()
}

/// Kernels of `a` without a kernel covering the same original nodes in `b`: the diff's
/// definition, computed here from the plans themselves.
fn only_in(a: &Program, b: &Program) -> usize {
    let key = |covers: &[usize]| {
        let mut c = covers.to_vec();
        c.sort_unstable();
        c
    };
    let mut left: HashMap<Vec<usize>, usize> = HashMap::new();
    for k in &b.kernels {
        *left.entry(key(&k.covers)).or_default() += 1;
    }
    a.kernels
        .iter()
        .filter(|k| match left.get_mut(&key(&k.covers)) {
            Some(n) if *n > 0 => {
                *n -= 1;
                false
            }
            _ => true,
        })
        .count()
}

fn stderr_of(args: &[&str]) -> String {
    let run = calib(args);
    assert!(!run.status.success(), "calib {args:?} should fail");
    let stderr = String::from_utf8_lossy(&run.stderr).to_string();
    assert!(!stderr.contains("panicked"), "{stderr}");
    stderr
}

#[test]
fn table_filters_and_the_diff_lists_kernels_gained_and_lost() {
    let Some(mut browser) = cdp::launch() else {
        return;
    };
    let (full, ablated) = compiles();
    let run = calib(&[
        "report",
        full.to_str().unwrap(),
        "--against",
        ablated.to_str().unwrap(),
    ]);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let mut page = browser.page(1400, 1000);
    page.open(&full.join("report.html"));
    let total = program(full).kernels.len();
    let rows = "document.querySelectorAll('#kernel-table tbody tr').length";
    assert_eq!(page.eval(rows), json!(total));
    let filter = |words: &str| {
        format!(
            "{{ const f = document.querySelector('#kernel-filter'); f.value = {words:?}; \
             f.dispatchEvent(new Event('input')); }}"
        )
    };
    page.eval(&filter("conv2d"));
    let labels = page
        .eval("[...document.querySelectorAll('#kernel-table tbody tr')].map(r => r.textContent)");
    let labels = labels.as_array().unwrap();
    assert!(
        !labels.is_empty() && labels.len() < total,
        "{} of {total}",
        labels.len()
    );
    assert!(labels
        .iter()
        .all(|l| l.as_str().unwrap().contains("conv2d")));
    let count = page.eval("document.querySelector('#kernel-count').textContent");
    assert_eq!(count, json!(format!("{} of {total} kernels", labels.len())));
    page.eval(&filter("conv2d no-such-layer"));
    assert_eq!(page.eval(rows), json!(0));

    let (a, b) = (program(full), program(ablated));
    let (gained, lost) = (only_in(&a, &b), only_in(&b, &a));
    assert!(
        gained + lost > 0,
        "turning the sibling merges off changes the plan"
    );
    let mut heading = |id: &str| {
        page.eval(&format!(
            "document.querySelector('#diff-{id}').previousElementSibling.textContent"
        ))
    };
    assert!(heading("gained")
        .as_str()
        .unwrap()
        .ends_with(&format!(": {gained}")));
    assert!(heading("lost")
        .as_str()
        .unwrap()
        .ends_with(&format!(": {lost}")));
    let shown = page.eval("document.querySelectorAll('#diff-gained tbody tr').length");
    assert_eq!(shown, json!(gained.min(50)));
    assert_eq!(page.errors(), Vec::<String>::new());
}

#[test]
fn a_compile_without_ptx_gets_a_page_that_says_so() {
    let (_, ablated) = compiles();
    let run = calib(&["report", ablated.to_str().unwrap()]);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let html = std::fs::read_to_string(ablated.join("report.html")).unwrap();
    assert!(html.contains("ran without --emit-ptx"));
    assert!(html.contains("Rules off in this compile"));
}

#[test]
fn bad_input_is_named() {
    let (full, _) = compiles();
    let empty = tempfile::tempdir().unwrap();
    let err = stderr_of(&["report", empty.path().to_str().unwrap()]);
    assert!(
        err.contains("is not a `calib compile --out DIR` output"),
        "{err}"
    );
    assert!(err.contains("report.json"), "{err}");

    let csv = empty.path().join("times.csv");
    std::fs::write(
        &csv,
        "launch,kernel,block,grid,measured_us,plan_kernel,anchor,label,flops,bytes,estimated_us\n\
         0,k0,\"(256,1,1)\",\"(1,1,1)\",soon,k0,convolution,conv2d@conv1,1,1,1\n",
    )
    .unwrap();
    let err = stderr_of(&[
        "report",
        full.to_str().unwrap(),
        "--timings",
        csv.to_str().unwrap(),
    ]);
    assert!(
        err.contains("times.csv: line 2: measured_us `soon`"),
        "{err}"
    );
    let err = stderr_of(&["report", full.to_str().unwrap(), "--timings", "no/such.csv"]);
    assert!(err.contains("no/such.csv"), "{err}");

    // A compile with --emit-ptx that lost one of its PTX files.
    let copy = empty.path().join("copy");
    std::fs::create_dir(&copy).unwrap();
    for entry in std::fs::read_dir(full).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, copy.join(path.file_name().unwrap())).unwrap();
    }
    std::fs::remove_file(copy.join("k0.ptx")).unwrap();
    let err = stderr_of(&["report", copy.to_str().unwrap()]);
    assert!(err.contains("k0.ptx"), "{err}");
}
