//! Running optimizer steps, on one replica or on a data-parallel group of threads, each
//! replica in a [`Session`] of its own that keeps its parameters, momentum and BatchNorm
//! buffers where its backend computes (on a GPU: in device memory). A step moves only
//! the batch and the learning rate in, and the loss and logits out.
//!
//! With `R` replicas the global batch of `B` images is split in rank order (replica `r`
//! takes rows `r*B/R .. (r+1)*B/R`), every replica runs the per-replica step graph
//! ([`calib_passes::data_parallel_step`]) on its own thread from the same parameters and
//! momentum, and the graph's all-reduces go through an in-process group. The replicas
//! then hold identical parameters and momentum, and the state read back is rank 0's: for
//! per-replica BatchNorm that is what PyTorch DDP's `broadcast_buffers` keeps too (the
//! other replicas' running statistics are never read: train mode does not use them).
//!
//! A step can hand the sessions the next step's batch before its own results are
//! waited for ([`Session::step_and_stage`]), so that a GPU copies it while the step
//! computes; the next step then binds only its group.
//!
//! A fresh group per step keeps failure simple: a replica that fails returns, its
//! handle is dropped, the others' all-reduces fail at once, and the step reports the
//! first replica's own error rather than its peers' complaints about it.

use super::evaluate::{correct, scalar};
use super::launch::sums::{self, RankFigures};
use super::launch::ProcessGroup;
use super::sgd_state::{carry, STEP_FETCH};
use super::SgdState;
use anyhow::{anyhow, bail, Context, Result};
use calib_passes::{TrainStep, LOSS, LR};
use calib_runtime::{
    Backend, Bindings, Collective, CollectiveError, HostTensor, InProcess, OpError, Outputs,
    RuntimeError, Session, Storage,
};

/// The most data-parallel replicas a backend without devices runs. Each is a thread
/// holding a copy of the state and its shard's activations: past the machine's cores
/// more only contend, and thousands exhaust threads and memory. A constant rather than
/// the core count, so that a run's config.json resumes on any machine; 64 is as many
/// cores as a large host has.
pub const MAX_HOST_REPLICAS: usize = 64;

/// Refuses more replicas than `backend` has devices (one replica each), or on a backend
/// that computes on the host, more than [`MAX_HOST_REPLICAS`] threads; `option` is how
/// the message names the option (`--replicas`).
pub fn check_replicas(replicas: usize, backend: &dyn Backend, option: &str) -> Result<()> {
    match backend.devices() {
        Some(devices) if replicas > devices => bail!(
            "{option} {replicas}: the {} backend sees {devices} device(s) and runs one \
             replica on each",
            backend.name()
        ),
        None if replicas > MAX_HOST_REPLICAS => bail!(
            "{option} {replicas}: the {} backend runs each replica as a thread, at most \
             {MAX_HOST_REPLICAS}",
            backend.name()
        ),
        _ => Ok(()),
    }
}

/// Runs a step graph for a group of replicas (one: a plain step, no threads), or for
/// this process's replica of a group of processes.
pub struct StepRunner<'a> {
    step: &'a TrainStep,
    /// NCHW shape of one replica's shard of the batch.
    shard: Vec<usize>,
    /// One per replica, in rank order; in a group of processes, this process's only.
    sessions: Vec<Box<dyn Session + 'a>>,
    process: Option<&'a ProcessGroup>,
    /// Whether the sessions hold the next step's batch, staged by the last step.
    staged: bool,
}

/// What a step is fed.
#[derive(Clone, Copy, Debug)]
pub struct Feed<'b> {
    /// The global batch; in a group of processes, this process's shard of it.
    pub pixels: &'b [f32],
    pub labels: &'b [i64],
    pub lr: f64,
    /// The digest of `pixels` and `labels` as the loader computed it (`data::digest`).
    pub digest: u64,
    /// Training images this process's loader had found unreadable once it made this
    /// batch (`Prefetched::skipped`).
    pub skipped: usize,
}

/// What a step tells the trainer about the whole global batch.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StepOutcome {
    /// The mean of the replicas' losses: the global batch's mean loss.
    pub loss: f64,
    /// Images of the global batch whose largest logit is their label.
    pub correct: usize,
    /// The global batch's digest (in a group of processes: the ranks' shard digests
    /// chained, as the loader of `--replicas N` threads chains them).
    pub digest: u64,
    /// Training images found unreadable so far (a group of processes: by all ranks).
    pub skipped: usize,
}

