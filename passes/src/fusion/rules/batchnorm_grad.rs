//! The BatchNorm gradient's mean term, without a second pass over the batch.
//!
//! The gradient with respect to `x` of `c = x - mean(x)` is `g - mean(g)` for `c`'s
//! cotangent `g = dy * s + b * c` (`s` the channel's scale, `b` the variance's
//! per-channel term). Autodiff sums `g` in a reduction of its own, over a value that
//! itself needs the first reductions (`b` holds `sum(dy * c)`): a second pass over the
//! batch, which stores `g` for it. The centered values sum to zero, so
//! `sum(g) = s * sum(dy)`, and `sum(dy)` is the bias gradient, already computed.
//! PyTorch's closed form for the BatchNorm gradient drops the same term.
//!
//! Three steps of algebra. `sum-of-neg` is exact (negation commutes with rounding);
//! `sum-of-scaled` rounds the product once instead of once per element; `centered-sum`
//! drops `b * sum(c)`, which is a sum of rounding errors: both stay far inside the
//! fixtures' tolerances, which the fixture and differential tests check.

use super::{rule, Rhs, Rule};
use calib_ir::{Op, OpClass};
use egg::Id;

pub fn rules() -> Vec<Rule> {
    vec![
        // sum(-a)  =>  -sum(a).
        rule("sum-of-neg", "(reduce_sum ?a)", |r| {
            let a = r.var("?a");
            let (sum, _) = summed(r, a)?;
            let (_, x) = r.op(a, "neg")?;
            let total = r.add(sum, &x)?;
            r.add(Op::Neg, &[total])
        }),
        // sum(a * s)  =>  sum(a) * s, for s constant along the summed axes.
        rule("sum-of-scaled", "(reduce_sum ?a)", |r| {
            let a = r.var("?a");
            let (sum, axes) = summed(r, a)?;
            let shape = r.ty(r.root).shape.clone();
            for (_, operands) in r.ops(a, "mul") {
                for (x, s) in [(operands[0], operands[1]), (operands[1], operands[0])] {
                    let Some(s) = broadcast_along(r, s, &axes) else {
                        continue;
                    };
                    let s = r.add(Op::Reshape { shape }, &[s])?;
                    let total = r.add(sum, &[x])?;
                    return r.add(Op::Mul, &[total, s]);
                }
            }
            None
        }),
        // sum(a + b * (x - mean(x)))  =>  sum(a), for b constant along the summed axes
        // and the mean over them: the centered values sum to zero.
        rule("centered-sum", "(reduce_sum ?a)", |r| {
            let a = r.var("?a");
            let (sum, axes) = summed(r, a)?;
            for (_, operands) in r.ops(a, "add") {
                for (kept, dropped) in [(operands[0], operands[1]), (operands[1], operands[0])] {
                    if sums_to_zero(r, dropped, &axes) {
                        return r.add(sum, &[kept]);
                    }
                }
            }
            None
        }),
    ]
}

/// The op of the matched `reduce_sum` over class `operand`, and its axes in order.
fn summed(r: &mut Rhs, operand: Id) -> Option<(Op, Vec<usize>)> {
    let op = r.op_over(r.root, "reduce_sum", &[operand])?;
    r.rewriting(op.clone(), &[operand]);
    let Op::ReduceSum { axes, .. } = &op else {
        return None;
    };
    let mut axes = axes.clone();
    axes.sort_unstable();
    Some((op, axes))
}

/// `s` where class `id` holds `broadcast(s)` expanding only `axes` (of the same rank):
/// a value constant along them.
fn broadcast_along(r: &Rhs, id: Id, axes: &[usize]) -> Option<Id> {
    let full = &r.ty(id).shape;
    r.ops(id, "broadcast").into_iter().find_map(|(_, s)| {
        let from = &r.ty(s[0]).shape;
        let only_axes = from.len() == full.len()
            && (0..full.len()).all(|j| from[j] == full[j] || from[j] == 1 && axes.contains(&j));
        only_axes.then_some(s[0])
    })
}

/// Whether class `id` is constant along `axes`: a constant, a broadcast along them, or
/// elementwise arithmetic of such values (looked for `depth` ops deep).
fn constant_along(r: &Rhs, id: Id, axes: &[usize], depth: usize) -> bool {
    if r.constant(id).is_some() || broadcast_along(r, id, axes).is_some() {
        return true;
    }
    depth > 0
        && r.egraph[id].nodes.iter().any(|n| {
            let elementwise =
                r.egraph.analysis.op_of(n).map(Op::class) == Some(OpClass::Elementwise);
            elementwise
                && n.children
                    .iter()
                    .all(|&c| constant_along(r, c, axes, depth - 1))
        })
}

/// Whether class `id` holds `x - broadcast(mean(x))` with the mean over `axes`.
fn centered_along(r: &Rhs, id: Id, axes: &[usize]) -> bool {
    r.ops(id, "sub").into_iter().any(|(_, xm)| {
        let Some(m) = broadcast_along(r, xm[1], axes) else {
            return false;
        };
        r.ops(m, "reduce_mean").into_iter().any(|(op, of)| {
            let over_axes = matches!(&op, Op::ReduceMean { axes: a, .. } if {
                let mut a = a.clone();
                a.sort_unstable();
                a == axes
            });
            over_axes && r.egraph.find(of[0]) == r.egraph.find(xm[0])
        })
    })
}

/// Whether class `id` sums to zero along `axes`: centered values, or their product
/// with a value constant along the axes.
fn sums_to_zero(r: &Rhs, id: Id, axes: &[usize]) -> bool {
    centered_along(r, id, axes)
        || r.ops(id, "mul").into_iter().any(|(_, bc)| {
            let (b, c) = (bc[0], bc[1]);
            centered_along(r, c, axes) && constant_along(r, b, axes, 2)
                || centered_along(r, b, axes) && constant_along(r, c, axes, 2)
        })
}
