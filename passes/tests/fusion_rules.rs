//! Every fusion rule on its own: a graph where it applies, the rule firing, and the
//! fused plan computing what the graph computes on random inputs.

mod fusion_common;

use calib_ir::{ConvSpec, DType, Graph, GraphBuilder, Mode, Op, TensorType, Value};
use calib_passes::fusion::{FusionOptions, RuleSet};
use calib_passes::{grad, prune, PruneOptions};
use fusion_common::{check, check_with, fired, kernel_of, sibling_convolutions};

const F: DType = DType::F32;

/// A builder with one input `x` of `shape`.
fn with_input(mode: Mode, shape: &[usize]) -> (GraphBuilder, Value) {
    let mut b = GraphBuilder::new(mode, F);
    let x = b.input("x", F, shape.to_vec()).unwrap();
    (b, x)
}

fn finish(mut b: GraphBuilder, y: Value) -> Graph {
    b.output("y", y).unwrap();
    b.finish()
}

/// `graph` with one raw node `op(x)` appended (for views the builder never emits).
fn raw_unary(op: Op, shape: &[usize]) -> Graph {
    let mut g = Graph::new();
    let x = g
        .push_source(
            Op::Input { name: "x".into() },
            TensorType::new(F, shape.to_vec()),
            "",
        )
        .unwrap();
    let v = g.push(op, vec![x], "").unwrap();
    let y = g.push(Op::Exp, vec![v], "").unwrap();
    g.add_output("y", y).unwrap();
    g
}

#[test]
fn views_of_views_collapse() {
    let (mut b, x) = with_input(Mode::Eval, &[2, 3, 4]);
    let r = b.reshape(x, vec![6, 4]).unwrap();
    let r = b.reshape(r, vec![24]).unwrap();
    let y = b.relu(r).unwrap();
    assert!(fired(&check(&finish(b, y), 1), "reshape-reshape") > 0);

    let (mut b, x) = with_input(Mode::Eval, &[4]);
    let r = b.broadcast_to(x, &[3, 4]).unwrap();
    let r = b.broadcast_to(r, &[2, 3, 4]).unwrap();
    let y = b.exp(r).unwrap();
    assert!(fired(&check(&finish(b, y), 2), "broadcast-broadcast") > 0);
}

#[test]
fn identity_views_disappear() {
    let shape = [2, 3];
    for (op, rule) in [
        (
            Op::Reshape {
                shape: shape.to_vec(),
            },
            "reshape-noop",
        ),
        (
            Op::Broadcast {
                shape: shape.to_vec(),
            },
            "broadcast-noop",
        ),
        (
            Op::Slice {
                axis: 1,
                start: 0,
                end: 3,
            },
            "slice-full",
        ),
    ] {
        assert!(fired(&check(&raw_unary(op, &shape), 3), rule) > 0, "{rule}");
    }
}

#[test]
fn slices_compose_and_see_through_concat() {
    let (mut b, x) = with_input(Mode::Eval, &[2, 8, 4, 4]);
    let s = b.slice(x, 1, 2, 8).unwrap();
    let s = b.slice(s, 1, 1, 3).unwrap();
    let y = b.relu(s).unwrap();
    assert!(fired(&check(&finish(b, y), 4), "slice-slice") > 0);

    let (mut b, x) = with_input(Mode::Eval, &[2, 3, 4, 4]);
    let e = b.exp(x).unwrap();
    let joined = b.concat(&[x, e], 1).unwrap();
    let s = b.slice(joined, 1, 3, 6).unwrap();
    let y = b.neg(s).unwrap();
    assert!(fired(&check(&finish(b, y), 5), "slice-concat") > 0);
}

