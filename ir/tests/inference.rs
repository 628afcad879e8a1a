//! Shape and dtype inference, and the errors of graphs built in code.

mod common;

use calib_ir::{
    broadcast_shape, window_output_size, ConvSpec, DType, Graph, GraphBuilder, IrError, Mode, Op,
    TensorType, Value,
};
use common::{assert_mentions, err_text, scconv_classifier};

#[test]
fn window_sizes_follow_pytorch_including_ceil_mode() {
    // (input, kernel, stride, padding, dilation) -> (floor mode, ceil mode), by hand from
    // out = (input + 2p - d(k-1) - 1) / s + 1, rounded down or up, where ceil mode drops a
    // last window that would start in the right padding.
    let cases = [
        ((5, 2, 2, 0, 1), (2, 3)),    // ceil keeps the partial window over input 4
        ((6, 3, 2, 1, 1), (3, 4)),    // 5/2 = 2.5
        ((4, 3, 1, 1, 1), (4, 4)),    // exact fit, no rounding
        ((32, 3, 2, 1, 1), (16, 17)), // ResNet stem pool on CIFAR-sized input
        ((5, 3, 3, 1, 1), (2, 2)),    // ceil's 3rd window starts at padded 6 = 5 + 1: dropped
        ((7, 2, 3, 1, 1), (3, 3)),    // ceil's 4th window starts at padded 9 >= 8: dropped
        ((2, 2, 2, 1, 1), (2, 2)),    // windows [-1,0] and [1,2]
        ((16, 3, 1, 2, 2), (16, 16)), // dilated 3x3 spans 5: "same" with padding 2
        ((16, 3, 2, 2, 2), (8, 9)),   // ceil: 15/2 rounds up, last window starts at 16 < 18
        ((1, 1, 1, 0, 1), (1, 1)),
    ];
    for ((i, k, s, p, d), (floor, ceil)) in cases {
        assert_eq!(
            window_output_size(i, k, s, p, d, false),
            Ok(floor),
            "floor {i} {k} {s} {p} {d}"
        );
        assert_eq!(
            window_output_size(i, k, s, p, d, true),
            Ok(ceil),
            "ceil {i} {k} {s} {p} {d}"
        );
    }
}

#[test]
fn window_sizes_reject_degenerate_windows() {
    assert_mentions(
        &window_output_size(2, 5, 1, 0, 1, false).unwrap_err(),
        &["window of extent 5 does not fit an input of 2 with padding 0"],
    );
    assert_mentions(
        &window_output_size(6, 3, 1, 0, 3, false).unwrap_err(),
        &["window of extent 7"],
    );
    assert_mentions(
        &window_output_size(8, 3, 0, 0, 1, true).unwrap_err(),
        &["stride (0)", "must be positive"],
    );
}

fn input(g: &mut Graph, dtype: DType, shape: &[usize]) -> Value {
    let name = format!("in{}", g.nodes.len());
    g.push_source(
        Op::Input { name },
        TensorType::new(dtype, shape.to_vec()),
        "",
    )
    .unwrap()
}

#[test]
fn pools_use_the_window_rule_per_axis() {
    let mut g = Graph::new();
    let x = input(&mut g, DType::F32, &[1, 3, 7, 5]);
    let pool = Op::MaxPool2d {
        kernel: [2, 3],
        stride: [3, 3],
        padding: [1, 1],
        ceil_mode: true,
    };
    let y = g.push(pool, vec![x], "").unwrap();
    assert_eq!(g.ty(y).shape, vec![1, 3, 3, 2]);

    let avg = Op::AvgPool2d {
        kernel: [3, 3],
        stride: [2, 2],
        padding: [1, 1],
        ceil_mode: true,
        count_include_pad: false,
    };
    let x6 = input(&mut g, DType::F16, &[2, 4, 6, 6]);
    let y = g.push(avg, vec![x6], "").unwrap();
    assert_eq!(g.ty(y), &TensorType::new(DType::F16, vec![2, 4, 4, 4]));

    let too_padded = Op::MaxPool2d {
        kernel: [3, 3],
        stride: [1, 1],
        padding: [2, 2],
        ceil_mode: false,
    };
    assert_mentions(
        &err_text(g.push(too_padded, vec![x], "pool")),
        &["(max_pool2d in pool): padding 2 exceeds half the kernel 3"],
    );
}

