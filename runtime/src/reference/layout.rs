//! Data movement: broadcast, slice, concat, and one-hot encoding.

use super::dispatch::elems;
use super::strided::{contiguous_strides, Walk};
use crate::{Element, HostTensor, OpError, Precision, Storage};

/// Numpy broadcast of `x` to the shape `to` (operand axes aligned to the right).
pub(super) fn broadcast(x: &HostTensor, to: &[usize]) -> Result<Storage, OpError> {
    fn typed<E: Element>(x: &[E], from: &[usize], to: &[usize]) -> Vec<E> {
        let lead = to.len() - from.len();
        let src = contiguous_strides(from);
        let strides: Vec<usize> = (0..to.len())
            .map(|a| {
                if a < lead || from[a - lead] == 1 {
                    0
                } else {
                    src[a - lead]
                }
            })
            .collect();
        let mut y = Vec::with_capacity(calib_ir::numel(to));
        let walk = Walk::new(to, &strides);
        let (len, stride) = walk.run();
        walk.for_each_run(|_, i| match stride {
            0 => y.extend(std::iter::repeat_n(x[i], len)),
            1 => y.extend_from_slice(&x[i..i + len]),
            s => y.extend((0..len).map(|j| x[i + j * s])),
        });
        y
    }
    dispatch!(x.storage(), E => Ok(E::wrap(typed::<E>(elems(x)?, x.shape(), to))))
}

/// `(outer, extent, inner)`: `shape` seen as `[outer, shape[axis], inner]`.
fn split_at_axis(shape: &[usize], axis: usize) -> (usize, usize, usize) {
    (
        shape[..axis].iter().product(),
        shape[axis],
        shape[axis + 1..].iter().product(),
    )
}

/// Elements `start..end` along `axis`.
pub(super) fn slice(
    x: &HostTensor,
    axis: usize,
    start: usize,
    end: usize,
) -> Result<Storage, OpError> {
    fn typed<E: Element>(
        x: &[E],
        shape: &[usize],
        axis: usize,
        start: usize,
        end: usize,
    ) -> Vec<E> {
        let (outer, extent, inner) = split_at_axis(shape, axis);
        let mut y = Vec::with_capacity(outer * (end - start) * inner);
        for o in 0..outer {
            let base = o * extent * inner;
            y.extend_from_slice(&x[base + start * inner..base + end * inner]);
        }
        y
    }
    dispatch!(x.storage(), E => Ok(E::wrap(typed::<E>(elems(x)?, x.shape(), axis, start, end))))
}

/// The operands joined along `axis`, in order.
pub(super) fn concat(xs: &[&HostTensor], axis: usize) -> Result<Storage, OpError> {
    fn typed<E: Element>(xs: &[&HostTensor], axis: usize) -> Result<Vec<E>, OpError> {
        let parts: Vec<(&[E], usize)> = xs
            .iter()
            .map(|t| Ok((elems::<E>(t)?, split_at_axis(t.shape(), axis).1)))
            .collect::<Result<_, OpError>>()?;
        let (outer, _, inner) = split_at_axis(xs[0].shape(), axis);
        let mut y = Vec::with_capacity(parts.iter().map(|(p, _)| p.len()).sum());
        for o in 0..outer {
            for &(p, extent) in &parts {
                y.extend_from_slice(&p[o * extent * inner..(o + 1) * extent * inner]);
            }
        }
        Ok(y)
    }
    dispatch!(xs[0].storage(), E => typed::<E>(xs, axis).map(E::wrap))
}

/// `[N]` integer labels to a `[N, classes]` matrix of 0/1; a label outside `0..classes`
/// is an error, not a silent zero row.
pub(super) fn one_hot(
    labels: &HostTensor,
    classes: usize,
    precision: Precision,
) -> Result<Storage, OpError> {
    let labels = elems::<i64>(labels)?;
    let mut y = vec![0.0; labels.len() * classes];
    for (index, &label) in labels.iter().enumerate() {
        if label < 0 || label as u64 >= classes as u64 {
            return Err(OpError::LabelOutOfRange {
                index,
                label,
                classes,
            });
        }
        y[index * classes + label as usize] = 1.0;
    }
    Ok(Storage::float_from_f64(y.into_iter(), precision))
}
