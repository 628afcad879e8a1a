//! Impossible specs and inputs are refused with an error that names the culprit.

use calib_ir::{DType, Mode};
use calib_models::{build, load_spec_file, parse_spec_file, presets, ModelError, ModelSpec};
use serde_json::{json, Value};

fn scconv() -> Value {
    json!({"kind": "scconv", "channels": 8, "stride": 1, "padding": 1, "dilation": 1, "groups": 1, "pooling_r": 4})
}

fn scbottleneck() -> Value {
    json!({"kind": "scbottleneck", "inplanes": 32, "planes": 16, "stride": 2, "cardinality": 1,
           "bottleneck_width": 32, "avd": false, "is_first": false, "dilation": 1, "pooling_r": 4,
           "downsample": {"kind": "conv", "stride": 2}})
}

fn scnet() -> Value {
    serde_json::to_value(presets::scnet50()).unwrap()
}

/// Parses `spec` after `edit`, expecting an error whose message contains every `needle`.
fn rejected(mut spec: Value, edit: impl FnOnce(&mut Value), needles: &[&str]) -> ModelError {
    edit(&mut spec);
    let err = parse_spec_file(&spec.to_string()).expect_err("spec must be rejected");
    let message = err.to_string();
    for needle in needles {
        assert!(
            message.contains(needle),
            "`{message}` should mention `{needle}`"
        );
    }
    err
}

fn invalid_field(err: &ModelError) -> &str {
    match err {
        ModelError::InvalidSpec { field, .. } => field,
        other => panic!("expected InvalidSpec, got {other:?}"),
    }
}

#[test]
fn valid_bases_parse() {
    for spec in [scconv(), scbottleneck(), scnet()] {
        parse_spec_file(&spec.to_string()).unwrap();
    }
}

#[test]
fn zero_channels() {
    let err = rejected(
        scconv(),
        |s| s["channels"] = json!(0),
        &["channels", "positive"],
    );
    assert_eq!(invalid_field(&err), "channels");
    let err = rejected(scbottleneck(), |s| s["inplanes"] = json!(0), &["inplanes"]);
    assert_eq!(invalid_field(&err), "inplanes");
    let err = rejected(scnet(), |s| s["stem"]["width"] = json!(0), &["stem.width"]);
    assert_eq!(invalid_field(&err), "stem.width");
}

#[test]
fn zero_blocks() {
    let err = rejected(
        scnet(),
        |s| s["stages"][1]["blocks"] = json!(0),
        &["stages[1].blocks", "positive"],
    );
    assert_eq!(invalid_field(&err), "stages[1].blocks");
}

#[test]
fn zero_stride() {
    let err = rejected(
        scnet(),
        |s| s["stem"]["stride"] = json!(0),
        &["stem.stride"],
    );
    assert_eq!(invalid_field(&err), "stem.stride");
    let err = rejected(scconv(), |s| s["stride"] = json!(0), &["stride"]);
    assert_eq!(invalid_field(&err), "stride");
    let err = rejected(
        scnet(),
        |s| s["stages"][2]["stride"] = json!(0),
        &["stages[2].stride"],
    );
    assert_eq!(invalid_field(&err), "stages[2].stride");
}

#[test]
fn groups_not_dividing_channels() {
    let err = rejected(
        scconv(),
        |s| s["groups"] = json!(3),
        &["groups", "does not divide channels = 8"],
    );
    assert_eq!(invalid_field(&err), "groups");
}

#[test]
fn branch_width_zero() {
    // int(1 * 32 / 64) = 0 channels per branch.
    let err = rejected(
        scbottleneck(),
        |s| s["planes"] = json!(1),
        &["planes", "branch width"],
    );
    assert_eq!(invalid_field(&err), "planes");
    let err = rejected(
        scnet(),
        |s| s["stages"][0]["planes"] = json!(1),
        &["stages[0].planes", "= 0"],
    );
    assert_eq!(invalid_field(&err), "stages[0].planes");
}

