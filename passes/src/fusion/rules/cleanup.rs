//! Clean-ups that hold exactly in floating point: views of views, identities, and
//! slices moved through the ops that read them, so that a merged convolution's
//! statistics become reductions of the merged output, which its kernel can
//! accumulate (the op over the slice is then superseded: it could never fuse there).
//!
//! The one inexactness: `x + 0` and `x - 0` turn `-0.0` into `+0.0` in IEEE
//! arithmetic; the rewrite keeps `-0.0`. The two compare equal, so no tolerance is
//! touched.

use super::{multi_rule, rule, Rhs, Rule};
use calib_ir::Op;
use egg::Id;

pub fn rules() -> Vec<Rule> {
    let mut rules = vec![
        rule("reshape-reshape", "(reshape (reshape ?x))", |r| {
            let shape = r.ty(r.root).shape.clone();
            let x = r.var("?x");
            r.add(Op::Reshape { shape }, &[x])
        }),
        rule("reshape-noop", "(reshape ?x)", |r| same_type(r, "?x")),
        rule("broadcast-noop", "(broadcast ?x)", |r| same_type(r, "?x")),
        rule("broadcast-broadcast", "(broadcast (broadcast ?x))", |r| {
            let shape = r.ty(r.root).shape.clone();
            let x = r.var("?x");
            r.add(Op::Broadcast { shape }, &[x])
        }),
        rule("slice-full", "(slice ?x)", |r| same_type(r, "?x")),
        rule("slice-slice", "(slice ?s)", |r| {
            let s = r.var("?s");
            let Op::Slice { axis, start, end } = r.op_over(r.root, "slice", &[s])? else {
                return None;
            };
            let (
                Op::Slice {
                    axis: inner_axis,
                    start: inner,
                    ..
                },
                x,
            ) = r.op(s, "slice")?
            else {
                return None;
            };
            (axis == inner_axis).then_some(())?;
            r.add(
                Op::Slice {
                    axis,
                    start: inner + start,
                    end: inner + end,
                },
                &x,
            )
        }),
        // slice_a[i..i+1](slice_b[s..e](x))  =>  slice_b[s..e](slice_a[i..i+1](x)), a != b:
        // a one-wide sample moves inside a wider slice, so that sampling a branch of a
        // merged convolution is a slice of sampling the merged output (a BatchNorm
        // shift). One direction only, which ends.
        multi_rule("sample-inside-slice", "?t = (slice ?s)", |r| {
            let (t, s) = (r.var("?t"), r.var("?s"));
            let Op::Slice { axis, start, end } = r.op_over(t, "slice", &[s])? else {
                return None;
            };
            (end - start == 1).then_some(())?;
            let wider = r.ops(s, "slice").into_iter().filter(|(op, _)| {
                matches!(op, Op::Slice { axis: b, start: s, end: e } if *b != axis && e - s > 1)
            });
            let mut unions = vec![];
            for (inner, x) in wider.collect::<Vec<_>>() {
                let sample = r.add(Op::Slice { axis, start, end }, &x)?;
                unions.push((t, r.add(inner, &[sample])?));
            }
            Some(unions)
        }),
        // broadcast(slice_b(x))  =>  slice_b(broadcast(x)) when the broadcast keeps axis
        // b: the branch's broadcast shift is a slice of the merged output's.
        multi_rule("broadcast-of-slice", "?t = (broadcast ?s)", |r| {
            let (t, s) = (r.var("?t"), r.var("?s"));
            let Op::Broadcast { shape } = r.op_over(t, "broadcast", &[s])? else {
                return None;
            };
            let from = r.ty(s).shape.clone();
            let kept = r.ops(s, "slice").into_iter().filter(|(op, _)| {
                matches!(op, Op::Slice { axis, .. } if from.len() == shape.len() && from[*axis] == shape[*axis])
            });
            let mut unions = vec![];
            for (slice, x) in kept.collect::<Vec<_>>() {
                let Op::Slice { axis, .. } = slice else {
                    continue;
                };
                let mut wide = shape.clone();
                wide[axis] = r.ty(x[0]).shape[axis];
                let whole = r.add(Op::Broadcast { shape: wide }, &x)?;
                unions.push((t, r.add(slice, &[whole])?));
            }
            Some(unions)
        }),
        rule("slice-concat", "(slice ?c)", |r| {
            let c = r.var("?c");
            let Op::Slice { axis, start, end } = r.op_over(r.root, "slice", &[c])? else {
                return None;
            };
            let (Op::Concat { axis: joined }, parts) = r.op(c, "concat")? else {
                return None;
            };
            (axis == joined).then_some(())?;
            let mut at = 0;
            for p in parts {
                let len = r.ty(p).shape[axis];
                if (at, at + len) == (start, end) {
                    return Some(p);
                }
                at += len;
            }
            None
        }),
        rule("neg-neg", "(neg (neg ?x))", |r| Some(r.var("?x"))),
        rule("select-same", "(select ?c ?x ?x)", |r| Some(r.var("?x"))),
    ];
    // Identities, both operand orders where the op commutes.
    for (name, lhs, unit) in [
        ("mul-one", "(mul ?x ?c)", 1.0),
        ("one-mul", "(mul ?c ?x)", 1.0),
        ("div-one", "(div ?x ?c)", 1.0),
        ("add-zero", "(add ?x ?c)", 0.0),
        ("zero-add", "(add ?c ?x)", 0.0),
        ("sub-zero", "(sub ?x ?c)", 0.0),
    ] {
        rules.push(rule(name, lhs, move |r| {
            (r.constant(r.var("?c")) == Some(unit)).then(|| r.var("?x"))
        }));
    }
    // An elementwise op of two equal slices is a slice of the op.
    for kind in ["add", "sub", "mul", "div", "max"] {
        let lhs = format!("({kind} ?a ?b)");
        rules.push(rule(&format!("slice-through-{kind}"), &lhs, move |r| {
            let (a, b) = (r.var("?a"), r.var("?b"));
            let (Op::Slice { axis, start, end }, x) = widest_slice(r, a)? else {
                return None;
            };
            let same = |(op, y): &(Op, Vec<Id>)| {
                *op == Op::Slice { axis, start, end } && r.ty(x[0]) == r.ty(y[0])
            };
            let y = r.ops(b, "slice").into_iter().find(same)?.1;
            let op = r.op_over(r.root, kind, &[a, b])?;
            let whole = r.add(op, &[x[0], y[0]])?;
            r.supersede_over(r.root, kind, &[a, b]);
            r.add(Op::Slice { axis, start, end }, &[whole])
        }));
    }
    // cast(slice(x))  =>  slice(cast(x)): a cast is elementwise. Under the bf16 policy a
    // branch of merged sibling convolutions is rounded, `cast(cast(slice(y)))`; moving
    // the slice out lets the merged convolution round its whole output in its epilogue,
    // where the slices of its statistics then follow it (the cast over the slice is
    // superseded, as the binary ops' are).
    rules.push(rule("slice-through-cast", "(cast ?s)", |r| {
        let s = r.var("?s");
        let (slice, x) = widest_slice(r, s)?;
        let cast = r.op_over(r.root, "cast", &[s])?;
        let whole = r.add(cast, &x)?;
        r.supersede_over(r.root, "cast", &[s]);
        r.add(slice, &[whole])
    }));
    // A reduction over axes the slice does not cut is a slice of the reduction.
    for kind in ["reduce_sum", "reduce_mean", "reduce_max"] {
        let lhs = format!("({kind} ?s)");
        rules.push(rule(&format!("slice-through-{kind}"), &lhs, move |r| {
            let s = r.var("?s");
            let (Op::Slice { axis, start, end }, x) = widest_slice(r, s)? else {
                return None;
            };
            let reduce = r.op_over(r.root, kind, &[s])?;
            let (Op::ReduceSum { axes, keepdims }
            | Op::ReduceMean { axes, keepdims }
            | Op::ReduceMax { axes, keepdims }) = &reduce
            else {
                return None;
            };
            if axes.contains(&axis) {
                return None;
            }
            let kept_axis = if *keepdims {
                axis
            } else {
                axis - axes.iter().filter(|&&a| a < axis).count()
            };
            let whole = r.add(reduce.clone(), &x)?;
            r.supersede_over(r.root, kind, &[s]);
            r.add(
                Op::Slice {
                    axis: kept_axis,
                    start,
                    end,
                },
                &[whole],
            )
        }));
    }
    rules
}

/// Of the slices in class `id`, the one of the largest value: when sibling
/// convolutions merged in pairs and in threes, moving through the slice of the
/// three-way merge leaves work for the one convolution that extraction keeps.
fn widest_slice(r: &Rhs, id: Id) -> Option<(Op, Vec<Id>)> {
    r.ops(id, "slice")
        .into_iter()
        .max_by_key(|(_, x)| r.ty(x[0]).numel())
}

/// `?x` itself when the view leaves its type unchanged.
fn same_type(r: &Rhs, var: &str) -> Option<Id> {
    let x = r.var(var);
    (r.ty(x) == r.ty(r.root)).then_some(x)
}