impl<'a> StepRunner<'a> {
    /// A session per replica on `backend`, or with `process`, one for this process's
    /// rank.
    pub fn new(
        backend: &'a dyn Backend,
        step: &'a TrainStep,
        shard: Vec<usize>,
        replicas: usize,
        process: Option<&'a ProcessGroup>,
    ) -> Result<Self> {
        let carry = carry(step);
        let ranks = match process {
            Some(group) => group.rank()..group.rank() + 1,
            None => 0..replicas,
        };
        let sessions = ranks
            .map(|r| {
                backend
                    .session(&step.graph, &carry, r)
                    .with_context(|| format!("starting replica {r} on {}", backend.name()))
            })
            .collect::<Result<_>>()?;
        Ok(StepRunner {
            step,
            shard,
            sessions,
            process,
            staged: false,
        })
    }

    /// Puts `sgd` in every replica.
    pub fn load(&mut self, sgd: &SgdState) -> Result<()> {
        let resident = sgd.resident(self.step);
        for (r, session) in self.sessions.iter_mut().enumerate() {
            session
                .load(&resident)
                .with_context(|| format!("loading the state into replica {r}"))?;
        }
        Ok(())
    }

    /// Rank 0's (this process's) staged batch copies so far, where its backend times
    /// them (`Session::copy_times`).
    pub fn copy_times(&self) -> Option<calib_runtime::session::CopyTimes> {
        self.sessions[0].copy_times()
    }

    /// Brings rank 0's state back into `sgd` (for a checkpoint, an evaluation, the end).
    pub fn read(&mut self, sgd: &mut SgdState) -> Result<()> {
        let names = SgdState::resident_names(self.step);
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        let values = self.sessions[0].read(&names)?;
        debug_assert!(
            self.replicas_agree(&values),
            "data-parallel replicas diverged"
        );
        sgd.take_resident(self.step, values);
        Ok(())
    }

    /// Whether every replica holds rank 0's parameters and momentum, to the bit.
    fn replicas_agree(&mut self, rank0: &calib_runtime::TensorMap) -> bool {
        let names: Vec<String> = self
            .step
            .params
            .iter()
            .flat_map(|p| [p.clone(), calib_passes::momentum_name(p)])
            .collect();
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        self.sessions[1..].iter_mut().all(|s| {
            s.read(&names)
                .is_ok_and(|other| names.iter().all(|&n| same_bits(&other[n], &rank0[n])))
        })
    }

    /// One step on `this`; with `next`, the step after it is handed its batch before
    /// this one's results are waited for, and must be run next, with the same batch.
    pub fn run(&mut self, this: Feed<'_>, next: Option<Feed<'_>>) -> Result<StepOutcome> {
        // What the last step staged is this step's batch, whether this one succeeds or not.
        let staged = std::mem::take(&mut self.staged);
        let outcome = match self.process {
            Some(group) => self.run_process_replica(group, this, next, staged)?,
            None => {
                let outputs = self.run_threads(this, next, staged)?;
                StepOutcome {
                    loss: scalar(&outputs, LOSS)?,
                    correct: correct(
                        outputs.get("logits").context("step graph has no logits")?,
                        this.labels,
                    ),
                    digest: this.digest,
                    skipped: this.skipped,
                }
            }
        };
        self.staged = next.is_some();
        Ok(outcome)
    }

    /// This process's replica of a group of processes: its shard's step, then the
    /// group's loss and count of correct images, summed in rank order as the threads'
    /// outcomes are merged (so every rank reports the in-process run's figures), with
    /// the ranks' unreadable images and shard digests (`launch/sums.rs`).
    fn run_process_replica(
        &mut self,
        group: &ProcessGroup,
        this: Feed<'_>,
        next: Option<Feed<'_>>,
        staged: bool,
    ) -> Result<StepOutcome> {
        check_split(&self.shard, 1, this.pixels, this.labels)?;
        if let Some(next) = next {
            check_split(&self.shard, 1, next.pixels, next.labels)?;
        }
        let shard = Shard::of(&self.shard, this, !staged)?;
        let next = next.map(|n| Shard::of(&self.shard, n, true)).transpose()?;
        let session = self.sessions[0].as_mut();
        let outputs = replica(session, Some(group.collective()), &shard, next.as_ref())
            .with_context(|| format!("replica {} of {}", group.rank(), group.world()))?;
        let mine = RankFigures {
            loss: scalar(&outputs, LOSS)?,
            correct: correct(
                outputs.get("logits").context("step graph has no logits")?,
                this.labels,
            ),
            skipped: this.skipped,
            digest: this.digest,
        };
        let (rank, world) = (group.rank(), group.world());
        let mine = Storage::F64(sums::encode(mine, rank, world));
        let Storage::F64(summed) = group.host().all_reduce(&mine, calib_ir::ReduceOp::Sum)? else {
            bail!("the group's sum of f64 values came back in another type");
        };
        let figures = sums::decode(&summed, world)?;
        // As `merge`: the f64 sum of the replicas' losses over their count, in f32.
        let loss = (figures.loss_sum / world as f64) as f32;
        Ok(StepOutcome {
            loss: loss as f64,
            correct: figures.correct,
            digest: figures.digest,
            skipped: figures.skipped,
        })
    }

