//! Tensors as the little-endian bytes a device buffer (or a safetensors file) holds, in
//! the tensor's declared dtype: what device backends upload and download. A host
//! tensor is always row-major (PyTorch's order); a plan buffer stored in another
//! [`Layout`] gets its bytes permuted on the way in and out
//! ([`HostTensor::to_stored_bytes`]), so what a user binds and reads back never
//! depends on how the plan stores it.

use crate::weights::{decode, encode};
use crate::{HostTensor, TensorError};
use calib_ir::{Layout, TensorType};

impl HostTensor {
    /// The elements in the declared dtype, little-endian (f16/bf16 rounded to nearest).
    pub fn to_le_bytes(&self) -> Vec<u8> {
        encode(self).bytes
    }

    /// A tensor of type `ty` from little-endian bytes in `ty`'s dtype.
    pub fn from_le_bytes(ty: &TensorType, bytes: &[u8]) -> Result<Self, TensorError> {
        let storage = decode(ty.dtype, bytes);
        HostTensor::new(ty.dtype, ty.shape.clone(), storage)
    }

    /// [`HostTensor::to_le_bytes`] in the order a buffer stored in `layout` holds them
    /// (a layout that does not fit the tensor's rank is refused by plan validation).
    pub fn to_stored_bytes(&self, layout: Layout) -> Vec<u8> {
        let bytes = self.to_le_bytes();
        if layout.is_row_major() {
            return bytes;
        }
        permute(&bytes, &self.ty(), layout, Direction::ToMemory)
    }

    /// The inverse of [`HostTensor::to_stored_bytes`]: a row-major tensor of type `ty`
    /// from the bytes of a buffer stored in `layout`.
    pub fn from_stored_bytes(
        ty: &TensorType,
        layout: Layout,
        bytes: &[u8],
    ) -> Result<Self, TensorError> {
        if layout.is_row_major() || bytes.len() != ty.size_bytes() {
            return HostTensor::from_le_bytes(ty, bytes);
        }
        HostTensor::from_le_bytes(ty, &permute(bytes, ty, layout, Direction::ToLogical))
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Direction {
    ToMemory,
    ToLogical,
}

/// The elements of `bytes` (of type `ty`) moved between row-major order and `layout`'s
/// memory order.
fn permute(bytes: &[u8], ty: &TensorType, layout: Layout, direction: Direction) -> Vec<u8> {
    let size = ty.dtype.size_bytes();
    let shape = &ty.shape;
    // Row-major strides of the logical axes, then in memory order.
    let mut strides = vec![1usize; shape.len()];
    for a in (0..shape.len().saturating_sub(1)).rev() {
        strides[a] = strides[a + 1] * shape[a + 1];
    }
    let (extents, strides) = (layout.to_memory(shape), layout.to_memory(&strides));
    let mut out = vec![0u8; bytes.len()];
    let mut coords = vec![0usize; extents.len()];
    for stored in 0..bytes.len() / size {
        let logical: usize = coords.iter().zip(&strides).map(|(c, s)| c * s).sum();
        let (from, to) = match direction {
            Direction::ToMemory => (logical, stored),
            Direction::ToLogical => (stored, logical),
        };
        out[to * size..(to + 1) * size].copy_from_slice(&bytes[from * size..(from + 1) * size]);
        // The next position in memory order: the last axis fastest.
        for (c, &e) in coords.iter_mut().zip(&extents).rev() {
            *c += 1;
            if *c < e {
                break;
            }
            *c = 0;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use calib_ir::DType;

    #[test]
    fn bytes_round_trip_in_every_dtype() {
        for dtype in DType::ALL {
            let ty = TensorType::new(dtype, vec![2, 3]);
            let t = HostTensor::full(&ty, 1.5, Default::default());
            let bytes = t.to_le_bytes();
            assert_eq!(bytes.len(), ty.size_bytes());
            assert_eq!(HostTensor::from_le_bytes(&ty, &bytes).unwrap(), t);
        }
        let short = HostTensor::from_le_bytes(&TensorType::new(DType::F32, vec![4]), &[0; 12]);
        assert!(
            short.is_err(),
            "a short buffer is an error, not a smaller tensor"
        );
    }

    #[test]
    fn channels_last_buffers_hold_each_pixels_channels_together() {
        // [1, 2, 2, 3]: element (0, c, h, w) is 100 c + 10 h + w.
        let values: Vec<f32> = (0..2)
            .flat_map(|c| {
                (0..2).flat_map(move |h| (0..3).map(move |w| (100 * c + 10 * h + w) as f32))
            })
            .collect();
        let t = HostTensor::from_f32([1, 2, 2, 3], values).unwrap();
        let stored = t.to_stored_bytes(Layout::ChannelsLast);
        let words: Vec<f32> = stored
            .chunks(4)
            .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
            .collect();
        assert_eq!(
            words,
            [0., 100., 1., 101., 2., 102., 10., 110., 11., 111., 12., 112.]
        );
        for dtype in DType::ALL {
            let t = t.cast(dtype);
            let stored = t.to_stored_bytes(Layout::ChannelsLast);
            assert_ne!(stored, t.to_le_bytes(), "{dtype}");
            let back = HostTensor::from_stored_bytes(&t.ty(), Layout::ChannelsLast, &stored);
            assert_eq!(back.unwrap(), t, "{dtype}");
        }
        assert_eq!(t.to_stored_bytes(Layout::RowMajor), t.to_le_bytes());
    }
}