#[test]
fn algebraic_identities_hold() {
    let (mut b, x) = with_input(Mode::Eval, &[2, 5]);
    let a = b.scale(x, 1.0).unwrap();
    let a = b.add_scalar(a, 0.0).unwrap();
    let n = b.neg(a).unwrap();
    let n = b.neg(n).unwrap();
    let c = b.constant(1.0, F, vec![2, 5]).unwrap();
    let s = b.select(c, n, n).unwrap();
    let d = b.div(s, c).unwrap();
    let z = b.constant(0.0, F, vec![2, 5]).unwrap();
    let d = b.sub(d, z).unwrap();
    let y = b.exp(d).unwrap();
    let f = check(&finish(b, y), 6);
    for rule in [
        "mul-one",
        "add-zero",
        "neg-neg",
        "select-same",
        "div-one",
        "sub-zero",
    ] {
        assert!(fired(&f, rule) > 0, "{rule}");
    }
    assert_eq!(f.program.kernels.len(), 1, "only exp is left");
}

#[test]
fn slices_move_through_elementwise_ops_and_reductions() {
    for (kind, op) in [
        ("add", Op::Add),
        ("sub", Op::Sub),
        ("mul", Op::Mul),
        ("div", Op::Div),
        ("max", Op::Max),
    ] {
        let (mut b, x) = with_input(Mode::Eval, &[2, 6, 3, 3]);
        let e = b.exp(x).unwrap();
        let (sx, se) = (b.slice(x, 1, 2, 5).unwrap(), b.slice(e, 1, 2, 5).unwrap());
        let y = b.binary(op, sx, se).unwrap();
        assert!(
            fired(&check(&finish(b, y), 7), &format!("slice-through-{kind}")) > 0,
            "{kind}"
        );
    }
    for (kind, keepdims) in [
        ("reduce_sum", true),
        ("reduce_mean", false),
        ("reduce_max", false),
    ] {
        let (mut b, x) = with_input(Mode::Eval, &[2, 6, 3, 3]);
        let s = b.slice(x, 1, 1, 4).unwrap();
        let r = match kind {
            "reduce_sum" => b.reduce_sum(s, &[0, 2, 3], keepdims),
            "reduce_mean" => b.reduce_mean(s, &[0, 2, 3], keepdims),
            _ => b.reduce_max(s, &[0, 2], keepdims),
        }
        .unwrap();
        let y = b.exp(r).unwrap();
        assert!(
            fired(&check(&finish(b, y), 8), &format!("slice-through-{kind}")) > 0,
            "{kind}"
        );
    }
}

/// `bn(conv3x3(x))` in `mode`, with channels `c`.
fn conv_bn(mode: Mode, c: usize) -> Graph {
    let (mut b, x) = with_input(mode, &[2, c, 6, 6]);
    let y = b
        .conv_layer("conv", x, &ConvSpec::new(c, 3).padding(1))
        .unwrap();
    let y = b.batch_norm("bn", y).unwrap();
    finish(b, y)
}

#[test]
fn eval_batch_norm_folds_into_the_convolution() {
    let f = check(&conv_bn(Mode::Eval, 4), 9);
    assert!(fired(&f, "bn-fold-eval") > 0 && fired(&f, "bias-combine") > 0);
    assert_eq!(f.program.kernels.len(), 1);
    let body = &f.program.kernels[0].body;
    let conv = body
        .nodes
        .iter()
        .position(|n| matches!(n.op, Op::Conv2d { .. }))
        .unwrap();
    assert!(
        matches!(body.nodes[body.nodes[conv].inputs[1].0].op, Op::Mul),
        "the weight is scaled before the convolution"
    );
    assert!(
        !body
            .nodes
            .iter()
            .any(|n| n.op == Op::Rsqrt && n.ty.rank() == 4),
        "no per-element normalization is left"
    );
}

#[test]
fn train_batch_statistics_accumulate_in_the_convolution() {
    let f = check(&conv_bn(Mode::Train, 4), 10);
    assert!(fired(&f, "bn-variance-shifted") > 0);
    let conv = f
        .program
        .kernels
        .iter()
        .find(|k| {
            k.body
                .nodes
                .iter()
                .any(|n| matches!(n.op, Op::Conv2d { .. }))
        })
        .unwrap();
    let reductions = conv
        .body
        .nodes
        .iter()
        .filter(|n| matches!(n.op, Op::ReduceMean { .. }))
        .count();
    assert_eq!(
        reductions, 2,
        "mean and mean square are outputs of the convolution's kernel"
    );
    // The shift is each channel's first element of the convolution's own result, read
    // in the kernel (no kernel computes it apart).
    let conv_value = conv
        .body
        .nodes
        .iter()
        .position(|n| matches!(n.op, Op::Conv2d { .. }))
        .unwrap();
    assert!(
        conv.body
            .nodes
            .iter()
            .any(|n| matches!(n.op, Op::Slice { axis: 0, .. }) && n.inputs[0].0 == conv_value),
        "{}",
        f.program.to_text()
    );
    assert_eq!(f.program.kernels.len(), 2, "{}", f.program.to_text());
}