    /// The replicas of this process, each on a thread with its shard.
    fn run_threads(
        &mut self,
        this: Feed<'_>,
        next: Option<Feed<'_>>,
        staged: bool,
    ) -> Result<Outputs> {
        let replicas = self.sessions.len();
        let shards_of = |feed: Feed<'_>, bind: bool| -> Result<Vec<Shard>> {
            (0..replicas)
                .map(|r| {
                    let (pixels, labels) =
                        shard_of(&self.shard, replicas, r, feed.pixels, feed.labels)?;
                    Shard::of(
                        &self.shard,
                        Feed {
                            pixels,
                            labels,
                            ..feed
                        },
                        bind,
                    )
                })
                .collect()
        };
        let shards = shards_of(this, !staged)?;
        let nexts: Vec<Option<Shard>> = match next {
            Some(next) => shards_of(next, true)?.into_iter().map(Some).collect(),
            None => (0..replicas).map(|_| None).collect(),
        };
        if replicas == 1 {
            let session = self.sessions[0].as_mut();
            return replica(session, None, &shards[0], nexts[0].as_ref());
        }
        let results: Vec<Result<Outputs>> = std::thread::scope(|s| {
            let handles: Vec<_> = self
                .sessions
                .iter_mut()
                .zip(InProcess::group(replicas))
                .zip(shards.iter().zip(&nexts))
                .map(|((session, group), (shard, next))| {
                    // The group handle moves into the thread: when the thread ends, for
                    // whatever reason, the handle is dropped and its peers stop waiting.
                    s.spawn(move || replica(session.as_mut(), Some(&group), shard, next.as_ref()))
                })
                .collect();
            handles
                .into_iter()
                .enumerate()
                .map(|(r, h)| {
                    h.join()
                        .unwrap_or_else(|_| Err(anyhow!("replica {r} panicked")))
                        .with_context(|| format!("replica {r} of {replicas}"))
                })
                .collect()
        });
        merge(results)
    }
}

/// Refuses a global batch that is not `replicas` shards of `shard`.
fn check_split(shard: &[usize], replicas: usize, pixels: &[f32], labels: &[i64]) -> Result<()> {
    let pixels_per_row: usize = shard[1..].iter().product();
    if labels.len() != shard[0] * replicas || pixels.len() != labels.len() * pixels_per_row {
        bail!(
            "a batch of {} labels and {} pixels does not split into {} shards of {:?}",
            labels.len(),
            pixels.len(),
            replicas,
            shard
        );
    }
    Ok(())
}

/// Replica `rank`'s rows of the global batch: `rank*B/R .. (rank+1)*B/R`.
fn shard_of<'b>(
    shard: &[usize],
    replicas: usize,
    rank: usize,
    pixels: &'b [f32],
    labels: &'b [i64],
) -> Result<(&'b [f32], &'b [i64])> {
    check_split(shard, replicas, pixels, labels)?;
    let rows = shard[0];
    let per_row: usize = shard[1..].iter().product();
    Ok((
        &pixels[rank * rows * per_row..(rank + 1) * rows * per_row],
        &labels[rank * rows..(rank + 1) * rows],
    ))
}

/// One replica's shard of a step's batch as tensors; `None` where the step before
/// staged it (the session has it already).
struct Shard(Option<(HostTensor, HostTensor, HostTensor)>);

impl Shard {
    fn of(shape: &[usize], feed: Feed<'_>, bind: bool) -> Result<Self> {
        if !bind {
            return Ok(Shard(None));
        }
        Ok(Shard(Some((
            HostTensor::from_f32(shape.to_vec(), feed.pixels.to_vec())?,
            HostTensor::from_i64(vec![feed.labels.len()], feed.labels.to_vec())?,
            HostTensor::from_f32(Vec::<usize>::new(), vec![feed.lr as f32])?,
        ))))
    }

