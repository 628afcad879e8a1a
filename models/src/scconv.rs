//! The self-calibrated convolution (SCConv).
//!
//! ```text
//! gate = sigmoid(x + up(k2(x)))      k2 = BN(conv3x3(avgpool_r(x)))   (k2.0, k2.1, k2.2)
//! y    = k4(k3(x) * gate)            k3 = BN(conv3x3(x))              (k3.0, k3.1)
//!                                    k4 = BN(conv3x3_stride(.))       (k4.0, k4.1)
//! ```
//!
//! `up` is a nearest resize back to x's size (PyTorch's legacy index rule). No ReLU inside.

use crate::layers::conv_bn;
use crate::spec::ScConvSpec;
use calib_ir::{ConvSpec, GraphBuilder, Result, Value};

/// Appends an SCConv on `x` in the current scope; the spec must be validated.
pub(crate) fn scconv(g: &mut GraphBuilder, x: Value, s: &ScConvSpec) -> Result<Value> {
    let conv = |stride| {
        ConvSpec::new(s.channels, 3)
            .stride(stride)
            .padding(s.padding)
            .dilation(s.dilation)
            .groups(s.groups)
    };
    let shape = g.shape(x);
    let size = [shape[2], shape[3]];

    // Registration order k2, k3, k4 is also a valid evaluation order, so the parameters
    // come out in state_dict order.
    let context = g.scoped("k2", |g| {
        let pooled = g.scoped("0", |g| {
            g.avg_pool2d(x, s.pooling_r, s.pooling_r, 0, false, true)
        })?;
        conv_bn(g, "1", "2", pooled, &conv(1))
    })?;
    let up = g.resize_nearest(context, size)?;
    let logits = g.add(x, up)?;
    let gate = g.sigmoid(logits)?;
    let features = g.scoped("k3", |g| conv_bn(g, "0", "1", x, &conv(1)))?;
    let calibrated = g.mul(features, gate)?;
    g.scoped("k4", |g| conv_bn(g, "0", "1", calibrated, &conv(s.stride)))
}
