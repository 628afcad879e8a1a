//! Pooling, its adjoints and the adjoint of nearest resizing, one output element at a
//! time with the window as a loop: the pool family is the pointwise kernel around these.
//!
//! PyTorch's window rules (see the reference interpreter's `pool.rs`): a window starts at
//! `o * s - p`, is cut at `input + p`, and average pooling divides by the cut window
//! (`count_include_pad`) or by its positions inside the input. The adjoints gather: an
//! input position sums over the windows that contain it (`window::Axis::output_pos`).

mod max_adjoint;
mod max_run;

use crate::error::Result;
use crate::eval::{Emitter, Run};
use crate::flow::Check;
use crate::index::{self, Index};
use crate::ptx::{ins, Operand, Reg, Ty};
use crate::window::Axis;
use calib_ir::{Layout, Op, Value};
pub(crate) use max_adjoint::branching_column_stride;
use max_adjoint::{max_pool_backward, Row};

/// The smallest f32, the reference's starting point for a window maximum.
const LOWEST: Operand = Operand::F32(0xFF7F_FFFF);

/// Pooling node `v` (or `resize_nearest_backward`) at `at`.
pub(crate) fn serial(cx: &mut Emitter, v: Value, at: &Index) -> Result<Operand> {
    let node = cx.node(v);
    let shape = node.ty.shape.clone();
    let coords = cx.coords(at, &shape);
    let first = &cx.ty(node.inputs[0]).shape;
    let axes = window_axes;
    match node.op {
        Op::AvgPool2d {
            kernel,
            stride,
            padding,
            count_include_pad,
            ..
        } => {
            let w = axes(stride, padding, first, &shape);
            avg_pool(cx, node.inputs[0], &coords, w, kernel, count_include_pad)
        }
        Op::MaxPool2d {
            kernel,
            stride,
            padding,
            ..
        } => {
            let w = axes(stride, padding, first, &shape);
            max_pool(cx, node.inputs[0], &coords, w, kernel)
        }
        Op::AvgPool2dBackward {
            kernel,
            stride,
            padding,
            count_include_pad,
            ..
        } => {
            let w = axes(stride, padding, &shape, first);
            avg_pool_backward(cx, node.inputs[0], &coords, w, kernel, count_include_pad)
        }
        Op::MaxPool2dBackward {
            kernel,
            stride,
            padding,
            ..
        } => {
            let pooled = &cx.ty(node.inputs[1]).shape;
            let w = axes(stride, padding, &shape, pooled);
            let inputs = [node.inputs[0], node.inputs[1]];
            let acc = max_pool_backward(cx, inputs, &[coords], Row::Alone, w, kernel)?;
            Ok(acc[0].into())
        }
        Op::ResizeNearestBackward { .. } => resize_backward(cx, node.inputs[0], &coords, &shape),
        _ => Err(cx.unsupported(v, "not a pooling op")),
    }
}

/// The window along rows and columns, between the pooled image and the pooled result.
fn window_axes(
    stride: [usize; 2],
    padding: [usize; 2],
    image: &[usize],
    pooled: &[usize],
) -> [Axis; 2] {
    [0, 1].map(|a| Axis {
        stride: stride[a],
        padding: padding[a],
        dilation: 1,
        input: image[2 + a],
        output: pooled[2 + a],
    })
}

/// Computes every max-pooling adjoint of `shape` that `outputs` read at all the
/// elements of `run` at once, where a run can ([`max_adjoint::Row::Run`]: runs along a
/// row-major image's rows; [`max_adjoint::Row::Channels`]: runs along a channels-last
/// image's channels), and binds each element's value: the run's positions then share
/// the branches and every load.
pub(crate) fn bind_runs(
    cx: &mut Emitter,
    outputs: &[Value],
    shape: &[usize],
    layout: Layout,
    run: &Run,
) -> Result<()> {
    // A run walks a row of a row-major image, or the channels of a channels-last one.
    let across_channels = layout == Layout::ChannelsLast;
    if !(layout.is_row_major() || across_channels) || run.walked != 1 || shape.len() != 4 {
        return Ok(());
    }
    // The run's positions are independent chains, as where the evaluator computes
    // them one by one.
    cx.b.parallel_chains(run.elements.len());
    let read = cx.reads(outputs);
    for (k, read) in read.into_iter().enumerate() {
        let v = Value(k);
        if !read || cx.is_stored(v) || cx.ty(v).shape != shape {
            continue;
        }
        let node = cx.node(v);
        let values = match node.op {
            Op::MaxPool2dBackward {
                kernel,
                stride,
                padding,
                ..
            } => {
                let inputs = [node.inputs[0], node.inputs[1]];
                let w = window_axes(stride, padding, shape, &cx.ty(inputs[1]).shape);
                let row = match across_channels {
                    true => Row::Channels,
                    false if max_adjoint::takes_runs(w, kernel, run.elements.len()) => {
                        Row::Run { shape, layout }
                    }
                    false => continue,
                };
                max_pool_backward(cx, inputs, run.elements, row, w, kernel)?
            }
            Op::MaxPool2d {
                kernel,
                stride,
                padding,
                ..
            } => {
                let x = node.inputs[0];
                let image = cx.ty(x).shape.clone();
                let w = window_axes(stride, padding, &image, shape);
                if across_channels || !max_run::takes_runs(w, kernel, run.elements.len()) {
                    continue;
                }
                max_run::max_pool_run(cx, x, &image, run, w, kernel)?
            }
            _ => continue,
        };
        for (at, value) in run.elements.iter().zip(values) {
            cx.bind(v, &Index::coords(at.clone()), value.into());
        }
    }
    cx.b.parallel_chains(1);
    Ok(())
}

