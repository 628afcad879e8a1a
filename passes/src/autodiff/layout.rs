//! VJPs of the layout ops: they move elements, so their adjoints move gradients back.

use super::{each, Grads};
use crate::emit::Expr;
use calib_ir::{Op, TensorType};

pub(super) fn vjp<'e>(op: &Op, x: &[Expr<'e>], g: Expr<'e>) -> Option<Grads<'e>> {
    Some(match *op {
        Op::Reshape { .. } => each([g.reshape(&x[0].shape())]),
        Op::Broadcast { .. } => each([unbroadcast(g, &x[0].shape())]),
        Op::Slice { axis, start, end } => each([pad(g, &x[0].ty(), axis, start, end)]),
        Op::Concat { axis } => {
            let mut offset = 0;
            let mut grads = Vec::with_capacity(x.len());
            for part in x {
                let len = part.shape()[axis];
                grads.push(Some(g.slice(axis, offset, offset + len)));
                offset += len;
            }
            grads
        }
        // Labels are integers.
        Op::OneHot { .. } => vec![None],
        _ => return None,
    })
}

/// Sums `g` over the axes that broadcasting to its shape created or stretched from 1,
/// giving a value of `shape`.
fn unbroadcast<'e>(g: Expr<'e>, shape: &[usize]) -> Expr<'e> {
    let target = g.shape();
    let lead = target.len() - shape.len();
    let stretched: Vec<usize> = (0..target.len())
        .filter(|&i| i < lead || (shape[i - lead] == 1 && target[i] != 1))
        .collect();
    g.sum(&stretched, true).reshape(shape)
}

/// The gradient of a slice `start..end` along `axis` of a value of type `ty`: `g` with
/// zeros where the slice dropped elements.
fn pad<'e>(g: Expr<'e>, ty: &TensorType, axis: usize, start: usize, end: usize) -> Expr<'e> {
    let em = g.emitter();
    let zeros = |len: usize| {
        let mut shape = ty.shape.clone();
        shape[axis] = len;
        em.constant(0.0, TensorType::new(ty.dtype, shape))
    };
    let mut parts = Vec::with_capacity(3);
    if start > 0 {
        parts.push(zeros(start));
    }
    parts.push(g);
    if end < ty.shape[axis] {
        parts.push(zeros(ty.shape[axis] - end));
    }
    em.concat(&parts, axis)
}
