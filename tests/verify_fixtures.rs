//! Every public fixture through `calib verify`'s code path.

use calib::runtime::Reference;
use calib::verify::{verify_fixture, Status};
use std::path::PathBuf;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures")
}

fn check(name: &str, min_passed: usize) {
    let report = verify_fixture(&fixtures().join(name), &Reference::new()).expect("verification runs");
    let failed: Vec<_> = report.rows.iter().filter(|r| r.status == Status::Fail).collect();
    assert!(failed.is_empty(), "{name}: failing rows {failed:#?}");
    assert!(report.count(Status::Pass) >= min_passed, "{name}: only {} rows passed", report.count(Status::Pass));
    assert!(report.passed());
}

#[test]
fn scconv_matches_the_authors_numbers() {
    // eval output, train output, 3 BNs x 3 buffers
    check("scconv", 2 + 9);
}

#[test]
fn scbottleneck_s1_matches_the_authors_numbers() {
    check("scbottleneck_s1", 2 + 7 * 3);
}

#[test]
fn scbottleneck_s2_down_matches_the_authors_numbers() {
    check("scbottleneck_s2_down", 2 + 8 * 3);
}

#[test]
fn tiny_scnet_matches_the_authors_numbers() {
    // eval logits, train logits, loss, 17 BNs x 3 buffers
    check("tiny_scnet", 3 + 17 * 3);
}

#[test]
fn rows_not_yet_produced_are_listed_as_not_checked_never_passed() {
    let report = verify_fixture(&fixtures().join("scconv"), &Reference::new()).unwrap();
    let row = |n: &str| report.rows.iter().find(|r| r.name == n).unwrap_or_else(|| panic!("no row {n}"));
    for name in ["train_io/grad_input", "train_grads/k2.1.weight"] {
        let r = row(name);
        assert!(r.status == Status::NotChecked || r.max_abs_err.is_some(), "{name}: {r:?}");
    }
    assert!(report.rows.iter().all(|r| r.name != "train_io/input" && r.name != "train_io/grad_output"));
}
