//! SCBottleneck features the fixtures leave at their defaults: avd, is_first, dilation,
//! cardinality and the pooled (v1d) shortcut on odd sizes.

use calib_ir::{DType, Mode, Op};
use calib_models::spec::{Downsample, ScBottleneckSpec};
use calib_models::{build, summarize, Model, ModelSpec};

fn block() -> ScBottleneckSpec {
    ScBottleneckSpec {
        inplanes: 64,
        planes: 32,
        stride: 2,
        cardinality: 1,
        bottleneck_width: 64,
        avd: false,
        is_first: false,
        dilation: 1,
        pooling_r: 4,
        downsample: Some(Downsample::Conv { stride: 2 }),
    }
}

fn built(spec: ScBottleneckSpec, side: usize) -> Model {
    let spec = ModelSpec::ScBottleneck(spec);
    build(
        &spec,
        &[2, spec.in_channels(), side, side],
        Mode::Eval,
        DType::F32,
    )
    .unwrap()
}

fn shape(model: &Model, scope: &str) -> Vec<usize> {
    summarize(&model.graph)
        .layer(scope)
        .unwrap_or_else(|| panic!("no layer {scope}"))
        .shape
        .clone()
}

/// The stride of the conv2d node in `scope`.
fn conv_stride(model: &Model, scope: &str) -> usize {
    let node = model
        .graph
        .nodes
        .iter()
        .find(|n| n.scope == scope && matches!(n.op, Op::Conv2d { .. }))
        .unwrap();
    match node.op {
        Op::Conv2d { stride, .. } => stride[0],
        _ => unreachable!(),
    }
}

#[test]
fn without_avd_the_strided_convs_downsample() {
    let m = built(block(), 16);
    assert_eq!(conv_stride(&m, "k1.0"), 2);
    assert_eq!(conv_stride(&m, "scconv.k4.0"), 2);
    assert_eq!(conv_stride(&m, "scconv.k3.0"), 1);
    assert!(summarize(&m.graph).layer("avd_layer").is_none());
    assert_eq!(shape(&m, "relu"), [2, 128, 8, 8]);
}

#[test]
fn avd_moves_the_stride_into_a_pool() {
    let m = built(
        ScBottleneckSpec {
            avd: true,
            ..block()
        },
        16,
    );
    assert_eq!(conv_stride(&m, "k1.0"), 1);
    assert_eq!(conv_stride(&m, "scconv.k4.0"), 1);
    assert_eq!(shape(&m, "k1.1"), [2, 32, 16, 16]);
    let pools: Vec<_> = m
        .graph
        .nodes
        .iter()
        .filter(|n| n.scope == "avd_layer")
        .collect();
    assert_eq!(pools.len(), 2, "one pool per branch");
    for p in pools {
        let want = Op::AvgPool2d {
            kernel: [3, 3],
            stride: [2, 2],
            padding: [1, 1],
            ceil_mode: false,
            count_include_pad: true,
        };
        assert_eq!(p.op, want);
        assert_eq!(p.ty.shape, [2, 32, 8, 8]);
    }
    assert_eq!(shape(&m, "relu"), [2, 128, 8, 8]);
}

#[test]
fn is_first_turns_on_avd_at_stride_one() {
    let spec = ScBottleneckSpec {
        avd: true,
        is_first: true,
        stride: 1,
        downsample: Some(Downsample::Conv { stride: 1 }),
        ..block()
    };
    let m = built(spec.clone(), 16);
    assert_eq!(shape(&m, "avd_layer"), [2, 32, 16, 16]);
    let off = built(
        ScBottleneckSpec {
            is_first: false,
            ..spec
        },
        16,
    );
    assert!(summarize(&off.graph).layer("avd_layer").is_none());
}

#[test]
fn cardinality_groups_the_3x3_convs_only() {
    let m = built(
        ScBottleneckSpec {
            cardinality: 4,
            bottleneck_width: 8,
            ..block()
        },
        16,
    );
    // Branch width int(32 * 8 / 64) * 4 = 16, in 4 groups of 4.
    let ty = |name: &str| {
        m.state
            .iter()
            .find(|e| e.name == name)
            .unwrap()
            .ty
            .shape
            .clone()
    };
    assert_eq!(ty("conv1_a.weight"), [16, 64, 1, 1]);
    assert_eq!(ty("k1.0.weight"), [16, 4, 3, 3]);
    assert_eq!(ty("scconv.k2.1.weight"), [16, 4, 3, 3]);
    assert_eq!(ty("scconv.k4.0.weight"), [16, 4, 3, 3]);
    assert_eq!(ty("conv3.weight"), [128, 32, 1, 1]);
}

#[test]
fn dilation_keeps_the_size() {
    let spec = ScBottleneckSpec {
        dilation: 2,
        stride: 1,
        downsample: Some(Downsample::Conv { stride: 1 }),
        ..block()
    };
    let m = built(spec, 16);
    assert_eq!(shape(&m, "scconv.k3.1"), [2, 32, 16, 16]);
    assert_eq!(shape(&m, "relu"), [2, 128, 16, 16]);
    let node = m
        .graph
        .nodes
        .iter()
        .find(|n| n.scope == "k1.0" && matches!(n.op, Op::Conv2d { .. }))
        .unwrap();
    assert!(matches!(
        node.op,
        Op::Conv2d {
            padding: [2, 2],
            dilation: [2, 2],
            ..
        }
    ));
}

#[test]
fn pooled_shortcut_covers_odd_sizes() {
    let spec = ScBottleneckSpec {
        avd: true,
        downsample: Some(Downsample::AvgpoolConv { pool: 2 }),
        ..block()
    };
    let m = built(spec, 15);
    // ceil_mode keeps the last partial window: 15 -> 8, like the avd pool on the main path.
    assert_eq!(shape(&m, "downsample.0"), [2, 64, 8, 8]);
    assert_eq!(shape(&m, "downsample.2"), [2, 128, 8, 8]);
    let names: Vec<_> = m
        .state
        .iter()
        .map(|e| e.name.as_str())
        .filter(|n| n.starts_with("downsample"))
        .collect();
    assert_eq!(names[0], "downsample.1.weight");
    assert_eq!(names[1], "downsample.2.weight");
}

#[test]
fn summary_table_lists_layers_and_totals() {
    let m = built(block(), 16);
    let summary = summarize(&m.graph);
    let text = summary.to_string();
    assert!(
        text.lines().any(|l| l.starts_with("scconv.k2.1")
            && l.contains("conv2d")
            && l.contains("[2,32,4,4]")),
        "{text}"
    );
    assert!(text.contains(&format!("total parameters: {}", m.parameter_count())));
    assert!(text.ends_with(&format!("total MACs (conv + linear): {}", summary.macs)));
    // The gate's glue lives in SCConv's own scope.
    assert_eq!(
        summary.layer("scconv").unwrap().op,
        "resize_nearest+add+sigmoid+mul"
    );
    assert_eq!(summary.layer("").unwrap().op, "concat+add");
}
