//! A data-parallel group of processes connected by TCP, in a star around rank 0.
//!
//! An all-reduce sends every rank's tensor to rank 0, which reduces them in rank order
//! with the very function the in-process group uses ([`reduce_in_rank_order`]) and
//! sends the result back: every rank receives rank 0's bits, and a group of processes
//! gives the same bits as a group of threads fed the same tensors. Star rather than
//! ring: the transport only carries what the CPU backends all-reduce (and, on GPUs,
//! a few bytes: NCCL's id, the starting state, the step's loss), where a simple order
//! is worth more than bandwidth.
//!
//! Failure: every socket has a read and a write time limit; a peer whose process ends
//! closes its sockets, which the others see at once as [`CollectiveError::PeerLeft`].
//! When rank 0 loses a peer it tells the remaining ones who it was (an abort frame)
//! before it returns, so every rank's error names the rank that failed.

use super::frame::{
    decode_tensor, encode_tensor, read_frame, split_u64s, write_frame, FrameError, Kind,
};
use crate::collective::reduce::{describe, reduce_in_rank_order};
use crate::{Collective, CollectiveError, Storage};
use calib_ir::ReduceOp;
use std::cell::Cell;
use std::net::TcpStream;
use std::time::Duration;

/// One process's handle on a group of processes; made by
/// [`Rendezvous::join`](super::Rendezvous::join).
#[derive(Debug)]
pub struct TcpGroup {
    rank: usize,
    world: usize,
    /// On rank 0, `links[r]` is the connection to rank `r` (none at 0); on the others,
    /// `links[0]` is the connection to rank 0 and the rest are none.
    links: Vec<Option<TcpStream>>,
    timeout: Duration,
    /// Collectives issued (all-reduces and broadcasts), for messages and to check that
    /// the ranks are in step.
    round: Cell<u64>,
}

/// Why rank 0 abandoned a collective, as its abort frame says.
const LEFT: u8 = 0;
const TIMED_OUT: u8 = 1;

impl TcpGroup {
    /// How long a rank waits for a peer by default: as the in-process group, since a
    /// rank 0 evaluating or checkpointing keeps the others waiting in the next step.
    pub const DEFAULT_TIMEOUT: Duration = crate::InProcess::DEFAULT_TIMEOUT;

    /// The group over connected sockets (see the field `links`); `timeout` bounds every
    /// wait for a peer.
    pub(super) fn new(
        rank: usize,
        links: Vec<Option<TcpStream>>,
        timeout: Duration,
    ) -> std::io::Result<Self> {
        for link in links.iter().flatten() {
            link.set_nonblocking(false)?;
            link.set_nodelay(true)?;
            link.set_read_timeout(Some(timeout))?;
            link.set_write_timeout(Some(timeout))?;
        }
        Ok(TcpGroup {
            rank,
            world: links.len(),
            links,
            timeout,
            round: Cell::new(0),
        })
    }

    /// Rank 0's `data` on every rank. Rank 0 passes `Some`; the others' argument is
    /// not used.
    pub fn broadcast(&self, data: Option<&[u8]>) -> Result<Vec<u8>, CollectiveError> {
        let round = self.next_round();
        if self.rank == 0 {
            let data = data.ok_or_else(|| CollectiveError::Transport {
                round,
                message: "rank 0 has nothing to broadcast".into(),
            })?;
            for peer in 1..self.world {
                self.send(peer, round, Kind::Bytes, data)?;
            }
            return Ok(data.to_vec());
        }
        self.receive(0, round, Kind::Bytes)
    }

    /// Returns when every rank has called it (an empty all-reduce).
    pub fn barrier(&self) -> Result<(), CollectiveError> {
        self.all_reduce(&Storage::F32(vec![]), ReduceOp::Sum)
            .map(|_| ())
    }

    fn next_round(&self) -> u64 {
        let round = self.round.get();
        self.round.set(round + 1);
        round
    }

    fn link(&self, peer: usize) -> &TcpStream {
        self.links[peer]
            .as_ref()
            .expect("a link to every peer of the star")
    }

    fn send(
        &self,
        peer: usize,
        round: u64,
        kind: Kind,
        payload: &[u8],
    ) -> Result<(), CollectiveError> {
        write_frame(self.link(peer), kind, payload).map_err(|e| self.lost(peer, round, e))
    }

