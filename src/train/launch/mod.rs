//! Training as one process per replica, on one machine or several, started by a
//! launcher (`torchrun`, or anything that sets `RANK`, `WORLD_SIZE`, `LOCAL_RANK`,
//! `MASTER_ADDR`, `MASTER_PORT`).
//!
//! A group of processes trains exactly as `--replicas WORLD_SIZE` threads do: rank `r`
//! makes and takes the same shard of every global batch (only that shard: its loader
//! decodes nothing else), all-reduces through a group whose
//! reduction gives the in-process group's bits (on the CPU backends; NCCL on GPUs), and
//! rank 0 alone writes the run directory. What only rank 0 can know (the options of a
//! resumed run, the state it starts from, where it stops) it sends to the others
//! (`agree.rs`), so no other rank needs to read the run directory.

mod agree;
mod env;
mod group;
pub mod sums;

pub use agree::{agree_on_options, share, share_state};
pub use env::Launch;
pub use group::ProcessGroup;