#[test]
fn conv_shapes_with_dilation_and_groups() {
    let mut g = GraphBuilder::new(Mode::Eval, DType::F32);
    let x = g.input("x", DType::F32, vec![2, 8, 16, 16]).unwrap();
    let spec = ConvSpec::new(16, 3)
        .groups(4)
        .dilation(2)
        .padding(2)
        .stride(2);
    let y = g.conv_layer("grouped", x, &spec).unwrap();
    assert_eq!(g.shape(y), vec![2, 16, 8, 8]);
    let w = g
        .graph()
        .params()
        .find(|(n, _)| *n == "grouped.weight")
        .unwrap()
        .1;
    assert_eq!(g.shape(w), vec![16, 2, 3, 3]);

    let depthwise = g
        .conv_layer("dw", x, &ConvSpec::new(8, 3).groups(8).padding(1))
        .unwrap();
    assert_eq!(g.shape(depthwise), vec![2, 8, 16, 16]);

    assert_mentions(
        &err_text(g.conv_layer("bad", x, &ConvSpec::new(8, 3).groups(3))),
        &["(conv2d in bad): groups=3 must divide input channels 8"],
    );
}

#[test]
fn conv_operand_mismatches_name_the_node() {
    let mut g = Graph::new();
    let x = input(&mut g, DType::F32, &[2, 8, 16, 16]);
    let conv = |groups| Op::Conv2d {
        stride: [1, 1],
        padding: [0, 0],
        dilation: [1, 1],
        groups,
    };

    let w = input(&mut g, DType::F32, &[4, 4, 3, 3]);
    assert_mentions(&err_text(g.push(conv(1), vec![x, w], "k1")), &[
        "node %2 (conv2d in k1): weight expects 4 input channels per group (4 in all), input has 8",
        "operands: f32[2,8,16,16], f32[4,4,3,3]",
    ]);
    let w = input(&mut g, DType::F32, &[5, 4, 1, 1]);
    assert_mentions(
        &err_text(g.push(conv(2), vec![x, w], "")),
        &["node %3 (conv2d): groups=2 must divide input channels 8 and output channels 5"],
    );
    let w = input(&mut g, DType::BF16, &[6, 4, 1, 1]);
    assert_mentions(
        &err_text(g.push(conv(2), vec![x, w], "")),
        &["operands must share one dtype, got f32, bf16"],
    );
    let w = input(&mut g, DType::F32, &[6, 4, 1, 1]);
    let y = g.push(conv(2), vec![x, w], "").unwrap();
    assert_eq!(g.ty(y).shape, vec![2, 6, 16, 16]);
}

