//! Groups of processes, possibly on several machines, connected by TCP: how a process
//! started by a launcher (`torchrun`, a scheduler) finds its peers ([`Rendezvous`]),
//! and a [`Collective`](crate::Collective) over the connections ([`TcpGroup`]) whose
//! reductions are bit-identical to the in-process group's. On GPUs the same group
//! carries NCCL's unique id, and NCCL then does the heavy transport.

mod frame;
mod group;
mod rendezvous;

pub use frame::FrameError;
pub use group::TcpGroup;
pub use rendezvous::{Rendezvous, RendezvousError};