    /// The next frame from `peer`, which must be of `kind`; an abort frame from rank 0
    /// becomes the error it reports.
    fn receive(&self, peer: usize, round: u64, kind: Kind) -> Result<Vec<u8>, CollectiveError> {
        let (got, payload) = read_frame(self.link(peer)).map_err(|e| self.lost(peer, round, e))?;
        match got {
            k if k == kind => Ok(payload),
            Kind::Abort => {
                let ([failed, at], rest) = split_u64s::<2>(Kind::Abort, &payload)
                    .map_err(|e| self.lost(peer, round, e))?;
                Err(match rest.first() {
                    Some(&TIMED_OUT) => CollectiveError::Timeout {
                        peer: failed as usize,
                        round: at,
                        seconds: self.timeout.as_secs_f64(),
                    },
                    _ => CollectiveError::PeerLeft {
                        peer: failed as usize,
                        round: at,
                    },
                })
            }
            other => Err(CollectiveError::Transport {
                round,
                message: format!("rank {peer} sent a {other:?} message where a {kind:?} was due"),
            }),
        }
    }

    /// What a failed read or write from `peer` means for the group.
    fn lost(&self, peer: usize, round: u64, e: FrameError) -> CollectiveError {
        match e {
            FrameError::Closed | FrameError::Truncated { .. } => {
                CollectiveError::PeerLeft { peer, round }
            }
            FrameError::TimedOut => CollectiveError::Timeout {
                peer,
                round,
                seconds: self.timeout.as_secs_f64(),
            },
            other => CollectiveError::Transport {
                round,
                message: format!("from rank {peer}: {other}"),
            },
        }
    }

    /// Rank 0: tells every peer but `failed` that the collective is abandoned, and why.
    fn abort_others(&self, error: &CollectiveError) {
        let (failed, round, why) = match *error {
            CollectiveError::PeerLeft { peer, round } => (peer, round, LEFT),
            CollectiveError::Timeout { peer, round, .. } => (peer, round, TIMED_OUT),
            _ => return,
        };
        let mut payload = Vec::with_capacity(17);
        payload.extend_from_slice(&(failed as u64).to_le_bytes());
        payload.extend_from_slice(&round.to_le_bytes());
        payload.push(why);
        for peer in (1..self.world).filter(|&p| p != failed) {
            // Best effort: a peer that is gone too finds out from its closed socket.
            let _ = write_frame(self.link(peer), Kind::Abort, &payload);
        }
    }

    /// Rank 0's part of an all-reduce: every peer's tensor in rank order, reduced, and
    /// the result sent back.
    fn reduce_at_root(
        &self,
        data: &Storage,
        reduce: ReduceOp,
        round: u64,
    ) -> Result<Storage, CollectiveError> {
        let mut parts = vec![data.clone()];
        for peer in 1..self.world {
            let payload = self.receive(peer, round, Kind::Tensor)?;
            let theirs = self.check_tensor(peer, round, data, &payload)?;
            parts.push(theirs);
        }
        let views: Vec<&Storage> = parts.iter().collect();
        let reduced = reduce_in_rank_order(&views, reduce)?;
        let payload = encode_tensor(round, &reduced);
        for peer in 1..self.world {
            self.send(peer, round, Kind::Tensor, &payload)?;
        }
        Ok(reduced)
    }

    /// A peer's tensor, checked to be of `round` and of `mine`'s type and length.
    fn check_tensor(
        &self,
        peer: usize,
        round: u64,
        mine: &Storage,
        payload: &[u8],
    ) -> Result<Storage, CollectiveError> {
        let (their_round, theirs) =
            decode_tensor(payload).map_err(|e| self.lost(peer, round, e))?;
        if their_round != round {
            return Err(CollectiveError::Transport {
                round,
                message: format!(
                    "rank {peer} sent collective #{their_round}: the ranks are out of step"
                ),
            });
        }
        if theirs.kind() != mine.kind() || theirs.len() != mine.len() {
            return Err(CollectiveError::Mismatch {
                peer,
                round,
                expected: describe(mine),
                found: describe(&theirs),
            });
        }
        Ok(theirs)
    }
}

impl Collective for TcpGroup {
    fn rank(&self) -> usize {
        self.rank
    }

    fn world(&self) -> usize {
        self.world
    }

    fn all_reduce(&self, data: &Storage, reduce: ReduceOp) -> Result<Storage, CollectiveError> {
        if matches!(data, Storage::I64(_)) {
            return Err(CollectiveError::Integer);
        }
        let round = self.next_round();
        if self.rank == 0 {
            return self.reduce_at_root(data, reduce, round).inspect_err(|e| {
                self.abort_others(e);
            });
        }
        self.send(0, round, Kind::Tensor, &encode_tensor(round, data))?;
        let payload = self.receive(0, round, Kind::Tensor)?;
        self.check_tensor(0, round, data, &payload)
    }
}