#[test]
fn pooling_r_zero() {
    let err = rejected(scconv(), |s| s["pooling_r"] = json!(0), &["pooling_r"]);
    assert_eq!(invalid_field(&err), "pooling_r");
}

#[test]
fn empty_stages() {
    let err = rejected(scnet(), |s| s["stages"] = json!([]), &["stages", "empty"]);
    assert_eq!(invalid_field(&err), "stages");
}

#[test]
fn zero_classes_and_cardinality() {
    let err = rejected(scnet(), |s| s["num_classes"] = json!(0), &["num_classes"]);
    assert_eq!(invalid_field(&err), "num_classes");
    let err = rejected(scnet(), |s| s["cardinality"] = json!(0), &["cardinality"]);
    assert_eq!(invalid_field(&err), "cardinality");
}

#[test]
fn absurd_extent() {
    let err = rejected(
        scconv(),
        |s| s["channels"] = json!(1u64 << 40),
        &["channels", "at most"],
    );
    assert_eq!(invalid_field(&err), "channels");
}

#[test]
fn padding_other_than_dilation() {
    let err = rejected(
        scconv(),
        |s| s["padding"] = json!(0),
        &["padding", "must equal dilation"],
    );
    assert_eq!(invalid_field(&err), "padding");
}

#[test]
fn identity_shortcut_on_a_reshaping_block() {
    let err = rejected(
        scbottleneck(),
        |s| s["downsample"] = json!(null),
        &["downsample", "identity"],
    );
    assert_eq!(invalid_field(&err), "downsample");
}

#[test]
fn shortcut_stride_differs_from_block() {
    let err = rejected(
        scbottleneck(),
        |s| s["downsample"]["stride"] = json!(1),
        &["downsample.stride"],
    );
    assert_eq!(invalid_field(&err), "downsample.stride");
    let pooled = json!({"kind": "avgpool_conv", "pool": 3});
    let err = rejected(
        scbottleneck(),
        |s| s["downsample"] = pooled,
        &["downsample.pool"],
    );
    assert_eq!(invalid_field(&err), "downsample.pool");
}

#[test]
fn unknown_kind() {
    let err = rejected(
        scconv(),
        |s| s["kind"] = json!("transformer"),
        &["unknown variant `transformer`"],
    );
    assert!(matches!(err, ModelError::Parse { .. }));
    let err = rejected(
        scnet(),
        |s| s["stem"]["kind"] = json!("conv5x5"),
        &["conv5x5"],
    );
    assert!(matches!(err, ModelError::Parse { .. }));
    let err = rejected(
        scbottleneck(),
        |s| s["downsample"]["kind"] = json!("maxpool_conv"),
        &["maxpool_conv"],
    );
    assert!(matches!(err, ModelError::Parse { .. }));
}

#[test]
fn misspelled_or_missing_field() {
    rejected(
        scconv(),
        |s| s["pooling"] = s["pooling_r"].take(),
        &["pooling"],
    );
    rejected(
        scnet(),
        |s| _ = s.as_object_mut().unwrap().remove("avd"),
        &["missing field `avd`"],
    );
    rejected(scconv(), |s| s["channels"] = json!(-8), &["invalid value"]);
}

#[test]
fn malformed_input_shape_in_file() {
    let doc = json!({"spec": scconv(), "input_shape": [8, 16]});
    let err = parse_spec_file(&doc.to_string()).unwrap_err();
    assert!(
        err.to_string()
            .contains("`input_shape` = [8,16] must have 3 (C,H,W) or 4 (N,C,H,W) entries, got 2"),
        "{err}"
    );
    assert!(parse_spec_file("[1, 2]")
        .unwrap_err()
        .to_string()
        .contains("expected a JSON object"));
}

#[test]
fn missing_file() {
    let err = load_spec_file("no/such/meta.json").unwrap_err();
    assert!(matches!(err, ModelError::Io { .. }), "{err:?}");
    assert!(err.to_string().contains("no/such/meta.json"));
}

fn spec_of(v: Value) -> ModelSpec {
    parse_spec_file(&v.to_string()).unwrap().spec
}

