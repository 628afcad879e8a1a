//! NCCL communicators for a data-parallel group of GPUs, one replica per GPU: driven by
//! threads of one process ([`NcclGroup`], `ncclCommInitAll`), or one rank per process
//! across machines ([`NcclRank::join`], `ncclCommInitRank` with the unique id rank 0
//! made and sent over the rendezvous), loaded at run time like the driver.
//!
//! The executor all-reduces buffers of its arena in place on a communication stream of
//! its own ([`NcclRank::all_reduce_device`]), so gradient buckets are reduced while the
//! backward pass runs. A rank is also a [`Collective`] over host tensors, so any
//! backend can use NCCL as its transport.
//!
//! NCCL kernels wait for their peers on the GPU; a replica that fails before issuing
//! its share would leave the others waiting forever. So a failing replica marks the
//! group ([`NcclRank::leave`], done by a guard whatever the way out), and ranks wait
//! for their streams by polling ([`NcclRank::wait`]): when a peer has left, or after
//! the time limit, they abort their communicator (which unblocks its kernels) and
//! return [`CollectiveError::PeerLeft`] or [`CollectiveError::Timeout`]. An aborted
//! group cannot be used again; the backend makes a new one.

use super::{driver_error, nccl_present, CudaError};
use crate::{Collective, CollectiveError, Storage};
use calib_ir::{DType, ReduceOp};
use cudarc::driver::{CudaContext, CudaEvent, CudaStream, DevicePtrMut};
use cudarc::nccl::{result as nccl, sys};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// No replica has left.
const NOBODY: usize = usize::MAX;

/// The communicators of one group, one per GPU.
#[derive(Debug)]
pub struct NcclGroup {
    ranks: Vec<NcclRank>,
}

/// One replica's communicator, on its GPU, with the stream its collectives run on.
#[derive(Debug)]
pub struct NcclRank {
    rank: usize,
    world: usize,
    ordinal: usize,
    comm: Mutex<Comm>,
    stream: Arc<CudaStream>,
    shared: Arc<Shared>,
    /// All-reduces issued, for messages.
    round: AtomicU64,
}

/// What the ranks of a group share.
#[derive(Debug)]
struct Shared {
    /// The first rank that left, or [`NOBODY`].
    left: AtomicUsize,
    /// Set once any rank aborted its communicator: the group is spent.
    aborted: AtomicBool,
    timeout: Duration,
}

/// An NCCL communicator handle.
#[derive(Debug)]
struct Comm(sys::ncclComm_t);

// SAFETY: an NCCL communicator may be used from any thread as long as calls on it do
// not overlap; every use goes through the `Mutex` in `NcclRank`.
unsafe impl Send for Comm {}

impl Drop for Comm {
    fn drop(&mut self) {
        if !self.0.is_null() {
            // SAFETY: the handle came from ncclCommInitAll and is destroyed once. Abort
            // rather than destroy: it never waits for peers that may be gone.
            let _ = unsafe { nccl::comm_abort(self.0) };
        }
    }
}

impl NcclGroup {
    /// How long a rank waits for its peers by default (as the in-process group).
    pub const DEFAULT_TIMEOUT: Duration = crate::InProcess::DEFAULT_TIMEOUT;

    /// One communicator per GPU in `ordinals` (rank `r` on `ordinals[r]`), each with a
    /// new stream for its collectives.
    pub fn new(ordinals: &[usize]) -> Result<Self, CudaError> {
        Self::with_timeout(ordinals, Self::DEFAULT_TIMEOUT)
    }

