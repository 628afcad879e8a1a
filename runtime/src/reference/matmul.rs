//! `[M,K] x [K,N]` matrix product; a transposed operand is read through swapped strides
//! rather than copied.

use super::dispatch::elems;
use crate::{Element, Float, HostTensor, OpError, Storage};

pub(super) fn matmul(
    a: &HostTensor,
    b: &HostTensor,
    y: &[usize],
    ta: bool,
    tb: bool,
) -> Result<Storage, OpError> {
    let (m, n) = (y[0], y[1]);
    let k = if ta { a.shape()[0] } else { a.shape()[1] };
    // Row and column strides of the logical (untransposed) operand in its stored layout.
    let strides = |stored_cols: usize, transposed: bool| {
        if transposed {
            (1, stored_cols)
        } else {
            (stored_cols, 1)
        }
    };
    let (rsa, csa) = strides(a.shape()[1], ta);
    let (rsb, csb) = strides(b.shape()[1], tb);
    dispatch_float!(a.storage(), E => {
        let mut c = vec![E::ZERO; m * n];
        E::gemm(m, k, n, (elems::<E>(a)?, rsa, csa), (elems::<E>(b)?, rsb, csb), E::ZERO, (&mut c, n, 1));
        Ok(E::wrap(c))
    })
}
