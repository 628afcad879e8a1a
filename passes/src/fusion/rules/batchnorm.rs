//! BatchNorm rewrites: eval-mode BN folded into the convolution's weights, and
//! train-mode batch variance in one pass over shifted data, so that both statistics
//! become sibling reductions of the convolution's output, read once.
//!
//! Neither holds exactly in floating point (both stay far inside the fixtures'
//! tolerances, which the fixture and differential tests check):
//! * folding computes `conv(x, w * s)` instead of `conv(x, w) * s`, and adds the
//!   constants `b - m * s` as one bias: one extra rounding per weight and per channel
//!   (under a precision policy the folded weights are rounded to its format again, as
//!   the original ones were: the GEMM never multiplies unrounded operands);
//! * `E[(y - E[y])^2]` becomes `E[d^2] - E[d]^2` with `d = y - k` and `k` the channel's
//!   first element. Without the shift (`E[y^2] - E[y]^2`) the subtraction cancels every
//!   bit the mean's size takes from the spread: a channel with mean 1e3 times its
//!   standard deviation loses 20 bits, all of f32's precision. `k` is a sample of the
//!   channel, so `E[d]` is a few standard deviations at most and the form loses a few
//!   bits whatever the mean (the shifted-data algorithm for the variance).

use super::{multi_rule, rule, Rhs, Rule};
use calib_ir::{DType, Op};
use egg::Id;

/// `(cast(_, P), w)` when class `x` is the round trip `cast(cast(w, P), f32)` of the
/// precision policy (`passes::precision`).
fn rounded_source(r: &Rhs, x: Id) -> Option<(Op, Id)> {
    let (wide, inner) = r.op(x, "cast")?;
    (wide == Op::Cast { to: DType::F32 }).then_some(())?;
    let (narrow, source) = r.op(inner[0], "cast")?;
    matches!(
        narrow,
        Op::Cast {
            to: DType::BF16 | DType::TF32
        }
    )
    .then_some((narrow, source[0]))
}

pub fn rules() -> Vec<Rule> {
    vec![
        // (conv(x, w) - m) * s  =>  conv(x, w * s) + (-(m * s)), for per-channel
        // parameters m, s (eval-mode BN: m the running mean, s = w_bn / sqrt(var + eps)).
        rule(
            "bn-fold-eval",
            "(mul (sub ?y (broadcast ?m)) (broadcast ?s))",
            |r| {
                let (y, m, s) = (r.var("?y"), r.var("?m"), r.var("?s"));
                let (conv, operands) = r.op(y, "conv2d")?;
                let out = r.ty(y).shape.clone();
                let per_channel = vec![1, out[1], 1, 1];
                let foldable = r.params_only(m) && r.params_only(s) && r.params_only(operands[1]);
                (foldable && r.ty(m).shape == per_channel && r.ty(s).shape == per_channel)
                    .then_some(())?;
                let w_shape = r.ty(operands[1]).shape.clone();
                let s_col = r.add(
                    Op::Reshape {
                        shape: vec![out[1], 1, 1, 1],
                    },
                    &[s],
                )?;
                let s_w = r.add(Op::Broadcast { shape: w_shape }, &[s_col])?;
                // Under a precision policy the weights reach the GEMM rounded,
                // `cast(cast(w, P), f32)`: the folded weights are folded from `w` in f32
                // and rounded again, so the product still multiplies rounded operands.
                let w = match rounded_source(r, operands[1]) {
                    Some((narrow, w0)) => {
                        let w = r.add(Op::Mul, &[w0, s_w])?;
                        let low = r.add(narrow, &[w])?;
                        r.add(Op::Cast { to: DType::F32 }, &[low])?
                    }
                    None => r.add(Op::Mul, &[operands[1], s_w])?,
                };
                let folded = r.add(conv, &[operands[0], w])?;
                let ms = r.add(Op::Mul, &[m, s])?;
                let shift = r.add(Op::Neg, &[ms])?;
                let shift = r.add(Op::Broadcast { shape: out }, &[shift])?;
                r.add(Op::Add, &[folded, shift])
            },
        ),
        // (y + a) + b  =>  y + (a + b) for parameter-only a, b: two biases become one.
        rule(
            "bias-combine",
            "(add (add ?y (broadcast ?a)) (broadcast ?b))",
            |r| {
                let (y, a, b) = (r.var("?y"), r.var("?a"), r.var("?b"));
                (r.params_only(a) && r.params_only(b) && r.ty(a) == r.ty(b)).then_some(())?;
                let shape = r.ty(y).shape.clone();
                let ab = r.add(Op::Add, &[a, b])?;
                let ab = r.add(Op::Broadcast { shape }, &[ab])?;
                r.add(Op::Add, &[y, ab])
            },
        ),
        // mean((y - mean(y))^2)  =>  mean(d^2) - mean(d)^2  and  mean(y)  =>  mean(d) + k,
        // with d = y - k and k the first element of each channel, over the same axes.
        // (The square's operand is a variable: egg looks a repeated sub-pattern up by
        // exact node, which an attribute-free pattern node never is.)
        multi_rule(
            "bn-variance-shifted",
            "?v = (reduce_mean (mul ?c ?c))",
            |r| {
                let (v, c) = (r.var("?v"), r.var("?c"));
                let (_, yb) = r.op(c, "sub")?;
                let (_, m) = r.op(yb[1], "broadcast")?;
                let (mean, of) = r.op(m[0], "reduce_mean")?;
                let Op::ReduceMean {
                    keepdims: true,
                    axes,
                } = &mean
                else {
                    return None;
                };
                (of[0] == yb[0] && r.op(v, "reduce_mean")?.0 == mean).then_some(())?;
                let y = yb[0];
                let (first, shift) = shift_of(r, y, &axes.clone())?;
                let d = r.add(Op::Sub, &[y, shift])?;
                let dd = r.add(Op::Mul, &[d, d])?;
                let mean_dd = r.add(mean.clone(), &[dd])?;
                let mean_d = r.add(mean, &[d])?;
                let square = r.add(Op::Mul, &[mean_d, mean_d])?;
                let var = r.add(Op::Sub, &[mean_dd, square])?;
                let shifted_mean = r.add(Op::Add, &[mean_d, first])?;
                r.supersede(v, "reduce_mean");
                r.supersede_over(m[0], "reduce_mean", &[y]);
                Some(vec![(v, var), (m[0], shifted_mean)])
            },
        ),
    ]
}

/// The shift of `y`'s statistics over `axes` (the reduced ones): each channel's first
/// element `k`, as a `[1, C, 1, 1]`-like view, and `k` broadcast to `y`'s shape. Slices
/// of the value the statistics reduce: the kernel that accumulates them reads the stored
/// result back, so the shift costs one load per channel. (For a branch of merged
/// sibling convolutions, `sample-inside-slice` and `broadcast-of-slice` make the shift
/// a slice of the merged output's, and the statistics slices of one reduction.)
fn shift_of(r: &mut Rhs, y: Id, axes: &[usize]) -> Option<(Id, Id)> {
    let mut first = y;
    for &axis in axes {
        if r.ty(first).shape[axis] > 1 {
            let slice = Op::Slice {
                axis,
                start: 0,
                end: 1,
            };
            first = r.add(slice, &[first])?;
        }
    }
    let shape = r.ty(y).shape.clone();
    let shift = r.add(Op::Broadcast { shape }, &[first])?;
    Some((first, shift))
}