/// A train-mode `bn(conv3x3(x))` under `sum(y^2)`, differentiated by `x` and every
/// parameter.
fn conv_bn_gradient(c: usize) -> Graph {
    let (mut b, x) = with_input(Mode::Train, &[2, c, 6, 6]);
    let y = b
        .conv_layer("conv", x, &ConvSpec::new(c, 3).padding(1))
        .unwrap();
    let y = b.batch_norm("bn", y).unwrap();
    let square = b.mul(y, y).unwrap();
    let loss = b.reduce_sum(square, &[0, 1, 2, 3], false).unwrap();
    let g = finish(b, loss);
    let trained = g
        .params()
        .filter(|(name, _)| name.ends_with("weight") || name.ends_with("bias"));
    let wrt: Vec<Value> = [g.inputs().next().unwrap().1]
        .into_iter()
        .chain(trained.map(|(_, v)| v))
        .collect();
    let (mut g, grads) = grad(&g, g.output("y").unwrap(), &wrt).unwrap();
    for (k, v) in grads.into_iter().enumerate() {
        g.add_output(format!("grad{k}"), v).unwrap();
    }
    prune(&g, PruneOptions::default()).unwrap()
}

/// How many reductions of the plan sum a whole `shape`-sized value per channel.
fn channel_sums(f: &calib_passes::fusion::Fusion, shape: &[usize]) -> usize {
    f.program
        .kernels
        .iter()
        .flat_map(|k| k.body.nodes.iter().map(move |n| (k, n)))
        .filter(|(k, n)| match &n.op {
            Op::ReduceSum { axes, .. } | Op::ReduceMean { axes, .. } => {
                axes == &[0, 2, 3] && k.body.ty(n.inputs[0]).shape == shape
            }
            _ => false,
        })
        .count()
}

#[test]
fn the_batch_norm_gradient_sums_the_batch_once() {
    let g = conv_bn_gradient(4);
    let f = check(&g, 13);
    for rule in ["sum-of-neg", "sum-of-scaled", "centered-sum"] {
        assert!(fired(&f, rule) > 0, "{rule}");
    }
    // Forward: the mean and the mean square. Backward: sum(dy) (the bias gradient) and
    // sum(dy * (y - mean)) (the scale's); no sum of a term that needs those two.
    let shape = [2, 4, 6, 6];
    assert_eq!(channel_sums(&f, &shape), 4, "{}", f.program.to_text());
    let options = FusionOptions {
        rules: RuleSet::without(["centered-sum"]).unwrap(),
        ..FusionOptions::default()
    };
    let without = check_with(&g, 13, &options);
    assert_eq!(channel_sums(&without, &shape), 5);
}

/// Two (or three) convolutions of one input, each followed by a ReLU.
fn siblings(convs: usize) -> Graph {
    let (mut b, x) = with_input(Mode::Eval, &[2, 4, 5, 5]);
    let mut sum = None;
    for k in 0..convs {
        let y = b
            .conv_layer(&format!("c{k}"), x, &ConvSpec::new(3 + k, 1))
            .unwrap();
        let y = b.relu(y).unwrap();
        let s = b.reduce_sum(y, &[1], true).unwrap();
        sum = Some(match sum {
            None => s,
            Some(acc) => b.add(acc, s).unwrap(),
        });
    }
    finish(b, sum.unwrap())
}

