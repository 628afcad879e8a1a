//! The Fashion-MNIST model file of the shared material.

mod common;

use calib_ir::Mode;
use calib_models::summarize;
use common::{read_json, shared_models};

#[test]
fn fashion_scnet_has_its_stated_parameter_count() {
    let path = shared_models().join("fashion_scnet.json");
    let model = common::build_file(&path, Mode::Train);
    let input = model.graph.inputs().next().unwrap().1;
    assert_eq!(model.graph.ty(input).shape, [1, 1, 28, 28]);
    assert_eq!(model.graph.ty(model.output()).shape, [1, 10]);
    assert_eq!(model.parameter_count(), 33_610);

    let file: serde_json::Value = read_json(&path);
    assert_eq!(file["parameters"].as_u64(), Some(33_610));
    assert_eq!(summarize(&model.graph).parameters, 33_610);
}
