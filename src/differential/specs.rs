//! Random valid specs over the whole spec space, and the smaller specs a failing one
//! shrinks to.
//!
//! Sizes are kept small (a few channels, spatial sides under 40) so that one case runs
//! on the PTX simulator in seconds; what the tester hunts for is rewrite rules and
//! templates that fire differently on different shapes, and those fire on small
//! shapes as well as on large ones.

use crate::data::rng::Rng;
use calib_models::spec::{
    Downsample, ModelSpec, ScBottleneckSpec, ScConvSpec, ScNetSpec, Stage, Stem, StemKind,
    EXPANSION,
};

/// A spec and the input it runs on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Shape {
    pub spec: ModelSpec,
    /// NCHW with the batch.
    pub input: Vec<usize>,
}

/// One draw: a network three times in five, else an SCBottleneck or an SCConv (the
/// modules cover what networks fix: `pooling_r`, padding, explicit downsampling).
pub fn random(rng: &mut Rng) -> Shape {
    match rng.below(5) {
        0 => bottleneck(rng),
        1 => scconv(rng),
        _ => network(rng),
    }
}

fn pick<T: Copy>(rng: &mut Rng, items: &[T]) -> T {
    items[rng.below(items.len() as u64) as usize]
}

fn coin(rng: &mut Rng) -> bool {
    rng.below(2) == 1
}

fn network(rng: &mut Rng) -> Shape {
    let stem = Stem {
        kind: pick(rng, &[StemKind::Conv7x7, StemKind::Conv3x3, StemKind::Deep]),
        width: pick(rng, &[4, 6, 8]),
        stride: pick(rng, &[1, 2]),
    };
    let stages = (0..1 + rng.below(3))
        .map(|i| Stage {
            planes: pick(rng, &[4, 8]),
            blocks: 1 + rng.below(2) as usize,
            stride: if i == 0 { pick(rng, &[1, 2]) } else { 2 },
            dilation: pick(rng, &[1, 1, 2]),
        })
        .collect();
    let spec = ModelSpec::ScNet(ScNetSpec {
        in_channels: pick(rng, &[1, 3]),
        stem,
        maxpool: coin(rng),
        stages,
        avg_down: coin(rng),
        avd: coin(rng),
        cardinality: pick(rng, &[1, 1, 2]),
        bottleneck_width: pick(rng, &[16, 32, 64]),
        num_classes: 2 + rng.below(9) as usize,
    });
    let side = 12 + rng.below(28) as usize;
    let input = vec![1 + rng.below(4) as usize, spec.in_channels(), side, side];
    Shape { spec, input }
}

fn bottleneck(rng: &mut Rng) -> Shape {
    let planes = pick(rng, &[4, 8]);
    let stride = pick(rng, &[1, 2]);
    let inplanes = pick(rng, &[planes * EXPANSION, 8, 16]);
    let downsample = if stride == 1 && inplanes == planes * EXPANSION && coin(rng) {
        None
    } else if coin(rng) {
        Some(Downsample::Conv { stride })
    } else {
        Some(Downsample::AvgpoolConv { pool: stride })
    };
    let spec = ModelSpec::ScBottleneck(ScBottleneckSpec {
        inplanes,
        planes,
        stride,
        cardinality: pick(rng, &[1, 2]),
        bottleneck_width: pick(rng, &[32, 64]),
        avd: coin(rng),
        is_first: coin(rng),
        dilation: pick(rng, &[1, 2]),
        pooling_r: pick(rng, &[2, 3, 4]),
        downsample,
    });
    Shape {
        input: vec![1 + rng.below(4) as usize, inplanes, odd_or_even(rng), 0],
        spec,
    }
    .square()
}

fn scconv(rng: &mut Rng) -> Shape {
    let groups = pick(rng, &[1, 2]);
    let dilation = pick(rng, &[1, 2]);
    let spec = ModelSpec::ScConv(ScConvSpec {
        channels: groups * pick(rng, &[2, 4]),
        stride: pick(rng, &[1, 2]),
        padding: dilation,
        dilation,
        groups,
        pooling_r: pick(rng, &[2, 3, 4]),
    });
    Shape {
        input: vec![
            1 + rng.below(4) as usize,
            spec.in_channels(),
            odd_or_even(rng),
            0,
        ],
        spec,
    }
    .square()
}

