//! SCNet: the ResNet skeleton with SCBottleneck blocks.

use crate::bottleneck::sc_bottleneck;
use crate::network::{network, Skeleton};
use crate::spec::{ScBottleneckSpec, ScNetSpec};
use calib_ir::{GraphBuilder, Result, Value};

/// SCConv's context downsampling inside SCNet (the authors' `pooling_r`).
pub const SCNET_POOLING_R: usize = 4;

/// Appends an SCNet on the image batch `x`; returns the logits. The spec must be validated.
pub(crate) fn scnet(g: &mut GraphBuilder, x: Value, s: &ScNetSpec) -> Result<Value> {
    let skeleton = Skeleton {
        stem: s.stem,
        maxpool: s.maxpool,
        stages: &s.stages,
        avg_down: s.avg_down,
        num_classes: s.num_classes,
    };
    network(g, x, &skeleton, |g, x, plan| {
        let block = ScBottleneckSpec {
            inplanes: plan.inplanes,
            planes: plan.planes,
            stride: plan.stride,
            cardinality: s.cardinality,
            bottleneck_width: s.bottleneck_width,
            avd: s.avd,
            is_first: plan.is_first,
            dilation: plan.dilation,
            pooling_r: SCNET_POOLING_R,
            downsample: plan.downsample,
        };
        sc_bottleneck(g, x, &block)
    })
}