    /// Like [`NcclGroup::new`], with the longest wait for a peer.
    pub fn with_timeout(ordinals: &[usize], timeout: Duration) -> Result<Self, CudaError> {
        if !super::driver_present() {
            return Err(CudaError::NoDriver);
        }
        if !nccl_present() {
            return Err(CudaError::NoNccl);
        }
        let mut seen = ordinals.to_vec();
        seen.sort_unstable();
        seen.dedup();
        if seen.len() != ordinals.len() || ordinals.is_empty() {
            return Err(CudaError::Driver {
                context: "creating an NCCL group".into(),
                message: format!("needs distinct GPUs, one per replica; got {ordinals:?}"),
            });
        }
        let streams = ordinals
            .iter()
            .map(|&o| {
                let ctx = CudaContext::new(o)
                    .map_err(|e| driver_error(&format!("opening GPU {o}"), e))?;
                ctx.new_stream()
                    .map_err(|e| driver_error("creating a communication stream", e))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let devices: Vec<i32> = ordinals.iter().map(|&o| o as i32).collect();
        let mut comms = vec![std::ptr::null_mut(); ordinals.len()];
        // SAFETY: `comms` has room for one handle per device in `devices`.
        unsafe { nccl::comm_init_all(comms.as_mut_ptr(), devices.len() as i32, devices.as_ptr()) }
            .map_err(|e| driver_error("initializing NCCL (ncclCommInitAll)", e))?;
        let shared = Arc::new(Shared {
            left: AtomicUsize::new(NOBODY),
            aborted: AtomicBool::new(false),
            timeout,
        });
        let world = ordinals.len();
        let ranks = comms
            .into_iter()
            .zip(streams)
            .enumerate()
            .map(|(rank, (comm, stream))| NcclRank {
                rank,
                world,
                ordinal: ordinals[rank],
                comm: Mutex::new(Comm(comm)),
                stream,
                shared: shared.clone(),
                round: AtomicU64::new(0),
            })
            .collect();
        Ok(NcclGroup { ranks })
    }

    pub fn rank(&self, r: usize) -> &NcclRank {
        &self.ranks[r]
    }

    pub fn world(&self) -> usize {
        self.ranks.len()
    }

    /// Whether a rank aborted: the group must be replaced.
    pub fn is_spent(&self) -> bool {
        self.ranks[0].shared.aborted.load(Ordering::SeqCst)
    }
}

/// The bytes of an NCCL unique id: what rank 0 of a group of processes creates and
/// every rank passes to [`NcclRank::join`].
pub const UNIQUE_ID_BYTES: usize = 128;

impl NcclRank {
    /// A new unique id for a group of processes (`ncclGetUniqueId`), made by rank 0 and
    /// sent to the others (see `calib_runtime::Rendezvous`).
    pub fn unique_id() -> Result<[u8; UNIQUE_ID_BYTES], CudaError> {
        if !super::driver_present() {
            return Err(CudaError::NoDriver);
        }
        if !nccl_present() {
            return Err(CudaError::NoNccl);
        }
        let id = nccl::get_uniqueid()
            .map_err(|e| driver_error("creating an NCCL unique id (ncclGetUniqueId)", e))?;
        Ok(id.internal.map(|c| c as u8))
    }

    /// This process's rank of a group of `world` processes (`ncclCommInitRank`) on GPU
    /// `ordinal`, with a new stream for its collectives. Every rank passes the id rank
    /// 0 made; the call returns when all have joined. Peers are other processes, so a
    /// peer that fails is noticed through NCCL's asynchronous error or the time limit
    /// (see [`NcclRank::wait`]).
    pub fn join(
        id: &[u8; UNIQUE_ID_BYTES],
        rank: usize,
        world: usize,
        ordinal: usize,
        timeout: Duration,
    ) -> Result<NcclRank, CudaError> {
        if !super::driver_present() {
            return Err(CudaError::NoDriver);
        }
        if !nccl_present() {
            return Err(CudaError::NoNccl);
        }
        let ctx = CudaContext::new(ordinal)
            .map_err(|e| driver_error(&format!("opening GPU {ordinal}"), e))?;
        let stream = ctx
            .new_stream()
            .map_err(|e| driver_error("creating a communication stream", e))?;
        ctx.bind_to_thread()
            .map_err(|e| driver_error("making the GPU current", e))?;
        let unique = sys::ncclUniqueId {
            internal: id.map(|b| b as std::ffi::c_char),
        };
        let mut comm = std::ptr::null_mut();
        // SAFETY: `comm` receives one handle; the id is rank 0's, as NCCL requires.
        unsafe { nccl::comm_init_rank(&mut comm, world as i32, unique, rank as i32) }
            .map_err(|e| driver_error("joining the NCCL group (ncclCommInitRank)", e))?;
        Ok(NcclRank {
            rank,
            world,
            ordinal,
            comm: Mutex::new(Comm(comm)),
            stream,
            shared: Arc::new(Shared {
                left: AtomicUsize::new(NOBODY),
                aborted: AtomicBool::new(false),
                timeout,
            }),
            round: AtomicU64::new(0),
        })
    }

    /// An error NCCL found in the background (a peer process died, a network link
    /// failed), which its kernels would otherwise wait out.
    fn async_error(&self) -> Option<String> {
        let comm = self.comm.lock().unwrap_or_else(|e| e.into_inner());
        if comm.0.is_null() {
            return None;
        }
        let mut state = sys::ncclResult_t::ncclSuccess;
        // SAFETY: the handle is live while the lock is held.
        let queried = unsafe { sys::ncclCommGetAsyncError(comm.0, &mut state) };
        match (queried, state) {
            (sys::ncclResult_t::ncclSuccess, sys::ncclResult_t::ncclSuccess)
            | (sys::ncclResult_t::ncclSuccess, sys::ncclResult_t::ncclInProgress) => None,
            (sys::ncclResult_t::ncclSuccess, failed) => Some(format!("{failed:?}")),
            (query, _) => Some(format!("ncclCommGetAsyncError: {query:?}")),
        }
    }
}

/// NCCL's name for an element type, or why it cannot be reduced.
fn nccl_type(dtype: DType) -> Result<sys::ncclDataType_t, CollectiveError> {
    Ok(match dtype {
        // TF32 values are f32s (the dropped bits zero); their mean is an f32.
        DType::F32 | DType::TF32 => sys::ncclDataType_t::ncclFloat32,
        DType::F16 => sys::ncclDataType_t::ncclFloat16,
        DType::BF16 => sys::ncclDataType_t::ncclBfloat16,
        DType::I64 => return Err(CollectiveError::Integer),
    })
}

fn nccl_op(reduce: ReduceOp) -> sys::ncclRedOp_t {
    match reduce {
        ReduceOp::Sum => sys::ncclRedOp_t::ncclSum,
        // ncclAvg (NCCL 2.10+) divides by the world size on the GPU.
        ReduceOp::Mean => sys::ncclRedOp_t::ncclAvg,
    }
}

impl NcclRank {
    /// The GPU this rank runs on.
    pub fn ordinal(&self) -> usize {
        self.ordinal
    }

    /// The stream this rank's collectives run on.
    pub fn stream(&self) -> &Arc<CudaStream> {
        &self.stream
    }

    /// Enqueues an all-reduce of `count` elements at device address `send` into `recv`
    /// (they may be equal) on [`NcclRank::stream`], after `ready` completes; returns
    /// the event that marks its completion.
    ///
    /// # Safety
    /// `send` and `recv` must be device addresses on this rank's GPU with room for
    /// `count` elements of `dtype`, and stay valid until the returned event completes.
    pub unsafe fn all_reduce_device(
        &self,
        send: u64,
        recv: u64,
        count: usize,
        dtype: DType,
        reduce: ReduceOp,
        ready: &CudaEvent,
    ) -> Result<CudaEvent, CollectiveError> {
        self.check_group()?;
        self.enqueue(send, recv, count, nccl_type(dtype)?, nccl_op(reduce), ready)
    }

    /// See [`NcclRank::all_reduce_device`].
    unsafe fn enqueue(
        &self,
        send: u64,
        recv: u64,
        count: usize,
        dtype: sys::ncclDataType_t,
        op: sys::ncclRedOp_t,
        ready: &CudaEvent,
    ) -> Result<CudaEvent, CollectiveError> {
        let round = self.round.fetch_add(1, Ordering::SeqCst);
        let failed = |what: &str, e: &dyn std::fmt::Debug| CollectiveError::Transport {
            round,
            message: format!("{what}: {e:?}"),
        };
        self.stream
            .wait(ready)
            .map_err(|e| failed("waiting for the input", &e))?;
        // NCCL enqueues through the CUDA runtime, on the thread's current context.
        self.stream
            .context()
            .bind_to_thread()
            .map_err(|e| failed("making the GPU current", &e))?;
        let comm = self.comm.lock().unwrap_or_else(|e| e.into_inner());
        if comm.0.is_null() {
            return Err(failed("the communicator", &"aborted earlier"));
        }
        nccl::all_reduce(
            send as *const _,
            recv as *mut _,
            count,
            dtype,
            op,
            comm.0,
            self.stream.cu_stream() as _,
        )
        .map_err(|e| failed("ncclAllReduce", &e))?;
        self.stream
            .record_event(None)
            .map_err(|e| failed("recording its completion", &e))
    }

    /// Blocks until `done` completes, polling so that a peer that left (or the time
    /// limit) aborts this rank's communicator instead of hanging.
    pub fn wait(&self, done: &CudaEvent) -> Result<(), CollectiveError> {
        let start = Instant::now();
        let mut pause = Duration::from_micros(20);
        loop {
            match done.try_is_complete() {
                Ok(true) => return Ok(()),
                Ok(false) => {}
                Err(e) => {
                    self.abort();
                    return Err(CollectiveError::Transport {
                        round: self.round.load(Ordering::SeqCst),
                        message: format!("waiting for the GPU: {e:?}"),
                    });
                }
            }
            if let Err(e) = self.check_group() {
                self.abort();
                return Err(e);
            }
            if let Some(message) = self.async_error() {
                self.abort();
                return Err(CollectiveError::Transport {
                    round: self.round.load(Ordering::SeqCst),
                    message: format!("NCCL reported {message} (a peer failed or left)"),
                });
            }
            if start.elapsed() > self.shared.timeout {
                self.abort();
                return Err(CollectiveError::Timeout {
                    peer: self.rank,
                    round: self.round.load(Ordering::SeqCst),
                    seconds: self.shared.timeout.as_secs_f64(),
                });
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(1));
        }
    }

    /// Marks this rank as gone (it failed): its peers stop waiting for it.
    pub fn leave(&self) {
        let _ = self.shared.left.compare_exchange(
            NOBODY,
            self.rank,
            Ordering::SeqCst,
            Ordering::SeqCst,
        );
    }

    fn check_group(&self) -> Result<(), CollectiveError> {
        match self.shared.left.load(Ordering::SeqCst) {
            NOBODY => Ok(()),
            peer => Err(CollectiveError::PeerLeft {
                peer,
                round: self.round.load(Ordering::SeqCst),
            }),
        }
    }

    fn abort(&self) {
        self.shared.aborted.store(true, Ordering::SeqCst);
        let mut comm = self.comm.lock().unwrap_or_else(|e| e.into_inner());
        let handle = std::mem::replace(&mut comm.0, std::ptr::null_mut());
        if !handle.is_null() {
            // SAFETY: the handle is live and taken out, so it is aborted once.
            let _ = unsafe { nccl::comm_abort(handle) };
        }
    }
}

impl Collective for NcclRank {
    fn rank(&self) -> usize {
        self.rank
    }

    fn world(&self) -> usize {
        self.world
    }

    /// Host tensors through the GPU: uploaded, all-reduced, downloaded.
    fn all_reduce(&self, data: &Storage, reduce: ReduceOp) -> Result<Storage, CollectiveError> {
        let round = self.round.load(Ordering::SeqCst);
        let failed = |e: &dyn std::fmt::Debug| CollectiveError::Transport {
            round,
            message: format!("staging a host tensor: {e:?}"),
        };
        let (dtype, bytes): (_, Vec<u8>) = match data {
            Storage::F32(v) => (
                sys::ncclDataType_t::ncclFloat32,
                v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            ),
            Storage::F64(v) => (
                sys::ncclDataType_t::ncclFloat64,
                v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            ),
            Storage::I64(_) => return Err(CollectiveError::Integer),
        };
        let stream = &self.stream;
        let mut buffer = stream.clone_htod(&bytes).map_err(|e| failed(&e))?;
        let ready = stream.record_event(None).map_err(|e| failed(&e))?;
        let ptr = {
            let (ptr, _sync) = DevicePtrMut::device_ptr_mut(&mut buffer, stream);
            ptr
        };
        // SAFETY: `buffer` holds the tensor's bytes and lives until `wait` returns.
        let done = unsafe { self.enqueue(ptr, ptr, data.len(), dtype, nccl_op(reduce), &ready)? };
        self.wait(&done)?;
        let back = stream.clone_dtoh(&buffer).map_err(|e| failed(&e))?;
        Ok(match data {
            Storage::F32(_) => Storage::F32(
                back.chunks_exact(4)
                    .map(|b| f32::from_le_bytes(b.try_into().expect("4 bytes")))
                    .collect(),
            ),
            _ => Storage::F64(
                back.chunks_exact(8)
                    .map(|b| f64::from_le_bytes(b.try_into().expect("8 bytes")))
                    .collect(),
            ),
        })
    }

    fn nccl(&self) -> Option<&NcclRank> {
        Some(self)
    }
}