#[test]
fn input_shape_must_fit() {
    let spec = spec_of(scconv());
    let message = |shape: &[usize]| {
        build(&spec, shape, Mode::Eval, DType::F32)
            .unwrap_err()
            .to_string()
    };
    assert!(message(&[8, 16, 16]).contains("expected 4 dimensions"));
    assert!(message(&[1, 3, 16, 16]).contains("expects 8 input channels, got 3"));
    assert!(message(&[1, 8, 0, 16]).contains("every extent"));
    assert!(message(&[1 << 24, 8, 1 << 14, 1 << 14]).contains("elements"));
    assert!(message(&[1 << 25, 8, 16, 16]).contains("batch 33554432 is over the limit"));
    assert!(message(&[1, 8, 16, 1 << 15]).contains("side 32768 is over the limit"));
}

#[test]
fn input_too_small_names_the_layer() {
    // A 2x2 map cannot hold SCConv's 4x4 context pool.
    let err = build(&spec_of(scconv()), &[1, 8, 2, 2], Mode::Eval, DType::F32).unwrap_err();
    assert!(matches!(err, ModelError::Ir(_)), "{err:?}");
    assert!(err.to_string().contains("k2.0"), "{err}");
}

#[test]
fn integer_activations_are_refused() {
    let err = build(&spec_of(scconv()), &[1, 8, 16, 16], Mode::Eval, DType::I64).unwrap_err();
    assert!(err.to_string().contains("floating-point"), "{err}");
}

#[test]
fn spec_sizes_are_bounded_by_what_a_gpu_could_hold() {
    use calib_models::spec::{MAX_BLOCKS, MAX_CHANNELS, MAX_CLASSES, MAX_SIDE};
    let err = rejected(
        scnet(),
        |s| s["stages"][1]["stride"] = json!(1_000_000),
        &["stages[1].stride", "at most 16384", "1000000"],
    );
    assert_eq!(invalid_field(&err), "stages[1].stride");
    let err = rejected(
        scnet(),
        |s| s["stages"][3]["planes"] = json!(MAX_CHANNELS / 4 + 1),
        &["stages[3].planes", "planes * 4"],
    );
    assert_eq!(invalid_field(&err), "stages[3].planes");
    let err = rejected(
        scnet(),
        |s| s["num_classes"] = json!(MAX_CLASSES + 1),
        &["num_classes", "at most 1048576"],
    );
    assert_eq!(invalid_field(&err), "num_classes");
    let err = rejected(
        scnet(),
        |s| s["stem"]["width"] = json!(MAX_CHANNELS + 1),
        &["stem.width", "at most 32768"],
    );
    assert_eq!(invalid_field(&err), "stem.width");
    // A deep stem doubles its width; the bound is on what leaves it, and no overflow.
    for width in [MAX_CHANNELS / 2 + 1, usize::MAX] {
        let err = rejected(
            scnet(),
            |s| {
                s["stem"]["kind"] = json!("deep");
                s["stem"]["width"] = json!(width);
            },
            &["stem.width", "2 * width"],
        );
        assert_eq!(invalid_field(&err), "stem.width");
    }
    let err = rejected(
        scconv(),
        |s| s["pooling_r"] = json!(MAX_SIDE + 1),
        &["pooling_r", "largest image side"],
    );
    assert_eq!(invalid_field(&err), "pooling_r");
    // One stage over the bound, then stages that pass one by one but not together.
    let err = rejected(
        scnet(),
        |s| s["stages"][0]["blocks"] = json!(MAX_BLOCKS + 1),
        &["stages[0].blocks", "at most 4096"],
    );
    assert_eq!(invalid_field(&err), "stages[0].blocks");
    let err = rejected(
        scnet(),
        |s| {
            s["stages"][0]["blocks"] = json!(MAX_BLOCKS / 2);
            s["stages"][2]["blocks"] = json!(MAX_BLOCKS / 2);
        },
        &["stages[2].blocks", "4100 blocks", "all stages together"],
    );
    assert_eq!(invalid_field(&err), "stages[2].blocks");
    // The bounds themselves are accepted.
    let mut at_limit = scnet();
    at_limit["stages"][0]["blocks"] = json!(MAX_BLOCKS - 13);
    at_limit["num_classes"] = json!(MAX_CLASSES);
    parse_spec_file(&at_limit.to_string()).unwrap();
}

