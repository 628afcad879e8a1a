//! Images of a few channels padded to a whole channels-last run (`pad-channels`).
//!
//! A network's first convolution reads the image itself: three channels (one for a
//! grey-scale set). Stored channels-last, a pixel is then 6 bytes of bf16 (12 of f32),
//! so no copy of a tile's run is aligned, and the convolution and its weight gradient
//! gather their tiles an element at a time (ResNet-50's `conv1` under bf16: 505 us of
//! the predicted step, at 66 TFLOP/s). Padded with zero channels to four, a pixel is 8
//! bytes (16 of f32): the window's `k` puts the taps outside the channels and
//! `cp.async` copies a pixel at a time. cuDNN does the same for its channels-last
//! first layers.
//!
//! ```text
//! conv2d(x, w)                  =>  conv2d(pad(x), pad(w))
//! conv2d_backward_weight(x, dy) =>  slice(conv2d_backward_weight(pad(x), dy), axis 1, 0..C)
//! pad(x)                        =   concat(x, zeros) along the channels
//! ```
//!
//! Exact: the padded channels multiply zeros, whose products add exactly nothing; the
//! weight gradient's padded channels are sliced off. Only the order in which a GEMM
//! adds its (nonzero) products may change, as its `k` is laid out anew. A padded
//! operand that is a round trip `cast(cast(y, bf16 or tf32), f32)` is padded below it (the
//! round trip of `pad(y)`, zeros being exact in every type) and one that widens a
//! narrow value (a bf16 weight copy) is padded before it is widened, so that the
//! padded image is stored, rounded, by one kernel for both of its GEMMs.
//!
//! A plan pass of the rule set, run by [`prepare`] before fusion where image-shaped
//! temporaries may be stored channels-last and GEMMs multiply on tensor cores (bf16
//! or TF32 tiles).

use super::{FusionOptions, LayoutPolicy};
use crate::Result;
use calib_ir::{DType, Graph, Op, Precision, TensorType, Value};
use std::borrow::Cow;
use std::collections::HashMap;

/// The pass's name in a rule set (`--disable-rule pad-channels`).
pub const PAD_CHANNELS: &str = "pad-channels";

/// The channels a pixel of a padded image has: one copy of 8 bytes (bf16) or 16 (f32).
pub const PADDED_RUN: usize = 4;

/// `graph` as fusion under `options` should plan it: [`pad_channels`] applied where
/// the plan may store images channels-last (`channels_last` or `auto`) with
/// tensor-core GEMM tiles (bf16 or TF32), and the pass is on; else `graph` itself.
pub fn prepare<'g>(graph: &'g Graph, options: &FusionOptions) -> Result<Cow<'g, Graph>> {
    let wanted = options.layout != LayoutPolicy::RowMajor
        && options.precision != Precision::F32
        && options.rules.enabled(PAD_CHANNELS);
    Ok(match wanted {
        true => Cow::Owned(pad_channels(graph)?),
        false => Cow::Borrowed(graph),
    })
}

/// How many convolutions and weight gradients [`prepare`] pads in `graph` under
/// `options` (what an ablation of the pass counts as its firings).
pub fn padded_convolutions(graph: &Graph, options: &FusionOptions) -> usize {
    match prepare(graph, options) {
        Ok(Cow::Owned(_)) => (graph.nodes.iter())
            .filter(|n| padding(graph, n).is_some())
            .count(),
        _ => 0,
    }
}

/// The channels an ungrouped convolution over `channels` input channels is padded to,
/// if any: fewer than a run of eight and not a whole number of [`PADDED_RUN`]s.
fn padded(channels: usize) -> Option<usize> {
    (channels < 8 && !channels.is_multiple_of(PADDED_RUN))
        .then(|| channels.next_multiple_of(PADDED_RUN))
}

/// For an ungrouped forward convolution or weight gradient of `graph` whose image
/// [`padded`] pads: its channels, and how many it reads padded.
fn padding(graph: &Graph, node: &calib_ir::Node) -> Option<(usize, usize)> {
    if !matches!(
        node.op,
        Op::Conv2d { groups: 1, .. } | Op::Conv2dBackwardWeight { groups: 1, .. }
    ) {
        return None;
    }
    let channels = *graph.ty(*node.inputs.first()?).shape.get(1)?;
    Some((channels, padded(channels)?))
}

