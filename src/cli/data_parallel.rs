//! The data-parallel options `calib train` and `calib compile` share.

use anyhow::{bail, Result};

#[derive(clap::Args, Debug, Clone)]
pub struct DataParallelArgs {
    /// Data-parallel replicas, each taking an equal share of every batch; gradients are
    /// averaged across them as PyTorch DDP does. `calib train`: threads on the CPU
    /// backends (at most 64); with `--backend cuda` one GPU each (at most the GPUs
    /// present), all-reduced through NCCL (or through the host without it). `calib
    /// compile --train` writes one replica's plan.
    #[arg(long, default_value_t = 1, allow_negative_numbers = true)]
    pub replicas: usize,
    /// BatchNorm statistics over the whole batch (PyTorch's SyncBatchNorm) rather than
    /// each replica's share of it.
    #[arg(long)]
    pub sync_bn: bool,
    /// Gradient all-reduce bucket size in MiB (DDP's bucket_cap_mb).
    #[arg(long, default_value_t = 25.0, allow_negative_numbers = true)]
    pub bucket_mb: f64,
}

impl DataParallelArgs {
    /// Whether these options ask for anything but one plain process.
    pub fn is_data_parallel(&self) -> bool {
        self.replicas > 1 || self.sync_bn
    }

    /// Checks the options against a global batch of `batch`; returns one replica's share.
    pub fn shard(&self, batch: usize) -> Result<usize> {
        if self.replicas == 0 {
            bail!("--replicas must be at least 1");
        }
        if !batch.is_multiple_of(self.replicas) {
            bail!(
                "--batch {batch} does not split evenly across --replicas {}",
                self.replicas
            );
        }
        if !(self.bucket_mb > 0.0 && self.bucket_mb.is_finite()) {
            bail!("--bucket-mb must be a positive number of MiB");
        }
        Ok(batch / self.replicas)
    }
}
