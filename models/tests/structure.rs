//! The four full SCNets against the authors' structure files: state_dict names, shapes,
//! order and kinds, parameter and MAC totals, per-layer MACs and shapes.

mod common;

use calib_ir::{DType, Mode};
use calib_models::{build, presets, summarize, StateKind};
use common::{fixtures, read_json, state_list};
use serde::Deserialize;
use std::collections::HashMap;
use std::time::Instant;

#[derive(Deserialize)]
struct Structure {
    input_shape: Vec<usize>,
    output_shape: Vec<usize>,
    total_parameters: usize,
    macs_conv_linear: u64,
    state_dict: Vec<StateDictEntry>,
    leaf_modules: Vec<LeafModule>,
    mac_calls: Vec<MacCall>,
}

#[derive(Deserialize)]
struct StateDictEntry {
    name: String,
    shape: Vec<usize>,
    kind: String,
    dtype: String,
}

#[derive(Deserialize)]
struct LeafModule {
    name: String,
    #[serde(rename = "type")]
    ty: String,
    out_shape: Vec<usize>,
}

#[derive(Deserialize)]
struct MacCall {
    name: String,
    macs: u64,
}

fn check(model_name: &str) {
    let path = fixtures().join(format!("{model_name}_structure.json"));
    let expected: Structure = read_json(&path);
    let model = common::build_file(&path, Mode::Eval);

    let want: Vec<_> = expected
        .state_dict
        .iter()
        .map(|e| (e.name.clone(), e.shape.clone(), e.dtype.clone()))
        .collect();
    let got = state_list(&model);
    if let Some(i) = (0..want.len().max(got.len())).find(|&i| want.get(i) != got.get(i)) {
        panic!(
            "{model_name}: state entry {i} differs: expected {:?}, built {:?}",
            want.get(i),
            got.get(i)
        );
    }
    for (e, s) in expected.state_dict.iter().zip(&model.state) {
        let kind = if s.kind == StateKind::Param {
            "param"
        } else {
            "buffer"
        };
        assert_eq!(e.kind, kind, "{model_name}: kind of {}", e.name);
    }

    assert_eq!(
        model.parameter_count(),
        expected.total_parameters,
        "{model_name}: parameters"
    );
    let summary = summarize(&model.graph);
    assert_eq!(
        summary.parameters, expected.total_parameters,
        "{model_name}: summary parameters"
    );
    assert_eq!(
        summary.macs, expected.macs_conv_linear,
        "{model_name}: MACs"
    );
    assert_eq!(
        model.graph.ty(model.output()).shape,
        expected.output_shape,
        "{model_name}: logits shape"
    );
    assert_eq!(expected.input_shape, vec![1, 3, 224, 224]);

    // Per-call MACs localize a wrong stride or width to one layer.
    let conv_like = summary.layers.iter().filter(|r| r.macs > 0).count();
    assert_eq!(
        conv_like,
        expected.mac_calls.len(),
        "{model_name}: number of conv/linear layers"
    );
    for call in &expected.mac_calls {
        let row = summary
            .layer(&call.name)
            .unwrap_or_else(|| panic!("{model_name}: no layer {}", call.name));
        assert_eq!(row.macs, call.macs, "{model_name}: MACs of {}", call.name);
    }

    // Shapes of the layers that run once (ReLUs are shared modules called several times;
    // the global pool is flattened in the IR).
    let by_scope: HashMap<&str, &Vec<usize>> = summary
        .layers
        .iter()
        .map(|r| (r.scope.as_str(), &r.shape))
        .collect();
    let mut compared = 0;
    for leaf in expected
        .leaf_modules
        .iter()
        .filter(|l| !matches!(l.ty.as_str(), "ReLU" | "AdaptiveAvgPool2d"))
    {
        let shape = by_scope
            .get(leaf.name.as_str())
            .unwrap_or_else(|| panic!("{model_name}: no layer {}", leaf.name));
        assert_eq!(
            *shape, &leaf.out_shape,
            "{model_name}: output shape of {} ({})",
            leaf.name, leaf.ty
        );
        compared += 1;
    }
    assert!(
        compared > 100,
        "{model_name}: only {compared} layers compared"
    );
}

#[test]
fn scnet50_matches_structure_file() {
    check("scnet50");
}

#[test]
fn scnet101_matches_structure_file() {
    check("scnet101");
}

#[test]
fn scnet50_v1d_matches_structure_file() {
    check("scnet50_v1d");
}

#[test]
fn scnet101_v1d_matches_structure_file() {
    check("scnet101_v1d");
}

#[test]
fn presets_equal_the_structure_specs() {
    for (name, make) in presets::PRESETS
        .iter()
        .filter(|(n, _)| n.starts_with("scnet"))
    {
        let path = fixtures().join(format!("{name}_structure.json"));
        let file = calib_models::load_spec_file(path).unwrap();
        assert_eq!(make(), file.spec, "preset {name}");
        assert_eq!(presets::preset(name), Some(file.spec));
    }
    assert_eq!(presets::preset("scnet42"), None);
}

#[test]
fn scnet101_builds_quickly() {
    let spec = presets::scnet101_v1d();
    let start = Instant::now();
    let model = build(&spec, &spec.default_input_shape(), Mode::Train, DType::F32).unwrap();
    let elapsed = start.elapsed();
    assert!(model.graph.nodes.len() > 10_000);
    // Generous bound for a shared, loaded machine; a quadratic builder takes far longer.
    assert!(
        elapsed.as_secs_f64() < 3.0,
        "building SCNet-101-v1d took {elapsed:?}"
    );
}