/// `graph` with every forward convolution and weight gradient over an image of a few
/// channels reading it padded (module documentation). Same inputs, params and outputs.
pub fn pad_channels(graph: &Graph) -> Result<Graph> {
    let mut out = Graph::new();
    let mut map: Vec<Value> = Vec::with_capacity(graph.nodes.len());
    let mut pads = Pads::default();
    for node in &graph.nodes {
        let inputs: Vec<Value> = node.inputs.iter().map(|v| map[v.0]).collect();
        let v = match (&node.op, padding(graph, node)) {
            _ if node.inputs.is_empty() => {
                out.push_source(node.op.clone(), node.ty.clone(), &node.scope)?
            }
            (Op::Conv2d { .. }, Some((_, to))) => {
                let x = pads.pad(&mut out, inputs[0], to)?;
                let w = pads.pad(&mut out, inputs[1], to)?;
                out.push(node.op.clone(), vec![x, w], &node.scope)?
            }
            (Op::Conv2dBackwardWeight { .. }, Some((channels, to))) => {
                let x = pads.pad(&mut out, inputs[0], to)?;
                let dw = out.push(node.op.clone(), vec![x, inputs[1]], &node.scope)?;
                let slice = Op::Slice {
                    axis: 1,
                    start: 0,
                    end: channels,
                };
                out.push(slice, vec![dw], &node.scope)?
            }
            _ => out.push(node.op.clone(), inputs, &node.scope)?,
        };
        debug_assert_eq!(out.ty(v), &node.ty, "padding changes no result's type");
        map.push(v);
    }
    out.add_outputs(
        graph
            .outputs
            .iter()
            .map(|o| (o.name.clone(), map[o.value.0])),
    )?;
    Ok(out)
}

/// Each value's padding, made once and shared by the GEMMs that read it.
#[derive(Default)]
struct Pads(HashMap<(Value, usize), Value>);

