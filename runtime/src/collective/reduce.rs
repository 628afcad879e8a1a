//! The one reduction every host group performs, so that a group of threads and a group
//! of processes give the same bits for the same tensors.

use super::CollectiveError;
use crate::{Element, Storage};
use calib_ir::ReduceOp;

/// `parts` (one per rank, in rank order, of one element type and length) reduced
/// elementwise in rank order, accumulated in `f64`. The sum starts from rank 0's
/// element rather than from zero, so that a group of one is exactly the identity
/// (`0.0 + -0.0` would drop the sign).
pub(crate) fn reduce_in_rank_order(
    parts: &[&Storage],
    reduce: ReduceOp,
) -> Result<Storage, CollectiveError> {
    match parts.first() {
        Some(Storage::F32(_)) => Ok(reduce_elements::<f32>(parts, reduce)),
        Some(Storage::F64(_)) => Ok(reduce_elements::<f64>(parts, reduce)),
        Some(Storage::I64(_)) => Err(CollectiveError::Integer),
        None => Ok(Storage::F32(vec![])),
    }
}

fn reduce_elements<E: Element>(parts: &[&Storage], reduce: ReduceOp) -> Storage {
    let views: Vec<&[E]> = parts
        .iter()
        .map(|s| E::view(s).expect("checked by the caller: one element type"))
        .collect();
    let divisor = match reduce {
        ReduceOp::Sum => 1.0,
        ReduceOp::Mean => views.len() as f64,
    };
    let reduced = (0..views[0].len())
        .map(|i| {
            let sum = views[1..]
                .iter()
                .fold(views[0][i].to_f64(), |acc, v| acc + v[i].to_f64());
            E::from_f64(sum / divisor)
        })
        .collect();
    E::wrap(reduced)
}

/// A tensor's element count and type, for mismatch messages.
pub(crate) fn describe(s: &Storage) -> String {
    format!("{} {} elements", s.len(), s.kind())
}
