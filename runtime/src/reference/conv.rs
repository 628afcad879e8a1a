//! NCHW convolution and its two adjoints, by im2col + GEMM.
//!
//! For image `n` and group `g`, the input patches unfold into a column matrix
//! `col [C/g * KH * KW, OH * OW]` and the group's weights `W [O/g, C/g * KH * KW]` give
//! `Y = W col`. The adjoints reuse the same matrices: `dcol = W^T dY` folded back onto
//! the input (col2im), and `dW = sum_n dY col^T`. A 1x1, stride-1, unpadded conv needs
//! no unfolding: the input planes already are the column matrix.

use super::dispatch::elems;
use crate::{Element, Float, HostTensor, OpError, Storage};
use calib_ir::Op;
use rayon::prelude::*;

/// The conv op's attributes, per spatial axis `[h, w]`.
#[derive(Clone, Copy, Debug)]
struct Params {
    stride: [usize; 2],
    padding: [usize; 2],
    dilation: [usize; 2],
    groups: usize,
}

impl Params {
    /// The attributes of any op of the conv family.
    fn of(op: &Op) -> Option<Params> {
        match *op {
            Op::Conv2d {
                stride,
                padding,
                dilation,
                groups,
            }
            | Op::Conv2dBackwardData {
                stride,
                padding,
                dilation,
                groups,
                ..
            }
            | Op::Conv2dBackwardWeight {
                stride,
                padding,
                dilation,
                groups,
                ..
            } => Some(Params {
                stride,
                padding,
                dilation,
                groups,
            }),
            _ => None,
        }
    }
}

/// All extents of one convolution, read from validated operand and result shapes.
#[derive(Clone, Copy, Debug)]
struct Geometry {
    n: usize,
    c: usize,
    h: usize,
    w: usize,
    o: usize,
    kh: usize,
    kw: usize,
    oh: usize,
    ow: usize,
    p: Params,
}

impl Geometry {
    /// From the shapes of the input `x`, the weight and the output `y` (all NCHW/OIHW).
    fn new(x: &[usize], weight: &[usize], y: &[usize], p: Params) -> Self {
        let (n, c, h, w) = (x[0], x[1], x[2], x[3]);
        Geometry {
            n,
            c,
            h,
            w,
            o: weight[0],
            kh: weight[2],
            kw: weight[3],
            oh: y[2],
            ow: y[3],
            p,
        }
    }
    fn group_in(&self) -> usize {
        self.c / self.p.groups
    }
    fn group_out(&self) -> usize {
        self.o / self.p.groups
    }
    /// Rows of the column matrix: one per (input channel of the group, ki, kj).
    fn patch(&self) -> usize {
        self.group_in() * self.kh * self.kw
    }
    fn in_plane(&self) -> usize {
        self.h * self.w
    }
    fn out_plane(&self) -> usize {
        self.oh * self.ow
    }
    fn is_pointwise(&self) -> bool {
        self.kh == 1 && self.kw == 1 && self.p.stride == [1, 1] && self.p.padding == [0, 0]
    }
    /// The column buffer one task needs (none for pointwise convs).
    fn col_len(&self) -> usize {
        if self.is_pointwise() {
            0
        } else {
            self.patch() * self.out_plane()
        }
    }
}

/// Evaluates `conv2d` (operands `x`, `w`) or one of its adjoints (`dy`, `w` for the data
/// gradient; `x`, `dy` for the weight gradient); `y` is the result shape.
pub(super) fn eval(op: &Op, x: &[&HostTensor], y: &[usize]) -> Result<Storage, OpError> {
    let p = Params::of(op).ok_or(OpError::NotComputed(op.name()))?;
    let (a, b) = (x[0].shape(), x[1].shape());
    match op {
        Op::Conv2d { .. } => forward(x[0], x[1], &Geometry::new(a, b, y, p)),
        Op::Conv2dBackwardData { .. } => backward_data(x[0], x[1], &Geometry::new(y, b, a, p)),
        _ => backward_weight(x[0], x[1], &Geometry::new(a, y, b, p)),
    }
}

/// Elements of scratch memory a conv-family node allocates besides its result when
/// `threads` tasks run at once: a column matrix per task, and for the weight gradient
/// a partial sum per chunk of images, all alive until they are added up. Operands and
/// result shapes as in [`eval`]; saturates rather than overflowing on absurd shapes.
pub(super) fn workspace_elements(
    op: &Op,
    a: &[usize],
    b: &[usize],
    y: &[usize],
    threads: usize,
) -> usize {
    let Some(p) = Params::of(op) else {
        return 0;
    };
    if [a, b, y].iter().any(|s| s.len() != 4) || p.groups == 0 {
        return 0;
    }
    let g = match op {
        Op::Conv2d { .. } => Geometry::new(a, b, y, p),
        Op::Conv2dBackwardData { .. } => Geometry::new(y, b, a, p),
        _ => Geometry::new(a, y, b, p),
    };
    let patch = (g.c / p.groups).saturating_mul(g.kh).saturating_mul(g.kw);
    let out_plane = g.oh.saturating_mul(g.ow);
    let col = if g.is_pointwise() {
        0
    } else {
        patch.saturating_mul(out_plane)
    };
    match op {
        Op::Conv2dBackwardWeight { .. } => {
            let partials =
                g.n.div_ceil(WEIGHT_GRAD_CHUNK)
                    .saturating_mul(g.o.saturating_mul(patch));
            let per_task = col.saturating_add(patch.saturating_mul(out_plane));
            partials.saturating_add(threads.saturating_mul(per_task))
        }
        _ => threads.saturating_mul(col),
    }
}

