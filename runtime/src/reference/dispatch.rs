//! Running one generic kernel on whichever element type a tensor holds.
//!
//! Kernels are written once over [`crate::Element`] or [`crate::Float`]; these macros
//! pick the monomorphization from the storage variant, so no kernel matches on storage.

use crate::{HostTensor, OpError};

/// Runs a kernel generic over [`crate::Element`] on the element type `storage` holds,
/// naming that type `$E` inside `$body`.
macro_rules! dispatch {
    ($storage:expr, $E:ident => $body:expr) => {
        match $storage {
            $crate::Storage::F32(_) => {
                type $E = f32;
                $body
            }
            $crate::Storage::F64(_) => {
                type $E = f64;
                $body
            }
            $crate::Storage::I64(_) => {
                type $E = i64;
                $body
            }
        }
    };
}

/// Like `dispatch!` for kernels generic over [`crate::Float`]; integer storage is an error.
macro_rules! dispatch_float {
    ($storage:expr, $E:ident => $body:expr) => {
        match $storage {
            $crate::Storage::F32(_) => {
                type $E = f32;
                $body
            }
            $crate::Storage::F64(_) => {
                type $E = f64;
                $body
            }
            $crate::Storage::I64(_) => Err($crate::OpError::Storage {
                found: "i64",
                expected: "a float",
            }),
        }
    };
}

/// The elements of an operand as `E`, or an error if it is held in another type.
pub(super) fn elems<E: crate::Element>(t: &HostTensor) -> Result<&[E], OpError> {
    t.view::<E>().ok_or(OpError::Storage {
        found: t.storage().kind(),
        expected: std::any::type_name::<E>(),
    })
}
