//! SCBottleneck: a ResNet bottleneck whose 3x3 conv is split into a plain branch (`k1`)
//! and a self-calibrated branch (`scconv`), each after its own 1x1 conv.
//!
//! ```text
//! a = relu(bn1_a(conv1_a(x)))    b = relu(bn1_b(conv1_b(x)))
//! a = relu(k1(a))                b = relu(scconv(b))
//! a, b = avd_layer(a), avd_layer(b)            (only when avd is active)
//! out = relu(bn3(conv3(concat[a, b])) + shortcut(x))
//! ```
//!
//! With avd active, `AvgPool2d(3, stride, padding 1)` does the downsampling and `k1` and
//! SCConv's `k4` run at stride 1.

use crate::layers::{conv1x1, conv3x3, conv_bn, downsample, relu};
use crate::scconv::scconv;
use crate::spec::{ScBottleneckSpec, ScConvSpec, EXPANSION};
use calib_ir::{GraphBuilder, Result, Value};

/// Appends an SCBottleneck on `x` in the current scope; the spec must be validated.
pub(crate) fn sc_bottleneck(g: &mut GraphBuilder, x: Value, s: &ScBottleneckSpec) -> Result<Value> {
    let width = s.branch_width();
    let (d, groups) = (s.dilation, s.cardinality);
    let inner_stride = if s.avd_active() { 1 } else { s.stride };

    // Built in registration order (conv1_a, bn1_a, conv1_b, bn1_b, k1, scconv, conv3, bn3,
    // downsample), so that parameters come out in state_dict order.
    let a = conv_bn(g, "conv1_a", "bn1_a", x, &conv1x1(width, 1))?;
    let a = relu(g, a)?;
    let b = conv_bn(g, "conv1_b", "bn1_b", x, &conv1x1(width, 1))?;
    let b = relu(g, b)?;

    let a = g.scoped("k1", |g| {
        conv_bn(g, "0", "1", a, &conv3x3(width, inner_stride, d, groups))
    })?;
    let a = relu(g, a)?;
    let sc = ScConvSpec {
        channels: width,
        stride: inner_stride,
        padding: d,
        dilation: d,
        groups,
        pooling_r: s.pooling_r,
    };
    let b = g.scoped("scconv", |g| scconv(g, b, &sc))?;
    let b = relu(g, b)?;

    let (a, b) = if s.avd_active() {
        let avd = |g: &mut GraphBuilder, v| {
            g.scoped("avd_layer", |g| {
                g.avg_pool2d(v, 3, s.stride, 1, false, true)
            })
        };
        (avd(g, a)?, avd(g, b)?)
    } else {
        (a, b)
    };

    let joined = g.concat(&[a, b], 1)?;
    let out = conv_bn(g, "conv3", "bn3", joined, &conv1x1(s.planes * EXPANSION, 1))?;
    let shortcut = match s.downsample {
        Some(kind) => downsample(g, x, kind, s.planes)?,
        None => x,
    };
    let sum = g.add(out, shortcut)?;
    relu(g, sum)
}