#[test]
fn sibling_convolutions_merge() {
    let f = check(&siblings(3), 11);
    assert!(
        fired(&f, "merge-sibling-convs") >= 2,
        "pairs, then all three"
    );
    let convs: Vec<_> = f
        .program
        .kernels
        .iter()
        .flat_map(|k| k.body.nodes.iter())
        .filter(|n| matches!(n.op, Op::Conv2d { .. }))
        .collect();
    assert_eq!(convs.len(), 1, "one convolution computes all three");
    assert_eq!(convs[0].ty.shape[1], 3 + 4 + 5);
}

#[test]
fn merged_siblings_accumulate_their_batch_statistics_in_one_kernel() {
    // SCNet's first block: conv1_a, conv1_b and the shortcut convolution read the block
    // input and each has a train-mode BatchNorm. Once they merge, every branch's
    // statistics are a slice of one reduction over the merged output, which the merged
    // convolution accumulates as it writes: no reduction kernel per branch is left.
    let widths = [2, 3, 5];
    let f = check(&sibling_convolutions(&widths), 23);
    assert!(fired(&f, "merge-sibling-convs") >= 2);
    assert!(fired(&f, "slice-through-reduce_mean") > 0);
    // Each branch's BatchNorm shift becomes a slice of the merged output's.
    assert!(fired(&f, "sample-inside-slice") > 0);
    assert!(fired(&f, "broadcast-of-slice") > 0);
    let merged: usize = widths.iter().sum();
    let means = |k: &calib_ir::Kernel| -> Vec<Vec<usize>> {
        k.body
            .nodes
            .iter()
            .filter(|n| matches!(n.op, Op::ReduceMean { .. }))
            .map(|n| n.ty.shape.clone())
            .collect()
    };
    let convs: Vec<_> = f
        .program
        .kernels
        .iter()
        .filter(|k| {
            k.body
                .nodes
                .iter()
                .any(|n| matches!(n.op, Op::Conv2d { .. }))
        })
        .collect();
    assert_eq!(convs.len(), 1, "one kernel convolves");
    assert_eq!(
        means(convs[0]),
        vec![vec![1, merged, 1, 1]; 2],
        "mean and mean square of the merged output"
    );
    let all: usize = f.program.kernels.iter().map(|k| means(k).len()).sum();
    assert_eq!(all, 2, "no other kernel reduces a branch");
}

/// `g` with the gradients of its output `y` by its input and every parameter as outputs
/// `grad0`, `grad1`, ...
fn with_gradients(g: Graph) -> Graph {
    let wrt: Vec<Value> = [g.inputs().next().unwrap().1]
        .into_iter()
        .chain(g.params().map(|(_, v)| v))
        .collect();
    let loss = g.output("y").unwrap();
    let (mut g, grads) = grad(&g, loss, &wrt).unwrap();
    for (k, v) in grads.into_iter().enumerate() {
        g.add_output(format!("grad{k}"), v).unwrap();
    }
    prune(&g, PruneOptions::default()).unwrap()
}

#[test]
fn sibling_gradients_merge() {
    // Weight gradients share the input; input gradients accumulate.
    let (mut b, x) = with_input(Mode::Eval, &[2, 4, 5, 5]);
    let y0 = b.conv_layer("c0", x, &ConvSpec::new(3, 1)).unwrap();
    let y1 = b.conv_layer("c1", x, &ConvSpec::new(2, 1)).unwrap();
    let e = b.exp(x).unwrap();
    let (s0, s1, s2) = (
        b.reduce_sum(y0, &[0, 1, 2, 3], false).unwrap(),
        b.reduce_sum(y1, &[0, 1, 2, 3], false).unwrap(),
        b.reduce_sum(e, &[0, 1, 2, 3], false).unwrap(),
    );
    let s = b.add(s0, s1).unwrap();
    let s = b.add(s, s2).unwrap();
    let g = with_gradients(finish(b, s));
    let f = check(&g, 12);
    assert!(fired(&f, "merge-weight-grads") > 0);
    assert!(fired(&f, "merge-data-grads") + fired(&f, "merge-data-grads-acc") > 0);
}

