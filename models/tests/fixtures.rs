//! The four numeric fixtures: each `meta.json` spec, built at its input shape, has exactly
//! the tensors of its `params.safetensors` (names, shapes, dtypes, order) and its shapes.

mod common;

use calib_ir::{DType, Mode};
use calib_models::{build, load_spec_file, summarize, ModelSpec, StateKind};
use common::{fixtures, read_json, state_list, Meta};

fn meta(name: &str) -> Meta {
    read_json(&fixtures().join(name).join("meta.json"))
}

fn check_params(name: &str) {
    let meta = meta(name);
    let model = common::build_file(&fixtures().join(name), Mode::Eval);
    let params = meta
        .files
        .iter()
        .find(|f| f.file == "params.safetensors")
        .expect("params.safetensors entry");
    let want: Vec<_> = params
        .tensors
        .0
        .iter()
        .map(|(n, t)| (n.clone(), t.shape.clone(), t.dtype.clone()))
        .collect();
    assert!(!want.is_empty());
    assert_eq!(
        state_list(&model),
        want,
        "{name}: state vs params.safetensors"
    );
    assert_eq!(
        model.graph.ty(model.output()).shape,
        meta.output_shape,
        "{name}: output shape"
    );
    let (input_name, input) = model.graph.inputs().next().expect("one input");
    assert_eq!(input_name, "input");
    assert_eq!(model.graph.ty(input).shape, meta.input_shape);
}

#[test]
fn scconv_state_matches_params() {
    check_params("scconv");
}

#[test]
fn scbottleneck_s1_state_matches_params() {
    check_params("scbottleneck_s1");
}

#[test]
fn scbottleneck_s2_down_state_matches_params() {
    check_params("scbottleneck_s2_down");
}

#[test]
fn tiny_scnet_state_matches_params() {
    check_params("tiny_scnet");
}

#[test]
fn outputs_are_named_by_kind() {
    for (name, output) in [
        ("scconv", "output"),
        ("scbottleneck_s1", "output"),
        ("tiny_scnet", "logits"),
    ] {
        let model = common::build_file(&fixtures().join(name), Mode::Eval);
        let names: Vec<_> = model
            .graph
            .outputs
            .iter()
            .map(|o| o.name.as_str())
            .collect();
        assert_eq!(names, [output], "{name}");
    }
}

#[test]
fn tiny_scnet_layer_shapes_match_trace() {
    let trace = meta("tiny_scnet")
        .shape_trace_eval
        .expect("tiny_scnet has a shape trace");
    let model = common::build_file(&fixtures().join("tiny_scnet"), Mode::Eval);
    let summary = summarize(&model.graph);
    let mut compared = 0;
    for (scope, io) in &trace {
        // ReLU modules are called more than once per block; the IR's global pool is flattened.
        if scope.ends_with("relu") || scope == "avgpool" {
            continue;
        }
        let row = summary
            .layer(scope)
            .unwrap_or_else(|| panic!("no layer {scope}"));
        assert_eq!(row.shape, io.out, "output shape of {scope}");
        compared += 1;
    }
    assert_eq!(compared, trace.len() - 4); // relu, layer1.0.relu, layer2.0.relu, avgpool
    assert_eq!(
        summary.layer("layer2.0.scconv.k2.0").unwrap().op,
        "avg_pool2d"
    );
    assert_eq!(summary.layer("layer2.0.bn3").unwrap().op, "batch_norm");
    assert_eq!(summary.layer("fc").unwrap().op, "matmul+add");
}

#[test]
fn train_mode_outputs_every_new_buffer() {
    let model = common::build_file(&fixtures().join("tiny_scnet"), Mode::Train);
    assert_eq!(model.graph.outputs[0].name, "logits");
    let outputs: Vec<_> = model.graph.outputs[1..]
        .iter()
        .map(|o| o.name.clone())
        .collect();
    let buffers: Vec<_> = model
        .state
        .iter()
        .filter(|e| e.kind == StateKind::Buffer)
        .map(|e| e.name.clone())
        .collect();
    assert_eq!(outputs, buffers);
    for o in &model.graph.outputs[1..] {
        let entry = model.state.iter().find(|e| e.name == o.name).unwrap();
        assert_eq!(model.graph.ty(o.value), &entry.ty, "{}", o.name);
    }
}

#[test]
fn spec_loads_from_every_kind_of_file() {
    let dir = load_spec_file(fixtures().join("scconv")).unwrap();
    let meta_file = load_spec_file(fixtures().join("scconv/meta.json")).unwrap();
    assert_eq!(dir, meta_file);
    assert_eq!(dir.input_shape, Some(vec![2, 8, 16, 16]));

    let bare = calib_models::parse_spec_file(&serde_json::to_string(&dir.spec).unwrap()).unwrap();
    assert_eq!(bare.spec, dir.spec);
    assert_eq!(bare.input_shape, None);
    assert_eq!(bare.input_shape_or_default(), vec![1, 8, 56, 56]);

    let structure = load_spec_file(fixtures().join("scnet50_structure.json")).unwrap();
    assert_eq!(structure.input_shape, Some(vec![1, 3, 224, 224]));
    assert_eq!(structure.spec.default_input_shape(), vec![1, 3, 224, 224]);
}

#[test]
fn half_precision_builds_with_i64_counters() {
    let spec: ModelSpec = load_spec_file(fixtures().join("scconv")).unwrap().spec;
    let model = build(&spec, &[2, 8, 16, 16], Mode::Eval, DType::BF16).unwrap();
    for e in &model.state {
        let want = if e.name.ends_with("num_batches_tracked") {
            DType::I64
        } else {
            DType::BF16
        };
        assert_eq!(e.ty.dtype, want, "{}", e.name);
    }
    assert_eq!(model.graph.ty(model.output()).dtype, DType::BF16);
}
