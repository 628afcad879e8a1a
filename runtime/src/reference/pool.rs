//! Average and max pooling with PyTorch's window rules, and their adjoints; one plane
//! per rayon task.
//!
//! A window along one axis starts at `o * stride - pad` and spans `kernel` positions,
//! cut at `input + pad` (with `ceil_mode` the last window may run past the padded edge,
//! and those positions count for nothing). Average pooling divides by the window cut at
//! the padded edge when `count_include_pad`, else by the real positions only. Windows
//! are tabulated per axis once, so the inner loops only add or compare.

use super::dispatch::elems;
use crate::{Element, Float, HostTensor, OpError, Storage};
use calib_ir::Op;
use rayon::prelude::*;

/// Kernel, stride and padding per spatial axis `[h, w]`.
#[derive(Clone, Copy, Debug)]
struct Window {
    kernel: [usize; 2],
    stride: [usize; 2],
    padding: [usize; 2],
}

impl Window {
    /// The window of any pooling op or adjoint. `ceil_mode` needs no field: it only
    /// decides the output size, which the result type already gives.
    fn of(op: &Op) -> Option<Window> {
        match *op {
            Op::AvgPool2d {
                kernel,
                stride,
                padding,
                ..
            }
            | Op::MaxPool2d {
                kernel,
                stride,
                padding,
                ..
            }
            | Op::AvgPool2dBackward {
                kernel,
                stride,
                padding,
                ..
            }
            | Op::MaxPool2dBackward {
                kernel,
                stride,
                padding,
                ..
            } => Some(Window {
                kernel,
                stride,
                padding,
            }),
            _ => None,
        }
    }
}

#[derive(Clone, Copy, Debug)]
enum Kind {
    Avg { count_include_pad: bool },
    Max,
}

/// One output position's window along one axis: the input range `lo..hi` it reads and
/// its length counting padding (but not positions past the padded edge).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Span {
    lo: usize,
    hi: usize,
    padded: usize,
}

fn spans(out: usize, input: usize, kernel: usize, stride: usize, pad: usize) -> Vec<Span> {
    (0..out)
        .map(|o| {
            let start = (o * stride) as isize - pad as isize;
            let end = (start + kernel as isize).min((input + pad) as isize);
            let (lo, hi) = (start.max(0) as usize, end.clamp(0, input as isize) as usize);
            Span {
                lo,
                hi: hi.max(lo),
                padded: (end - start) as usize,
            }
        })
        .collect()
}

/// The windows of a pooling op: per-axis spans and the input plane they read.
struct Windows {
    rows: Vec<Span>,
    cols: Vec<Span>,
    w: usize,
    in_plane: usize,
}

impl Windows {
    /// For an input of spatial size `[h, w]` pooled to `[oh, ow]`.
    fn new(win: &Window, [h, w]: [usize; 2], [oh, ow]: [usize; 2]) -> Self {
        Windows {
            rows: spans(oh, h, win.kernel[0], win.stride[0], win.padding[0]),
            cols: spans(ow, w, win.kernel[1], win.stride[1], win.padding[1]),
            w,
            in_plane: h * w,
        }
    }

    fn out_plane(&self) -> usize {
        self.rows.len() * self.cols.len()
    }

    /// Calls `f(output index, rows, cols)` for every window of a plane, row-major.
    fn for_each(&self, mut f: impl FnMut(usize, &Span, &Span)) {
        for (i, r) in self.rows.iter().enumerate() {
            for (j, c) in self.cols.iter().enumerate() {
                f(i * self.cols.len() + j, r, c);
            }
        }
    }

    /// The plane offsets a window covers, row-major.
    fn offsets<'a>(&self, r: &'a Span, c: &'a Span) -> impl Iterator<Item = usize> + 'a {
        let w = self.w;
        (r.lo..r.hi).flat_map(move |i| i * w + c.lo..i * w + c.hi)
    }

    fn divisor(&self, r: &Span, c: &Span, count_include_pad: bool) -> usize {
        if count_include_pad {
            r.padded * c.padded
        } else {
            (r.hi - r.lo) * (c.hi - c.lo)
        }
    }
}

/// The input spatial size of a pooling op and its output spatial size.
fn spatial(x: &[usize], y: &[usize]) -> ([usize; 2], [usize; 2]) {
    ([x[2], x[3]], [y[2], y[3]])
}

/// Evaluates a pooling op or its adjoint (operand `dy`, or `x` and `dy` for max
/// pooling); `y` is the result shape.
pub(super) fn eval(op: &Op, x: &[&HostTensor], y: &[usize]) -> Result<Storage, OpError> {
    let win = Window::of(op).ok_or(OpError::NotComputed(op.name()))?;
    match *op {
        Op::AvgPool2d {
            count_include_pad, ..
        } => forward(x[0], y, &win, Kind::Avg { count_include_pad }),
        Op::MaxPool2d { .. } => forward(x[0], y, &win, Kind::Max),
        Op::AvgPool2dBackward {
            count_include_pad, ..
        } => avg_backward(x[0], y, &win, count_include_pad),
        _ => max_backward(x[0], x[1], &win),
    }
}