#[test]
fn concat_and_slice_shapes() {
    let mut g = GraphBuilder::new(Mode::Eval, DType::F32);
    let a = g.input("a", DType::F32, vec![2, 3, 4, 4]).unwrap();
    let b = g.input("b", DType::F32, vec![2, 5, 4, 4]).unwrap();
    let c = g.concat(&[a, b, a], 1).unwrap();
    assert_eq!(g.shape(c), vec![2, 11, 4, 4]);
    let s = g.slice(c, 1, 2, 6).unwrap();
    assert_eq!(g.shape(s), vec![2, 4, 4, 4]);
    let last = g.slice(c, 3, 3, 4).unwrap();
    assert_eq!(g.shape(last), vec![2, 11, 4, 1]);

    let tall = g.input("tall", DType::F32, vec![2, 3, 5, 4]).unwrap();
    let half = g.input("half", DType::F16, vec![2, 3, 4, 4]).unwrap();
    for (r, parts) in [
        (
            g.concat(&[a, tall], 1),
            &["(concat): operands [2,3,4,4] and [2,3,5,4] differ outside axis 1"][..],
        ),
        (
            g.concat(&[a, half], 1),
            &["operands must share one dtype, got f32, f16"],
        ),
        (g.concat(&[a], 4), &["axis 4 out of range for rank 4"]),
        (g.concat(&[], 0), &["expects at least one operand"]),
        (
            g.slice(c, 1, 3, 3),
            &["(slice): slice 3..3 is empty or exceeds axis 1 of extent 11"],
        ),
        (
            g.slice(c, 1, 6, 12),
            &["slice 6..12 is empty or exceeds axis 1 of extent 11"],
        ),
        (g.slice(c, 5, 0, 1), &["axis 5 out of range for rank 4"]),
    ] {
        assert_mentions(&err_text(r), parts);
    }
}

#[test]
fn broadcast_shapes_follow_numpy() {
    assert_eq!(
        broadcast_shape(&[2, 8, 4, 4], &[8, 1, 1]),
        Some(vec![2, 8, 4, 4])
    );
    assert_eq!(broadcast_shape(&[3, 1], &[1, 4]), Some(vec![3, 4]));
    assert_eq!(broadcast_shape(&[2, 1], &[3, 1, 5]), Some(vec![3, 2, 5]));
    assert_eq!(broadcast_shape(&[], &[2, 3]), Some(vec![2, 3]));
    assert_eq!(broadcast_shape(&[8], &[2, 8, 4, 4]), None);
    assert_eq!(broadcast_shape(&[2, 3], &[3, 2]), None);
}

#[test]
fn the_builder_inserts_explicit_broadcasts() {
    let mut g = GraphBuilder::new(Mode::Eval, DType::F32);
    let x = g.input("x", DType::F32, vec![2, 8, 4, 4]).unwrap();
    let bias = g.param("bias", DType::F32, vec![8, 1, 1]).unwrap();
    let y = g.add(x, bias).unwrap();
    let graph = g.graph();
    assert_eq!(graph.nodes.len(), 4);
    assert_eq!(
        graph.nodes[2].op,
        Op::Broadcast {
            shape: vec![2, 8, 4, 4]
        }
    );
    assert_eq!(graph.nodes[2].inputs, vec![bias]);
    assert_eq!(graph.node(y).inputs, vec![x, Value(2)]);

    // Both sides broadcast; equal shapes add no node.
    let col = g.input("col", DType::F32, vec![3, 1]).unwrap();
    let row = g.input("row", DType::F32, vec![1, 4]).unwrap();
    let before = g.graph().nodes.len();
    let outer = g.mul(col, row).unwrap();
    assert_eq!(g.shape(outer), vec![3, 4]);
    assert_eq!(g.graph().nodes.len(), before + 3);
    let sq = g.mul(outer, outer).unwrap();
    assert_eq!(g.graph().nodes.len(), before + 4);
    assert_eq!(g.graph().node(sq).inputs, vec![outer, outer]);

    let scaled = g.scale(x, 0.5).unwrap();
    assert_eq!(g.shape(scaled), vec![2, 8, 4, 4]);

    let v = g.input("v", DType::F32, vec![8]).unwrap();
    let err = err_text(g.scoped("blk", |g| g.add(v, x)));
    assert_mentions(
        &err,
        &["(add in blk): operand shapes do not broadcast; operands: f32[8], f32[2,8,4,4]"],
    );
    let err = err_text(g.add(v, x));
    assert_mentions(&err, &["(add): operand shapes do not broadcast"]);
}

