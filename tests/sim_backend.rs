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

/// The plan the fixture test above runs combines split statistics in the last block of
/// their launch (`codegen/src/serial_combine.rs`), so that test checks those kernels
/// against PyTorch (`codegen/tests/reduction.rs` checks that a second run over the same
/// memory finds the semaphore reset).
#[test]
fn tiny_scnet_step_combines_split_statistics_in_their_last_block() {
    use calib::passes::{train_step, TrainConfig};
    let dir = fixture("tiny_scnet");
    let file = calib::models::load_spec_file(dir.join("meta.json")).unwrap();
    let shape = file.input_shape.unwrap();
    let mode = calib::ir::Mode::Train;
    let model = calib::models::build(&file.spec, &shape, mode, calib::ir::DType::F32).unwrap();
    let step = train_step(&model.graph, &TrainConfig::default()).unwrap();
    let plan = Sim::new().prepare(&step.graph).unwrap();
    let plan = plan.plan();
    let launches = |name: &str| plan.kernels.iter().filter(|l| l.kernel == name).count();
    let in_place: Vec<&str> = (plan.program.kernels.iter())
        .filter(|k| k.semaphore.is_some() && launches(&k.name) == 1)
        .map(|k| k.name.as_str())
        .collect();
    assert!(!in_place.is_empty(), "no kernel combines in its last block");
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

#[test]
fn a_plan_larger_than_the_host_is_refused_before_the_simulator_allocates() {
    use calib::ir::{DType, GraphBuilder, Mode};
    use calib::runtime::{memory, Bindings, Carry, HostTensor, RuntimeError};
    let Some(available) = memory::host_available() else {
        return; // no figure to check against (not Linux)
    };
    // Outputs of 2 GiB each (under the 2^31 elements a kernel indexes), more of them
    // than the host can hold.
    let outputs = (available.bytes >> 31) + 1;
    let mut g = GraphBuilder::new(Mode::Eval, DType::F32);
    let x = g.input("x", DType::F32, vec![1]).unwrap();
    for i in 0..outputs {
        let shifted = g.add_scalar(x, i as f64).unwrap();
        let big = g.broadcast_to(shifted, &[1 << 29]).unwrap();
        g.output(&format!("y{i}"), big).unwrap();
    }
    let graph = g.finish();
    let sim = Sim::new();
    let refused = |e: RuntimeError| match e {
        RuntimeError::OutOfMemory { required, .. } => assert!(required > available.bytes),
        other => panic!("expected OutOfMemory, got {other}"),
    };
    refused(sim.check_memory(&graph, 1).unwrap_err());
    let x = HostTensor::from_f32(vec![1], vec![1.0]).unwrap();
    refused(
        sim.run(&graph, &Bindings::new().input("x", &x))
            .unwrap_err(),
    );
    let session = sim.session(&graph, &Carry::new(), 0);
    refused(session.err().expect("the session must be refused"));
}
