//! BatchNorm rewrites: eval-mode BN folded into the convolution's weights, and
//! train-mode batch variance in one pass, so that both statistics become reductions
//! of the convolution's output that its kernel can accumulate.
//!
//! Neither holds exactly in floating point (both stay far inside the fixtures'
//! tolerances, which the fixture tests check):
//! * folding computes `conv(x, w * s)` instead of `conv(x, w) * s`, and adds the
//!   constants `b - m * s` as one bias: one extra rounding per weight and per channel;
//! * `E[(y - E[y])^2]` becomes `E[y^2] - E[y]^2`, which cancels when the mean is large
//!   against the spread. Convolution outputs in these networks have a mean of the order
//!   of their standard deviation, so the loss is a few bits.

use super::{rule, Rule};
use calib_ir::Op;

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
                let w = r.add(Op::Mul, &[operands[1], s_w])?;
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
        // mean((y - mean(y))^2)  =>  mean(y^2) - mean(y)^2, over the same axes. (The
        // square's operand is a variable: egg looks a repeated sub-pattern up by exact
        // node, which an attribute-free pattern node never is.)
        rule("bn-variance-one-pass", "(reduce_mean (mul ?c ?c))", |r| {
            let c = r.var("?c");
            let (_, yb) = r.op(c, "sub")?;
            let (_, m) = r.op(yb[1], "broadcast")?;
            let (mean, of) = r.op(m[0], "reduce_mean")?;
            let Op::ReduceMean { keepdims: true, .. } = &mean else {
                return None;
            };
            (of[0] == yb[0] && r.op(r.root, "reduce_mean")?.0 == mean).then_some(())?;
            let y = yb[0];
            let sq = r.add(Op::Mul, &[y, y])?;
            let mean_sq = r.add(mean, &[sq])?;
            let m2 = r.add(Op::Mul, &[m[0], m[0]])?;
            r.supersede(r.root, "reduce_mean");
            r.add(Op::Sub, &[mean_sq, m2])
        }),
    ]
}
