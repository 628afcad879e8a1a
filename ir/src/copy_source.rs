//! Which GEMM operand tiles `cp.async` can fill straight from a kernel input, bypassing
//! registers: the planner prices such copies, and code generation emits them, from the
//! same answer.

use crate::gemm_layout::{channels_last_stretch, input_layout, InputLayouts, Stretch};
use crate::{DType, GemmInstruction, Graph, Layout, Op, Value};

/// The body values GEMM anchor `anchor` reads as `A` and `B` (a weight gradient's `A`
/// is the output gradient, its second input).
pub fn gemm_operands(body: &Graph, anchor: Value) -> [Value; 2] {
    let node = &body.nodes[anchor.0];
    match node.op {
        Op::Conv2dBackwardWeight { .. } => [node.inputs[1], node.inputs[0]],
        _ => [node.inputs[0], node.inputs[1]],
    }
}

/// The bf16 input buffer operand `operand` of GEMM anchor `anchor` reads, as it is or
/// widened to f32 (as the bf16 plans read them), with nothing computed between: its
/// elements are the bits a bf16 tile holds, whatever way the buffer lies in memory.
pub fn bf16_input(body: &Graph, anchor: Value, operand: usize) -> Option<Value> {
    let v = gemm_operands(body, anchor)[operand];
    let node = &body.nodes[v.0];
    let widened = node.op == (Op::Cast { to: DType::F32 }) && node.inputs.len() == 1;
    let x = if widened { node.inputs[0] } else { v };
    let n = &body.nodes[x.0];
    (matches!(n.op, Op::Input { .. }) && n.ty.dtype == DType::BF16).then_some(x)
}

/// A kernel input that `cp.async` copies straight into an operand's shared tiles, and
/// how many of its elements one copy may move.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CopySource {
    pub input: Value,
    /// Elements adjacent along the tile's width (along `k` where
    /// [`CopySource::along_k`]) that lie adjacent in the buffer, aligned for one copy,
    /// and inside the operand together or outside together: 1, 2 or 4 f32 words for a
    /// TF32 tile, 2, 4 or [`CopySource::LONGEST_RUN`] bf16 elements (a 4-, 8- or
    /// 16-byte copy).
    pub run: usize,
    /// The fewest elements a copy must move to pay for its address: a convolution's
    /// image is addressed more cheaply through registers (its elements a constant
    /// offset apart) than by a copy of two elements, each with its own address and
    /// bounds; a matmul's rows are not.
    pub shortest: usize,
    /// Whether the runs lie along the tile's `k` (the operand is contiguous along `k`,
    /// [`bf16_run_along_k`]), so that the tile keeps each row's `k` adjacent in shared
    /// memory, rather than along its width.
    pub along_k: bool,
}

impl CopySource {
    /// The most bf16 elements one copy moves: 16 bytes, `cp.async.cg`'s size.
    pub const LONGEST_RUN: usize = 8;

    /// Elements one copy moves into a tile `depth` deep (`k`) and `width` wide that
    /// `threads` threads fill: the longest run the source allows whose copies give
    /// every thread a whole share of the tile; `None` where that run is shorter than
    /// [`CopySource::shortest`] (the tile loads through registers).
    pub fn grain(self, depth: usize, width: usize, threads: usize) -> Option<usize> {
        if self.along_k {
            let run = tile_run_along_k(self.run, depth, width, threads);
            return (run >= self.shortest).then_some(run);
        }
        let elements = depth * width;
        [Self::LONGEST_RUN, 4, 2, 1]
            .into_iter()
            .filter(|&g| g <= self.run && g >= self.shortest)
            .find(|&g| (elements / g).is_multiple_of(threads))
    }
}