#[test]
fn dtype_errors_name_the_node_and_op() {
    let mut g = GraphBuilder::new(Mode::Eval, DType::F32);
    let x = g.input("x", DType::F32, vec![2, 3]).unwrap();
    let n = g.input("n", DType::I64, vec![2, 3]).unwrap();
    assert_mentions(&err_text(g.add(x, n)), &[
        "node %2 (add): operands must share one dtype, got f32, i64; operands: f32[2,3], i64[2,3]",
    ]);
    assert_mentions(
        &err_text(g.exp(n)),
        &["node %2 (exp): needs floating-point operands; operands: i64[2,3]"],
    );
    assert_mentions(
        &err_text(g.matmul(n, n, false, true)),
        &["(matmul): needs floating-point operands"],
    );

    // Float labels into one_hot (via the cross-entropy composite).
    let logits = g.input("logits", DType::F32, vec![2, 10]).unwrap();
    let labels = g.input("labels", DType::F32, vec![2]).unwrap();
    assert_mentions(
        &err_text(g.softmax_cross_entropy(logits, labels, 0.0)),
        &["(one_hot): labels must be i64, got f32; operands: f32[2]"],
    );
    let ids = g.input("ids", DType::I64, vec![2]).unwrap();
    let int_onehot = Op::OneHot {
        classes: 10,
        dtype: DType::I64,
    };
    assert_mentions(
        &err_text(g.unary(int_onehot, ids)),
        &["(one_hot): one_hot needs a positive class count and a float dtype"],
    );

    // Casting is how integers become floats.
    let f = g.cast(n, DType::BF16).unwrap();
    assert_eq!(g.ty(f), &TensorType::new(DType::BF16, vec![2, 3]));
}

#[test]
fn undefined_operands_and_duplicate_names() {
    let mut g = Graph::new();
    let x = input(&mut g, DType::F32, &[3]);
    let err = g.push(Op::Relu, vec![Value(7)], "").unwrap_err();
    assert_eq!(
        err,
        IrError::UndefinedValue {
            node: 1,
            op: "relu".into(),
            operand: 7
        }
    );
    assert_eq!(
        err.to_string(),
        "node %1 (relu): operand %7 is not defined before it"
    );
    assert_mentions(
        &err_text(g.add_output("y", Value(3))),
        &["(output): operand %3 is not defined"],
    );
    g.add_output("y", x).unwrap();
    assert_eq!(
        g.add_output("y", x).unwrap_err(),
        IrError::DuplicateName {
            kind: "output",
            name: "y".into()
        }
    );
    // Many at once: the same checks, against the graph's outputs and each other.
    g.add_outputs([("a".to_string(), x), ("b".to_string(), x)])
        .unwrap();
    assert_eq!(
        err_text(g.add_outputs([("c".to_string(), x), ("y".to_string(), x)])),
        "duplicate output name `y`"
    );
    assert_eq!(
        err_text(g.add_outputs([("d".to_string(), x), ("d".to_string(), x)])),
        "duplicate output name `d`"
    );
    assert_mentions(
        &err_text(g.add_outputs([("e".to_string(), Value(9))])),
        &["(output): operand %9 is not defined"],
    );
    let names: Vec<&str> = g.outputs.iter().map(|o| o.name.as_str()).collect();
    assert_eq!(names, ["y", "a", "b", "c", "d"]);

    let mut b = GraphBuilder::new(Mode::Eval, DType::F32);
    b.input("x", DType::F32, vec![3]).unwrap();
    assert_eq!(
        err_text(b.input("x", DType::F32, vec![3])),
        "duplicate input name `x`"
    );
    b.scoped("layer", |b| b.param("w", DType::F32, vec![3]))
        .unwrap();
    let err = b.scoped("layer", |b| b.param("w", DType::F32, vec![3]));
    assert_eq!(err_text(err), "duplicate param name `layer.w`");
    let x = b.input("x2", DType::F32, vec![3]).unwrap();
    b.output("y", x).unwrap();
    assert_eq!(err_text(b.output("y", x)), "duplicate output name `y`");
    // Names are per kind: an output may share a param's name (BatchNorm's state).
    b.output("layer.w", x).unwrap();

    // A builder extending a graph knows the names the graph already has.
    let mut b = GraphBuilder::extend(b.finish(), Mode::Eval, DType::F32);
    assert_eq!(
        err_text(b.input("x", DType::F32, vec![3])),
        "duplicate input name `x`"
    );
    let err = b.scoped("layer", |b| b.param("w", DType::F32, vec![3]));
    assert_eq!(err_text(err), "duplicate param name `layer.w`");
    assert_eq!(err_text(b.output("y", x)), "duplicate output name `y`");
    // A refused name is not taken: the graph is unchanged and the name stays free.
    let nodes = b.graph().nodes.len();
    assert!(b.input("big", DType::F32, vec![1 << 62]).is_err());
    assert_eq!(b.graph().nodes.len(), nodes);
    b.input("big", DType::F32, vec![3]).unwrap();
}

