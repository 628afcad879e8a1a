//! BatchNorm2d as primitives, per replica or synchronized across a data-parallel group.
//!
//! Synchronized BatchNorm (PyTorch's `SyncBatchNorm`) normalizes every replica's shard
//! with the statistics of the whole group's batch. With equal shards the group mean is
//! the mean of the replicas' means, so it takes one `all_reduce(mean)` of a `[1,C,1,1]`
//! value; the biased variance is then the group mean of each replica's mean squared
//! deviation from that *group* mean, a second all-reduce. Two small collectives instead
//! of PyTorch's one (which gathers per-replica mean and variance and combines them) or
//! the one of an `E[x^2] - E[x]^2` form, because the two-pass form is the one the
//! single-replica graph computes: no cancellation, and on one replica it is the same
//! graph plus two identities. The all-reduces are differentiable (their adjoint is the
//! same all-reduce of the cotangent), which gives PyTorch's synchronized backward.

use super::{GraphBuilder, Mode};
use crate::{DType, IrError, ReduceOp, Result, Value};

/// BatchNorm2d constants (PyTorch defaults).
pub const BN_EPS: f64 = 1e-5;
pub const BN_MOMENTUM: f64 = 0.1;

/// The axes BatchNorm2d reduces: batch, height, width.
const NHW: [usize; 3] = [0, 2, 3];

impl GraphBuilder {
    /// `BatchNorm2d` over the channels of an NCHW value, as primitives.
    ///
    /// Eval: `(x - running_mean) * rsqrt(running_var + eps) * weight + bias`.
    /// Train: normalizes with the batch mean and the biased batch variance over N,H,W,
    /// and emits graph outputs named by `state_dict` for the new `running_mean`,
    /// `running_var` (unbiased variance) and `num_batches_tracked` (+1). With
    /// [`GraphBuilder::with_sync_bn`] the batch is the group's (see the module docs),
    /// and so is the count behind the unbiased variance.
    pub fn batch_norm(&mut self, name: &str, x: Value) -> Result<Value> {
        let shape = self.shape(x);
        if shape.len() != 4 {
            return Err(IrError::Type {
                node: self.graph.nodes.len(),
                op: "batch_norm".into(),
                scope: format!(" in {}", self.qualified(name)),
                detail: "expects an NCHW input".into(),
                operands: self.ty(x).to_string(),
            });
        }
        let c = shape[1];
        let float = self.float;
        let mode = self.mode;
        let replicas = self.sync_bn.unwrap_or(1);
        self.scoped(name, |g| {
            let weight = g.param("weight", float, vec![c])?;
            let bias = g.param("bias", float, vec![c])?;
            let running_mean = g.param("running_mean", float, vec![c])?;
            let running_var = g.param("running_var", float, vec![c])?;
            let tracked = g.param("num_batches_tracked", DType::I64, vec![])?;
            let per_channel = vec![1, c, 1, 1];
            // Both modes normalize `x - mean`; train mode also reuses that difference
            // for the batch variance, so the graph subtracts the mean only once.
            let (centered, var) = match mode {
                Mode::Eval => {
                    let mean = g.reshape(running_mean, per_channel.clone())?;
                    (g.sub(x, mean)?, running_var)
                }
                Mode::Train => {
                    let mean = g.reduce_mean(x, &NHW, true)?;
                    let mean = g.group_mean(mean)?;
                    let centered = g.sub(x, mean)?;
                    let sq = g.mul(centered, centered)?;
                    let var = g.reduce_mean(sq, &NHW, true)?;
                    let var = g.group_mean(var)?;
                    let mean = g.reshape(mean, vec![c])?;
                    let var = g.reshape(var, vec![c])?;
                    g.running_update(running_mean, mean, 1.0, "running_mean")?;
                    // In f64: the group size is the caller's and may be large.
                    let count = replicas as f64 * (shape[0] * shape[2] * shape[3]) as f64;
                    let unbias = if count > 1.0 {
                        count / (count - 1.0)
                    } else {
                        1.0
                    };
                    g.running_update(running_var, var, unbias, "running_var")?;
                    let one = g.constant(1.0, DType::I64, vec![])?;
                    let next = g.add(tracked, one)?;
                    g.output(&g.qualified("num_batches_tracked"), next)?;
                    (centered, var)
                }
            };
            let var_eps = g.add_scalar(var, BN_EPS)?;
            let inv_std = g.rsqrt(var_eps)?;
            let scale = g.mul(inv_std, weight)?;
            let scale = g.reshape(scale, per_channel.clone())?;
            let bias = g.reshape(bias, per_channel)?;
            let scaled = g.mul(centered, scale)?;
            g.add(scaled, bias)
        })
    }

    /// A per-replica statistic averaged over the group when BatchNorm is synchronized.
    fn group_mean(&mut self, local: Value) -> Result<Value> {
        match self.sync_bn {
            Some(replicas) => self.all_reduce(local, ReduceOp::Mean, replicas),
            None => Ok(local),
        }
    }

    /// `running <- (1 - momentum) * running + momentum * factor * stat`, as a named output.
    fn running_update(
        &mut self,
        running: Value,
        stat: Value,
        factor: f64,
        local: &str,
    ) -> Result<()> {
        let kept = self.scale(running, 1.0 - BN_MOMENTUM)?;
        let added = self.scale(stat, BN_MOMENTUM * factor)?;
        let next = self.add(kept, added)?;
        let name = self.qualified(local);
        self.output(&name, next)
    }
}
