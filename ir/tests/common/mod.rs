//! Sample graphs shared by the integration tests.

#![allow(dead_code)] // each test binary uses its own subset

use calib_ir::{ConvSpec, DType, Graph, GraphBuilder, IrError, Mode, Result, Value};

/// `Conv2d(k x k, padding k/2)` followed by `BatchNorm2d`, named like
/// `nn.Sequential(conv, bn)`: `<name>.0.weight`, `<name>.1.running_mean`, ...
fn conv_bn(g: &mut GraphBuilder, name: &str, x: Value, channels: usize, k: usize) -> Result<Value> {
    g.scoped(name, |g| {
        let y = g.conv_layer("0", x, &ConvSpec::new(channels, k).padding(k / 2))?;
        g.batch_norm("1", y)
    })
}

/// SCNet's self-calibrated convolution on an NCHW value with `c` channels: half the
/// channels go through the calibration branch (k2 on a 4x down-sampled copy, resized
/// back and gated by a sigmoid, then k3 and k4), the other half through plain k1.
pub fn scconv(g: &mut GraphBuilder, x: Value) -> Result<Value> {
    let shape = g.shape(x);
    let (c, h, w) = (shape[1], shape[2], shape[3]);
    let half = c / 2;
    let a = g.slice(x, 1, 0, half)?;
    let b = g.slice(x, 1, half, c)?;

    let k2 = g.scoped("k2", |g| {
        let pooled = g.avg_pool2d(a, 4, 4, 0, false, true)?;
        let y = g.conv_layer("1", pooled, &ConvSpec::new(half, 3).padding(1))?;
        g.batch_norm("2", y)
    })?;
    let up = g.resize_nearest(k2, [h, w])?;
    let sum = g.add(a, up)?;
    let gate = g.sigmoid(sum)?;
    let k3 = conv_bn(g, "k3", a, half, 3)?;
    let calibrated = g.mul(k3, gate)?;
    let out_a = conv_bn(g, "k4", calibrated, half, 3)?;
    let out_b = conv_bn(g, "k1", b, half, 3)?;
    let joined = g.concat(&[out_a, out_b], 1)?;
    g.relu(joined)
}

/// A training step's forward graph: SCConv block, global pooling, a linear classifier
/// and label-smoothed cross-entropy against i64 labels, plus the logits cast to f16
/// and bf16 as extra outputs.
pub fn scconv_classifier() -> Result<Graph> {
    let mut g = GraphBuilder::new(Mode::Train, DType::F32);
    let x = g.input("input", DType::F32, vec![2, 8, 16, 16])?;
    let labels = g.input("labels", DType::I64, vec![2])?;
    let y = g.scoped("block", |g| scconv(g, x))?;
    let pooled = g.global_avg_pool(y)?;
    let logits = g.linear("fc", pooled, 10, true)?;
    let loss = g.softmax_cross_entropy(logits, labels, 0.1)?;
    g.output("loss", loss)?;
    let half = g.cast(logits, DType::F16)?;
    let brain = g.cast(logits, DType::BF16)?;
    g.output("logits_f16", half)?;
    g.output("logits_bf16", brain)?;
    Ok(g.finish())
}

/// The SCConv block alone, in eval mode and bf16 throughout.
pub fn scconv_eval_bf16() -> Result<Graph> {
    let mut g = GraphBuilder::new(Mode::Eval, DType::BF16);
    let x = g.input("input", DType::BF16, vec![1, 4, 8, 8])?;
    let y = scconv(&mut g, x)?;
    g.output("output", y)?;
    Ok(g.finish())
}

/// Unwraps a result that must be an error and returns its message.
pub fn err_text<T: std::fmt::Debug>(r: std::result::Result<T, IrError>) -> String {
    r.expect_err("expected an error").to_string()
}

/// Asserts that `message` contains each of `parts`.
#[track_caller]
pub fn assert_mentions(message: &str, parts: &[&str]) {
    for part in parts {
        assert!(
            message.contains(part),
            "error `{message}` does not mention `{part}`"
        );
    }
}