/// `y = conv2d(x, w)`.
fn forward(x: &HostTensor, w: &HostTensor, g: &Geometry) -> Result<Storage, OpError> {
    dispatch_float!(x.storage(), E => Ok(E::wrap(forward_typed::<E>(elems(x)?, elems(w)?, g))))
}

/// `dx` from `dy` and `w`.
fn backward_data(dy: &HostTensor, w: &HostTensor, g: &Geometry) -> Result<Storage, OpError> {
    dispatch_float!(dy.storage(), E => Ok(E::wrap(backward_data_typed::<E>(elems(dy)?, elems(w)?, g))))
}

/// `dw` from `x` and `dy`.
fn backward_weight(x: &HostTensor, dy: &HostTensor, g: &Geometry) -> Result<Storage, OpError> {
    dispatch_float!(x.storage(), E => Ok(E::wrap(backward_weight_typed::<E>(elems(x)?, elems(dy)?, g))))
}

fn forward_typed<E: Float>(x: &[E], w: &[E], g: &Geometry) -> Vec<E> {
    let (k, m, n) = (g.patch(), g.group_out(), g.out_plane());
    let group_in = g.group_in() * g.in_plane();
    let mut y = vec![E::ZERO; g.n * g.o * n];
    y.par_chunks_mut((g.o * n).max(1))
        .zip(x.par_chunks((g.c * g.in_plane()).max(1)))
        .for_each_init(
            || vec![E::ZERO; g.col_len()],
            |col, (y_img, x_img)| {
                for gi in 0..g.p.groups {
                    let x_grp = &x_img[gi * group_in..(gi + 1) * group_in];
                    let b: &[E] = if g.is_pointwise() {
                        x_grp
                    } else {
                        im2col(x_grp, g, col);
                        col
                    };
                    let a = &w[gi * m * k..(gi + 1) * m * k];
                    let c = &mut y_img[gi * m * n..(gi + 1) * m * n];
                    E::gemm(m, k, n, (a, k, 1), (b, n, 1), E::ZERO, (c, n, 1));
                }
            },
        );
    y
}

fn backward_data_typed<E: Float>(dy: &[E], w: &[E], g: &Geometry) -> Vec<E> {
    let (k, m, n) = (g.patch(), g.group_out(), g.out_plane());
    let group_in = g.group_in() * g.in_plane();
    let mut dx = vec![E::ZERO; g.n * g.c * g.in_plane()];
    dx.par_chunks_mut((g.c * g.in_plane()).max(1))
        .zip(dy.par_chunks((g.o * n).max(1)))
        .for_each_init(
            || vec![E::ZERO; g.col_len()],
            |col, (dx_img, dy_img)| {
                for gi in 0..g.p.groups {
                    // W^T: the stored [m, k] block read with swapped strides.
                    let wt = (&w[gi * m * k..(gi + 1) * m * k], 1, k);
                    let dy_grp = (&dy_img[gi * m * n..(gi + 1) * m * n], n, 1);
                    let dx_grp = &mut dx_img[gi * group_in..(gi + 1) * group_in];
                    if g.is_pointwise() {
                        E::gemm(k, m, n, wt, dy_grp, E::ZERO, (dx_grp, n, 1));
                    } else {
                        E::gemm(k, m, n, wt, dy_grp, E::ZERO, (col, n, 1));
                        col2im(col, g, dx_grp);
                    }
                }
            },
        );
    dx
}

/// Images per task of the weight gradient. Fixed, not derived from the thread count,
/// so the partial sums (and the result's last bits) do not depend on the machine.
const WEIGHT_GRAD_CHUNK: usize = 4;

fn backward_weight_typed<E: Float>(x: &[E], dy: &[E], g: &Geometry) -> Vec<E> {
    let (k, m, n) = (g.patch(), g.group_out(), g.out_plane());
    let (x_img, dy_img, group_in) = (g.c * g.in_plane(), g.o * n, g.group_in() * g.in_plane());
    let len = g.o * k;
    let partial = |images: std::ops::Range<usize>| {
        let mut dw = vec![E::ZERO; len];
        let (mut col, mut rows) = (vec![E::ZERO; g.col_len()], vec![E::ZERO; k * n]);
        for img in images {
            for gi in 0..g.p.groups {
                let x_grp = &x[img * x_img + gi * group_in..][..group_in];
                let col: &[E] = if g.is_pointwise() {
                    x_grp
                } else {
                    im2col(x_grp, g, &mut col);
                    &col
                };
                // GEMM packs a row-major right operand fastest, so col^T is materialized
                // rather than read through swapped strides (which is several times slower).
                transpose(col, k, n, &mut rows);
                let dy_grp = (&dy[img * dy_img + gi * m * n..][..m * n], n, 1);
                E::gemm(
                    m,
                    n,
                    k,
                    dy_grp,
                    (&rows, k, 1),
                    E::ONE,
                    (&mut dw[gi * m * k..(gi + 1) * m * k], k, 1),
                );
            }
        }
        dw
    };
    let chunks: Vec<_> = (0..g.n.div_ceil(WEIGHT_GRAD_CHUNK))
        .map(|c| c * WEIGHT_GRAD_CHUNK..((c + 1) * WEIGHT_GRAD_CHUNK).min(g.n))
        .collect();
    let partials: Vec<Vec<E>> = chunks.into_par_iter().map(partial).collect();
    let mut dw = vec![E::ZERO; len];
    for p in partials {
        dw.iter_mut().zip(p).for_each(|(a, b)| *a += b);
    }
    dw
}

