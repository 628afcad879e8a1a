//! The published ImageNet models as specs (build them at their default 224x224 input).

use crate::spec::{ModelSpec, ResNetSpec, ScNetSpec, Stage, Stem, StemKind};

/// Makes a preset's spec.
pub type PresetFn = fn() -> ModelSpec;

/// Every preset by name, for command lines and listings.
pub const PRESETS: [(&str, PresetFn); 5] = [
    ("scnet50", scnet50),
    ("scnet50_v1d", scnet50_v1d),
    ("scnet101", scnet101),
    ("scnet101_v1d", scnet101_v1d),
    ("resnet50", resnet50),
];

/// The preset called `name`, if there is one.
pub fn preset(name: &str) -> Option<ModelSpec> {
    PRESETS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, make)| make())
}

/// SCNet-50: 25.56M parameters, 3.93 GMACs.
pub fn scnet50() -> ModelSpec {
    scnet([3, 4, 6, 3], None)
}

/// SCNet-101: 44.57M parameters, 7.17 GMACs.
pub fn scnet101() -> ModelSpec {
    scnet([3, 4, 23, 3], None)
}

/// SCNet-50-v1d: deep stem of width 32, pooled shortcuts, avd.
pub fn scnet50_v1d() -> ModelSpec {
    scnet([3, 4, 6, 3], Some(32))
}

/// SCNet-101-v1d: as SCNet-50-v1d with 23 blocks in layer3 and a deep stem of width 64.
pub fn scnet101_v1d() -> ModelSpec {
    scnet([3, 4, 23, 3], Some(64))
}

/// torchvision's ResNet-50 (v1.5): 25.56M parameters, 4.09 GMACs.
pub fn resnet50() -> ModelSpec {
    ModelSpec::ResNet(ResNetSpec {
        in_channels: 3,
        stem: Stem {
            kind: StemKind::Conv7x7,
            width: 64,
            stride: 2,
        },
        maxpool: true,
        stages: imagenet_stages([3, 4, 6, 3]),
        groups: 1,
        width_per_group: 64,
        num_classes: 1000,
    })
}

/// The four stages of every ImageNet ResNet: widths 64..512, strides 1, 2, 2, 2.
fn imagenet_stages(blocks: [usize; 4]) -> Vec<Stage> {
    let planes = [64, 128, 256, 512];
    let strides = [1, 2, 2, 2];
    (0..4)
        .map(|i| Stage {
            planes: planes[i],
            blocks: blocks[i],
            stride: strides[i],
            dilation: 1,
        })
        .collect()
}

/// An SCNet on the ImageNet stages; `v1d_stem_width` selects the v1d variant (deep stem
/// of that width, pooled shortcuts, avd) over the plain one (7x7 stem of width 64).
fn scnet(blocks: [usize; 4], v1d_stem_width: Option<usize>) -> ModelSpec {
    let stem = match v1d_stem_width {
        None => Stem {
            kind: StemKind::Conv7x7,
            width: 64,
            stride: 2,
        },
        Some(width) => Stem {
            kind: StemKind::Deep,
            width,
            stride: 2,
        },
    };
    let v1d = v1d_stem_width.is_some();
    ModelSpec::ScNet(ScNetSpec {
        in_channels: 3,
        stem,
        maxpool: true,
        stages: imagenet_stages(blocks),
        avg_down: v1d,
        avd: v1d,
        cardinality: 1,
        bottleneck_width: 32,
        num_classes: 1000,
    })
}