/// The first column of the stretch of `len` columns `block` stretches after the one
/// from `first` (before it where negative), along a row of `width` columns that `len`
/// divides, clamped to the row's last stretch: it stays aligned for its vector load, and
/// columns past the row's ends are read from it and selected away.
fn stretch_start(
    cx: &mut Emitter,
    first: Operand,
    block: i64,
    len: usize,
    width: usize,
) -> Operand {
    let last = Operand::Int((width - len) as i64);
    let start = match block {
        0 => return first,
        b if b > 0 => cx.b.add_u32(first, Operand::Int(b * len as i64)),
        b => cx.b.sub_u32(first, Operand::Int(-b * len as i64)),
    };
    cx.b.min_u32(start, last)
}

/// How many positions of window `o` count for the average along `axis`: the window's
/// width wherever no window is cut (by the padded end, or by the padding where it does
/// not count).
fn divisor(cx: &mut Emitter, axis: &Axis, kernel: usize, o: Operand, include_pad: bool) -> Operand {
    let (s, p, input) = (axis.stride as i64, axis.padding as i64, axis.input as i64);
    let last_end = (axis.output as i64 - 1) * s + kernel as i64;
    let uncut = match include_pad {
        true => last_end <= input + 2 * p,
        false => p == 0 && last_end <= input,
    };
    if uncut {
        return Operand::Int(kernel as i64);
    }
    // In padded coordinates the window is [o*s, o*s + k), cut at input + 2p.
    let start = cx.b.mul_u32(o, Operand::Int(s));
    let end = cx.b.add_u32(start, Operand::Int(kernel as i64));
    if include_pad {
        let end = cx.b.min_u32(end, Operand::Int(input + 2 * p));
        return cx.b.sub_u32(end, start);
    }
    let end = cx.b.min_u32(end, Operand::Int(input + p));
    let lo = max_u32(cx, start, Operand::Int(p));
    cx.b.sub_u32(end, lo)
}

fn max_u32(cx: &mut Emitter, a: Operand, b: Operand) -> Operand {
    match (a.as_int(), b.as_int()) {
        (Some(x), Some(y)) => Operand::Int(x.max(y)),
        _ => {
            let d = cx.b.reg(Ty::U32);
            ins!(cx.b, "max.u32 {d}, {a}, {b}");
            d.into()
        }
    }
}

/// `1 / (dh * dw)` applied to `value`: divides as the reference does, by the product.
/// A constant power of two is a multiplication by its reciprocal, which is exact and so
/// rounds as the division does.
fn divide(cx: &mut Emitter, value: Operand, dh: Operand, dw: Operand) -> Reg {
    let count = cx.b.mul_u32(dh, dw);
    let count = match count.as_int() {
        Some(c) if c > 0 && (c as u64).is_power_of_two() => {
            let d = cx.b.reg(Ty::F32);
            let reciprocal = Operand::f32(1.0 / c as f32);
            ins!(cx.b, "mul.rn.f32 {d}, {value}, {reciprocal}");
            return d;
        }
        Some(c) => Operand::f32(c as f32),
        None => {
            let f = cx.b.reg(Ty::F32);
            ins!(cx.b, "cvt.rn.f32.u32 {f}, {count}");
            f.into()
        }
    };
    let d = cx.b.reg(Ty::F32);
    ins!(cx.b, "div.rn.f32 {d}, {value}, {count}");
    d
}

fn zero(cx: &mut Emitter) -> Reg {
    let acc = cx.b.reg(Ty::F32);
    ins!(cx.b, "mov.f32 {acc}, 0f00000000");
    acc
}

