//! Tensors as the little-endian bytes a device buffer (or a safetensors file) holds, in
//! the tensor's declared dtype: what device backends upload and download.

use crate::weights::{decode, encode};
use crate::{HostTensor, TensorError};
use calib_ir::TensorType;

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
}
