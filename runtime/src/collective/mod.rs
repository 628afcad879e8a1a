//! Communication between the replicas of a data-parallel group.
//!
//! A data-parallel step graph is the same on every replica; where replicas must agree
//! (gradient means, synchronized BatchNorm statistics) it has an
//! [`Op::AllReduce`](calib_ir::Op::AllReduce) node, and a backend executes that node
//! through the replica's [`Collective`], handed to it in the
//! [`Bindings`](crate::Bindings). [`InProcess`] connects replicas that are threads of
//! one process (the CPU backends, and CI); [`TcpGroup`] connects processes, one replica
//! each, formed by a [`Rendezvous`] (`torchrun`'s environment), with the same bits. The trait reduces host [`Storage`], what the
//! CPU backends hold; the planned NCCL communicator (cudarc's `nccl` feature, one per
//! GPU, [`NcclRank`](crate::cuda::NcclRank)) keeps the same contract, and also reduces
//! device buffers in place for the GPU executor. No
//! `Send` bound: an NCCL `Comm` must stay on the thread that created it.
//!
//! Contract for every implementation:
//! * every replica issues the group's collectives in the same order, with tensors of
//!   one element type and length (the graph's node order guarantees it);
//! * every replica receives the same bits;
//! * a collective never hangs on a failed replica: when a peer fails or leaves (an
//!   in-process handle is dropped when its thread returns or unwinds), the pending and
//!   later collectives of the others return an error.

mod bound;
mod in_process;
mod reduce;
pub mod tcp;

pub(crate) use bound::all_reduce_bound;

pub use in_process::InProcess;
pub use tcp::{Rendezvous, RendezvousError, TcpGroup};

use crate::Storage;
use calib_ir::ReduceOp;
use std::fmt::Debug;
use thiserror::Error;

/// One replica's handle on its group.
pub trait Collective: Debug {
    /// This replica's index, `0..world()`.
    fn rank(&self) -> usize;
    /// The number of replicas in the group.
    fn world(&self) -> usize;
    /// The elementwise reduction over the group of every replica's `data`.
    fn all_reduce(&self, data: &Storage, reduce: ReduceOp) -> Result<Storage, CollectiveError>;
    /// The NCCL communicator behind this handle, if any: the GPU executor then reduces
    /// its device buffers in place instead of staging them through the host.
    fn nccl(&self) -> Option<&crate::cuda::NcclRank> {
        None
    }
}

/// Why a collective failed.
#[derive(Debug, Error, Clone, PartialEq)]
pub enum CollectiveError {
    #[error("replica {peer} left the group before all-reduce #{round} (it failed or stopped)")]
    PeerLeft { peer: usize, round: u64 },
    #[error("replica {peer} sent nothing for all-reduce #{round} within {seconds} s")]
    Timeout {
        peer: usize,
        round: u64,
        seconds: f64,
    },
    #[error("all-reduce #{round}: replica {peer} sent {found}, this replica has {expected}")]
    Mismatch {
        peer: usize,
        round: u64,
        expected: String,
        found: String,
    },
    #[error("the graph all-reduces across {graph} replicas but the bound group has {group}")]
    GroupSize { graph: usize, group: usize },
    #[error(
        "the graph all-reduces across {0} replicas but no group is bound \
         (see `Bindings::collective`)"
    )]
    NoGroup(usize),
    #[error("cannot all-reduce i64 tensors")]
    Integer,
    #[error("all-reduce #{round} failed in the transport: {message}")]
    Transport { round: u64, message: String },
}
