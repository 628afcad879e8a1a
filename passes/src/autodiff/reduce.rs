//! VJPs of the reductions: the adjoint of a reduced value spreads back over the elements
//! it summarised.

use super::{each, Grads};
use crate::emit::Expr;
use calib_ir::Op;

pub(super) fn vjp<'e>(op: &Op, x: &[Expr<'e>], y: Expr<'e>, g: Expr<'e>) -> Option<Grads<'e>> {
    let x = x[0];
    Some(match op {
        Op::ReduceSum { axes, .. } => each([spread(g, x, axes)]),
        Op::ReduceMean { axes, .. } => {
            let shape = x.shape();
            let count: usize = axes.iter().map(|&a| shape[a]).product();
            each([spread(g, x, axes) / count as f64])
        }
        // Tied maxima share the gradient equally (PyTorch's `amax` rule), so the
        // gradients of a group still sum to its `g` whichever entry is the max.
        Op::ReduceMax { axes, .. } => {
            let hits = x.equals(spread(y, x, axes));
            let ties = spread(hits.sum(axes, true), x, axes);
            each([hits * spread(g, x, axes) / ties])
        }
        _ => return None,
    })
}

/// `v`, the result of reducing `x` over `axes` (with or without kept dimensions),
/// broadcast back to the shape of `x`.
fn spread<'e>(v: Expr<'e>, x: Expr<'e>, axes: &[usize]) -> Expr<'e> {
    let shape = x.shape();
    let kept: Vec<usize> = shape
        .iter()
        .enumerate()
        .map(|(i, &d)| if axes.contains(&i) { 1 } else { d })
        .collect();
    v.reshape(&kept).broadcast(&shape)
}
