//! Nearest-neighbour resize with PyTorch's legacy `nearest` rule: output index `d` reads
//! source index `min(floor(d * in / out), in - 1)`. The floor is taken in integers, so
//! no float rounding can move a sample (it would for e.g. `in / out = 1/3` in f32).
//! The adjoint scatters gradients back through the same index maps.

use super::dispatch::elems;
use crate::{Element, Float, HostTensor, OpError, Storage};
use rayon::prelude::*;

/// The source index read by each output index along one axis.
pub(super) fn source_indices(input: usize, out: usize) -> Vec<usize> {
    (0..out).map(|d| (d * input / out).min(input - 1)).collect()
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
}
