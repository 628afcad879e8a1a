//! The builder's composite layers, differentiated through their primitives.

use crate::check::GradCheck;
use crate::common::Rng;
use calib_ir::{ConvSpec, DType};

#[test]
fn softmax_cross_entropy_with_and_without_label_smoothing() {
    for smoothing in [0.0, 0.1] {
        let mut rng = Rng::new(11);
        let grads = GradCheck::new(move |b| {
            let logits = b.input("logits", DType::F32, vec![4, 5])?;
            let labels = b.input("labels", DType::I64, vec![4])?;
            b.softmax_cross_entropy(logits, labels, smoothing)
        })
        .with("labels", rng.labels(4, 5))
        .range("logits", -3.0, 3.0)
        .run();
        assert!(grads["logits"] > 0.01);
    }
}

#[test]
fn batch_norm_in_train_mode() {
    let grads = GradCheck::new(|b| {
        let x = b.input("x", DType::F32, vec![2, 3, 4, 5])?;
        b.batch_norm("bn", x)
    })
    .range("bn.weight", 0.5, 1.5)
    .range("bn.running_var", 0.5, 2.0)
    .run();
    assert!(grads["x"] > 0.0 && grads["bn.weight"] > 0.0 && grads["bn.bias"] > 0.0);
    // The running statistics only feed the running-stat outputs.
    assert_eq!(
        (grads["bn.running_mean"], grads["bn.running_var"]),
        (0.0, 0.0)
    );
}

#[test]
fn self_calibration_gate() {
    // SCConv's gate: sigmoid(x + up(bn(conv(avgpool(x))))) * bn(conv(x)).
    GradCheck::new(|b| {
        let x = b.input("x", DType::F32, vec![2, 4, 8, 8])?;
        let pooled = b.avg_pool2d(x, 4, 4, 0, false, true)?;
        let k2 = b.conv_layer("k2", pooled, &ConvSpec::new(4, 3).padding(1))?;
        let k2 = b.batch_norm("k2_bn", k2)?;
        let up = b.resize_nearest(k2, [8, 8])?;
        let sum = b.add(x, up)?;
        let gate = b.sigmoid(sum)?;
        let k3 = b.conv_layer("k3", x, &ConvSpec::new(4, 3).padding(1))?;
        b.mul(k3, gate)
    })
    .range("k2_bn.weight", 0.5, 1.5)
    .range("k2_bn.running_var", 0.5, 2.0)
    .run();
}

#[test]
fn a_small_network_to_its_loss() {
    let mut rng = Rng::new(5);
    let grads = GradCheck::new(|b| {
        let x = b.input("input", DType::F32, vec![2, 3, 8, 8])?;
        let labels = b.input("labels", DType::I64, vec![2])?;
        let h = b.conv_layer("conv1", x, &ConvSpec::new(4, 3).stride(2).padding(1))?;
        let h = b.batch_norm("bn1", h)?;
        let h = b.relu(h)?;
        let h = b.max_pool2d(h, 3, 2, 1, false)?;
        let h = b.global_avg_pool(h)?;
        let logits = b.linear("fc", h, 3, true)?;
        b.softmax_cross_entropy(logits, labels, 0.0)
    })
    .with("labels", rng.labels(2, 3))
    .range("bn1.weight", 0.5, 1.5)
    .range("bn1.running_var", 0.5, 2.0)
    .run();
    for p in [
        "conv1.weight",
        "bn1.weight",
        "bn1.bias",
        "fc.weight",
        "fc.bias",
    ] {
        assert!(grads[p] > 0.0, "{p}: {grads:?}");
    }
}
