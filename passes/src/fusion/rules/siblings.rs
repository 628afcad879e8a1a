//! Convolutions that share an operand become one convolution over concatenated
//! weights, then slices: SCBottleneck's two 1x1 convolutions (and a stride-1 shortcut
//! convolution) read the block input once. The same holds for their gradients: the
//! weight gradients share the input, and the input gradients are summed, which one
//! convolution over concatenated output gradients does in one pass (gradient
//! accumulation).
//!
//! Each output channel is the same dot product either way, so merged forward
//! convolutions are exact up to the order a GEMM sums in; the merged input gradient
//! sums the two contributions inside one reduction instead of after two, a rounding
//! difference of the same order.

use super::{multi_rule, rule, Rhs, Rule};
use calib_ir::Op;
use egg::Id;

pub fn rules() -> Vec<Rule> {
    vec![
        // conv(x, w1), conv(x, w2)  =>  conv(x, [w1; w2])[:, :o1], [:, o1:]
        multi_rule(
            "merge-sibling-convs",
            "?a = (conv2d ?x ?w1), ?b = (conv2d ?x ?w2)",
            |r| {
                let (a, b, x) = pair(r)?;
                let (w1, w2) = (r.var("?w1"), r.var("?w2"));
                let conv = same_ungrouped(r, "conv2d", a, b, &[x, w1], &[x, w2])?;
                let w = concat(r, &[w1, w2], 0)?;
                let merged = r.add(conv, &[x, w])?;
                split(r, merged, 1, a, b)
            },
        ),
        // dW1 = bw(x, g1), dW2 = bw(x, g2)  =>  bw(x, [g1, g2])[:o1], [o1:]
        multi_rule(
            "merge-weight-grads",
            "?a = (conv2d_backward_weight ?x ?g1), ?b = (conv2d_backward_weight ?x ?g2)",
            |r| {
                // Either way round: the order of the gradients picks one ([`gradients`]).
                let (a, b) = (r.egraph.find(r.var("?a")), r.egraph.find(r.var("?b")));
                let x = r.var("?x");
                (a != b).then_some(())?;
                let (g1, g2) = (r.var("?g1"), r.var("?g2"));
                let bw = same_ungrouped(r, "conv2d_backward_weight", a, b, &[x, g1], &[x, g2])?;
                let g = gradients(r, g1, g2)?;
                let merged = r.add(bw, &[x, g])?;
                split(r, merged, 0, a, b)
            },
        ),
        // bw(g1, w1) + bw(g2, w2)  =>  bw([g1, g2], [w1; w2])
        rule("merge-data-grads", "(add ?d1 ?d2)", |r| {
            let (d1, d2) = (r.var("?d1"), r.var("?d2"));
            data_grads(r, d1, d2)
        }),
        // (acc + bw(g1, w1)) + bw(g2, w2)  =>  acc + bw([g1, g2], [w1; w2]): autodiff
        // accumulates a value's gradient one reader at a time.
        rule("merge-data-grads-acc", "(add (add ?acc ?d1) ?d2)", |r| {
            let (acc, d1, d2) = (r.var("?acc"), r.var("?d1"), r.var("?d2"));
            let merged = data_grads(r, d1, d2)?;
            r.add(Op::Add, &[acc, merged])
        }),
    ]
}

/// One `conv2d_backward_data` over the concatenated operands of those in classes `a`
/// and `b`, ordered by weight (a sum does not care which comes first), as the merged
/// forward convolution concatenates the weights and `merge-weight-grads` the output
/// gradients ([`weight_of`]): the three merged ops then read one concatenation of each,
/// which a plan stores once.
fn data_grads(r: &mut Rhs, a: Id, b: Id) -> Option<Id> {
    let (op, x) = r.op(a, "conv2d_backward_data")?;
    let (other, y) = r.op(b, "conv2d_backward_data")?;
    (op == other && ungrouped(&op) && r.ty(a).dtype == r.ty(b).dtype).then_some(())?;
    let (x, y) = if x[1] <= y[1] { (x, y) } else { (y, x) };
    let w = concat(r, &[x[1], y[1]], 0)?;
    let g = concat_in_order(r, &[x[0], y[0]], 1, false)?;
    r.add(op, &[g, w])
}

