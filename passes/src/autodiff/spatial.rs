//! VJPs of the windowed ops (convolution, pooling, resize). Their adjoints are scatters
//! that IR primitives would express only clumsily, so each maps to a dedicated adjoint
//! op that carries the forward attributes plus the input extent.

use super::{each, Grads};
use crate::emit::Expr;
use calib_ir::Op;

pub(super) fn vjp<'e>(op: &Op, x: &[Expr<'e>], g: Expr<'e>) -> Option<Grads<'e>> {
    let em = g.emitter();
    let input_size = {
        let s = x[0].shape();
        [s[2], s[3]]
    };
    Some(match *op {
        Op::Conv2d {
            stride,
            padding,
            dilation,
            groups,
        } => {
            let kernel = {
                let s = x[1].shape();
                [s[2], s[3]]
            };
            let data = Op::Conv2dBackwardData {
                stride,
                padding,
                dilation,
                groups,
                input_size,
            };
            let weight = Op::Conv2dBackwardWeight {
                stride,
                padding,
                dilation,
                groups,
                kernel,
            };
            each([em.op(data, &[g, x[1]]), em.op(weight, &[x[0], g])])
        }
        Op::AvgPool2d {
            kernel,
            stride,
            padding,
            ceil_mode,
            count_include_pad,
        } => {
            let adjoint = Op::AvgPool2dBackward {
                kernel,
                stride,
                padding,
                ceil_mode,
                count_include_pad,
                input_size,
            };
            each([em.op(adjoint, &[g])])
        }
        Op::MaxPool2d {
            kernel,
            stride,
            padding,
            ceil_mode,
        } => {
            let adjoint = Op::MaxPool2dBackward {
                kernel,
                stride,
                padding,
                ceil_mode,
            };
            each([em.op(adjoint, &[x[0], g])])
        }
        Op::ResizeNearest { .. } => each([em.op(Op::ResizeNearestBackward { input_size }, &[g])]),
        _ => return None,
    })
}