/// `dst [cols, rows] = src [rows, cols]^T`, in tiles that stay in cache on both sides.
fn transpose<E: Element>(src: &[E], rows: usize, cols: usize, dst: &mut [E]) {
    const TILE: usize = 32;
    for r0 in (0..rows).step_by(TILE) {
        for c0 in (0..cols).step_by(TILE) {
            for r in r0..(r0 + TILE).min(rows) {
                for c in c0..(c0 + TILE).min(cols) {
                    dst[c * rows + r] = src[r * cols + c];
                }
            }
        }
    }
}

/// The output positions `lo..hi` along one axis whose input index
/// `o * stride + offset - pad` lands inside `0..input`.
fn valid_outputs(
    out: usize,
    input: usize,
    stride: usize,
    pad: usize,
    offset: usize,
) -> (usize, usize) {
    let lo = pad.saturating_sub(offset).div_ceil(stride).min(out);
    let hi = if input + pad > offset {
        ((input + pad - offset - 1) / stride + 1).min(out)
    } else {
        0
    };
    (lo, hi.max(lo))
}

/// Visits every row segment that im2col copies: `(column-matrix offset, input offset,
/// length)`, with input elements `stride` apart. Positions outside the segments read
/// padding. One walk serves both directions, so im2col and col2im cannot disagree.
fn for_each_segment(g: &Geometry, mut f: impl FnMut(usize, usize, usize)) {
    let ([sh, sw], [ph, pw], [dh, dw]) = (g.p.stride, g.p.padding, g.p.dilation);
    let mut row = 0;
    for c in 0..g.group_in() {
        for ki in 0..g.kh {
            let (y_lo, y_hi) = valid_outputs(g.oh, g.h, sh, ph, ki * dh);
            for kj in 0..g.kw {
                let (x_lo, x_hi) = valid_outputs(g.ow, g.w, sw, pw, kj * dw);
                if x_lo < x_hi {
                    for oy in y_lo..y_hi {
                        let iy = oy * sh + ki * dh - ph;
                        let ix = x_lo * sw + kj * dw - pw;
                        f(
                            row * g.out_plane() + oy * g.ow + x_lo,
                            (c * g.h + iy) * g.w + ix,
                            x_hi - x_lo,
                        );
                    }
                }
                row += 1;
            }
        }
    }
}

/// Unfolds one group of one image `[C/g, H, W]` into `col [C/g * KH * KW, OH * OW]`.
fn im2col<E: Element>(x: &[E], g: &Geometry, col: &mut [E]) {
    let sw = g.p.stride[1];
    col.fill(E::ZERO);
    for_each_segment(g, |dst, src, len| {
        let dst = &mut col[dst..dst + len];
        if sw == 1 {
            dst.copy_from_slice(&x[src..src + len]);
        } else {
            dst.iter_mut()
                .zip(x[src..].iter().step_by(sw))
                .for_each(|(d, &s)| *d = s);
        }
    });
}

/// The adjoint of [`im2col`]: adds every column entry onto the input position it was
/// read from (`x` must start zeroed).
fn col2im<E: Element>(col: &[E], g: &Geometry, x: &mut [E]) {
    let sw = g.p.stride[1];
    for_each_segment(g, |src, dst, len| {
        let src = &col[src..src + len];
        x[dst..]
            .iter_mut()
            .step_by(sw)
            .zip(src)
            .for_each(|(d, &s)| *d += s);
    });
}

#[cfg(test)]
mod tests {
    use super::valid_outputs;

    #[test]
    fn valid_output_ranges() {
        // in 5, k 3, pad 1, stride 1 -> out 5; tap 0 reads o-1: valid o in 1..5.
        assert_eq!(valid_outputs(5, 5, 1, 1, 0), (1, 5));
        // tap 2 reads o+1: valid o in 0..4.
        assert_eq!(valid_outputs(5, 5, 1, 1, 2), (0, 4));
        // in 5, stride 2, pad 1, tap 0 reads 2o-1: o = 1, 2 valid; out 3.
        assert_eq!(valid_outputs(3, 5, 2, 1, 0), (1, 3));
        // a tap entirely in the padding gives an empty range.
        assert_eq!(valid_outputs(2, 1, 1, 3, 0), (2, 2));
    }
}