/// The longest copy run (see [`CopySource::run`]) of at most `longest` elements that
/// divides `contiguous` elements, if it is at least `shortest`: runs start at multiples
/// of their length, so none crosses the end of a contiguous stretch, and each is as
/// aligned as its bytes.
fn run_within(contiguous: usize, shortest: usize, longest: usize) -> Option<usize> {
    [CopySource::LONGEST_RUN, 4, 2]
        .into_iter()
        .filter(|&r| r <= longest)
        .find(|r| contiguous.is_multiple_of(*r))
        .filter(|&r| r >= shortest)
}

/// The input buffer a `cp.async` can copy straight into the shared tiles of operand
/// `operand` (0 for `A`, 1 for `B`, see [`gemm_operands`]) of GEMM anchor `anchor`
/// multiplied by `instruction`; `None` for an operand computed by a prologue, and under
/// FMA products.
///
/// * TF32 tiles hold f32 words, which the kernel rounds after they land: the operand
///   itself when it is an f32 (or tf32) input, or the input under a rounding round
///   trip `cast(cast(x, tf32), f32)` (the precision policy's casts), which that
///   rounding repeats bit for bit ([`tile_input`]). Where the words lie adjacent the
///   way the loader walks (the same places as bf16 runs below), a copy moves a run of
///   two or four (8 or 16 bytes); elsewhere one word.
/// * bf16 tiles hold 16-bit elements, so only a bf16 input is a source (an f32
///   buffer's bits would need converting), and a copy moves at least 4 bytes: a run of
///   elements adjacent along the tile's width, which must be adjacent and aligned in
///   the buffer, and all inside the operand or all outside. That holds for
///   * a matmul operand contiguous along its tile's width (`A` transposed, `B` not)
///     with an even number of columns (runs within a row);
///   * the operands of an unpadded 1x1 convolution of stride 1 (ungrouped) that walk
///     their images along `m = (n, h, w)`: the forward's image and the data
///     gradient's output gradient, contiguous within each channel's plane (runs within
///     a plane), and the data gradient's weight `[O, C]`, contiguous along `n = c`;
///     the data gradient of a strided 1x1 convolution runs over its lattice
///     (`GemmDims::lattice`), where the same holds. Only runs of eight pay for their
///     copies here ([`CopySource::shortest`]): planes of 14x14 load through registers.
///
///   An operand with runs along `k` instead ([`bf16_run_along_k`]: a weight
///   gradient's output gradient, a forward weight in its own order, a matmul operand
///   contiguous along `k`) copies runs of 2, 4 or 8 along `k`, into a tile that keeps
///   each row's `k` adjacent ([`CopySource::along_k`]). Windows of an image shifted by
///   the padding load through registers.
pub fn copy_source(
    body: &Graph,
    anchor: Value,
    operand: usize,
    instruction: GemmInstruction,
    layouts: InputLayouts,
) -> Option<CopySource> {
    let x = tile_input(body, anchor, operand, instruction)?;
    let bytes = instruction.tile_bytes();
    // The most elements of one 16-byte copy, and the fewest that pay for a copy's
    // address: a matmul's 4 bytes, a channels-last pixel's 8 (an image padded to four
    // bf16 channels: it replaces four 16-bit loads and stores each with the same
    // address arithmetic), a row-major image's 16. A TF32 word pays already: it
    // replaces a load, a rounding and a store.
    let longest = 16 / bytes;
    let shortest = match body.nodes[anchor.0].op {
        _ if instruction == GemmInstruction::MmaTf32 => 1,
        Op::MatMul { .. } => 4 / bytes,
        _ if input_layout(body, layouts, x) == Layout::ChannelsLast => 8 / bytes,
        _ => 16 / bytes,
    };
    let along_width = contiguous_width(body, anchor, operand, x, layouts)
        .and_then(|contiguous| run_within(contiguous, shortest.max(2), longest))
        .map(|run| CopySource {
            input: x,
            run,
            shortest,
            along_k: false,
        });
    // Along `k` a run's elements share their row, its address and bounds check: any
    // run a copy can move (4 bytes or more) pays for it.
    let along_k = || {
        run_along_k(body, anchor, operand, x, layouts, longest).map(|run| CopySource {
            input: x,
            run,
            shortest: 4 / bytes,
            along_k: true,
        })
    };
    let run = along_width.or_else(along_k);
    if instruction == GemmInstruction::MmaBf16 {
        return run;
    }
    // TF32 tiles copy a word at a time wherever no run lies the way the loader walks.
    let walks_width = crate::walks_width(body, anchor, layouts)[operand];
    run.filter(|c| c.along_k != walks_width)
        .or(Some(CopySource {
            input: x,
            run: 1,
            shortest: 1,
            along_k: false,
        }))
}