#[test]
fn a_stride_too_large_for_the_image_names_the_stage() {
    // Within the bounds, but stage 2 shrinks a 56x56 map to 1x1, where SCConv's 4x4
    // context pool has no room: the stage is named with its values, then the layer.
    let mut spec = scnet();
    spec["stages"][1]["stride"] = json!(1000);
    let spec = spec_of(spec);
    let err = build(&spec, &[1, 3, 224, 224], Mode::Eval, DType::F32).unwrap_err();
    assert!(matches!(err, ModelError::DoesNotFit { .. }), "{err:?}");
    let message = err.to_string();
    for part in [
        "`stages[1]`",
        "stride 1000",
        "[1,3,224,224]",
        "entering it is 56x56",
        "layer2.1",
    ] {
        assert!(message.contains(part), "`{part}` missing from: {message}");
    }
    // A stem too strided for the image is the stem's fault.
    let mut spec = scnet();
    spec["stem"]["stride"] = json!(500);
    let err = build(&spec_of(spec), &[1, 3, 224, 224], Mode::Eval, DType::F32).unwrap_err();
    let message = err.to_string();
    // The stem shrank 224 to 1 and the maxpool kept it: the first stage cannot pool it,
    // and the message shows the 1x1 map it was given.
    for part in ["`stages[0]`", "entering it is 1x1"] {
        assert!(message.contains(part), "`{part}` missing from: {message}");
    }
}

#[test]
fn a_meta_json_without_spec_says_so() {
    let doc = json!({"fixture": "x", "input_shape": [1, 3, 8, 8]});
    let err = parse_spec_file(&doc.to_string()).unwrap_err().to_string();
    assert!(err.contains("no `spec` field"), "{err}");
    assert!(!err.contains("missing field `kind`"), "{err}");
    // A spec inside `spec` that does not parse is reported as the `spec` field's.
    let doc = json!({"spec": {"kind": "scconv"}, "input_shape": [8, 16, 16]});
    let err = parse_spec_file(&doc.to_string()).unwrap_err().to_string();
    assert!(err.contains("`spec`: missing field"), "{err}");
}

#[test]
fn an_input_shape_that_does_not_fit_is_quoted_as_written() {
    let doc = json!({"spec": scnet(), "input_shape": [2, 8, 16]});
    let err = parse_spec_file(&doc.to_string()).unwrap_err();
    assert_eq!(invalid_field(&err), "input_shape");
    let message = err.to_string();
    assert!(message.contains("[2,8,16] (C,H,W)"), "{message}");
    assert!(
        message.contains("expects 3 input channels, got 2"),
        "{message}"
    );
    assert!(!message.contains("[1,2,8,16]"), "{message}");
    let doc = json!({"spec": scnet(), "input_shape": [0, 3, 16, 16]});
    let message = parse_spec_file(&doc.to_string()).unwrap_err().to_string();
    assert!(message.contains("[0,3,16,16] (N,C,H,W)"), "{message}");
    assert!(message.contains("positive"), "{message}");
}

#[test]
fn errors_in_a_spec_file_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("meta.json");
    let mut spec = scconv();
    spec["channels"] = json!(0);
    std::fs::write(&path, json!({"spec": spec}).to_string()).unwrap();
    // A fixture directory is read through its meta.json, which the error names.
    let err = load_spec_file(dir.path()).unwrap_err();
    assert!(matches!(err, ModelError::File { .. }), "{err:?}");
    let message = err.to_string();
    assert!(
        message.contains("meta.json") && message.contains("`channels`"),
        "{message}"
    );
    std::fs::write(&path, "{\"spec\": ").unwrap();
    let message = load_spec_file(&path).unwrap_err().to_string();
    assert!(
        message.contains("meta.json") && message.contains("EOF"),
        "{message}"
    );
}
