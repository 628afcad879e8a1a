//! What rank 0 decides and every rank uses: the options (a resumed run's are in rank
//! 0's run directory), the steps to take, and the state to start from. Sent over the
//! group rather than read by every rank, so the others need no copy of the run
//! directory, and a rank started with other options is refused rather than trained out
//! of step.

use crate::train::checkpoint::{self, Progress};
use crate::train::{SgdState, TrainOptions};
use anyhow::{anyhow, bail, Context, Result};
use calib_runtime::TcpGroup;
use serde::de::DeserializeOwned;
use serde::Serialize;

/// Rank 0's `value` on every rank (the others pass `None`); `what` names it in errors.
pub fn share<T: Serialize + DeserializeOwned>(
    group: &TcpGroup,
    value: Option<&T>,
    what: &str,
) -> Result<T> {
    let bytes = value.map(serde_json::to_vec).transpose()?;
    let shared = group
        .broadcast(bytes.as_deref())
        .with_context(|| format!("waiting for rank 0's {what} (see rank 0's output)"))?;
    serde_json::from_slice(&shared).with_context(|| format!("rank 0's {what} do not decode"))
}

/// Rank 0's options on every rank. A rank that was given its own (a new run, where
/// every process gets the same command line) must have been given the same: a
/// difference is refused, naming the options.
pub fn agree_on_options(group: &TcpGroup, mine: Option<&TrainOptions>) -> Result<TrainOptions> {
    let primary = group_rank(group) == 0;
    let rank0 = share(group, if primary { mine } else { None }, "options")?;
    if let (Some(mine), false) = (mine, primary) {
        let (ours, theirs) = (serde_json::to_value(mine)?, serde_json::to_value(&rank0)?);
        let differ: Vec<&String> = match (&ours, &theirs) {
            (serde_json::Value::Object(a), serde_json::Value::Object(b)) => {
                a.keys().filter(|k| a.get(*k) != b.get(*k)).collect()
            }
            _ => vec![],
        };
        if !differ.is_empty() {
            let names: Vec<&str> = differ.iter().map(|k| k.as_str()).collect();
            bail!(
                "rank {} was started with other options than rank 0 ({}); every process \
                 of a group takes the same command line",
                group_rank(group),
                names.join(", ")
            );
        }
    }
    Ok(rank0)
}

fn group_rank(group: &TcpGroup) -> usize {
    calib_runtime::Collective::rank(group)
}

/// Rank 0's starting state and step on every rank (the others pass `None`), sent as a
/// checkpoint's bytes: the same encoding, so the others start from exactly its bits.
pub fn share_state(
    group: &TcpGroup,
    rank0: Option<(&SgdState, u64)>,
    seed: u64,
) -> Result<(SgdState, u64)> {
    let bytes = rank0
        .map(|(sgd, step)| checkpoint::encode(sgd, Progress { step, seed }, "the starting state"))
        .transpose()?;
    let shared = group
        .broadcast(bytes.as_deref())
        .context("waiting for rank 0's starting state (see rank 0's output)")?;
    let start = checkpoint::decode(&shared, "rank 0's starting state")?;
    if start.progress.seed != seed {
        return Err(anyhow!(
            "rank 0 starts from seed {}, this rank from {seed}",
            start.progress.seed
        ));
    }
    Ok((start.sgd, start.progress.step))
}
