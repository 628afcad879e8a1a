//! Model specs: the `spec` objects of the fixtures (`shared/fixtures/README.md`,
//! "Machine-readable spec"), plus `resnet` for torchvision's ResNet family.
//!
//! Every field is required and unknown fields are rejected, so a misspelled key is an
//! error rather than a silently defaulted layer. [`ModelSpec::validate`] then rejects the
//! values no module could be built from, naming the offending field.

use crate::ModelError;
use serde::{Deserialize, Serialize};

/// Output channels of a bottleneck block per `planes` (ResNet's `expansion`).
pub const EXPANSION: usize = 4;

/// Most channels of any layer (input, stem, `planes * 4`, branch widths): 32768. A 3x3
/// convolution that wide has 9 * 2^30 weights, 36 GiB in f32: with its gradient, what
/// one 80 GB GPU can hold. Real networks stop at 2048 (ResNet) to 4096 (wide ResNets).
pub const MAX_CHANNELS: usize = 1 << 15;

/// Largest image side, and so the largest stride, dilation or pooling window: 16384.
/// One 16384 x 16384 RGB image is 3 GiB in f32; a stride or window beyond the image
/// cannot mean anything.
pub const MAX_SIDE: usize = 1 << 14;

/// Most bottleneck blocks in a network, all stages together: 4096 (ResNet-1001 has
/// 333). A block adds about 60 nodes to the forward graph and 300 to a training step,
/// and each keeps activations alive for the backward pass, so deeper networks would
/// neither fit a GPU nor compile in reasonable time.
pub const MAX_BLOCKS: usize = 1 << 12;

/// Most classes: 2^20 (ImageNet-21k has 21841). `fc` then has 2^31 weights at 2048
/// features, 8 GiB in f32.
pub const MAX_CLASSES: usize = 1 << 20;

/// Largest batch: 2^24. Far more than memory allows for any image; the backends refuse
/// what does not fit with the figures, this only keeps counts small.
pub const MAX_BATCH: usize = 1 << 24;

/// One buildable module or network, tagged by `kind`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind")]
pub enum ModelSpec {
    #[serde(rename = "scconv")]
    ScConv(ScConvSpec),
    #[serde(rename = "scbottleneck")]
    ScBottleneck(ScBottleneckSpec),
    #[serde(rename = "scnet")]
    ScNet(ScNetSpec),
    #[serde(rename = "resnet")]
    ResNet(ResNetSpec),
}

/// One self-calibrated convolution with `inplanes = planes = channels`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScConvSpec {
    pub channels: usize,
    pub stride: usize,
    pub padding: usize,
    pub dilation: usize,
    pub groups: usize,
    pub pooling_r: usize,
}

/// One SCBottleneck block.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScBottleneckSpec {
    pub inplanes: usize,
    pub planes: usize,
    pub stride: usize,
    pub cardinality: usize,
    pub bottleneck_width: usize,
    pub avd: bool,
    pub is_first: bool,
    pub dilation: usize,
    pub pooling_r: usize,
    /// `None` is the identity shortcut.
    pub downsample: Option<Downsample>,
}

/// The projection shortcut of a block whose output shape differs from its input's.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Downsample {
    /// 1x1 conv with `stride`, then BN (`downsample.0`, `downsample.1`).
    Conv { stride: usize },
    /// `AvgPool2d(pool, pool, ceil_mode, count_include_pad=False)`, 1x1 conv, BN
    /// (`downsample.1`, `downsample.2`): the v1d ("ResNet-D") shortcut.
    AvgpoolConv { pool: usize },
}

/// The authors' SCNet generalized to any widths and depths.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScNetSpec {
    pub in_channels: usize,
    pub stem: Stem,
    pub maxpool: bool,
    pub stages: Vec<Stage>,
    pub avg_down: bool,
    pub avd: bool,
    pub cardinality: usize,
    pub bottleneck_width: usize,
    pub num_classes: usize,
}

/// torchvision's ResNet with v1.5 bottlenecks (the stride sits on `conv2`), with the same
/// stem and stage vocabulary as [`ScNetSpec`]. `groups` and `width_per_group` cover
/// ResNeXt and Wide ResNet as torchvision defines them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResNetSpec {
    pub in_channels: usize,
    pub stem: Stem,
    pub maxpool: bool,
    pub stages: Vec<Stage>,
    pub groups: usize,
    pub width_per_group: usize,
    pub num_classes: usize,
}

/// The layers before the first stage; `bn1` and a ReLU always follow them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Stem {
    pub kind: StemKind,
    pub width: usize,
    pub stride: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StemKind {
    /// `conv1` = Conv2d(in, width, 7, stride, 3).
    Conv7x7,
    /// `conv1` = Conv2d(in, width, 3, stride, 1).
    Conv3x3,
    /// Three 3x3 convs (`conv1.0`, `conv1.3`, `conv1.6`) with BNs (`conv1.1`, `conv1.4`)
    /// and ReLUs between; only the first has the stride; output `2 * width` channels.
    Deep,
}