/// The input buffer whose elements `instruction`'s tiles of operand `operand` hold as
/// they are: for TF32 tiles an f32 (or tf32) input, read as it is or under the policy's
/// rounding round trip `cast(cast(x, tf32), f32)` (the fragment loads round it the
/// same way); for bf16 tiles [`bf16_input`].
pub fn tile_input(
    body: &Graph,
    anchor: Value,
    operand: usize,
    instruction: GemmInstruction,
) -> Option<Value> {
    let v = gemm_operands(body, anchor)[operand];
    let input = |x: Value| {
        let n = &body.nodes[x.0];
        let word = matches!(n.ty.dtype, DType::F32 | DType::TF32);
        (matches!(n.op, Op::Input { .. }) && word).then_some(x)
    };
    match instruction {
        GemmInstruction::Fma => None,
        GemmInstruction::MmaBf16 => bf16_input(body, anchor, operand),
        GemmInstruction::MmaTf32 => input(v).or_else(|| {
            let outer = &body.nodes[v.0];
            let inner = &body.nodes[outer.inputs.first()?.0];
            let round_trip = outer.op == (Op::Cast { to: DType::F32 })
                && inner.op == (Op::Cast { to: DType::TF32 });
            round_trip.then(|| input(*inner.inputs.first()?))?
        }),
    }
}

/// How many elements of operand `operand`'s bf16 input (see [`bf16_input`]) a tile that
/// loads it along `k` through registers takes with one vector load: 8, 4 or 2 elements
/// adjacent in memory along `k` from every multiple of that count on (so aligned, and
/// inside the operand together); `None` for an operand not contiguous along `k`. That
/// holds for a weight gradient's output gradient (`k = (n, oh, ow)`, runs within each
/// plane) and, for an unpadded 1x1 window of stride 1, its image; a forward
/// convolution's weight whose `k` keeps the weight's order (`(c, kh, kw)`, see
/// `window_k`); and a matmul operand contiguous along `k`. A channels-last image is
/// adjacent along `k` where its channels are `k`'s innermost axis
/// ([`channels_last_stretch`]).
pub fn bf16_run_along_k(
    body: &Graph,
    anchor: Value,
    operand: usize,
    layouts: InputLayouts,
) -> Option<usize> {
    let x = bf16_input(body, anchor, operand)?;
    run_along_k(body, anchor, operand, x, layouts, CopySource::LONGEST_RUN)
}

/// [`bf16_run_along_k`] of input `x` of any type, in runs of at most `longest`.
fn run_along_k(
    body: &Graph,
    anchor: Value,
    operand: usize,
    x: Value,
    layouts: InputLayouts,
    longest: usize,
) -> Option<usize> {
    let node = &body.nodes[anchor.0];
    let shape = &body.nodes[x.0].ty.shape;
    let plane = || shape.get(2..4).map(|s| s[0] * s[1]);
    let contiguous = match node.op {
        _ if input_layout(body, layouts, x) == Layout::ChannelsLast => {
            match channels_last_stretch(body, anchor, operand)? {
                Stretch::K(channels) => Some(channels),
                Stretch::Width(_) => None,
            }
        }
        Op::MatMul {
            transpose_a,
            transpose_b,
        } => {
            let along_k = if operand == 0 {
                !transpose_a
            } else {
                transpose_b
            };
            along_k.then(|| shape.last().copied()).flatten()
        }
        Op::Conv2dBackwardWeight {
            stride,
            padding,
            groups: 1,
            kernel,
            ..
        } => match operand {
            0 => plane(),
            1 if kernel == [1, 1] && stride == [1, 1] && padding == [0, 0] => plane(),
            _ => None,
        },
        Op::Conv2d { groups: 1, .. } if operand == 1 => {
            let (channels, window) = (shape[1], [shape[2], shape[3]]);
            (!crate::taps_outer(channels, window)).then(|| channels * window[0] * window[1])
        }
        _ => None,
    }?;
    run_within(contiguous, 2, longest)
}

