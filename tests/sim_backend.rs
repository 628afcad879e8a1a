//! The `sim` backend on the public fixtures: the fused plan compiled to PTX and run on
//! the PTX simulator, checked row by row against the authors' numbers: every public
//! fixture, `tiny_scnet` included (two SGD steps, about a minute on the simulator).

use calib::runtime::Backend;
use calib::verify::{verify_fixture, Status};
use calib::Sim;
use support::fixture;

mod support;

fn check(name: &str, rows: usize) {
    let report = verify_fixture(&fixture(name), &Sim::new()).expect("verification runs");
    let failed: Vec<_> = report
        .rows
        .iter()
        .filter(|r| r.status != Status::Pass)
        .collect();
    assert!(failed.is_empty(), "{name}: rows not passed {failed:#?}");
    assert_eq!(report.count(Status::Pass), rows, "{name}: rows passed");
    assert_eq!(report.backend, "sim");
}

#[test]
fn scconv_on_the_simulator() {
    check("scconv", 3 + 9 + 9);
}

#[test]
fn scbottleneck_s1_on_the_simulator() {
    check("scbottleneck_s1", 3 + 21 + 21);
}

#[test]
fn tiny_scnet_two_sgd_steps_on_the_simulator() {
    check("tiny_scnet", 1 + 3 + 51 + 53 + 104 + 53 + 2 + 53 + 104);
}

#[test]
fn scbottleneck_s2_down_on_the_simulator() {
    // 8 convs, 8 BNs: outputs, grad_input, 24 buffers, 8 + 16 gradients
    check("scbottleneck_s2_down", 3 + 24 + 24);
}

#[test]
fn a_graph_is_compiled_once() {
    let dir = fixture("scconv");
    let file = calib::models::load_spec_file(dir.join("meta.json")).unwrap();
    let shape = file.input_shape.unwrap();
    let model = calib::models::build(
        &file.spec,
        &shape,
        calib::ir::Mode::Eval,
        calib::ir::DType::F32,
    )
    .unwrap();
    let sim = Sim::new();
    let first = sim.prepare(&model.graph).unwrap();
    let again = sim.prepare(&model.graph).unwrap();
    assert!(std::sync::Arc::ptr_eq(&first, &again));
    assert_eq!(sim.name(), "sim");
}