/// The input position a window tap reads along each axis, clamped into the image, and
/// whether the unclamped position lies inside it: every tap is loaded, the padding
/// selected away, so that a window's loads need no branches.
fn tap(cx: &mut Emitter, w: [Axis; 2], o: [Operand; 2], k: &[Operand]) -> ([Operand; 2], Check) {
    let (ih, ch) = w[0].input_pos(cx, o[0], k[0]);
    let (iw, cw) = w[1].input_pos(cx, o[1], k[1]);
    let inside = cx.all_of(vec![ch, cw]);
    let ih = cx.clamp_index(ih, w[0].input);
    let iw = cx.clamp_index(iw, w[1].input);
    ([ih, iw], inside)
}

fn avg_pool(
    cx: &mut Emitter,
    x: Value,
    at: &[Operand],
    w: [Axis; 2],
    kernel: [usize; 2],
    include_pad: bool,
) -> Result<Operand> {
    let acc = zero(cx);
    cx.for_each_small(&kernel, &mut |cx, k| {
        let ([ih, iw], inside) = tap(cx, w, [at[2], at[3]], k);
        let v = cx.select_or_zero(vec![inside], Ty::F32, |cx| {
            cx.value(x, &Index::coords(vec![at[0], at[1], ih, iw]))
        })?;
        ins!(cx.b, "add.rn.f32 {acc}, {acc}, {v}");
        Ok(())
    })?;
    let dh = divisor(cx, &w[0], kernel[0], at[2], include_pad);
    let dw = divisor(cx, &w[1], kernel[1], at[3], include_pad);
    Ok(divide(cx, acc.into(), dh, dw).into())
}

fn max_pool(
    cx: &mut Emitter,
    x: Value,
    at: &[Operand],
    w: [Axis; 2],
    kernel: [usize; 2],
) -> Result<Operand> {
    // `to_reg` of an immediate always moves it into a fresh register.
    let best = cx.b.materialize(LOWEST, Ty::F32);
    cx.for_each_small(&kernel, &mut |cx, k| {
        let ([ih, iw], inside) = tap(cx, w, [at[2], at[3]], k);
        // A tap in the padding reads as the lowest value, which never wins.
        let v = cx.select_or(vec![inside], Ty::F32, LOWEST, |cx| {
            cx.value(x, &Index::coords(vec![at[0], at[1], ih, iw]))
        })?;
        ins!(cx.b, "max.NaN.f32 {best}, {best}, {v}");
        Ok(())
    })?;
    Ok(best.into())
}

/// The window positions that contain input position `at` (spatial coordinates 2, 3):
/// calls `f(oh, ow, contains)` for each candidate, with the window position clamped
/// into range and whether the candidate really contains `at`. Along an axis of stride
/// `s` only the taps congruent to `at + padding` modulo `s` can reach `at`, so
/// `ceil(k / s)` candidates per axis are visited rather than all `k`.
fn windows_containing(
    cx: &mut Emitter,
    at: &[Operand],
    w: [Axis; 2],
    kernel: [usize; 2],
    f: &mut dyn FnMut(&mut Emitter, Operand, Operand, Check) -> Result<()>,
) -> Result<()> {
    let spans = [0, 1].map(|a| kernel[a].div_ceil(w[a].stride));
    // The first tap of each axis that lines up with `at`.
    let first = [0, 1].map(|a| {
        let shifted = cx.b.add_u32(at[2 + a], Operand::Int(w[a].padding as i64));
        cx.b.rem_u32(shifted, w[a].stride)
    });
    cx.for_each_small(&spans, &mut |cx, j| {
        let mut checks: Vec<Check> = vec![];
        let mut pos = [Operand::Int(0); 2];
        for a in 0..2 {
            let tap =
                cx.b.mad_u32(j[a], Operand::Int(w[a].stride as i64), first[a]);
            checks.push(cx.b.lt_u32(tap, Operand::Int(kernel[a] as i64)));
            let (o, valid) = w[a].output_pos(cx, at[2 + a], tap);
            // The tap lines up by construction; only the range checks remain.
            checks.push(valid[0]);
            pos[a] = cx.clamp_index(o, w[a].output);
        }
        let contains = cx.all_of(checks);
        f(cx, pos[0], pos[1], contains)
    })
}

fn avg_pool_backward(
    cx: &mut Emitter,
    dy: Value,
    at: &[Operand],
    w: [Axis; 2],
    kernel: [usize; 2],
    include_pad: bool,
) -> Result<Operand> {
    let acc = zero(cx);
    windows_containing(cx, at, w, kernel, &mut |cx, oh, ow, contains| {
        let share = cx.select_or_zero(vec![contains], Ty::F32, |cx| {
            let g = cx.value(dy, &Index::coords(vec![at[0], at[1], oh, ow]))?;
            let dh = divisor(cx, &w[0], kernel[0], oh, include_pad);
            let dw = divisor(cx, &w[1], kernel[1], ow, include_pad);
            Ok(divide(cx, g, dh, dw).into())
        })?;
        ins!(cx.b, "add.rn.f32 {acc}, {acc}, {share}");
        Ok(())
    })?;
    Ok(acc.into())
}

