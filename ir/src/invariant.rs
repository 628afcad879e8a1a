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
}