/// The channel counts of the parts of the concatenation that body value `v` of kernel
/// `k` is, following a body input to the kernel that stored its buffer; empty for any
/// other value.
fn concat_parts(p: &calib_ir::Program, k: &calib_ir::Kernel, v: Value) -> Vec<usize> {
    let node = k.body.node(v);
    match node.op {
        Op::Concat { axis } => node
            .inputs
            .iter()
            .map(|&x| k.body.ty(x).shape[axis])
            .collect(),
        Op::Input { .. } => {
            let slot = k.body.inputs().position(|(_, u)| u == v).unwrap();
            let writer = p.kernels.iter().find_map(|w| {
                let i = w.outputs.iter().position(|o| o.buffer == k.inputs[slot])?;
                Some((w, w.body.outputs[i].value))
            });
            writer.map_or(vec![], |(w, value)| concat_parts(p, w, value))
        }
        _ => vec![],
    }
}

#[test]
fn merged_data_and_weight_gradients_concatenate_the_gradients_in_one_order() {
    // The output gradients come out of autodiff in the reverse of the forward order,
    // the weights in the forward order: the merged input gradient orders its parts as
    // the merged weight gradient does, so that a plan can store one concatenation for
    // both (SCNet's first block stored two, 320 channels at 56x56, in two orders).
    let (mut b, x) = with_input(Mode::Eval, &[2, 4, 5, 5]);
    let y0 = b.conv_layer("c0", x, &ConvSpec::new(3, 1)).unwrap();
    let y1 = b.conv_layer("c1", x, &ConvSpec::new(2, 1)).unwrap();
    let squares = [y0, y1].map(|y| {
        let sq = b.mul(y, y).unwrap();
        b.reduce_sum(sq, &[0, 1, 2, 3], false).unwrap()
    });
    let s = b.add(squares[0], squares[1]).unwrap();
    let g = with_gradients(finish(b, s));
    let f = check(&g, 14);
    let p = &f.program;
    // The parts of operand `pick(op)` of every convolution and adjoint.
    let parts = |pick: fn(&Op) -> Option<usize>| -> Vec<Vec<usize>> {
        (p.kernels.iter())
            .flat_map(|k| {
                (k.body.nodes.iter())
                    .filter_map(move |n| Some(concat_parts(p, k, n.inputs[pick(&n.op)?])))
            })
            .collect()
    };
    let gradients = parts(|op| match op {
        Op::Conv2dBackwardData { .. } => Some(0),
        Op::Conv2dBackwardWeight { .. } => Some(1),
        _ => None,
    });
    assert_eq!(
        gradients.len(),
        2,
        "one merged adjoint of each kind: {gradients:?}"
    );
    assert_eq!(gradients[0].iter().sum::<usize>(), 5, "{gradients:?}");
    assert_eq!(gradients[0], gradients[1]);
    // The forward's weights and the input gradient's: in one order too, so that one
    // concatenation of the weights serves both.
    let weights = parts(|op| match op {
        Op::Conv2d { .. } | Op::Conv2dBackwardData { .. } => Some(1),
        _ => None,
    });
    assert_eq!(weights.len(), 2, "{weights:?}");
    assert_eq!(weights[0].iter().sum::<usize>(), 5, "{weights:?}");
    assert_eq!(weights[0], weights[1]);
}

/// SCConv's gate, `k3 * sigmoid(x + up(k2))`, with k2 and k3 plain convolutions.
fn gate(mode: Mode) -> (Graph, Vec<usize>) {
    let (mut b, x) = with_input(mode, &[2, 4, 8, 8]);
    let pooled = b.avg_pool2d(x, 4, 4, 0, false, true).unwrap();
    let k2 = b
        .conv_layer("k2", pooled, &ConvSpec::new(4, 3).padding(1))
        .unwrap();
    let up = b.resize_nearest(k2, [8, 8]).unwrap();
    let logits = b.add(x, up).unwrap();
    let gate = b.sigmoid(logits).unwrap();
    let k3 = b
        .conv_layer("k3", x, &ConvSpec::new(4, 3).padding(1))
        .unwrap();
    let y = b.mul(k3, gate).unwrap();
    let chain = vec![up.0, logits.0, gate.0, y.0];
    (finish(b, y), chain)
}