/// Resize adjoints whose candidates (per axis, times each other) are at most this many
/// are written out in full, each axis's checks computed once.
const UNROLLED_CANDIDATES: usize = 100;

/// Whether output position `pos` along an axis resized from `input` to `out` exists and
/// reads input position `at`.
fn reads_at(cx: &mut Emitter, pos: Operand, at: Operand, input: usize, out: usize) -> Check {
    let inside = cx.b.lt_u32(pos, Operand::Int(out as i64));
    let source = index::resize_source(&mut cx.b, pos, input, out);
    let reads = match (source.as_int(), at.as_int()) {
        (Some(s), Some(h)) => Err(s == h),
        _ => Ok(cx.b.setp("eq", Ty::U32, source, at)),
    };
    cx.all_of(vec![inside, reads])
}

/// Sums the gradients of every output pixel whose nearest source is `at`. Along each
/// axis those pixels are a run of at most `ceil(out / in)` indices near
/// `at * out / in`; the f32 index rule can move the run's ends by one, so a window two
/// wider, starting one before, is scanned and each candidate checked (each axis's
/// candidates once, where the pairs are few enough to write out). Upsampling by
/// powers of two along both axes reads exactly the `2^k` pixels from `at << k`
/// ([`index::power_of_two_upsampling`]): those are summed without a check, in the same
/// order.
fn resize_backward(
    cx: &mut Emitter,
    dy: Value,
    at: &[Operand],
    input: &[usize],
) -> Result<Operand> {
    let out = cx.ty(dy).shape.clone();
    let acc = zero(cx);
    let shifts = [0, 1].map(|a| index::power_of_two_upsampling(input[2 + a], out[2 + a]));
    if let [Some(kh), Some(kw)] = shifts {
        let starts = [(0, kh), (1, kw)].map(|(a, k)| cx.b.mul_u32(at[2 + a], Operand::Int(1 << k)));
        let block = [1 << kh, 1 << kw];
        cx.for_each_small(&block, &mut |cx, j| {
            let h = cx.b.add_u32(starts[0], j[0]);
            let w = cx.b.add_u32(starts[1], j[1]);
            let g = cx.value(dy, &Index::coords(vec![at[0], at[1], h, w]))?;
            ins!(cx.b, "add.rn.f32 {acc}, {acc}, {g}");
            Ok(())
        })?;
        return Ok(acc.into());
    }
    let spans = [0, 1].map(|a| out[2 + a].div_ceil(input[2 + a]) + 2);
    let starts = [0, 1].map(|a| {
        let scaled = cx.b.mul_u32(at[2 + a], Operand::Int(out[2 + a] as i64));
        let base = cx.b.div_u32(scaled, input[2 + a]);
        cx.b.sub_u32(base, Operand::Int(1))
    });
    if spans[0] * spans[1] <= UNROLLED_CANDIDATES {
        // Each axis's candidates, and whether each reads `at`, once an axis rather than
        // once a pair; the pairs in the same order as the loop below.
        let mut candidates: [Vec<(Operand, Check)>; 2] = [vec![], vec![]];
        for a in 0..2 {
            for j in 0..spans[a] {
                let pos = cx.b.add_u32(starts[a], Operand::Int(j as i64));
                let reads = reads_at(cx, pos, at[2 + a], input[2 + a], out[2 + a]);
                candidates[a].push((pos, reads));
            }
        }
        for &(h, reads_h) in &candidates[0] {
            for &(w, reads_w) in &candidates[1] {
                cx.when_all(vec![reads_h, reads_w], |cx| {
                    let g = cx.value(dy, &Index::coords(vec![at[0], at[1], h, w]))?;
                    ins!(cx.b, "add.rn.f32 {acc}, {acc}, {g}");
                    Ok(())
                })?;
            }
        }
        return Ok(acc.into());
    }
    cx.for_each(&spans, &mut |cx, j| {
        let mut checks = Vec::new();
        let mut pos = [Operand::Int(0); 2];
        for a in 0..2 {
            pos[a] = cx.b.add_u32(starts[a], j[a]);
            checks.push(reads_at(cx, pos[a], at[2 + a], input[2 + a], out[2 + a]));
        }
        cx.when_all(checks, |cx| {
            let g = cx.value(dy, &Index::coords(vec![at[0], at[1], pos[0], pos[1]]))?;
            ins!(cx.b, "add.rn.f32 {acc}, {acc}, {g}");
            Ok(())
        })
    })?;
    Ok(acc.into())
}
