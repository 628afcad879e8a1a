//! torchvision's ResNet with v1.5 bottlenecks, the baseline SCNet is measured against.
//!
//! ```text
//! out = relu(bn1(conv1(x)))           1x1
//! out = relu(bn2(conv2(out)))         3x3, the block's stride, groups, dilation
//! out = relu(bn3(conv3(out)) + shortcut(x))
//! ```
//!
//! The stride on the 3x3 conv (not the first 1x1, as in the original paper) is what makes
//! it "v1.5", and what gives ResNet-50 its 4.09 GMACs.

use crate::layers::{conv1x1, conv3x3, conv_bn, downsample, relu};
use crate::network::{network, BlockPlan, Skeleton};
use crate::spec::{branch_width, ResNetSpec, EXPANSION};
use calib_ir::{GraphBuilder, Result, Value};

/// Appends a ResNet on the image batch `x`; returns the logits. The spec must be validated.
pub(crate) fn resnet(g: &mut GraphBuilder, x: Value, s: &ResNetSpec) -> Result<Value> {
    let skeleton = Skeleton {
        stem: s.stem,
        maxpool: s.maxpool,
        stages: &s.stages,
        avg_down: false,
        num_classes: s.num_classes,
    };
    network(g, x, &skeleton, |g, x, plan| bottleneck(g, x, plan, s))
}

/// One torchvision `Bottleneck`, built in registration order (conv1, bn1, conv2, bn2,
/// conv3, bn3, downsample) so that parameters come out in state_dict order.
fn bottleneck(g: &mut GraphBuilder, x: Value, plan: &BlockPlan, s: &ResNetSpec) -> Result<Value> {
    let width = branch_width(plan.planes, s.width_per_group, s.groups);
    let y = conv_bn(g, "conv1", "bn1", x, &conv1x1(width, 1))?;
    let y = relu(g, y)?;
    let y = conv_bn(
        g,
        "conv2",
        "bn2",
        y,
        &conv3x3(width, plan.stride, plan.dilation, s.groups),
    )?;
    let y = relu(g, y)?;
    let y = conv_bn(g, "conv3", "bn3", y, &conv1x1(plan.planes * EXPANSION, 1))?;
    let shortcut = match plan.downsample {
        Some(kind) => downsample(g, x, kind, plan.planes)?,
        None => x,
    };
    let sum = g.add(y, shortcut)?;
    relu(g, sum)
}
