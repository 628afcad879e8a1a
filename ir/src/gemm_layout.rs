//! Which way a GEMM operand's elements lie adjacent in memory once a kernel's inputs
//! have layouts: the tile loader walks that way (consecutive threads, consecutive
//! addresses), and `cp.async` copies runs along it. The planner prices a kernel, and
//! code generation emits it, from the same answers.
//!
//! A row-major image is adjacent along a convolution's pixels (`m` of a forward or
//! data-gradient GEMM). A channels-last one is adjacent along its channels, which a
//! window orders innermost in its `k` ([`crate::window_k`]): a step's run of channels at
//! one tap is one aligned stretch of memory with one padding check, and a weight
//! gradient's image and output gradient are adjacent along `n` and `m`.

use crate::{taps_outer, Graph, Layout, Op, Value};

/// The layouts of a kernel's inputs, in the order of its body's inputs
/// ([`Graph::inputs`]); inputs past the end are row-major (`&[]`: all of them).
pub type InputLayouts<'a> = &'a [Layout];

/// How many elements of an operand lie adjacent in memory, from every multiple of that
/// count on, and along which side of its tile.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stretch {
    /// Along the tile's width (`m` for `A`, `n` for `B`).
    Width(usize),
    /// Along `k`.
    K(usize),
}

/// The layout body input `v` is stored in.
pub fn input_layout(body: &Graph, layouts: InputLayouts, v: Value) -> Layout {
    body.inputs()
        .position(|(_, u)| u == v)
        .and_then(|i| layouts.get(i).copied())
        .unwrap_or_default()
}

/// The body input value `v` is computed from: the first input of `v`'s own shape that
/// it reads (itself, widened or rounded, or through a prologue's pointwise ops).
pub fn operand_input(body: &Graph, v: Value) -> Option<Value> {
    let shape = &body.ty(v).shape;
    let mut stack = vec![v];
    let mut seen = vec![false; body.nodes.len()];
    while let Some(u) = stack.pop() {
        if std::mem::replace(&mut seen[u.0], true) || &body.ty(u).shape != shape {
            continue;
        }
        match body.nodes[u.0].op {
            Op::Input { .. } => return Some(u),
            _ => stack.extend(body.nodes[u.0].inputs.iter().rev()),
        }
    }
    None
}

/// The layout of the body input value `v` is computed from ([`operand_input`]);
/// row-major where there is none.
pub fn operand_layout(body: &Graph, layouts: InputLayouts, v: Value) -> Layout {
    operand_input(body, v).map_or(Layout::RowMajor, |x| input_layout(body, layouts, x))
}

/// Whether a convolution weight of shape `[O, C, KH, KW]` lies adjacent along the `k`
/// of the forward GEMM that reads it when stored channels-last (OHWI): its window's
/// `k` must keep the channels innermost ([`taps_outer`]). A 1x1 weight lies the same
/// either way.
pub fn weight_taps_outer(weight: &[usize]) -> bool {
    weight.len() == 4 && taps_outer(weight[1], [weight[2], weight[3]])
}

/// Where operand `operand` (0 for `A`, see [`crate::gemm_operands`]) of convolution
/// anchor `anchor` is adjacent in memory when the tensor it reads is stored
/// channels-last (an image NHWC, a weight OHWI): `None` for a grouped convolution, or a
/// window whose `k` keeps its channels outer (channels that no step divides,
/// `(c, kh, kw)`).
///
/// | op | operand | tensor | adjacent along |
/// |---|---|---|---|
/// | forward | `A` | `x` | `k = (kh, kw, c)` |
/// | forward | `B` | `w` | `k = (kh, kw, c)`, all of it |
/// | data gradient | `A` | `dy` | `k = (kh, kw, o)` |
/// | data gradient | `B` | `w` | `n = c` |
/// | weight gradient | `A` | `dy` | `m = o` |
/// | weight gradient | `B` | `x` | `n = (kh, kw, c)` |
pub fn channels_last_stretch(body: &Graph, anchor: Value, operand: usize) -> Option<Stretch> {
    let node = &body.nodes[anchor.0];
    let weight = &body.ty(*node.inputs.get(1)?).shape;
    let kernel = |w: &[usize]| -> Option<[usize; 2]> { Some([*w.get(2)?, *w.get(3)?]) };
    // Channels innermost in the window's `k` (a 1x1 window's `k` is its channels).
    let inner = |channels: usize, window: [usize; 2]| {
        (taps_outer(channels, window) || window == [1, 1]).then_some(channels)
    };
    match (&node.op, operand) {
        (Op::Conv2d { groups: 1, .. }, 0) => {
            let channels = body.ty(node.inputs[0]).shape[1];
            inner(channels, kernel(weight)?).map(Stretch::K)
        }
        (Op::Conv2d { groups: 1, .. }, 1) => {
            // An OHWI weight holds each output's whole `k` in one stretch.
            weight_taps_outer(weight).then(|| Stretch::K(weight[1] * weight[2] * weight[3]))
        }
        (Op::Conv2dBackwardData { groups: 1, .. }, 0) => {
            let channels = body.ty(node.inputs[0]).shape[1];
            inner(channels, kernel(weight)?).map(Stretch::K)
        }
        (Op::Conv2dBackwardData { groups: 1, .. }, 1) => {
            // `B[k, n = c]`: one output's tap holds its channels together, whichever
            // way the window orders `k`.
            kernel(weight).map(|_| Stretch::Width(weight[1]))
        }
        (Op::Conv2dBackwardWeight { groups: 1, .. }, 0) => {
            Some(Stretch::Width(body.ty(node.inputs[1]).shape[1]))
        }
        (Op::Conv2dBackwardWeight { groups: 1, .. }, 1) => {
            let channels = body.ty(node.inputs[0]).shape[1];
            inner(channels, kernel(&node.ty.shape)?).map(Stretch::Width)
        }
        _ => None,
    }
}

