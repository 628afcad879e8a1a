//! torchvision's ResNet-50: its published size and cost, and its state_dict names.

use calib_ir::{DType, Mode};
use calib_models::{build, presets, summarize, StateKind};

fn bn(prefix: &str) -> Vec<String> {
    [
        "weight",
        "bias",
        "running_mean",
        "running_var",
        "num_batches_tracked",
    ]
    .iter()
    .map(|s| format!("{prefix}.{s}"))
    .collect()
}

#[test]
fn resnet50_has_torchvisions_size_and_cost() {
    let spec = presets::resnet50();
    let model = build(&spec, &spec.default_input_shape(), Mode::Eval, DType::F32).unwrap();
    assert_eq!(model.parameter_count(), 25_557_032);
    let summary = summarize(&model.graph);
    assert_eq!(summary.parameters, 25_557_032);
    assert_eq!(summary.macs, 4_089_184_256);
    assert_eq!(model.graph.ty(model.output()).shape, [1, 1000]);
    // 53 convs, 53 BNs of five entries each, fc weight and bias.
    assert_eq!(model.state.len(), 320);
    assert_eq!(
        model
            .state
            .iter()
            .filter(|e| e.kind == StateKind::Param)
            .count(),
        161
    );
}

#[test]
fn resnet50_uses_torchvisions_names_in_order() {
    let spec = presets::resnet50();
    let model = build(&spec, &spec.default_input_shape(), Mode::Eval, DType::F32).unwrap();
    let names: Vec<&str> = model.state.iter().map(|e| e.name.as_str()).collect();

    let mut head = vec!["conv1.weight".to_string()];
    head.extend(bn("bn1"));
    for (conv, norm) in [
        ("conv1", "bn1"),
        ("conv2", "bn2"),
        ("conv3", "bn3"),
        ("downsample.0", "downsample.1"),
    ] {
        head.push(format!("layer1.0.{conv}.weight"));
        head.extend(bn(&format!("layer1.0.{norm}")));
    }
    head.push("layer1.1.conv1.weight".into());
    assert_eq!(
        names[..head.len()],
        head.iter().map(String::as_str).collect::<Vec<_>>()[..]
    );
    assert_eq!(names[names.len() - 2..], ["fc.weight", "fc.bias"]);

    let shape = |name: &str| {
        model
            .state
            .iter()
            .find(|e| e.name == name)
            .map(|e| e.ty.shape.clone())
    };
    assert_eq!(shape("fc.weight"), Some(vec![1000, 2048]));
    assert_eq!(shape("layer4.2.conv3.weight"), Some(vec![2048, 512, 1, 1]));
    assert_eq!(
        shape("layer3.0.downsample.0.weight"),
        Some(vec![1024, 512, 1, 1])
    );
    assert_eq!(shape("layer1.1.downsample.0.weight"), None);
}

#[test]
fn resnet50_strides_on_the_3x3_conv() {
    let spec = presets::resnet50();
    let model = build(&spec, &spec.default_input_shape(), Mode::Eval, DType::F32).unwrap();
    let summary = summarize(&model.graph);
    let shape = |scope: &str| summary.layer(scope).map(|r| r.shape.clone());
    assert_eq!(shape("layer2.0.conv1"), Some(vec![1, 128, 56, 56]));
    assert_eq!(shape("layer2.0.conv2"), Some(vec![1, 128, 28, 28]));
    assert_eq!(shape("layer2.0.downsample.0"), Some(vec![1, 512, 28, 28]));
    assert_eq!(shape("layer4.2.relu"), Some(vec![1, 2048, 7, 7]));
}
