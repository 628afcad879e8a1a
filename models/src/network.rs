//! The ResNet-style network skeleton shared by SCNet and ResNet: a stem, stages of
//! bottleneck blocks (`layer1`, `layer2`, ...), global average pooling and `fc`.
//! The families differ only in the block, which the caller supplies.

use crate::layers::{conv3x3, conv_bn, relu};
use crate::spec::{Downsample, Stage, Stem, StemKind, EXPANSION};
use calib_ir::{ConvSpec, GraphBuilder, Result, Value};

/// The network-level hyper-parameters of a spec.
pub(crate) struct Skeleton<'a> {
    pub stem: Stem,
    pub maxpool: bool,
    pub stages: &'a [Stage],
    /// Whether shortcuts pool before their 1x1 conv instead of striding it (v1d).
    pub avg_down: bool,
    pub num_classes: usize,
}

/// What one block of a stage receives.
pub(crate) struct BlockPlan {
    pub inplanes: usize,
    pub planes: usize,
    pub stride: usize,
    pub dilation: usize,
    pub is_first: bool,
    pub downsample: Option<Downsample>,
}

impl BlockPlan {
    /// Block `index` of stage `stage` (0-based), reading `inplanes` channels. Only block 0
    /// strides and may need a projection shortcut; block 0 of every stage but the first is
    /// `is_first` (the authors' rule, which turns on avd pooling there).
    fn new(
        stage: &Stage,
        stage_index: usize,
        index: usize,
        inplanes: usize,
        avg_down: bool,
    ) -> Self {
        let stride = if index == 0 { stage.stride } else { 1 };
        let reshapes = stride != 1 || inplanes != stage.planes * EXPANSION;
        let downsample = reshapes.then_some(if avg_down {
            Downsample::AvgpoolConv { pool: stride }
        } else {
            Downsample::Conv { stride }
        });
        BlockPlan {
            inplanes,
            planes: stage.planes,
            stride,
            dilation: stage.dilation,
            is_first: index == 0 && stage_index > 0,
            downsample,
        }
    }
}

/// Appends the whole network on the image batch `x`; returns the logits `[N, classes]`.
pub(crate) fn network(
    g: &mut GraphBuilder,
    x: Value,
    skeleton: &Skeleton,
    mut block: impl FnMut(&mut GraphBuilder, Value, &BlockPlan) -> Result<Value>,
) -> Result<Value> {
    let mut x = stem(g, x, &skeleton.stem)?;
    if skeleton.maxpool {
        x = g.scoped("maxpool", |g| g.max_pool2d(x, 3, 2, 1, false))?;
    }
    let mut inplanes = skeleton.stem.out_channels();
    for (i, stage) in skeleton.stages.iter().enumerate() {
        g.scoped(&format!("layer{}", i + 1), |g| {
            for j in 0..stage.blocks {
                let plan = BlockPlan::new(stage, i, j, inplanes, skeleton.avg_down);
                x = g.scoped(&j.to_string(), |g| block(g, x, &plan))?;
                inplanes = stage.planes * EXPANSION;
            }
            Ok(())
        })?;
    }
    let pooled = g.scoped("avgpool", |g| g.global_avg_pool(x))?;
    g.linear("fc", pooled, skeleton.num_classes, true)
}

/// `conv1` (one conv, or the deep stem's three), then `bn1` and ReLU.
fn stem(g: &mut GraphBuilder, x: Value, stem: &Stem) -> Result<Value> {
    let (w, s) = (stem.width, stem.stride);
    let y = match stem.kind {
        StemKind::Conv7x7 => g.conv_layer("conv1", x, &ConvSpec::new(w, 7).stride(s).padding(3))?,
        StemKind::Conv3x3 => g.conv_layer("conv1", x, &conv3x3(w, s, 1, 1))?,
        // A Sequential: its ReLUs are the parameter-free children 2 and 5.
        StemKind::Deep => g.scoped("conv1", |g| {
            let y = conv_bn(g, "0", "1", x, &conv3x3(w, s, 1, 1))?;
            let y = g.scoped("2", |g| g.relu(y))?;
            let y = conv_bn(g, "3", "4", y, &conv3x3(w, 1, 1, 1))?;
            let y = g.scoped("5", |g| g.relu(y))?;
            g.conv_layer("6", y, &conv3x3(2 * w, 1, 1, 1))
        })?,
    };
    let y = g.batch_norm("bn1", y)?;
    relu(g, y)
}
