//! An `all_reduce` node run through the replica's bound group, as every backend runs it.

use crate::{Collective, CollectiveError, HostTensor, OpError, Storage};
use calib_ir::ReduceOp;

/// `x` reduced across the group. The graph says how many replicas it was made for; a
/// group of another size would silently change gradient means and BatchNorm counts, so
/// it is refused, and so is a missing group unless the graph is for one replica.
pub(crate) fn all_reduce_bound(
    x: &HostTensor,
    reduce: ReduceOp,
    replicas: usize,
    group: Option<&dyn Collective>,
) -> Result<Storage, OpError> {
    match group {
        None if replicas == 1 => Ok(x.storage().clone()),
        None => Err(CollectiveError::NoGroup(replicas).into()),
        Some(g) if g.world() != replicas => Err(CollectiveError::GroupSize {
            graph: replicas,
            group: g.world(),
        }
        .into()),
        Some(g) => Ok(g.all_reduce(x.storage(), reduce)?),
    }
}
