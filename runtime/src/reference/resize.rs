//! Nearest-neighbour resize with PyTorch's legacy `nearest` rule: output index `d` reads
//! source index `min(floor(d * in / out), in - 1)`, computed as PyTorch computes it: the
//! scale `in / out` and the product `d * scale` in f32 (ATen's `nearest_idx`), with its
//! exact shortcuts for equal sizes and exact 2x upsampling. That float arithmetic is the
//! ground truth the fixtures were made with; see [`source_index`].
//! The adjoint scatters gradients back through the same index maps.

use super::dispatch::elems;
use crate::{Element, Float, HostTensor, OpError, Storage};
use rayon::prelude::*;

/// The source index that output index `d` reads along an axis resized from `input` to
/// `out`, bit-for-bit as PyTorch's legacy nearest computes it.
pub fn source_index(d: usize, input: usize, out: usize) -> usize {
    if out == input {
        return d;
    }
    if out == 2 * input {
        return d >> 1;
    }
    let scale = input as f32 / out as f32;
    ((d as f32 * scale).floor() as usize).min(input - 1)
}

/// The source index read by each output index along one axis.
pub(super) fn source_indices(input: usize, out: usize) -> Vec<usize> {
    (0..out).map(|d| source_index(d, input, out)).collect()
}

/// `y = resize(x)` to the spatial size of `y_shape`.
pub(super) fn forward(x: &HostTensor, y_shape: &[usize]) -> Result<Storage, OpError> {
    let s = x.shape();
    let rows = source_indices(s[2], y_shape[2]);
    let cols = source_indices(s[3], y_shape[3]);
    dispatch!(x.storage(), E => Ok(E::wrap(forward_typed::<E>(elems(x)?, [s[2], s[3]], &rows, &cols))))
}

/// `dx` of the resize to `dy`'s size: each source pixel sums the gradients of every
/// output pixel that read it.
pub(super) fn backward(dy: &HostTensor, x_shape: &[usize]) -> Result<Storage, OpError> {
    let s = dy.shape();
    let rows = source_indices(x_shape[2], s[2]);
    let cols = source_indices(x_shape[3], s[3]);
    dispatch_float!(dy.storage(), E => Ok(E::wrap(backward_typed::<E>(elems(dy)?, [x_shape[2], x_shape[3]], &rows, &cols))))
}

fn backward_typed<E: Float>(
    dy: &[E],
    [h, w]: [usize; 2],
    rows: &[usize],
    cols: &[usize],
) -> Vec<E> {
    let (in_plane, out_plane) = ((h * w).max(1), (rows.len() * cols.len()).max(1));
    let mut dx = vec![E::ZERO; dy.len() / out_plane * in_plane];
    dx.par_chunks_mut(in_plane)
        .zip(dy.par_chunks(out_plane))
        .for_each(|(dx, dy)| {
            for (&r, dy_row) in rows.iter().zip(dy.chunks_exact(cols.len())) {
                let dst = &mut dx[r * w..(r + 1) * w];
                for (&c, &g) in cols.iter().zip(dy_row) {
                    dst[c] += g;
                }
            }
        });
    dx
}

fn forward_typed<E: Element>(
    x: &[E],
    [h, w]: [usize; 2],
    rows: &[usize],
    cols: &[usize],
) -> Vec<E> {
    let (in_plane, out_plane) = ((h * w).max(1), (rows.len() * cols.len()).max(1));
    let mut y = vec![E::ZERO; x.len() / in_plane * out_plane];
    y.par_chunks_mut(out_plane)
        .zip(x.par_chunks(in_plane))
        .for_each(|(y, x)| {
            for (&r, y_row) in rows.iter().zip(y.chunks_exact_mut(cols.len())) {
                let src = &x[r * w..(r + 1) * w];
                for (&c, out) in cols.iter().zip(y_row) {
                    *out = src[c];
                }
            }
        });
    y
}

#[cfg(test)]
mod tests {
    use super::source_indices;

    #[test]
    fn legacy_rule_index_maps() {
        assert_eq!(source_indices(3, 7), vec![0, 0, 0, 1, 1, 2, 2]);
        assert_eq!(
            source_indices(4, 16),
            vec![0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3]
        );
        // Downsampling 7 -> 3 reads 0, floor(7/3) = 2, floor(14/3) = 4.
        assert_eq!(source_indices(7, 3), vec![0, 2, 4]);
    }

    #[test]
    fn float32_scale_is_what_pytorch_computes() {
        // 14 -> 46: the f32 scale 14/46 rounds down, so d = 23 lands at 6.9999995 and
        // PyTorch reads row 6 where exact rational arithmetic (23 * 14 / 46 = 7) says 7.
        assert_eq!(source_indices(14, 46)[23], 6);
        assert_eq!(source_indices(14, 46)[22], 6);
        assert_eq!(source_indices(14, 46)[24], 7);
        // 26 -> 22 (downsampling) at d = 11: 12, not 13.
        assert_eq!(source_indices(26, 22)[11], 12);
        // Exact 2x upsampling is a shift in ATen, never a float product.
        assert_eq!(source_indices(5, 10), vec![0, 0, 1, 1, 2, 2, 3, 3, 4, 4]);
    }
}
