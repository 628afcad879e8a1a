//! A group of replicas that are threads of one process, connected by channels.
//!
//! Every replica sends its tensor to every other one and reduces all of them itself, in
//! rank order: redundant arithmetic, but no coordinator, and every replica provably
//! computes the same bits. Channels give the failure path for free: a replica that
//! returns early or panics drops its handle, its senders disconnect, and every peer
//! waiting on it gets [`CollectiveError::PeerLeft`] at once. A replica that is alive
//! but never arrives is caught by a timeout.

use super::reduce::{describe, reduce_in_rank_order};
use super::{Collective, CollectiveError};
use crate::Storage;
use calib_ir::ReduceOp;
use std::cell::Cell;
use std::collections::HashMap;
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::time::Duration;

/// One replica's end of an in-process group; made by [`InProcess::group`], moved into
/// the replica's thread, and dropped to leave the group.
#[derive(Debug)]
pub struct InProcess {
    rank: usize,
    /// `peers[r]`: the channels to and from replica `r` (`None` at this replica's rank).
    peers: Vec<Option<Link>>,
    timeout: Duration,
    /// How many all-reduces this replica has issued, for messages.
    round: Cell<u64>,
}

impl InProcess {
    /// How long a replica waits for a peer by default: generous, because a step of the
    /// reference interpreter on a large net takes minutes; a replica that fails is
    /// noticed at once anyway, through its dropped handle.
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30 * 60);

    /// The handles of a new group of `world` replicas, in rank order.
    pub fn group(world: usize) -> Vec<InProcess> {
        Self::group_with_timeout(world, Self::DEFAULT_TIMEOUT)
    }

    /// Like [`InProcess::group`], with the longest wait for a peer's tensor.
    pub fn group_with_timeout(world: usize, timeout: Duration) -> Vec<InProcess> {
        let mut links = HashMap::new();
        for a in 0..world {
            for b in a + 1..world {
                let (a_to_b, b_from_a) = channel();
                let (b_to_a, a_from_b) = channel();
                links.insert(
                    (a, b),
                    Link {
                        to: a_to_b,
                        from: a_from_b,
                    },
                );
                links.insert(
                    (b, a),
                    Link {
                        to: b_to_a,
                        from: b_from_a,
                    },
                );
            }
        }
        (0..world)
            .map(|rank| InProcess {
                rank,
                peers: (0..world).map(|peer| links.remove(&(rank, peer))).collect(),
                timeout,
                round: Cell::new(0),
            })
            .collect()
    }
}

/// Both directions between this replica and one peer.
#[derive(Debug)]
struct Link {
    to: Sender<Arc<Storage>>,
    from: Receiver<Arc<Storage>>,
}

impl Collective for InProcess {
    fn rank(&self) -> usize {
        self.rank
    }

    fn world(&self) -> usize {
        self.peers.len()
    }

    fn all_reduce(&self, data: &Storage, reduce: ReduceOp) -> Result<Storage, CollectiveError> {
        let round = self.round.get();
        self.round.set(round + 1);
        let mine = Arc::new(data.clone());
        for link in self.peers.iter().flatten() {
            // A peer that has gone is reported when its own tensor is awaited below.
            let _ = link.to.send(Arc::clone(&mine));
        }
        let mut parts = Vec::with_capacity(self.peers.len());
        for (peer, link) in self.peers.iter().enumerate() {
            let Some(link) = link else {
                parts.push(Arc::clone(&mine));
                continue;
            };
            let theirs = link.from.recv_timeout(self.timeout).map_err(|e| match e {
                RecvTimeoutError::Disconnected => CollectiveError::PeerLeft { peer, round },
                RecvTimeoutError::Timeout => CollectiveError::Timeout {
                    peer,
                    round,
                    seconds: self.timeout.as_secs_f64(),
                },
            })?;
            if theirs.kind() != mine.kind() || theirs.len() != mine.len() {
                return Err(CollectiveError::Mismatch {
                    peer,
                    round,
                    expected: describe(&mine),
                    found: describe(&theirs),
                });
            }
            parts.push(theirs);
        }
        let parts: Vec<&Storage> = parts.iter().map(|p| p.as_ref()).collect();
        reduce_in_rank_order(&parts, reduce)
    }
}