#[test]
fn the_gate_is_one_kernel_with_the_upsampling_as_an_index_map() {
    let (g, chain) = gate(Mode::Eval);
    let f = check(&g, 13);
    let k = kernel_of(&f, chain[0]).unwrap();
    assert!(
        chain.iter().all(|&v| k.covers.contains(&v)),
        "resize, add, sigmoid and mul share kernel {}",
        k.name
    );
    assert!(k
        .body
        .nodes
        .iter()
        .any(|n| matches!(n.op, Op::ResizeNearest { .. })));
    assert!(
        k.body
            .nodes
            .iter()
            .any(|n| matches!(n.op, Op::Conv2d { .. })),
        "and it is the k3 convolution's epilogue"
    );
}

/// A pooled image convolved: `avg_pool(x, window) -> conv(kernel, out channels)`.
fn pooled_conv(shape: &[usize], window: usize, kernel: usize, out: usize) -> (Graph, usize) {
    let (mut b, x) = with_input(Mode::Eval, shape);
    let pooled = b.avg_pool2d(x, window, window, 0, false, true).unwrap();
    let spec = ConvSpec::new(out, kernel).padding(kernel / 2);
    let y = b.conv_layer("conv", pooled, &spec).unwrap();
    (finish(b, y), pooled.0)
}

#[test]
fn an_average_pool_is_a_prologue_only_where_recomputing_it_is_cheap() {
    // 2x2 windows read once by a 1x1 convolution with one tile of output channels:
    // pooling while the tile loads costs less than a kernel of its own.
    let (g, pool) = pooled_conv(&[2, 4, 8, 8], 2, 1, 4);
    let f = check(&g, 14);
    let k = kernel_of(&f, pool).unwrap();
    assert_eq!(
        k.anchor,
        calib_ir::Anchor::Convolution,
        "{}",
        f.program.to_text()
    );
    // 8x8 windows under a 3x3 convolution with 512 output channels: as a prologue
    // every pooled value would be recomputed (64 loads) for each of 9 taps and every
    // tile of output channels, so the pool is its own kernel.
    let (g, pool) = pooled_conv(&[8, 64, 64, 64], 8, 3, 512);
    let f = calib_passes::fusion::fuse(&g, &Default::default()).unwrap();
    let k = kernel_of(&f, pool).unwrap();
    assert_eq!(k.anchor, calib_ir::Anchor::Pool, "{}", f.program.to_text());
}

#[test]
fn pointwise_prologues_and_epilogues_join_convolutions() {
    // relu(bn(conv(relu(x * s)))) + x: prologue, BN apply, ReLU and residual add.
    let (mut b, x) = with_input(Mode::Eval, &[2, 4, 6, 6]);
    let s = b.scale(x, 0.5).unwrap();
    let p = b.relu(s).unwrap();
    let y = b
        .conv_layer("conv", p, &ConvSpec::new(4, 3).padding(1))
        .unwrap();
    let y = b.batch_norm("bn", y).unwrap();
    let y = b.add(y, x).unwrap();
    let y = b.relu(y).unwrap();
    let f = check(&finish(b, y), 15);
    assert_eq!(f.program.kernels.len(), 1);
    assert!(fired(&f, "fuse-prologue") + fired(&f, "fuse-epilogue") > 0);
}

#[test]
fn matmul_takes_its_bias_and_activation() {
    let (mut b, x) = with_input(Mode::Eval, &[3, 5]);
    let y = b.linear("fc", x, 4, true).unwrap();
    let y = b.relu(y).unwrap();
    let f = check(&finish(b, y), 16);
    assert_eq!(f.program.kernels.len(), 1);
    assert_eq!(f.program.kernels[0].anchor, calib_ir::Anchor::MatMul);
}