fn odd_or_even(rng: &mut Rng) -> usize {
    8 + rng.below(13) as usize
}

impl Shape {
    /// Square inputs keep the draw small; width follows height.
    fn square(mut self) -> Self {
        self.input[3] = self.input[2];
        self
    }

    /// Smaller variants of this shape, most aggressive first: fewer stages and blocks,
    /// plainer stems and options, narrower layers, a smaller batch and input.
    pub fn shrink(&self) -> Vec<Shape> {
        let mut out = vec![];
        let with_input = |input: Vec<usize>| Shape {
            spec: self.spec.clone(),
            input,
        };
        let [n, c, h, w] = self.input[..] else {
            return out;
        };
        if n > 1 {
            out.push(with_input(vec![1, c, h, w]));
            out.push(with_input(vec![n - 1, c, h, w]));
        }
        for side in [h / 2, h - 1] {
            if side >= 4 && side < h {
                out.push(with_input(vec![n, c, side, side * w / h.max(1)]));
            }
        }
        let spec = |s: ModelSpec| Shape {
            spec: s,
            input: self.input.clone(),
        };
        match &self.spec {
            ModelSpec::ScNet(net) => {
                for variant in smaller_networks(net) {
                    out.push(spec(ModelSpec::ScNet(variant)));
                }
            }
            ModelSpec::ScBottleneck(b) => {
                if b.avd || b.is_first {
                    out.push(spec(ModelSpec::ScBottleneck(ScBottleneckSpec {
                        avd: false,
                        is_first: false,
                        ..b.clone()
                    })));
                }
                if b.dilation > 1 {
                    out.push(spec(ModelSpec::ScBottleneck(ScBottleneckSpec {
                        dilation: 1,
                        ..b.clone()
                    })));
                }
                if b.cardinality > 1 {
                    out.push(spec(ModelSpec::ScBottleneck(ScBottleneckSpec {
                        cardinality: 1,
                        ..b.clone()
                    })));
                }
            }
            ModelSpec::ScConv(s) => {
                if s.groups > 1 {
                    out.push(spec(ModelSpec::ScConv(ScConvSpec {
                        groups: 1,
                        channels: s.channels / s.groups,
                        ..s.clone()
                    })));
                }
                if s.dilation > 1 {
                    out.push(spec(ModelSpec::ScConv(ScConvSpec {
                        dilation: 1,
                        padding: 1,
                        ..s.clone()
                    })));
                }
                if s.stride > 1 {
                    out.push(spec(ModelSpec::ScConv(ScConvSpec {
                        stride: 1,
                        ..s.clone()
                    })));
                }
            }
            ModelSpec::ResNet(_) => {}
        }
        out
    }
}

/// One-step simplifications of a network spec.
fn smaller_networks(net: &ScNetSpec) -> Vec<ScNetSpec> {
    let mut out = vec![];
    let mut push = |f: &dyn Fn(&mut ScNetSpec)| {
        let mut v = net.clone();
        f(&mut v);
        if &v != net {
            out.push(v);
        }
    };
    if net.stages.len() > 1 {
        push(&|v| {
            v.stages.pop();
        });
        push(&|v| {
            v.stages.remove(0);
            v.stages[0].stride = 1;
        });
    }
    for i in 0..net.stages.len() {
        if net.stages[i].blocks > 1 {
            push(&|v| v.stages[i].blocks -= 1);
        }
        push(&|v| v.stages[i].dilation = 1);
        push(&|v| v.stages[i].planes = 4);
    }
    push(&|v| v.stem.kind = StemKind::Conv3x3);
    push(&|v| v.stem.stride = 1);
    push(&|v| v.stem.width = 4);
    push(&|v| v.maxpool = false);
    push(&|v| v.avg_down = false);
    push(&|v| v.avd = false);
    push(&|v| v.cardinality = 1);
    push(&|v| v.num_classes = 2);
    out
}
