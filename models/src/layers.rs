//! Small layer compositions shared by the block builders.
//!
//! Scopes mirror PyTorch's module names, so a node's scope is the name of the leaf module
//! that computes it (`layer1.0.relu`, `layer1.0.scconv.k2.0`, `maxpool`) and per-layer
//! reports line up with the authors' module listings.

use crate::spec::{Downsample, EXPANSION};
use calib_ir::{ConvSpec, GraphBuilder, Result, Value};

/// A bias-free 1x1 convolution.
pub(crate) fn conv1x1(out_channels: usize, stride: usize) -> ConvSpec {
    ConvSpec::new(out_channels, 1).stride(stride)
}

/// A bias-free 3x3 convolution padded by its dilation, which keeps the size at stride 1.
pub(crate) fn conv3x3(
    out_channels: usize,
    stride: usize,
    dilation: usize,
    groups: usize,
) -> ConvSpec {
    ConvSpec::new(out_channels, 3)
        .stride(stride)
        .padding(dilation)
        .dilation(dilation)
        .groups(groups)
}

/// Conv layer `conv` followed by BatchNorm `bn` (both local names in the current scope).
pub(crate) fn conv_bn(
    g: &mut GraphBuilder,
    conv: &str,
    bn: &str,
    x: Value,
    spec: &ConvSpec,
) -> Result<Value> {
    let y = g.conv_layer(conv, x, spec)?;
    g.batch_norm(bn, y)
}

/// ReLU in the scope of the module's `relu` child, as PyTorch's modules register it.
pub(crate) fn relu(g: &mut GraphBuilder, x: Value) -> Result<Value> {
    g.scoped("relu", |g| g.relu(x))
}

/// The `downsample` shortcut of a bottleneck whose output has `planes * 4` channels.
pub(crate) fn downsample(
    g: &mut GraphBuilder,
    x: Value,
    kind: Downsample,
    planes: usize,
) -> Result<Value> {
    let out = planes * EXPANSION;
    g.scoped("downsample", |g| match kind {
        Downsample::Conv { stride } => conv_bn(g, "0", "1", x, &conv1x1(out, stride)),
        Downsample::AvgpoolConv { pool } => {
            // ceil_mode keeps the partial last window of odd sizes, and excluding the padding
            // from the count makes that window a true mean: the shortcut sees every pixel.
            let pooled = g.scoped("0", |g| g.avg_pool2d(x, pool, pool, 0, true, false))?;
            conv_bn(g, "1", "2", pooled, &conv1x1(out, 1))
        }
    })
}