impl Stem {
    /// Channels leaving the stem.
    pub fn out_channels(&self) -> usize {
        match self.kind {
            StemKind::Deep => 2 * self.width,
            StemKind::Conv7x7 | StemKind::Conv3x3 => self.width,
        }
    }
}

/// One stage (`layerN`): `blocks` bottlenecks of `planes`, the first with `stride`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Stage {
    pub planes: usize,
    pub blocks: usize,
    pub stride: usize,
    pub dilation: usize,
}

/// SCBottleneck's branch width: `int(planes * bottleneck_width / 64) * cardinality`
/// (also torchvision's bottleneck width with `width_per_group` and `groups`).
/// Saturates instead of overflowing; validation bounds the result by [`MAX_CHANNELS`].
pub fn branch_width(planes: usize, bottleneck_width: usize, cardinality: usize) -> usize {
    (planes.saturating_mul(bottleneck_width) / 64).saturating_mul(cardinality)
}

impl ModelSpec {
    /// The `kind` tag.
    pub fn kind(&self) -> &'static str {
        match self {
            ModelSpec::ScConv(_) => "scconv",
            ModelSpec::ScBottleneck(_) => "scbottleneck",
            ModelSpec::ScNet(_) => "scnet",
            ModelSpec::ResNet(_) => "resnet",
        }
    }

    /// Channels of the input the module expects.
    pub fn in_channels(&self) -> usize {
        match self {
            ModelSpec::ScConv(s) => s.channels,
            ModelSpec::ScBottleneck(s) => s.inplanes,
            ModelSpec::ScNet(s) => s.in_channels,
            ModelSpec::ResNet(s) => s.in_channels,
        }
    }

    /// Name of the graph's result: `output` for single modules, `logits` for networks.
    pub fn output_name(&self) -> &'static str {
        match self {
            ModelSpec::ScConv(_) | ModelSpec::ScBottleneck(_) => "output",
            ModelSpec::ScNet(_) | ModelSpec::ResNet(_) => "logits",
        }
    }

    /// An input shape to use when none is given: ImageNet's `[1, C, 224, 224]` for
    /// networks, and layer1's 56x56 resolution for single modules.
    pub fn default_input_shape(&self) -> Vec<usize> {
        let side = match self {
            ModelSpec::ScConv(_) | ModelSpec::ScBottleneck(_) => 56,
            ModelSpec::ScNet(_) | ModelSpec::ResNet(_) => 224,
        };
        vec![1, self.in_channels(), side, side]
    }

    /// Rejects values no module can be built from, whatever the input size.
    pub fn validate(&self) -> Result<(), ModelError> {
        match self {
            ModelSpec::ScConv(s) => s.validate(),
            ModelSpec::ScBottleneck(s) => s.validate(),
            ModelSpec::ScNet(s) => s.validate(),
            ModelSpec::ResNet(s) => s.validate(),
        }
    }
}

/// Checks that a count lies in `1..=max`; `what` says what the bound is.
fn in_range(field: &str, value: usize, max: usize, what: &str) -> Result<(), ModelError> {
    if value == 0 {
        Err(ModelError::invalid(field, "must be positive, got 0"))
    } else if value > max {
        Err(ModelError::invalid(
            field,
            format!("must be at most {max} ({what}), got {value}"),
        ))
    } else {
        Ok(())
    }
}

/// A channel count (or a group count, which cannot exceed one).
fn channels(field: &str, value: usize) -> Result<(), ModelError> {
    in_range(
        field,
        value,
        MAX_CHANNELS,
        "the most channels a layer may have",
    )
}

/// A stride, dilation or pooling window.
fn window(field: &str, value: usize) -> Result<(), ModelError> {
    in_range(field, value, MAX_SIDE, "the largest image side")
}

fn classes(value: usize) -> Result<(), ModelError> {
    in_range(
        "num_classes",
        value,
        MAX_CLASSES,
        "the most classes a network may have",
    )
}

/// A stage's `planes`: its blocks output `planes * 4` channels.
fn planes(field: &str, value: usize) -> Result<(), ModelError> {
    in_range(
        field,
        value,
        MAX_CHANNELS / EXPANSION,
        "blocks output planes * 4 channels, at most 32768",
    )
}

/// A branch width of zero leaves the block's 3x3 convs without channels.
fn check_width(field: &str, planes: usize, per_64: usize, groups: usize) -> Result<(), ModelError> {
    let width = branch_width(planes, per_64, groups);
    if width == 0 || width > MAX_CHANNELS {
        return Err(ModelError::invalid(
            field,
            format!(
                "= {planes} gives a branch width int({planes} * {per_64} / 64) * {groups} = {width}, \
                 outside 1..={MAX_CHANNELS}"
            ),
        ));
    }
    Ok(())
}

