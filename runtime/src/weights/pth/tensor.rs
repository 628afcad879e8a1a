//! A tensor record made real: its storage's bytes, decoded in calib's dtype, gathered
//! through the record's offset, shape and strides into a row-major [`HostTensor`].
//!
//! A strided view is gathered element by element; a contiguous one is a slice. The
//! view must stay inside its storage and may not hold more elements than the storage
//! (an expanded, stride-0 view would make a file's few bytes into any amount of memory).

use super::object::{StorageRef, TensorRef};
use crate::weights::decode;
use crate::{HostTensor, Storage};
use calib_ir::fmt_shape;
use std::borrow::Cow;

/// Where a container keeps its storages' bytes.
pub(super) trait Storages {
    /// The bytes of `storage`, exactly `numel` elements long.
    fn bytes(&mut self, storage: &StorageRef) -> Result<Cow<'_, [u8]>, String>;
}

/// Reads the tensor `t` describes.
pub(super) fn materialize(
    t: &TensorRef,
    storages: &mut dyn Storages,
) -> Result<HostTensor, String> {
    let element = t.storage.element;
    let dtype = element.dtype().ok_or_else(|| {
        format!(
            "its storage is a {} ({element:?} elements); calib reads float32, float16, \
             bfloat16 and int64 tensors",
            element.storage_name()
        )
    })?;
    let shape = fmt_shape(&t.shape);
    let numel = calib_ir::checked_numel(&t.shape)
        .ok_or_else(|| format!("shape {shape} has too many elements to count"))?;
    // The furthest element the view reads, plus one.
    let reach = if numel == 0 {
        0
    } else {
        t.shape
            .iter()
            .zip(&t.strides)
            .try_fold(t.offset, |end, (&n, &s)| {
                end.checked_add((n - 1).checked_mul(s)?)
            })
            .and_then(|last| last.checked_add(1))
            .ok_or_else(|| format!("shape {shape} with strides {:?} overflows", t.strides))?
    };
    let storage_numel = t.storage.numel;
    if reach > storage_numel {
        return Err(format!(
            "shape {shape}, strides {:?} and offset {} reach element {} of storage `{}`, which \
             has {storage_numel}",
            t.strides,
            t.offset,
            reach - 1,
            t.storage.key
        ));
    }
    if numel > storage_numel {
        return Err(format!(
            "shape {shape} with strides {:?} repeats elements of its {storage_numel}-element \
             storage `{}` (an expanded view); save it after `.contiguous()`",
            t.strides, t.storage.key
        ));
    }
    let bytes = storages.bytes(&t.storage)?;
    let size = element.size_bytes();
    let used = bytes.get(..reach * size).ok_or_else(|| {
        format!(
            "storage `{}` has {} bytes, fewer than its {storage_numel} elements need",
            t.storage.key,
            bytes.len()
        )
    })?;
    let values = decode(dtype, used);
    let storage = if is_contiguous(&t.shape, &t.strides) {
        slice(values, t.offset, numel)
    } else {
        let index = indices(&t.shape, &t.strides, t.offset);
        match values {
            Storage::F32(v) => Storage::F32(index.map(|i| v[i]).collect()),
            Storage::F64(v) => Storage::F64(index.map(|i| v[i]).collect()),
            Storage::I64(v) => Storage::I64(index.map(|i| v[i]).collect()),
        }
    };
    HostTensor::new(dtype, t.shape.clone(), storage).map_err(|e| e.to_string())
}

/// Whether `strides` are the row-major strides of `shape` (ignoring dimensions of 1).
fn is_contiguous(shape: &[usize], strides: &[usize]) -> bool {
    let mut expected = 1;
    for (&n, &s) in shape.iter().zip(strides).rev() {
        if n != 1 && s != expected {
            return false;
        }
        expected *= n;
    }
    true
}

fn slice(values: Storage, offset: usize, numel: usize) -> Storage {
    let range = offset..offset + numel;
    match values {
        Storage::F32(v) => Storage::F32(v[range].to_vec()),
        Storage::F64(v) => Storage::F64(v[range].to_vec()),
        Storage::I64(v) => Storage::I64(v[range].to_vec()),
    }
}

/// Storage indices of a strided view's elements in row-major order.
fn indices<'a>(
    shape: &'a [usize],
    strides: &'a [usize],
    offset: usize,
) -> impl Iterator<Item = usize> + 'a {
    let numel: usize = shape.iter().product();
    let mut position = vec![0usize; shape.len()];
    (0..numel).map(move |k| {
        if k > 0 {
            // Odometer step: the last dimension fastest.
            for d in (0..shape.len()).rev() {
                position[d] += 1;
                if position[d] < shape[d] {
                    break;
                }
                position[d] = 0;
            }
        }
        offset
            + position
                .iter()
                .zip(strides)
                .map(|(i, s)| i * s)
                .sum::<usize>()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::weights::pth::object::Element;

    struct One(Vec<u8>);
    impl Storages for One {
        fn bytes(&mut self, _: &StorageRef) -> Result<Cow<'_, [u8]>, String> {
            Ok(Cow::Borrowed(&self.0))
        }
    }

    fn view(offset: usize, shape: &[usize], strides: &[usize], numel: usize) -> TensorRef {
        TensorRef {
            storage: StorageRef {
                element: Element::I64,
                key: "0".into(),
                numel,
            },
            offset,
            shape: shape.to_vec(),
            strides: strides.to_vec(),
        }
    }

    fn storage(n: i64) -> One {
        One((0..n).flat_map(|x| x.to_le_bytes()).collect())
    }

    #[test]
    fn a_transposed_view_is_gathered_in_row_major_order() {
        // A [2,3] tensor stored as its [3,2] transpose, one element in.
        let t = materialize(&view(1, &[2, 3], &[1, 2], 7), &mut storage(7)).unwrap();
        assert_eq!(t.to_f64_vec(), [1.0, 3.0, 5.0, 2.0, 4.0, 6.0]);
    }

    #[test]
    fn a_contiguous_view_is_a_slice_and_a_scalar_has_no_dimensions() {
        let t = materialize(&view(2, &[2, 2], &[2, 1], 6), &mut storage(6)).unwrap();
        assert_eq!(t.to_f64_vec(), [2.0, 3.0, 4.0, 5.0]);
        let s = materialize(&view(5, &[], &[], 6), &mut storage(6)).unwrap();
        assert_eq!((s.shape(), s.to_f64_vec()), (&[][..], vec![5.0]));
    }

    #[test]
    fn views_past_their_storage_or_repeating_it_are_refused() {
        let e = materialize(&view(3, &[2, 2], &[2, 1], 6), &mut storage(6)).unwrap_err();
        assert!(
            e.contains("reach element 6") && e.contains("which has 6"),
            "{e}"
        );
        let e = materialize(&view(0, &[4, 3], &[0, 1], 3), &mut storage(3)).unwrap_err();
        assert!(e.contains("repeats elements"), "{e}");
    }
}