#[test]
fn pointwise_chains_and_their_reductions_fuse() {
    // softmax-like: exp(x - max) / sum(exp(x - max)).
    let (mut b, x) = with_input(Mode::Eval, &[4, 7]);
    let m = b.reduce_max(x, &[1], true).unwrap();
    let d = b.sub(x, m).unwrap();
    let e = b.exp(d).unwrap();
    let s = b.reduce_sum(e, &[1], true).unwrap();
    let y = b.div(e, s).unwrap();
    let f = check(&finish(b, y), 17);
    assert!(
        f.program.kernels.len() <= 3,
        "{} kernels",
        f.program.kernels.len()
    );
    assert!(fired(&f, "fuse-pointwise") > 0 && fired(&f, "fuse-pointwise-exclusive") > 0);
    // The sum and its prologue form one group, whichever seed reaches it first.
    assert!(fired(&f, "fuse-reduction") + fired(&f, "fuse-pointwise-reductions") > 0);
}

#[test]
fn batch_norm_backward_fuses_masks_and_sums() {
    let g = conv_bn(Mode::Train, 3);
    let y = g.output("y").unwrap();
    let mut g2 = g.clone();
    let seed = g2
        .push_source(
            Op::Input {
                name: "seed".into(),
            },
            g.ty(y).clone(),
            "",
        )
        .unwrap();
    let wrt: Vec<Value> = g
        .params()
        .filter(|(n, _)| n.ends_with("weight") || n.ends_with("bias"))
        .map(|(_, v)| v)
        .collect();
    let (mut g2, grads) = calib_passes::vjp(&g2, y, seed, &wrt).unwrap();
    for (k, v) in grads.into_iter().enumerate() {
        g2.add_output(format!("grad{k}"), v).unwrap();
    }
    let before = calib_passes::fusion::unfused(&g2).unwrap().kernels.len();
    let f = check(&g2, 18);
    assert!(
        f.program.kernels.len() * 3 <= before,
        "{} of {before} kernels",
        f.program.kernels.len()
    );
}

#[test]
fn running_statistics_ride_along_as_side_outputs() {
    // The counter update reads only its own parameter; the running statistics ride
    // with the kernel that reads the batch statistics anyway.
    let f = check(&conv_bn(Mode::Train, 4), 19);
    assert!(
        f.report.side_outputs >= 1,
        "{} side outputs",
        f.report.side_outputs
    );
    assert!(
        f.program.kernels.len() <= 2,
        "{} kernels",
        f.program.kernels.len()
    );
}

#[test]
fn concat_becomes_a_view() {
    let (mut b, x) = with_input(Mode::Eval, &[2, 3, 5, 5]);
    let z = b.input("z", F, vec![2, 3, 5, 5]).unwrap();
    let a = b.conv_layer("a", x, &ConvSpec::new(2, 1)).unwrap();
    let c = b.conv_layer("c", z, &ConvSpec::new(4, 1)).unwrap();
    let y = b.concat(&[a, c], 1).unwrap();
    let f = check(&finish(b, y), 20);
    assert_eq!(f.report.concat_views, 1);
    assert_eq!(f.program.kernels.len(), 2);
    assert!(
        f.program
            .kernels
            .iter()
            .all(|k| k.outputs[0].slice.is_some()),
        "both convolutions write slices"
    );
}

#[test]
fn kernels_that_store_bf16_are_explained() {
    // Under bf16, `narrow-stores` stores round trips as bf16 buffers: an explanation
    // must read the buffer as the bf16 value of its f32 original, on both sides.
    let g =
        calib_passes::precision::apply(&conv_bn_gradient(4), calib_ir::Precision::Bf16).unwrap();
    let options = FusionOptions {
        precision: calib_ir::Precision::Bf16,
        ..FusionOptions::default()
    };
    let f = calib_passes::fusion::fuse(&g, &options).unwrap();
    let narrowed = f
        .program
        .buffers
        .iter()
        .filter(|b| b.ty.dtype == DType::BF16)
        .count();
    assert!(narrowed > 0, "{}", f.program.to_text());
    for k in &f.program.kernels {
        let text = calib_passes::fusion::explain(&g, &f.program, &k.name).unwrap();
        assert!(!text.contains("did not re-derive"), "{text}");
    }
}
