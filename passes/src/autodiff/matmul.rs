//! The VJP of `C = op(A) op(B)`, where `op` transposes or not: `dA` and `dB` are
//! matrix products of `G = dC` with the other operand, transposed as the table says.

use super::{each, Grads};
use crate::emit::Expr;
use calib_ir::Op;

pub(super) fn vjp<'e>(op: &Op, x: &[Expr<'e>], g: Expr<'e>) -> Option<Grads<'e>> {
    let Op::MatMul {
        transpose_a,
        transpose_b,
    } = *op
    else {
        return None;
    };
    let (a, b) = (x[0], x[1]);
    let (da, db) = match (transpose_a, transpose_b) {
        // C = A B       dA = G Bᵀ        dB = Aᵀ G
        (false, false) => (g.matmul(b, false, true), a.matmul(g, true, false)),
        // C = A Bᵀ      dA = G B         dB = Gᵀ A
        (false, true) => (g.matmul(b, false, false), g.matmul(a, true, false)),
        // C = Aᵀ B      dA = B Gᵀ        dB = A G
        (true, false) => (b.matmul(g, false, true), a.matmul(g, false, false)),
        // C = Aᵀ Bᵀ     dA = Bᵀ Gᵀ       dB = Gᵀ Aᵀ
        (true, true) => (b.matmul(g, true, true), g.matmul(a, true, true)),
    };
    Some(each([da, db]))
}
