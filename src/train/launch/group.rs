//! This process's place in a group of processes: the TCP group formed at the
//! rendezvous, and on GPUs an NCCL communicator bootstrapped through it.

use super::Launch;
use anyhow::{Context, Result};
use calib_runtime::cuda::NcclRank;
use calib_runtime::{Collective, Rendezvous, TcpGroup};
use std::time::Duration;

/// One process's handles on its group.
#[derive(Debug)]
pub struct ProcessGroup {
    host: TcpGroup,
    /// On `cuda` with NCCL: this rank's communicator, through which the step graph's
    /// all-reduces run on the GPU.
    nccl: Option<NcclRank>,
}

impl ProcessGroup {
    /// Joins the group `launch` describes, waiting at most `rendezvous` for every rank
    /// to arrive. With `nccl_gpu`, rank 0 also makes an NCCL unique id, sends it over
    /// the group, and every rank joins the NCCL communicator on that GPU.
    pub fn join(launch: &Launch, rendezvous: Duration, nccl_gpu: Option<usize>) -> Result<Self> {
        let meeting = Rendezvous {
            rank: launch.rank,
            world: launch.world,
            master_addr: launch.master_addr.clone(),
            port: launch.port,
            timeout: rendezvous,
        };
        let host = meeting.join(TcpGroup::DEFAULT_TIMEOUT)?;
        let nccl = match nccl_gpu {
            None => None,
            Some(gpu) => {
                let id = (launch.rank == 0)
                    .then(NcclRank::unique_id)
                    .transpose()
                    .context("rank 0 making the NCCL unique id")?;
                let shared = host
                    .broadcast(id.as_ref().map(|id| id.as_slice()))
                    .context("sending the NCCL unique id from rank 0")?;
                let id: [u8; calib_runtime::cuda::UNIQUE_ID_BYTES] =
                    shared.as_slice().try_into().map_err(|_| {
                        anyhow::anyhow!("rank 0 sent an NCCL id of {} bytes", shared.len())
                    })?;
                let rank = NcclRank::join(
                    &id,
                    launch.rank,
                    launch.world,
                    gpu,
                    TcpGroup::DEFAULT_TIMEOUT,
                )
                .with_context(|| {
                    format!("rank {} joining the NCCL group on GPU {gpu}", launch.rank)
                })?;
                Some(rank)
            }
        };
        Ok(ProcessGroup { host, nccl })
    }

    pub fn rank(&self) -> usize {
        self.host.rank()
    }

    pub fn world(&self) -> usize {
        self.host.world()
    }

    /// Whether this process writes the run directory (rank 0).
    pub fn is_primary(&self) -> bool {
        self.rank() == 0
    }

    /// The TCP group: for what the host decides (options, the starting state, the
    /// step's loss), and the step's all-reduces where there is no NCCL.
    pub fn host(&self) -> &TcpGroup {
        &self.host
    }

    /// What the step graph's all-reduces go through: NCCL on GPUs, else the TCP group.
    pub fn collective(&self) -> &dyn Collective {
        match &self.nccl {
            Some(nccl) => nccl,
            None => &self.host,
        }
    }
}
