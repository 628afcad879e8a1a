//! Every public fixture through `calib verify`'s code path.

use calib::runtime::Reference;
use calib::verify::{verify_fixture, Status};
mod support;

use support::fixture;

fn check(name: &str, rows: usize) {
    let report = verify_fixture(&fixture(name), &Reference::new()).expect("verification runs");
    let failed: Vec<_> = report
        .rows
        .iter()
        .filter(|r| r.status == Status::Fail)
        .collect();
    assert!(failed.is_empty(), "{name}: failing rows {failed:#?}");
    assert_eq!(
        report.count(Status::NotChecked),
        0,
        "{name}: every stored tensor is compared"
    );
    assert_eq!(report.count(Status::Pass), rows, "{name}: rows passed");
    assert!(report.passed());
}

#[test]
fn scconv_matches_the_authors_numbers() {
    // eval + train outputs, grad_input, 3 BNs x 3 buffers, 9 parameter gradients
    check("scconv", 3 + 9 + 9);
}

#[test]
fn scbottleneck_s1_matches_the_authors_numbers() {
    // 7 convs, 7 BNs: outputs, grad_input, 21 buffers, 7 + 14 gradients
    check("scbottleneck_s1", 3 + 21 + 21);
}

#[test]
fn scbottleneck_s2_down_matches_the_authors_numbers() {
    check("scbottleneck_s2_down", 3 + 24 + 24);
}

#[test]
fn tiny_scnet_matches_the_authors_numbers() {
    // 17 convs + 17 BNs + fc: 53 params, 51 buffers, 104 state entries.
    // eval logits; train logits, loss, grad_input; 51 buffers; 53 grads; step 1: 104 state
    // + 53 momentum; step 2: logits, loss, 53 grads, 104 state.
    check("tiny_scnet", 1 + 3 + 51 + 53 + 104 + 53 + 2 + 53 + 104);
}

#[test]
fn a_wrong_gradient_fails_its_row() {
    // Corrupt one stored gradient in a copy of the fixture: its row, and only its row, fails.
    let dir = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(fixture("scconv")).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, dir.path().join(path.file_name().unwrap())).unwrap();
    }
    let path = dir.path().join("train_grads.safetensors");
    let mut grads = calib::runtime::weights::load(&path).unwrap();
    let w = grads["k3.0.weight"].clone();
    let mut v = w.to_f32_vec();
    v[5] += 0.5;
    grads.insert(
        "k3.0.weight".into(),
        calib::runtime::HostTensor::from_f32(w.shape().to_vec(), v).unwrap(),
    );
    calib::runtime::weights::save(&path, &grads).unwrap();
    let report = verify_fixture(dir.path(), &Reference::new()).unwrap();
    let failed: Vec<_> = report
        .rows
        .iter()
        .filter(|r| r.status == Status::Fail)
        .map(|r| r.name.as_str())
        .collect();
    assert_eq!(failed, vec!["train_grads/k3.0.weight"]);
    assert!(!report.passed());
}