/// Whether the tile loader walks `A` along `m` and `B` along `n` (else along `k`) for
/// GEMM anchor `anchor` whose kernel's inputs lie as `layouts` say: along the side
/// each operand is adjacent in memory.
pub fn walks_width(body: &Graph, anchor: Value, layouts: InputLayouts) -> [bool; 2] {
    let node = &body.nodes[anchor.0];
    let row_major = match node.op {
        Op::MatMul {
            transpose_a,
            transpose_b,
        } => return [transpose_a, !transpose_b],
        Op::Conv2dBackwardWeight { .. } => [false, false],
        // A data gradient reads the weight `[O, C, KH, KW]` as `B[k, n = c]`: along `n`
        // a window apart (adjacent for a 1x1 window), along `k` a channel's whole
        // `[C, KH, KW]` apart when taps are outer (else adjacent within each `o`).
        Op::Conv2dBackwardData { groups, .. } => {
            let w = &body.ty(node.inputs[1]).shape;
            let (channels, kernel) = (w[0] / groups.max(1), [w[2], w[3]]);
            [true, taps_outer(channels, kernel) || kernel == [1, 1]]
        }
        _ => [true, false],
    };
    let operands = crate::gemm_operands(body, anchor);
    [0, 1].map(|i| {
        let last = operand_layout(body, layouts, operands[i]) == Layout::ChannelsLast;
        match channels_last_stretch(body, anchor, i).filter(|_| last) {
            Some(Stretch::Width(_)) => true,
            Some(Stretch::K(_)) => false,
            None => row_major[i],
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::text::parse;

    /// A bf16 image `[2, C, 6, 6]` read widened by a 3x3 convolution (padding 1) with
    /// `o` outputs: forward, data gradient and weight gradient.
    fn convs(c: usize, o: usize) -> Graph {
        parse(&format!(
            "graph {{
              %0 = input name=\"x\" : bf16[2,{c},6,6]
              %1 = input name=\"dy\" : bf16[2,{o},6,6]
              %2 = input name=\"w\" : f32[{o},{c},3,3]
              %3 = cast(%0) to=\"f32\" : f32[2,{c},6,6]
              %4 = cast(%1) to=\"f32\" : f32[2,{o},6,6]
              %5 = conv2d(%3, %2) stride=[1,1] padding=[1,1] dilation=[1,1] groups=1 : f32[2,{o},6,6]
              %6 = conv2d_backward_data(%4, %2) stride=[1,1] padding=[1,1] dilation=[1,1] groups=1 input_size=[6,6] : f32[2,{c},6,6]
              %7 = conv2d_backward_weight(%3, %4) stride=[1,1] padding=[1,1] dilation=[1,1] groups=1 kernel=[3,3] : f32[{o},{c},3,3]
              return y=%5, dx=%6, dw=%7
            }}"
        ))
        .expect("graph")
    }

    #[test]
    fn channels_last_images_are_adjacent_along_their_channels() {
        let g = convs(16, 8);
        let [forward, data, weight] = [Value(5), Value(6), Value(7)];
        assert_eq!(channels_last_stretch(&g, forward, 0), Some(Stretch::K(16)));
        // The weight `[8, 16, 3, 3]` stored OHWI: each output's 144-long `k` in one
        // stretch; a tap's 16 channels for the data gradient's `n = c`.
        assert_eq!(channels_last_stretch(&g, forward, 1), Some(Stretch::K(144)));
        assert_eq!(channels_last_stretch(&g, data, 1), Some(Stretch::Width(16)));
        assert_eq!(channels_last_stretch(&g, data, 0), Some(Stretch::K(8)));
        assert_eq!(
            channels_last_stretch(&g, weight, 0),
            Some(Stretch::Width(8))
        );
        assert_eq!(
            channels_last_stretch(&g, weight, 1),
            Some(Stretch::Width(16))
        );
        // Three channels keep `(c, kh, kw)`: a window's `k` is not one stretch.
        let g = convs(3, 8);
        assert_eq!(channels_last_stretch(&g, forward, 0), None);
        assert_eq!(channels_last_stretch(&g, forward, 1), None);
        assert_eq!(channels_last_stretch(&g, weight, 1), None);
        assert!(weight_taps_outer(&[8, 16, 3, 3]) && !weight_taps_outer(&[8, 3, 3, 3]));
        assert!(
            !weight_taps_outer(&[8, 16, 1, 1]),
            "a 1x1 weight lies the same either way"
        );
    }

    #[test]
    fn the_loader_walks_the_side_a_layout_makes_adjacent() {
        let g = convs(16, 8);
        let [forward, data, weight] = [Value(5), Value(6), Value(7)];
        let row_major: &[Layout] = &[];
        let last = [Layout::ChannelsLast, Layout::ChannelsLast, Layout::RowMajor];
        assert_eq!(walks_width(&g, forward, row_major), [true, false]);
        assert_eq!(walks_width(&g, forward, &last), [false, false]);
        // (The data gradient's weight is walked along `n = c`, a window apart.)
        assert_eq!(walks_width(&g, data, row_major), [true, true]);
        assert_eq!(walks_width(&g, data, &last), [false, true]);
        assert_eq!(walks_width(&g, weight, row_major), [false, false]);
        assert_eq!(walks_width(&g, weight, &last), [true, true]);
        // An OHWI weight: the data gradient still walks it along `n = c`, now adjacent.
        let all = [Layout::ChannelsLast; 3];
        assert_eq!(walks_width(&g, forward, &all), [false, false]);
        assert_eq!(walks_width(&g, data, &all), [false, true]);
        // Layouts follow a value back to the input of its own shape.
        assert_eq!(operand_layout(&g, &last, Value(4)), Layout::ChannelsLast);
        assert_eq!(operand_layout(&g, &last, Value(2)), Layout::RowMajor);
        assert_eq!(input_layout(&g, &last, Value(1)), Layout::ChannelsLast);
    }

    #[test]
    fn channels_last_images_copy_their_channels() {
        let g = convs(16, 8);
        let [forward, data, weight] = [Value(5), Value(6), Value(7)];
        let bf16 = crate::GemmInstruction::MmaBf16;
        let last = [Layout::ChannelsLast, Layout::ChannelsLast, Layout::RowMajor];
        let copy = |anchor, operand, layouts: InputLayouts| {
            crate::copy_source(&g, anchor, operand, bf16, layouts).map(|c| (c.run, c.along_k))
        };
        // Row-major, a padded 3x3 window shifts the pixels: no copies of the images.
        assert_eq!(copy(forward, 0, &[]), None);
        assert_eq!(copy(data, 0, &[]), None);
        // Channels-last: eight channels at a time, along `k` or the width.
        assert_eq!(copy(forward, 0, &last), Some((8, true)));
        assert_eq!(copy(data, 0, &last), Some((8, true)));
        assert_eq!(copy(weight, 0, &last), Some((8, false)));
        assert_eq!(copy(weight, 1, &last), Some((8, false)));
        // Along `k` through registers too; a weight gradient's `dy` is no longer
        // adjacent along its `k = (n, oh, ow)`.
        assert_eq!(crate::bf16_run_along_k(&g, forward, 0, &last), Some(8));
        assert_eq!(crate::bf16_run_along_k(&g, weight, 0, &[]), Some(4));
        assert_eq!(crate::bf16_run_along_k(&g, weight, 0, &last), None);
        // The f32 weight under TF32: row-major, a taps-outer forward finds no run
        // along `k` and the data gradient none along `n` (a window apart), so a word
        // at a time; stored OHWI, runs of four words along each.
        let tf32 = crate::GemmInstruction::MmaTf32;
        let words = |anchor, layouts: InputLayouts| {
            crate::copy_source(&g, anchor, 1, tf32, layouts).map(|c| (c.run, c.along_k))
        };
        assert_eq!(words(forward, &[]), Some((1, false)));
        assert_eq!(words(data, &[]), Some((1, false)));
        let all = [Layout::ChannelsLast; 3];
        assert_eq!(words(forward, &all), Some((4, true)));
        assert_eq!(words(data, &all), Some((4, false)));
    }
}