    fn bind<'t>(&'t self, mut bindings: Bindings<'t>) -> Bindings<'t> {
        if let Some((x, y, lr)) = &self.0 {
            bindings = bindings.input("input", x).input("labels", y).input(LR, lr);
        }
        bindings
    }
}

/// One replica's step on its shard, staging `next`'s shard for the step after.
fn replica(
    session: &mut dyn Session,
    group: Option<&dyn Collective>,
    this: &Shard,
    next: Option<&Shard>,
) -> Result<Outputs> {
    let mut batch = this.bind(Bindings::new());
    if let Some(group) = group {
        batch = batch.collective(group);
    }
    Ok(match next {
        Some(next) => session.step_and_stage(&batch, STEP_FETCH, &next.bind(Bindings::new()))?,
        None => session.step(&batch, STEP_FETCH)?,
    })
}

/// The whole batch's logits and mean loss; or the error of the replica that failed
/// first in its own right.
fn merge(results: Vec<Result<Outputs>>) -> Result<Outputs> {
    if results.iter().any(Result::is_err) {
        let mut errors: Vec<anyhow::Error> = results.into_iter().filter_map(Result::err).collect();
        let own = errors.iter().position(|e| !is_peer_failure(e)).unwrap_or(0);
        return Err(errors.swap_remove(own));
    }
    let outputs: Vec<Outputs> = results.into_iter().map(|r| r.expect("no errors")).collect();
    let logits: Vec<&HostTensor> = outputs
        .iter()
        .map(|o| o.get("logits").context("step graph has no logits"))
        .collect::<Result<_>>()?;
    let classes = logits[0].shape()[1];
    let all: Vec<f32> = logits.iter().flat_map(|t| t.to_f32_vec()).collect();
    let all = HostTensor::from_f32(vec![all.len() / classes, classes], all)?;
    let loss = outputs
        .iter()
        .map(|o| o.get(LOSS).map(|t| t.to_f64_vec()[0]))
        .sum::<Option<f64>>()
        .context("step graph has no loss")?
        / outputs.len() as f64;
    let mut first = outputs.into_iter().next().expect("at least one replica");
    first.insert("logits".into(), all);
    first.insert(
        LOSS.into(),
        HostTensor::from_f32(Vec::<usize>::new(), vec![loss as f32])?,
    );
    Ok(first)
}

/// Whether a replica failed only because a peer did.
fn is_peer_failure(e: &anyhow::Error) -> bool {
    matches!(
        e.downcast_ref::<RuntimeError>(),
        Some(RuntimeError::Op {
            source: OpError::Collective(CollectiveError::PeerLeft { .. }),
            ..
        })
    )
}

/// Equal dtype, shape and bits (NaN equal to itself, `-0.0` unequal to `0.0`).
fn same_bits(a: &HostTensor, b: &HostTensor) -> bool {
    a.dtype() == b.dtype()
        && a.shape() == b.shape()
        && match (a.storage(), b.storage()) {
            (Storage::F32(x), Storage::F32(y)) => x
                .iter()
                .map(|v| v.to_bits())
                .eq(y.iter().map(|v| v.to_bits())),
            (Storage::F64(x), Storage::F64(y)) => x
                .iter()
                .map(|v| v.to_bits())
                .eq(y.iter().map(|v| v.to_bits())),
            (Storage::I64(x), Storage::I64(y)) => x == y,
            _ => false,
        }
}

#[cfg(test)]
mod tests {
    use super::*;
    use calib_ir::Graph;

    /// A backend that only says how many devices it has.
    struct Devices(Option<usize>);

    impl Backend for Devices {
        fn name(&self) -> &str {
            "test"
        }
        fn run(&self, _: &Graph, _: &Bindings) -> Result<Outputs, RuntimeError> {
            unreachable!("replica counts are checked before anything runs")
        }
        fn devices(&self) -> Option<usize> {
            self.0
        }
    }

    #[test]
    fn replicas_are_limited_to_the_devices_present() {
        check_replicas(2, &Devices(Some(2)), "--replicas").unwrap();
        let err = check_replicas(3, &Devices(Some(2)), "--replicas")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("--replicas 3") && err.contains("sees 2 device(s)"),
            "{err}"
        );
    }

    #[test]
    fn host_replicas_are_limited_to_the_cap() {
        check_replicas(MAX_HOST_REPLICAS, &Devices(None), "--replicas").unwrap();
        let err = check_replicas(MAX_HOST_REPLICAS + 1, &Devices(None), "--replicas")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(&format!("at most {MAX_HOST_REPLICAS}")),
            "{err}"
        );
    }
}