/// `y = pool(x)`; `y_shape` is the result shape.
fn forward(
    x: &HostTensor,
    y_shape: &[usize],
    win: &Window,
    kind: Kind,
) -> Result<Storage, OpError> {
    let (input, output) = spatial(x.shape(), y_shape);
    let ws = Windows::new(win, input, output);
    dispatch_float!(x.storage(), E => Ok(E::wrap(forward_typed::<E>(elems(x)?, &ws, kind))))
}

fn forward_typed<E: Float>(x: &[E], ws: &Windows, kind: Kind) -> Vec<E> {
    let (in_plane, out_plane) = (ws.in_plane.max(1), ws.out_plane().max(1));
    let mut y = vec![E::ZERO; x.len() / in_plane * out_plane];
    y.par_chunks_mut(out_plane)
        .zip(x.par_chunks(in_plane))
        .for_each(|(y, x)| {
            ws.for_each(|o, r, c| {
                let window = ws.offsets(r, c).map(|i| x[i]);
                y[o] = match kind {
                    Kind::Max => window.fold(E::LOWEST, E::max_nan),
                    Kind::Avg { count_include_pad } => {
                        window.fold(E::ZERO, |s, v| s + v)
                            / E::from_f64(ws.divisor(r, c, count_include_pad) as f64)
                    }
                };
            });
        });
    y
}

/// `dx` of average pooling: each output gradient spread evenly over its window.
fn avg_backward(
    dy: &HostTensor,
    x_shape: &[usize],
    win: &Window,
    count_include_pad: bool,
) -> Result<Storage, OpError> {
    let (input, output) = spatial(x_shape, dy.shape());
    let ws = Windows::new(win, input, output);
    dispatch_float!(dy.storage(), E => {
        let dy = elems::<E>(dy)?;
        Ok(E::wrap(scatter::<E>(dy, None, &ws, |dx, _, o, r, c| {
            let share = dy[o] / E::from_f64(ws.divisor(r, c, count_include_pad) as f64);
            ws.offsets(r, c).for_each(|i| dx[i] += share);
        })))
    })
}

/// `dx` of max pooling: each output gradient goes to the first maximum of its window
/// in row-major order (a NaN counts as the maximum), as PyTorch does.
fn max_backward(x: &HostTensor, dy: &HostTensor, win: &Window) -> Result<Storage, OpError> {
    let (input, output) = spatial(x.shape(), dy.shape());
    let ws = Windows::new(win, input, output);
    dispatch_float!(x.storage(), E => {
        let dy = elems::<E>(dy)?;
        Ok(E::wrap(scatter::<E>(dy, Some(elems::<E>(x)?), &ws, |dx, x, o, r, c| {
            let mut best: Option<(usize, E)> = None;
            for i in ws.offsets(r, c) {
                let v = x[i];
                let better = match best {
                    None => true,
                    Some((_, b)) => !b.is_nan() && (v > b || v.is_nan()),
                };
                if better {
                    best = Some((i, v));
                }
            }
            if let Some((i, _)) = best {
                dx[i] += dy[o];
            }
        })))
    })
}

/// Builds `dx` plane by plane (in parallel): `add(dx_plane, x_plane, plane_offset, ..)`
/// is called for every window; `dy` is indexed by `plane_offset + o`.
fn scatter<E: Float>(
    dy: &[E],
    x: Option<&[E]>,
    ws: &Windows,
    add: impl Fn(&mut [E], &[E], usize, &Span, &Span) + Sync,
) -> Vec<E> {
    let (in_plane, out_plane) = (ws.in_plane.max(1), ws.out_plane().max(1));
    let planes = dy.len() / out_plane;
    let mut dx = vec![E::ZERO; planes * in_plane];
    dx.par_chunks_mut(in_plane).enumerate().for_each(|(p, dx)| {
        let x = x.map_or(&[][..], |x| &x[p * in_plane..(p + 1) * in_plane]);
        ws.for_each(|o, r, c| add(dx, x, p * out_plane + o, r, c));
    });
    dx
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ceil_mode_window_is_cut_at_the_padded_edge() {
        // input 5, kernel 2, stride 2, no padding, ceil_mode: 3 windows, the last reads
        // only position 4 and the position past the input counts for nothing.
        let s = spans(3, 5, 2, 2, 0);
        assert_eq!(
            s[2],
            Span {
                lo: 4,
                hi: 5,
                padded: 1
            }
        );
        // input 4, kernel 3, stride 2, pad 1: windows start at -1 and 1.
        let s = spans(2, 4, 3, 2, 1);
        assert_eq!(
            s,
            vec![
                Span {
                    lo: 0,
                    hi: 2,
                    padded: 3
                },
                Span {
                    lo: 1,
                    hi: 4,
                    padded: 3
                }
            ]
        );
    }
}
