//! Which coordinates a body value does not depend on: the axes a broadcast expanded,
//! carried through the elementwise ops and slices above it.
//!
//! A batch-norm backward kernel computes per-channel terms (`rsqrt(var + eps)`, their
//! products, divisions by the element count) after broadcasting their operands to the
//! full shape; elementwise, each would be evaluated at every element. Code generation
//! keys its memo by the coordinates a value depends on, so it computes each once per
//! channel that a thread visits (once per run of four, where the run lies along an
//! axis the value does not depend on), and the planner's estimate counts them so.

use crate::{Graph, Op, OpClass, Value};

/// For every node of `body`, a bit per axis of its shape, set where the value is the
/// same at every coordinate of that axis.
pub fn invariant_axes(body: &Graph) -> Vec<u64> {
    let mut axes: Vec<u64> = Vec::with_capacity(body.nodes.len());
    for node in &body.nodes {
        let shape = &node.ty.shape;
        // An axis of extent 1 has one coordinate; wider ranks are left alone.
        let ones = shape
            .iter()
            .enumerate()
            .filter(|(_, &d)| d == 1)
            .fold(0u64, |m, (i, _)| m | 1 << i);
        if shape.len() > 64 {
            axes.push(0);
            continue;
        }
        let all = if shape.is_empty() {
            0
        } else {
            u64::MAX >> (64 - shape.len())
        };
        let operand = |i: usize| {
            node.inputs
                .get(i)
                .map(|v: &Value| (axes[v.0], &body.ty(*v).shape))
        };
        let derived = match &node.op {
            Op::Constant { .. } => all,
            Op::Broadcast { .. } => match operand(0) {
                Some((inner, from)) => {
                    let lead = shape.len() - from.len();
                    (0..shape.len()).fold(0, |m, j| {
                        let kept = j >= lead && from[j - lead] != 1 && inner >> (j - lead) & 1 == 0;
                        if kept {
                            m
                        } else {
                            m | 1 << j
                        }
                    })
                }
                None => 0,
            },
            Op::Slice { .. } => operand(0).map_or(0, |(inner, _)| inner),
            _ if node.op.class() == OpClass::Elementwise && !node.inputs.is_empty() => {
                // Operands of an elementwise op have its shape (broadcasts are explicit).
                node.inputs.iter().fold(all, |m, v| {
                    if &body.ty(*v).shape == shape {
                        m & axes[v.0]
                    } else {
                        0
                    }
                })
            }
            _ => 0,
        };
        axes.push((derived | ones) & all);
    }
    axes
}

/// Whether `body` divides, at a size of `n` elements, by something that varies along
/// one of `axes` (of extent above one). A thread walking those axes computes each such
/// quotient per element, each a call of the IEEE division's slow path in the machine
/// code, and values live across the calls spill where a thread takes many elements.
pub fn divides_along(body: &Graph, n: usize, axes: &[usize]) -> bool {
    let invariant = invariant_axes(body);
    body.nodes.iter().zip(&invariant).any(|(node, &mask)| {
        // An axis the node does not have (another shape of as many elements) counts
        // as varying: nothing says otherwise.
        let varies = |&a: &usize| match node.ty.shape.get(a) {
            Some(&extent) => extent > 1 && mask >> a & 1 == 0,
            None => true,
        };
        matches!(node.op, Op::Div) && node.ty.numel() == n && axes.iter().any(varies)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::text::parse;

    #[test]
    fn broadcast_axes_survive_elementwise_ops_and_slices() {
        let g = parse(
            "graph {
              %0 = input name=\"x\" : f32[2,3,4,4]
              %1 = input name=\"v\" : f32[3]
              %2 = reshape(%1) shape=[1,3,1,1] : f32[1,3,1,1]
              %3 = broadcast(%2) shape=[2,3,4,4] : f32[2,3,4,4]
              %4 = constant value=2.0 : f32[2,3,4,4]
              %5 = div(%3, %4) : f32[2,3,4,4]
              %6 = mul(%5, %0) : f32[2,3,4,4]
              %7 = slice(%5) axis=1 start=1 end=3 : f32[2,2,4,4]
              %8 = broadcast(%1) shape=[4,3] : f32[4,3]
              return a=%6, b=%7, c=%8
            }",
        )
        .unwrap();
        let axes = invariant_axes(&g);
        // Batch, rows and columns; not channels.
        assert_eq!(axes[3], 0b1101);
        assert_eq!(axes[4], 0b1111);
        assert_eq!(axes[5], 0b1101);
        assert_eq!(axes[6], 0, "the input varies everywhere");
        assert_eq!(axes[7], 0b1101);
        assert_eq!(axes[8], 0b01, "a leading axis added by the broadcast");
        assert_eq!(axes[2], 0b1101, "extent-1 axes");
    }

    #[test]
    fn a_per_channel_quotient_varies_along_channels_only() {
        let g = parse(
            "graph {
              %0 = input name=\"x\" : f32[2,3,4,4]
              %1 = input name=\"v\" : f32[1,3,1,1]
              %2 = broadcast(%1) shape=[2,3,4,4] : f32[2,3,4,4]
              %3 = constant value=32.0 : f32[2,3,4,4]
              %4 = div(%2, %3) : f32[2,3,4,4]
              %5 = mul(%4, %0) : f32[2,3,4,4]
              return y=%5
            }",
        )
        .unwrap();
        let n = 2 * 3 * 4 * 4;
        assert!(!divides_along(&g, n, &[3]), "along a row");
        assert!(!divides_along(&g, n, &[2, 3]), "along a plane");
        assert!(divides_along(&g, n, &[1, 2, 3]), "across channels");
        assert!(
            !divides_along(&g, 7, &[1, 2, 3]),
            "no division of that size"
        );
        let per_element = parse(
            "graph {
              %0 = input name=\"x\" : f32[2,3,4,4]
              %1 = input name=\"y\" : f32[2,3,4,4]
              %2 = div(%0, %1) : f32[2,3,4,4]
              return y=%2
            }",
        )
        .unwrap();
        assert!(divides_along(&per_element, n, &[3]));
    }
}
