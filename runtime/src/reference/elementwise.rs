//! Unary, binary and select ops, one scalar function per op.
//!
//! Each op picks its scalar function in a `match` and hands it to a generic map, so the
//! inner loop is monomorphized per op (and vectorizable) rather than an indirect call
//! per element.

use super::dispatch::elems;
use super::PAR_MIN;
use crate::{Element, Float, HostTensor, OpError, Storage};
use calib_ir::Op;
use rayon::prelude::*;

fn map<E: Element>(x: &[E], f: impl Fn(E) -> E + Sync) -> Vec<E> {
    if x.len() >= PAR_MIN {
        x.par_iter().with_min_len(PAR_MIN).map(|&a| f(a)).collect()
    } else {
        x.iter().map(|&a| f(a)).collect()
    }
}

fn zip<E: Element>(x: &[E], y: &[E], f: impl Fn(E, E) -> E + Sync) -> Vec<E> {
    if x.len() >= PAR_MIN {
        x.par_iter()
            .zip(y)
            .with_min_len(PAR_MIN)
            .map(|(&a, &b)| f(a, b))
            .collect()
    } else {
        x.iter().zip(y).map(|(&a, &b)| f(a, b)).collect()
    }
}

fn indicator<E: Element>(c: bool) -> E {
    if c {
        E::ONE
    } else {
        E::ZERO
    }
}

/// Unary ops every element type supports.
fn unary_any<E: Element>(op: &Op, x: &[E]) -> Option<Vec<E>> {
    Some(match op {
        Op::Neg => map(x, |a| -a),
        // `a < 0` rather than `a > 0` so that NaN passes through, as in PyTorch.
        Op::Relu => map(x, |a| if a < E::ZERO { E::ZERO } else { a }),
        _ => return None,
    })
}

fn unary_float<E: Float>(op: &Op, x: &[E]) -> Option<Vec<E>> {
    Some(match op {
        Op::Exp => map(x, E::exp),
        Op::Log => map(x, E::ln),
        Op::Sqrt => map(x, E::sqrt),
        Op::Rsqrt => map(x, |a| E::ONE / a.sqrt()),
        Op::Sigmoid => map(x, |a| E::ONE / (E::ONE + (-a).exp())),
        _ => return unary_any(op, x),
    })
}

/// Binary ops every element type supports; comparisons give 1/0 in the operand type.
fn binary_any<E: Element>(op: &Op, x: &[E], y: &[E]) -> Option<Vec<E>> {
    Some(match op {
        Op::Add => zip(x, y, |a, b| a + b),
        Op::Sub => zip(x, y, |a, b| a - b),
        Op::Mul => zip(x, y, |a, b| a * b),
        Op::Max => zip(x, y, E::max_nan),
        Op::CmpGt => zip(x, y, |a, b| indicator(a > b)),
        Op::CmpGe => zip(x, y, |a, b| indicator(a >= b)),
        Op::CmpEq => zip(x, y, |a, b| indicator(a == b)),
        _ => return None,
    })
}

fn binary_float<E: Float>(op: &Op, x: &[E], y: &[E]) -> Option<Vec<E>> {
    Some(match op {
        Op::Div => zip(x, y, |a, b| a / b),
        _ => return binary_any(op, x, y),
    })
}

fn unsupported(op: &Op, x: &HostTensor) -> OpError {
    OpError::Storage {
        found: x.storage().kind(),
        expected: if op.needs_float() { "a float" } else { "any" },
    }
}

/// Evaluates a unary or binary elementwise op.
pub(super) fn eval(op: &Op, x: &[&HostTensor]) -> Result<Storage, OpError> {
    match x {
        [a] => unary(op, a),
        [a, b] => binary(op, a, b),
        _ => Err(OpError::NotComputed(op.name())),
    }
}

fn unary(op: &Op, x: &HostTensor) -> Result<Storage, OpError> {
    let out = match x.storage() {
        Storage::F32(v) => unary_float(op, v).map(Storage::F32),
        Storage::F64(v) => unary_float(op, v).map(Storage::F64),
        Storage::I64(v) => unary_any(op, v).map(Storage::I64),
    };
    out.ok_or_else(|| unsupported(op, x))
}

fn binary(op: &Op, x: &HostTensor, y: &HostTensor) -> Result<Storage, OpError> {
    let out = match x.storage() {
        Storage::F32(v) => binary_float(op, v, elems(y)?).map(Storage::F32),
        Storage::F64(v) => binary_float(op, v, elems(y)?).map(Storage::F64),
        Storage::I64(v) => binary_any(op, v, elems(y)?).map(Storage::I64),
    };
    out.ok_or_else(|| unsupported(op, x))
}

/// `select(cond, a, b)`: `a` where `cond != 0`, else `b`.
pub(super) fn select(
    cond: &HostTensor,
    a: &HostTensor,
    b: &HostTensor,
) -> Result<Storage, OpError> {
    fn typed<E: Element>(c: &[E], a: &[E], b: &[E]) -> Vec<E> {
        let pick = |((&c, &a), &b): ((&E, &E), &E)| if c != E::ZERO { a } else { b };
        if c.len() >= PAR_MIN {
            c.par_iter()
                .zip(a)
                .zip(b)
                .with_min_len(PAR_MIN)
                .map(pick)
                .collect()
        } else {
            c.iter().zip(a).zip(b).map(pick).collect()
        }
    }
    dispatch!(cond.storage(), E => Ok(E::wrap(typed::<E>(elems(cond)?, elems(a)?, elems(b)?))))
}
