//! VJPs of the elementwise ops: `g` is the adjoint of `y = op(x...)`.

use super::{each, Grads};
use crate::emit::Expr;
use calib_ir::Op;

pub(super) fn vjp<'e>(op: &Op, x: &[Expr<'e>], y: Expr<'e>, g: Expr<'e>) -> Option<Grads<'e>> {
    let zero = || g.zeros_like();
    Some(match op {
        Op::Neg => each([-g]),
        Op::Exp => each([g * y]),
        Op::Log => each([g / x[0]]),
        Op::Sqrt => each([g / (y * 2.0)]),
        // d/dx x^(-1/2) = -1/2 x^(-3/2) = -1/2 y^3
        Op::Rsqrt => each([g * (y * y * y) * -0.5]),
        Op::Sigmoid => each([g * y * (1.0 - y)]),
        // Strictly positive: the derivative at 0 is 0, as in PyTorch.
        Op::Relu => each([x[0].gt(zero()).select(g, zero())]),
        Op::Add => each([g, g]),
        Op::Sub => each([g, -g]),
        Op::Mul => each([g * x[1], g * x[0]]),
        // d/db (a / b) = -a / b^2 = -y / b
        Op::Div => each([g / x[1], -(g * y) / x[1]]),
        // Ties go wholly to the first operand, so the two gradients still sum to `g`.
        Op::Max => {
            let first = x[0].ge(x[1]);
            each([first.select(g, zero()), first.select(zero(), g)])
        }
        Op::Select => vec![
            None,
            Some(x[0].select(g, zero())),
            Some(x[0].select(zero(), g)),
        ],
        Op::Cast { to } => {
            let from = x[0].ty().dtype;
            let float = from.is_float() && to.is_float();
            vec![float.then(|| g.cast(from))]
        }
        // Piecewise constant: zero almost everywhere.
        Op::CmpGt | Op::CmpGe | Op::CmpEq => vec![None, None],
        _ => return None,
    })
}