impl Pads {
    /// `x` (`[N, C, ...]`) with zero channels after its own, `to` in all, below any
    /// round trip or widening it is (module documentation).
    fn pad(&mut self, g: &mut Graph, x: Value, to: usize) -> Result<Value> {
        if let Some(&p) = self.0.get(&(x, to)) {
            return Ok(p);
        }
        let node = g.node(x).clone();
        let below = |g: &Graph, v: Value| {
            let n = g.node(v);
            (matches!(n.op, Op::Cast { .. }) && n.inputs.len() == 1).then(|| n.inputs[0])
        };
        let widened = node.op == (Op::Cast { to: DType::F32 })
            && below(g, x).is_some_and(|u| g.ty(u).dtype != DType::F32);
        let p = match widened.then(|| below(g, x)).flatten() {
            Some(u) => {
                // A round trip: pad what it rounds, and round that; else pad the
                // narrow value and widen it.
                let round_trip = below(g, u).filter(|&y| g.ty(y).dtype == DType::F32);
                match round_trip {
                    Some(y) => {
                        let padded = self.pad(g, y, to)?;
                        let narrow = g.node(u).op.clone();
                        let low = g.push(narrow, vec![padded], &node.scope)?;
                        g.push(node.op.clone(), vec![low], &node.scope)?
                    }
                    None => {
                        let padded = self.pad(g, u, to)?;
                        g.push(node.op.clone(), vec![padded], &node.scope)?
                    }
                }
            }
            None => {
                let ty = g.ty(x);
                let mut shape = ty.shape.clone();
                shape[1] = to - shape[1];
                let zeros = TensorType::new(ty.dtype, shape);
                let zeros = g.push_source(Op::Constant { value: 0.0 }, zeros, &node.scope)?;
                g.push(Op::Concat { axis: 1 }, vec![x, zeros], &node.scope)?
            }
        };
        self.0.insert((x, to), p);
        Ok(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use calib_ir::text::parse;

    /// A bf16 step's first layer: the image's round trip and the weight copy's
    /// widening, read by the convolution and (the image) by its weight gradient.
    fn first_layer() -> Graph {
        parse(
            "graph {
              %0 = input name=\"x\" : f32[2,3,8,8]
              %1 = param name=\"bf16.w\" : bf16[4,3,3,3]
              %2 = cast(%0) to=\"bf16\" : bf16[2,3,8,8]
              %3 = cast(%2) to=\"f32\" : f32[2,3,8,8]
              %4 = cast(%1) to=\"f32\" : f32[4,3,3,3]
              %5 = conv2d(%3, %4) stride=[1,1] padding=[1,1] dilation=[1,1] groups=1 : f32[2,4,8,8]
              %6 = conv2d_backward_weight(%3, %5) stride=[1,1] padding=[1,1] dilation=[1,1] groups=1 kernel=[3,3] : f32[4,3,3,3]
              return y=%5, dw=%6
            }",
        )
        .expect("graph")
    }

    #[test]
    fn both_gemms_read_one_padded_round_trip_and_the_gradient_is_sliced() {
        let g = pad_channels(&first_layer()).unwrap();
        g.validate().unwrap();
        let conv = g.node(g.output("y").unwrap());
        let [x, w] = [conv.inputs[0], conv.inputs[1]];
        assert_eq!(g.ty(x).shape, [2, 4, 8, 8]);
        assert_eq!(g.ty(w).shape, [4, 4, 3, 3]);
        // The image: round trip of concat(x, zeros).
        let low = g.node(g.node(x).inputs[0]);
        assert_eq!(low.op, Op::Cast { to: DType::BF16 });
        assert_eq!(g.node(low.inputs[0]).op, Op::Concat { axis: 1 });
        // The weight: widening of concat(copy, bf16 zeros).
        let narrow = g.node(w).inputs[0];
        assert_eq!(g.node(narrow).op, Op::Concat { axis: 1 });
        assert_eq!(g.ty(narrow).dtype, DType::BF16);
        // The weight gradient reads the same padded image and is sliced back.
        let dw = g.node(g.output("dw").unwrap());
        assert_eq!(
            dw.op,
            Op::Slice {
                axis: 1,
                start: 0,
                end: 3
            }
        );
        assert_eq!(g.node(dw.inputs[0]).inputs[0], x);
        assert_eq!(g.ty(g.output("dw").unwrap()).shape, [4, 3, 3, 3]);
    }

    /// Under TF32 both operands are round trips of f32 values (the weight a param): each
    /// is padded below its rounding, so the rounded padded image is what is stored.
    #[test]
    fn tf32_round_trips_are_padded_below_their_rounding() {
        let g = parse(
            "graph {
              %0 = input name=\"x\" : f32[2,3,8,8]
              %1 = param name=\"w\" : f32[4,3,3,3]
              %2 = cast(%0) to=\"tf32\" : tf32[2,3,8,8]
              %3 = cast(%2) to=\"f32\" : f32[2,3,8,8]
              %4 = cast(%1) to=\"tf32\" : tf32[4,3,3,3]
              %5 = cast(%4) to=\"f32\" : f32[4,3,3,3]
              %6 = conv2d(%3, %5) stride=[1,1] padding=[1,1] dilation=[1,1] groups=1 : f32[2,4,8,8]
              return y=%6
            }",
        )
        .expect("graph");
        let g = pad_channels(&g).unwrap();
        g.validate().unwrap();
        let conv = g.node(g.output("y").unwrap());
        for (operand, shape) in [
            (conv.inputs[0], [2, 4, 8, 8]),
            (conv.inputs[1], [4, 4, 3, 3]),
        ] {
            assert_eq!(g.ty(operand).shape, shape);
            let low = g.node(g.node(operand).inputs[0]);
            assert_eq!(low.op, Op::Cast { to: DType::TF32 });
            assert_eq!(g.node(low.inputs[0]).op, Op::Concat { axis: 1 });
            assert_eq!(g.ty(low.inputs[0]).dtype, DType::F32);
        }
    }

    #[test]
    fn whole_runs_and_many_channels_are_left_alone() {
        assert_eq!(padded(3), Some(4));
        assert_eq!(padded(1), Some(4));
        assert_eq!(padded(6), Some(8));
        assert_eq!(padded(4), None);
        assert_eq!(padded(9), None);
        let g = first_layer();
        let text = calib_ir::text::print(&g)
            .replace("3,8,8", "4,8,8")
            .replace("4,3,3,3", "4,4,3,3");
        let four = parse(&text).expect("graph");
        assert_eq!(pad_channels(&four).unwrap(), four);
    }
}
