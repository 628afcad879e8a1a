//! Sum, mean and max over any set of axes. `keepdims` only changes the output shape, not
//! its memory, so the kernels ignore it.
//!
//! Sums accumulate in `f64` (`Element::Acc`) so that a BatchNorm mean over a large batch
//! is as accurate in the f32 interpreter as a pairwise sum would be.

use super::dispatch::elems;
use super::strided::{contiguous_strides, Walk};
use super::PAR_MIN;
use crate::{Element, HostTensor, OpError, Storage};
use rayon::prelude::*;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Kind {
    Sum,
    Mean,
    Max,
}

pub(super) fn reduce(x: &HostTensor, axes: &[usize], kind: Kind) -> Result<Storage, OpError> {
    if kind == Kind::Mean && !x.dtype().is_float() {
        return Err(OpError::Storage {
            found: "i64",
            expected: "a float",
        });
    }
    dispatch!(x.storage(), E => Ok(E::wrap(typed::<E>(elems(x)?, x.shape(), axes, kind))))
}

fn typed<E: Element>(x: &[E], shape: &[usize], axes: &[usize], kind: Kind) -> Vec<E> {
    let count: usize = axes.iter().map(|&a| shape[a]).product();
    let acc = match kind {
        Kind::Sum | Kind::Mean => {
            accumulate(x, shape, axes, <E::Acc as Element>::ZERO, |a, b| a + b)
        }
        Kind::Max => accumulate(x, shape, axes, <E::Acc as Element>::LOWEST, |a, b| {
            a.max_nan(b)
        }),
    };
    match kind {
        Kind::Mean => acc
            .into_iter()
            .map(|a| E::from_f64(a.to_f64() / count as f64))
            .collect(),
        _ => acc.into_iter().map(E::narrow).collect(),
    }
}

/// Number of pieces a large reduction is split into. Fixed, not the thread count, so
/// that the summation order (and so every bit of the result) is the same on any machine.
const PIECES: usize = 16;

/// Folds `x` into the kept-axes accumulator with `fold` (monomorphized, so the inner
/// loops vectorize). Large inputs are cut into [`PIECES`] ranges of runs, folded in
/// parallel and combined in order.
fn accumulate<E: Element>(
    x: &[E],
    shape: &[usize],
    axes: &[usize],
    init: E::Acc,
    fold: impl Fn(E::Acc, E::Acc) -> E::Acc + Sync + Copy,
) -> Vec<E::Acc> {
    let kept: Vec<usize> = (0..shape.len())
        .map(|a| if axes.contains(&a) { 1 } else { shape[a] })
        .collect();
    let mut out_strides = contiguous_strides(&kept);
    for &a in axes {
        out_strides[a] = 0;
    }
    let outputs: usize = kept.iter().product();
    let walk = Walk::new(shape, &out_strides);
    let (len, stride) = walk.run();
    let runs = walk.runs();
    let piece = |range: std::ops::Range<usize>| {
        let mut acc = vec![init; outputs];
        walk.for_each_run_in(range, |i, o| {
            let src = &x[i..i + len];
            if stride == 0 {
                acc[o] = fold(acc[o], fold_run(src, init, fold));
            } else {
                for (j, &v) in src.iter().enumerate() {
                    acc[o + j * stride] = fold(acc[o + j * stride], v.widen());
                }
            }
        });
        acc
    };
    if x.len() < PAR_MIN || runs < PIECES {
        return piece(0..runs);
    }
    let bounds: Vec<std::ops::Range<usize>> = (0..PIECES)
        .map(|p| p * runs / PIECES..(p + 1) * runs / PIECES)
        .collect();
    let partials: Vec<Vec<E::Acc>> = bounds.into_par_iter().map(piece).collect();
    let mut acc = vec![init; outputs];
    for part in partials {
        for (a, p) in acc.iter_mut().zip(part) {
            *a = fold(*a, p);
        }
    }
    acc
}

/// Folds one contiguous run with eight independent lanes, so the adds pipeline instead
/// of waiting on each other.
fn fold_run<E: Element>(
    src: &[E],
    init: E::Acc,
    fold: impl Fn(E::Acc, E::Acc) -> E::Acc,
) -> E::Acc {
    let mut lanes = [init; 8];
    let chunks = src.chunks_exact(8);
    let rest = chunks.remainder();
    for c in chunks {
        for k in 0..8 {
            lanes[k] = fold(lanes[k], c[k].widen());
        }
    }
    let mut acc = lanes.into_iter().fold(init, &fold);
    for &v in rest {
        acc = fold(acc, v.widen());
    }
    acc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_over_outer_and_inner_axes() {
        // [2,3,2]: element (n,c,w) = 100n + 10c + w.
        let x: Vec<f32> = (0..2)
            .flat_map(|n| {
                (0..3).flat_map(move |c| (0..2).map(move |w| (100 * n + 10 * c + w) as f32))
            })
            .collect();
        // Over n and w, per c: (0+1+100+101) + 4*10c.
        assert_eq!(
            typed(&x, &[2, 3, 2], &[0, 2], Kind::Sum),
            vec![202.0, 242.0, 282.0]
        );
        assert_eq!(
            typed(&x, &[2, 3, 2], &[0, 2], Kind::Mean),
            vec![50.5, 60.5, 70.5]
        );
        assert_eq!(
            typed(&x, &[2, 3, 2], &[1], Kind::Max),
            vec![20.0, 21.0, 120.0, 121.0]
        );
    }

    #[test]
    fn max_propagates_nan_and_handles_negatives() {
        assert_eq!(
            typed(&[-3.0f32, -1.0, -2.0], &[3], &[0], Kind::Max),
            vec![-1.0]
        );
        assert!(typed(&[1.0f32, f32::NAN, 2.0], &[3], &[0], Kind::Max)[0].is_nan());
    }
}
