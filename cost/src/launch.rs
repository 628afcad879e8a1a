//! One kernel launch as the cost model sees it: its geometry, the registers each thread
//! holds, and what each thread executes.

use crate::Census;
use serde::{Deserialize, Serialize};

/// A launch's features.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Launch {
    pub blocks: u64,
    pub threads: u32,
    /// Dynamic shared memory per block, in bytes.
    pub shared_bytes: u32,
    /// Registers per thread (ptxas's figure when known, else an estimate).
    pub registers: u32,
    /// What one thread executes, on average.
    pub census: Census,
    /// What one thread of the launch's last block executes after every block is done
    /// (a split reduction combined in place): a one-block phase at the end.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tail: Option<Census>,
    /// Bytes of the buffers the launch reads or writes, each counted once: what must
    /// cross device memory at least.
    pub unique_bytes: f64,
}