/// Elements a thread loads at once from a bf16 input with runs of `run` along `k` (see
/// [`bf16_run_along_k`]) into a tile `depth` deep and `width` wide that `threads`
/// threads fill: the longest run (halving `run`) that the depth holds and whose loads
/// give every thread a whole share of the tile.
pub fn tile_run_along_k(run: usize, depth: usize, width: usize, threads: usize) -> usize {
    std::iter::successors(Some(run), |&r| (r > 1).then_some(r / 2))
        .find(|&r| depth.is_multiple_of(r) && (depth * width / r).is_multiple_of(threads))
        .unwrap_or(1)
}

/// How many elements of input `x` (operand `operand` of `anchor`) lie adjacent in
/// memory along the tile's width, from a multiple of that count on: `None` where the
/// operand is not contiguous along its width.
fn contiguous_width(
    body: &Graph,
    anchor: Value,
    operand: usize,
    x: Value,
    layouts: InputLayouts,
) -> Option<usize> {
    let node = &body.nodes[anchor.0];
    let shape = &body.nodes[x.0].ty.shape;
    let plane = || shape.get(2..4).map(|s| s[0] * s[1]);
    if input_layout(body, layouts, x) == Layout::ChannelsLast {
        return match channels_last_stretch(body, anchor, operand)? {
            Stretch::Width(channels) => Some(channels),
            Stretch::K(_) => None,
        };
    }
    match node.op {
        Op::MatMul {
            transpose_a,
            transpose_b,
        } => {
            let along_width = if operand == 0 {
                transpose_a
            } else {
                !transpose_b
            };
            along_width.then(|| shape.last().copied().unwrap_or(1))
        }
        Op::Conv2d {
            stride,
            padding,
            groups: 1,
            ..
        } if operand == 0 && stride == [1, 1] && padding == [0, 0] => {
            let w = &body.ty(node.inputs[1]).shape;
            (w.get(2..4)? == [1, 1]).then(plane)?
        }
        Op::Conv2dBackwardData {
            stride,
            padding,
            groups: 1,
            ..
        } => {
            let w = &body.ty(node.inputs[1]).shape;
            let dims = crate::GemmDims::of(body, anchor)?;
            let dense = w.get(2..4)? == [1, 1]
                && padding == [0, 0]
                && (stride == [1, 1] || dims.lattice.is_some());
            match operand {
                0 if dense => plane(),
                // The weight `[O, C, 1, 1]` as `B[k = o, n = c]`: rows of `C`.
                1 if dense => shape.get(1).copied(),
                _ => None,
            }
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::text::parse;

    /// `y = a @ b` (transposed as told) of bf16 inputs `a` and `b` read widened: shapes
    /// as `"4,6"`; the anchor is `%4`.
    fn widened(a: &str, b: &str, y: &str, ta: bool, tb: bool) -> Graph {
        parse(&format!(
            "graph {{
              %0 = input name=\"a\" : bf16[{a}]
              %1 = input name=\"b\" : bf16[{b}]
              %2 = cast(%0) to=\"f32\" : f32[{a}]
              %3 = cast(%1) to=\"f32\" : f32[{b}]
              %4 = matmul(%2, %3) transpose_a={ta} transpose_b={tb} : f32[{y}]
              return y=%4
            }}"
        ))
        .expect("graph")
    }

    /// The input operand `operand` copies from and its run, if any.
    fn copied(g: &Graph, y: Value, operand: usize, i: GemmInstruction) -> Option<(Value, usize)> {
        copy_source(g, y, operand, i, &[]).map(|c| (c.input, c.run))
    }

    #[test]
    fn bf16_inputs_are_copied_in_runs_along_a_contiguous_width() {
        let bf16 = GemmInstruction::MmaBf16;
        let y = Value(4);
        // A [k][m] (transposed, m contiguous), B [k][n]: both copy, in runs that
        // divide their rows.
        let g = widened("4,6", "4,8", "6,8", true, false);
        assert_eq!(copied(&g, y, 0, bf16), Some((Value(0), 2)));
        assert_eq!(copied(&g, y, 1, bf16), Some((Value(1), 8)));
        // TF32 tiles take no bf16 bits.
        assert_eq!(copied(&g, y, 0, GemmInstruction::MmaTf32), None);
        // A [m][k] and B [n][k] are contiguous along k: runs along k instead.
        let g = widened("6,4", "8,4", "6,8", false, true);
        let along_k = |operand| copy_source(&g, y, operand, bf16, &[]).map(|c| (c.run, c.along_k));
        assert_eq!(along_k(0), Some((4, true)));
        assert_eq!(along_k(1), Some((4, true)));
        // An odd width would leave a pair straddling two rows.
        let g = widened("4,6", "4,7", "6,7", true, false);
        assert_eq!(copied(&g, y, 0, bf16), Some((Value(0), 2)));
        assert_eq!(copied(&g, y, 1, bf16), None);
    }

    #[test]
    fn unpadded_1x1_convolutions_copy_runs_within_each_plane() {
        let bf16 = GemmInstruction::MmaBf16;
        let y = Value(4);
        let attrs = |s: usize, p: usize| {
            format!("stride=[{s},{s}] padding=[{p},{p}] dilation=[1,1] groups=1")
        };
        // Forward: the image along m = (n, h, w), 4x4 planes (runs of 8 within them);
        // the weight is contiguous along k.
        let forward = |x: &str, a: &str, y_: &str| {
            parse(&format!(
                "graph {{
                  %0 = input name=\"x\" : bf16[{x}]
                  %1 = input name=\"w\" : bf16[6,8,1,1]
                  %2 = cast(%0) to=\"f32\" : f32[{x}]
                  %3 = cast(%1) to=\"f32\" : f32[6,8,1,1]
                  %4 = conv2d(%2, %3) {a} : f32[{y_}]
                  return y=%4
                }}"
            ))
            .expect("graph")
        };
        let g = forward("2,8,4,4", &attrs(1, 0), "2,6,4,4");
        assert_eq!(copied(&g, y, 0, bf16), Some((Value(0), 8)));
        // The weight `[O, C, 1, 1]` is contiguous along k = c.
        let weight = copy_source(&g, y, 1, bf16, &[]).expect("a source");
        assert_eq!((weight.run, weight.along_k), (8, true));
        // 7x7 planes are odd: no run stays inside one.
        let g = forward("2,8,7,7", &attrs(1, 0), "2,6,7,7");
        assert_eq!(copied(&g, y, 0, bf16), None);
        // 14x14 planes hold pairs, not runs of 8: not worth their copies.
        let g = forward("2,8,14,14", &attrs(1, 0), "2,6,14,14");
        assert_eq!(copied(&g, y, 0, bf16), None);
        // Padding shifts the window, a stride skips positions: through registers.
        let g = forward("2,8,4,4", &attrs(1, 1), "2,6,6,6");
        assert_eq!(copied(&g, y, 0, bf16), None);
        let g = forward("2,8,4,4", &attrs(2, 0), "2,6,2,2");
        assert_eq!(copied(&g, y, 0, bf16), None);
        // Data gradient: the output gradient along m, the weight `[O, C]` along n = c,
        // also over a strided convolution's lattice; not through a padded window.
        let data = |a: &str, dy: &str, dx: &str| {
            let hw = &dx[dx.len() - 3..];
            parse(&format!(
                "graph {{
                  %0 = input name=\"dy\" : bf16[{dy}]
                  %1 = input name=\"w\" : bf16[6,8,1,1]
                  %2 = cast(%0) to=\"f32\" : f32[{dy}]
                  %3 = cast(%1) to=\"f32\" : f32[6,8,1,1]
                  %4 = conv2d_backward_data(%2, %3) {a} input_size=[{hw}] : f32[{dx}]
                  return dx=%4
                }}"
            ))
            .expect("graph")
        };
        let g = data(&attrs(1, 0), "2,6,4,4", "2,8,4,4");
        assert_eq!(copied(&g, y, 0, bf16), Some((Value(0), 8)));
        assert_eq!(copied(&g, y, 1, bf16), Some((Value(1), 8)));
        let g = data(&attrs(2, 0), "2,6,4,4", "2,8,8,8");
        assert_eq!(copied(&g, y, 0, bf16), Some((Value(0), 8)));
        assert_eq!(copied(&g, y, 1, bf16), Some((Value(1), 8)));
        let g = data(&attrs(1, 1), "2,6,6,6", "2,8,4,4");
        assert_eq!(copied(&g, y, 0, bf16), None);
        assert_eq!(copied(&g, y, 1, bf16), None);
    }

    #[test]
    fn a_copy_moves_the_longest_run_that_fills_every_thread() {
        let x = Value(0);
        let conv = CopySource {
            input: x,
            run: 8,
            shortest: 8,
            along_k: false,
        };
        // 128 x 16 elements are 256 runs of eight: one copy per thread.
        assert_eq!(conv.grain(16, 128, 256), Some(8));
        // 64 x 16 would leave half the threads idle; pairs do not pay for a
        // convolution, so its tile loads through registers.
        assert_eq!(conv.grain(16, 64, 256), None);
        let matmul = CopySource {
            shortest: 2,
            ..conv
        };
        // A matmul's runs of four fill it (one each); 8 x 64 would leave half idle,
        // and takes pairs (one each); 8 x 32 would leave half idle with pairs too.
        assert_eq!(matmul.grain(16, 64, 256), Some(4));
        assert_eq!(matmul.grain(8, 64, 256), Some(2));
        assert_eq!(matmul.grain(8, 32, 256), None);
        // A channels-last pixel of four channels pays for its copy, given whole shares.
        let pixel = CopySource {
            run: 4,
            shortest: 4,
            ..conv
        };
        assert_eq!(pixel.grain(16, 64, 256), Some(4));
        assert_eq!(pixel.grain(8, 64, 256), None);
        let word = CopySource {
            run: 1,
            shortest: 1,
            ..conv
        };
        assert_eq!(word.grain(16, 64, 256), Some(1));
        // Along `k`: runs of eight fill 32 x 64 (one each), 16 x 64 takes runs of
        // four; a single element is no copy.
        let along_k = CopySource {
            shortest: 2,
            along_k: true,
            ..conv
        };
        assert_eq!(along_k.grain(32, 64, 256), Some(8));
        assert_eq!(along_k.grain(16, 64, 256), Some(4));
        assert_eq!(along_k.grain(16, 32, 256), Some(2));
        assert_eq!(along_k.grain(8, 32, 256), None);
    }

    #[test]
    fn operands_contiguous_along_k_load_runs_through_registers() {
        let y = Value(4);
        // Weight gradient: dy along k = (n, oh, ow) in runs within 4x4 planes (8 of
        // 16), 2x2 planes (4); the image only for an unpadded 1x1 window of stride 1.
        let wgrad = |x: &str, dy: &str, w: &str, a: &str| {
            parse(&format!(
                "graph {{
                  %0 = input name=\"x\" : bf16[{x}]
                  %1 = input name=\"dy\" : bf16[{dy}]
                  %2 = cast(%0) to=\"f32\" : f32[{x}]
                  %3 = cast(%1) to=\"f32\" : f32[{dy}]
                  %4 = conv2d_backward_weight(%2, %3) {a} : f32[{w}]
                  return dw=%4
                }}"
            ))
            .expect("graph")
        };
        let one = "stride=[1,1] padding=[0,0] dilation=[1,1] groups=1 kernel=[1,1]";
        let three = "stride=[1,1] padding=[1,1] dilation=[1,1] groups=1 kernel=[3,3]";
        let g = wgrad("2,8,4,4", "2,6,4,4", "6,8,1,1", one);
        assert_eq!(bf16_run_along_k(&g, y, 0, &[]), Some(8));
        assert_eq!(bf16_run_along_k(&g, y, 1, &[]), Some(8));
        let g = wgrad("2,8,2,2", "2,6,2,2", "6,8,3,3", three);
        assert_eq!(bf16_run_along_k(&g, y, 0, &[]), Some(4));
        assert_eq!(bf16_run_along_k(&g, y, 1, &[]), None);
        let g = wgrad("2,8,7,7", "2,6,7,7", "6,8,1,1", one);
        assert_eq!(bf16_run_along_k(&g, y, 0, &[]), None);
        // Matmul: A [m][k] and B [n][k] along k.
        let g = widened("6,4", "8,4", "6,8", false, true);
        assert_eq!(bf16_run_along_k(&g, y, 0, &[]), Some(4));
        assert_eq!(bf16_run_along_k(&g, y, 1, &[]), Some(4));
        let g = widened("4,6", "4,8", "6,8", true, false);
        assert_eq!(bf16_run_along_k(&g, y, 0, &[]), None);
    }

    #[test]
    fn f32_inputs_fill_tf32_tiles_in_runs_of_up_to_four_words() {
        let matmul = |a: &str, b: &str, y: &str, ta: bool, tb: bool| {
            parse(&format!(
                "graph {{
                  %0 = input name=\"a\" : f32[{a}]
                  %1 = input name=\"b\" : f32[{b}]
                  %2 = matmul(%0, %1) transpose_a={ta} transpose_b={tb} : f32[{y}]
                  return y=%2
                }}"
            ))
            .expect("graph")
        };
        let (tf32, y) = (GemmInstruction::MmaTf32, Value(2));
        let source = |g: &Graph, operand| {
            copy_source(g, y, operand, tf32, &[]).map(|c| (c.input, c.run, c.along_k))
        };
        // Rows of 6 (A transposed) hold pairs, rows of 8 runs of four: 8 and 16 bytes.
        let g = matmul("4,6", "4,8", "6,8", true, false);
        assert_eq!(source(&g, 0), Some((Value(0), 2, false)));
        assert_eq!(source(&g, 1), Some((Value(1), 4, false)));
        // Along `k`, into tiles that keep their `k` adjacent.
        let g = matmul("6,8", "4,8", "6,4", false, true);
        assert_eq!(source(&g, 0), Some((Value(0), 4, true)));
        assert_eq!(source(&g, 1), Some((Value(1), 4, true)));
        // An odd row holds no run: a word at a time.
        let g = matmul("4,7", "4,8", "7,8", true, false);
        assert_eq!(source(&g, 0), Some((Value(0), 1, false)));
        // bf16 tiles take no f32 bits, FMA products no copies.
        assert_eq!(copied(&g, y, 1, GemmInstruction::MmaBf16), None);
        assert_eq!(copied(&g, y, 0, GemmInstruction::Fma), None);
    }
}