#[test]
fn sources_and_ops_stay_on_their_own_side() {
    let mut g = Graph::new();
    let t = TensorType::new(DType::F32, vec![3]);
    assert_mentions(
        &err_text(g.push_source(Op::Relu, t.clone(), "s")),
        &["node %0 (relu in s): is not a source op"],
    );
    assert_mentions(
        &err_text(g.push(Op::Input { name: "x".into() }, vec![], "")),
        &["(input): source nodes carry their own type"],
    );
    let bad = g.push_source(
        Op::Constant {
            value: f64::INFINITY,
        },
        TensorType::new(DType::I64, vec![]),
        "",
    );
    assert_mentions(
        &err_text(bad),
        &["node %0 (constant): value inf does not fit i64"],
    );
}

#[test]
fn scconv_classifier_types() {
    let g = scconv_classifier().unwrap();
    let ty = |name: &str| g.ty(g.output(name).unwrap()).clone();
    assert_eq!(ty("loss"), TensorType::new(DType::F32, vec![]));
    assert_eq!(ty("logits_f16"), TensorType::new(DType::F16, vec![2, 10]));
    assert_eq!(ty("logits_bf16"), TensorType::new(DType::BF16, vec![2, 10]));
    assert_eq!(
        ty("block.k2.2.running_var"),
        TensorType::new(DType::F32, vec![4])
    );
    assert_eq!(
        ty("block.k1.1.num_batches_tracked"),
        TensorType::new(DType::I64, vec![])
    );
    // The calibration branch pools 16x16 by 4 and resizes back.
    let pooled = g
        .nodes
        .iter()
        .find(|n| matches!(n.op, Op::AvgPool2d { .. }))
        .unwrap();
    assert_eq!(pooled.ty.shape, vec![2, 4, 4, 4]);
    let resized = g
        .nodes
        .iter()
        .find(|n| matches!(n.op, Op::ResizeNearest { .. }))
        .unwrap();
    assert_eq!(resized.ty.shape, vec![2, 4, 16, 16]);
    let params: Vec<&str> = g.params().map(|(n, _)| n).collect();
    assert_eq!(params.len(), 4 * 6 + 2);
    assert!(params.contains(&"block.k2.1.weight") && params.contains(&"fc.bias"));
    g.validate().unwrap();
}

#[test]
fn all_reduce_keeps_its_operand_type_for_a_group_of_floats() {
    let mut g = Graph::new();
    let x = input(&mut g, DType::BF16, &[3, 5]);
    let op = |replicas| Op::AllReduce {
        reduce: calib_ir::ReduceOp::Mean,
        replicas,
    };
    let y = g.push(op(4), vec![x], "ddp").unwrap();
    assert_eq!(g.ty(y), g.ty(x));
    assert_mentions(
        &err_text(g.push(op(0), vec![x], "ddp")),
        &["all_reduce", "at least one replica"],
    );
    let counts = input(&mut g, DType::I64, &[3]);
    assert_mentions(
        &err_text(g.push(op(2), vec![counts], "")),
        &["all_reduce", "floating-point"],
    );
}
