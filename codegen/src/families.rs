//! The kernel families, as the body evaluator meets them: a window, contraction or
//! reduction in the middle of a body (a pooled value a pointwise kernel reads, a
//! convolution in a GEMM's prologue) is computed one element at a time by a loop of its
//! family's. The evaluator is handed [`nested`] rather than importing the families, so
//! that the families build on the evaluator and never the other way round.

use crate::error::Result;
use crate::eval::Emitter;
use crate::index::Index;
use crate::ptx::Operand;
use crate::{conv, matmul, pool, reduction};
use calib_ir::{OpClass, Value};

/// Body value `v` at `at`, by the serial loop of its op's family.
pub(crate) fn nested(cx: &mut Emitter, v: Value, at: &Index) -> Result<Operand> {
    match cx.node(v).op.class() {
        OpClass::Reduction => reduction::serial(cx, v, at),
        OpClass::Convolution => conv::serial(cx, v, at),
        OpClass::Pool | OpClass::Resize => pool::serial(cx, v, at),
        OpClass::MatMul => matmul::serial(cx, v, at),
        _ => Err(cx.unsupported(v, "not a window, contraction or reduction")),
    }
}
