//! The VJP of an all-reduce, under the convention that makes data-parallel gradients
//! add up: every replica differentiates its own copy of the graph, and the gradient it
//! computes is that of the *sum over replicas* of the differentiated value, restricted
//! to its own inputs. PyTorch's `SyncBatchNorm` backward works the same way, and
//! averaging those gradients (DDP) then gives the gradient of the group's mean loss.
//!
//! Under that convention the all-reduce is self-adjoint: `y = Σ_r x_r` reaches every
//! replica's value, so `d(Σ_r' L_r') / d x_r = Σ_r' g_r'`, the same all-reduce of the
//! cotangents; for the mean, each `x_r` enters with weight `1/R`, which is the mean of
//! the cotangents. On one replica both are the identity, as they should be.

use super::{each, Grads};
use crate::emit::Expr;
use calib_ir::Op;

pub(super) fn vjp<'e>(op: &Op, g: Expr<'e>) -> Option<Grads<'e>> {
    match op {
        Op::AllReduce { .. } => Some(each([g.emitter().op(op.clone(), &[g])])),
        _ => None,
    }
}