impl ScConvSpec {
    pub fn validate(&self) -> Result<(), ModelError> {
        channels("channels", self.channels)?;
        window("stride", self.stride)?;
        window("dilation", self.dilation)?;
        channels("groups", self.groups)?;
        window("pooling_r", self.pooling_r)?;
        if !self.channels.is_multiple_of(self.groups) {
            return Err(ModelError::invalid(
                "groups",
                format!(
                    "= {} does not divide channels = {}",
                    self.groups, self.channels
                ),
            ));
        }
        // A 3x3 conv keeps the spatial size only when padding == dilation, and k3's output
        // is multiplied elementwise with a gate of the input's size.
        if self.padding != self.dilation {
            return Err(ModelError::invalid(
                "padding",
                format!(
                    "= {} must equal dilation = {} (k3 must keep the input size to meet the gate)",
                    self.padding, self.dilation
                ),
            ));
        }
        Ok(())
    }
}

impl ScBottleneckSpec {
    /// Channels of each of the two branches.
    pub fn branch_width(&self) -> usize {
        branch_width(self.planes, self.bottleneck_width, self.cardinality)
    }

    /// Whether the avd pooling replaces the stride of `k1` and SCConv's `k4`.
    pub fn avd_active(&self) -> bool {
        self.avd && (self.stride > 1 || self.is_first)
    }

    pub fn validate(&self) -> Result<(), ModelError> {
        channels("inplanes", self.inplanes)?;
        planes("planes", self.planes)?;
        window("stride", self.stride)?;
        channels("cardinality", self.cardinality)?;
        channels("bottleneck_width", self.bottleneck_width)?;
        window("dilation", self.dilation)?;
        window("pooling_r", self.pooling_r)?;
        check_width(
            "planes",
            self.planes,
            self.bottleneck_width,
            self.cardinality,
        )?;
        check_shortcut(self.downsample, self.inplanes, self.planes, self.stride)
    }
}

/// The residual add needs the shortcut to produce the block's output shape.
pub(crate) fn check_shortcut(
    downsample: Option<Downsample>,
    inplanes: usize,
    planes: usize,
    stride: usize,
) -> Result<(), ModelError> {
    match downsample {
        None if stride != 1 || inplanes != planes * EXPANSION => Err(ModelError::invalid(
            "downsample",
            format!(
                "is null, but the block maps {inplanes} to {} channels with stride {stride}; \
                 an identity shortcut needs stride 1 and inplanes = planes * {EXPANSION}",
                planes * EXPANSION
            ),
        )),
        None => Ok(()),
        Some(Downsample::Conv { stride: s }) => {
            window("downsample.stride", s)?;
            same_stride("downsample.stride", s, stride)
        }
        Some(Downsample::AvgpoolConv { pool }) => {
            window("downsample.pool", pool)?;
            same_stride("downsample.pool", pool, stride)
        }
    }
}

fn same_stride(field: &str, value: usize, stride: usize) -> Result<(), ModelError> {
    if value != stride {
        return Err(ModelError::invalid(
            field,
            format!("= {value} must equal the block's stride {stride} to match its output size"),
        ));
    }
    Ok(())
}

fn check_stem(stem: &Stem) -> Result<(), ModelError> {
    match stem.kind {
        StemKind::Deep => in_range(
            "stem.width",
            stem.width,
            MAX_CHANNELS / 2,
            "a deep stem outputs 2 * width channels, at most 32768",
        )?,
        StemKind::Conv7x7 | StemKind::Conv3x3 => channels("stem.width", stem.width)?,
    }
    window("stem.stride", stem.stride)
}

/// Checks the stages; `per_64` and `groups` give each stage's branch width.
fn check_stages(stages: &[Stage], per_64: usize, groups: usize) -> Result<(), ModelError> {
    if stages.is_empty() {
        return Err(ModelError::invalid(
            "stages",
            "is empty; a network needs at least one stage",
        ));
    }
    let mut blocks = 0usize;
    for (i, s) in stages.iter().enumerate() {
        let field = |name: &str| format!("stages[{i}].{name}");
        planes(&field("planes"), s.planes)?;
        in_range(
            &field("blocks"),
            s.blocks,
            MAX_BLOCKS,
            "the most blocks of a network",
        )?;
        blocks += s.blocks;
        if blocks > MAX_BLOCKS {
            return Err(ModelError::invalid(
                field("blocks"),
                format!(
                    "= {} brings the network to {blocks} blocks; at most {MAX_BLOCKS} are \
                     allowed in all stages together",
                    s.blocks
                ),
            ));
        }
        window(&field("stride"), s.stride)?;
        window(&field("dilation"), s.dilation)?;
        check_width(&field("planes"), s.planes, per_64, groups)?;
    }
    Ok(())
}

impl ScNetSpec {
    pub fn validate(&self) -> Result<(), ModelError> {
        channels("in_channels", self.in_channels)?;
        check_stem(&self.stem)?;
        channels("cardinality", self.cardinality)?;
        channels("bottleneck_width", self.bottleneck_width)?;
        classes(self.num_classes)?;
        check_stages(&self.stages, self.bottleneck_width, self.cardinality)
    }
}

impl ResNetSpec {
    pub fn validate(&self) -> Result<(), ModelError> {
        channels("in_channels", self.in_channels)?;
        check_stem(&self.stem)?;
        channels("groups", self.groups)?;
        channels("width_per_group", self.width_per_group)?;
        classes(self.num_classes)?;
        check_stages(&self.stages, self.width_per_group, self.groups)
    }
}