/// The weight of a `conv2d_backward_data` that reads output gradient `g` (its
/// convolution's), where one does: the first layer's has none.
fn weight_of(r: &Rhs, g: Id) -> Option<Id> {
    let g = r.egraph.find(g);
    r.egraph[g].parents().find_map(|p| {
        let node = r.egraph.id_to_node(p);
        let reads =
            node.kind() == Some("conv2d_backward_data") && r.egraph.find(node.children[0]) == g;
        reads.then(|| r.egraph.find(node.children[1]))
    })
}

/// `[g1, g2]` along the channels for merged weight gradients, flattened as [`concat`]
/// does, in the order of the weights the gradients' input gradients read
/// ([`weight_of`]; the order `merge-data-grads` concatenates the same gradients in),
/// else of the gradients' classes.
fn gradients(r: &mut Rhs, g1: Id, g2: Id) -> Option<Id> {
    let weights = |r: &Rhs, id: Id| -> Option<Vec<Id>> {
        parts(r, id, 1)
            .into_iter()
            .map(|g| weight_of(r, g))
            .collect()
    };
    match (weights(r, g1), weights(r, g2)) {
        (Some(w1), Some(w2)) => {
            (w1.iter().max()? < w2.iter().min()?).then_some(())?;
            concat_in_order(r, &[g1, g2], 1, false)
        }
        _ => concat(r, &[g1, g2], 1),
    }
}

/// The two matched classes (ordered, so each pair merges once) and the shared operand.
fn pair(r: &Rhs) -> Option<(Id, Id, Id)> {
    let (a, b) = (r.egraph.find(r.var("?a")), r.egraph.find(r.var("?b")));
    (a < b).then_some((a, b, r.var("?x")))
}

/// The op shared by `kind` nodes over `xs` in class `a` and over `ys` in class `b`, if
/// their attributes agree and they have one group.
fn same_ungrouped(r: &Rhs, kind: &str, a: Id, b: Id, xs: &[Id], ys: &[Id]) -> Option<Op> {
    let (p, q) = (r.op_over(a, kind, xs)?, r.op_over(b, kind, ys)?);
    (p == q && ungrouped(&p) && r.ty(a).dtype == r.ty(b).dtype).then_some(p)
}

/// Whether a convolution (or adjoint) has one group: grouped weights do not concatenate.
fn ungrouped(op: &Op) -> bool {
    matches!(
        op,
        Op::Conv2d { groups: 1, .. }
            | Op::Conv2dBackwardData { groups: 1, .. }
            | Op::Conv2dBackwardWeight { groups: 1, .. }
    )
}

/// `[a; b]` along `axis`, flattened (merging a merged weight with a third keeps one
/// concat of three), and only when every part of `a` precedes every part of `b`: each
/// set of siblings then merges once, in one order, and never with itself.
fn concat(r: &mut Rhs, pair: &[Id], axis: usize) -> Option<Id> {
    concat_in_order(r, pair, axis, true)
}

/// [`concat`] without the order check, for the operand that follows another's order.
fn concat_in_order(r: &mut Rhs, pair: &[Id], axis: usize, check: bool) -> Option<Id> {
    let (first, second) = (parts(r, pair[0], axis), parts(r, pair[1], axis));
    let ordered = !check || first.iter().max()? < second.iter().min()?;
    (ordered && first.len() + second.len() <= MAX_SIBLINGS).then_some(())?;
    r.add(Op::Concat { axis }, &[first, second].concat())
}

/// The parts of class `id` as a concatenation along `axis` has them: its operands, or
/// itself where it is none (a merged operand flattens into the next merge).
fn parts(r: &Rhs, id: Id, axis: usize) -> Vec<Id> {
    match r.op(id, "concat") {
        Some((Op::Concat { axis: a }, parts)) if a == axis => parts,
        _ => vec![id],
    }
}

/// The most convolutions merged into one.
const MAX_SIBLINGS: usize = 4;

/// Unions `a` and `b` with the two slices of `merged` along `axis`.
fn split(r: &mut Rhs, merged: Id, axis: usize, a: Id, b: Id) -> Option<Vec<(Id, Id)>> {
    let first = r.ty(a).shape[axis];
    let total = r.ty(merged).shape[axis];
    let sa = r.add(
        Op::Slice {
            axis,
            start: 0,
            end: first,
        },
        &[merged],
    )?;
    let sb = r.add(
        Op::Slice {
            axis,
            start: first,
            end: total,
        },
        &[merged],
    )?;
    Some(vec![(a, sa), (b, sb)])
}
