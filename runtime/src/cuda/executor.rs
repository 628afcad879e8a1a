//! Runs a [`DeviceProgram`] on one GPU: kernels loaded once ([`LoadedKernels`], shared
//! by every program of the same plan on the GPU), one arena allocation, the program's
//! [`schedule`](DeviceProgram::schedule) enqueued on a stream of its own. [`CudaProgram::run`]
//! uploads every input and downloads every output; as a [`ResidentProgram`] (what a
//! session drives) it keeps the state in the arena and ends each step by copying the
//! carried outputs into their inputs' buffers on the stream, so that a step moves only
//! what the session asks for.
//!
//! All-reduces run one of two ways. With an NCCL communicator bound (the replica's
//! [`Collective`] is an [`NcclRank`] on this GPU) each one is enqueued on the
//! communicator's stream as soon as its input is complete and joined just before the
//! first kernel that reads its result, so gradient buckets travel while the backward
//! pass computes; the arena plan keeps the bytes of an all-reduce in flight apart from
//! everything launched meanwhile (checked by [`DeviceProgram::check_overlap`]).
//! Otherwise each is staged through the host at its join and reduced by whatever
//! group is bound (several replicas sharing one GPU, or no NCCL).
//!
//! With [`CudaOptions::graph`] the first run captures the whole schedule (launches,
//! NCCL calls, the events between the streams, the carry's copies) as a CUDA graph and
//! later runs replay it: one driver call per step instead of one per kernel, and no host
//! copy of the state at all. Addresses are fixed by the arena, so the graph stays valid
//! as long as the program and the communicator do.

use super::modules::{LoadStats, LoadedKernels};
use super::staging::Staging;
use super::upload::Uploader;
use super::{driver_error, CudaError, NcclRank};
use crate::memory::{self, Limit, Need};
use crate::session::{BufferCopy, CopyTimes, ResidentProgram};
use crate::{
    Action, ArenaCopy, Bindings, Collective, CollectiveError, DeviceProgram, OpError, Outputs,
    RuntimeError,
};
use calib_ir::BufferId;
use cudarc::driver::sys::{CUgraphInstantiate_flags, CUstreamCaptureMode};
use cudarc::driver::{
    CudaContext, CudaEvent, CudaGraph, CudaSlice, CudaStream, DevicePtr, DriverError, LaunchConfig,
    PushKernelArg,
};
use std::sync::Arc;

/// How a program runs on its GPU.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CudaOptions {
    /// Capture the first run as a CUDA graph and replay it afterwards. Needs NCCL for
    /// programs with all-reduces (host staging cannot be captured).
    pub graph: bool,
}

/// A program loaded on a GPU.
pub struct CudaProgram {
    ordinal: usize,
    stream: Arc<CudaStream>,
    kernels: Arc<LoadedKernels>,
    arena: CudaSlice<u8>,
    /// The arena's device address.
    base: u64,
    plan: DeviceProgram,
    options: CudaOptions,
    captured: Option<Captured>,
    /// The batch's copies, through page-locked memory on a stream of their own.
    uploader: Uploader,
    /// The next step's batch, copied while the current step runs (`staging.rs`).
    staging: Staging,
}

/// A captured schedule and the communicator and copies it was captured with.
struct Captured {
    graph: CudaGraph,
    comm: Option<*const NcclRank>,
    copies: Vec<ArenaCopy>,
}

// SAFETY: a CUDA graph is not internally synchronized; it is only touched through
// `&mut CudaProgram`, so never from two threads at once.
unsafe impl Send for Captured {}

pub(super) fn fail(context: &str, e: DriverError) -> RuntimeError {
    RuntimeError::Device(driver_error(context, e).to_string())
}

/// Refuses an arena of `bytes` that GPU `ordinal` has no room for now, with the
/// figures, before anything asks the driver for it.
pub fn check_device_memory(ordinal: usize, bytes: usize) -> Result<(), CudaError> {
    if !super::driver_present() {
        return Err(CudaError::NoDriver);
    }
    let ctx = CudaContext::new(ordinal)
        .map_err(|e| driver_error(&format!("opening GPU {ordinal}"), e))?;
    arena_fits(&ctx, ordinal, bytes)
}

/// [`check_device_memory`] on an open context. Each replica's arena is checked when it
/// is allocated, so replicas sharing a GPU see what the ones before them took.
fn arena_fits(ctx: &CudaContext, ordinal: usize, bytes: usize) -> Result<(), CudaError> {
    let (free, total) = ctx
        .mem_get_info()
        .map_err(|e| driver_error(&format!("reading the free memory of GPU {ordinal}"), e))?;
    let need = Need {
        what: format!("the plan's arena on GPU {ordinal}"),
        parts: vec![("arena", bytes as u64)],
    };
    let limit = Limit {
        bytes: free as u64,
        source: format!(
            "free memory of GPU {ordinal} per the driver, of {} in all",
            memory::human(total as u64)
        ),
    };
    memory::check(&need, Some(&limit)).map_err(|e| CudaError::OutOfMemory(e.to_string()))
}

impl CudaProgram {
    /// Loads every kernel on GPU `ordinal` (as cubins where `ptxas` is at hand, see
    /// [`LoadedKernels`]) and allocates the arena.
    pub fn load(ordinal: usize, plan: DeviceProgram) -> Result<Self, CudaError> {
        Self::load_with(ordinal, plan, CudaOptions::default())
    }

    /// [`CudaProgram::load`] with options.
    pub fn load_with(
        ordinal: usize,
        plan: DeviceProgram,
        options: CudaOptions,
    ) -> Result<Self, CudaError> {
        let kernels = LoadedKernels::load(ordinal, &plan.kernels)?;
        Self::with_kernels(kernels, plan, options)
    }

    /// A program on the GPU `kernels` were loaded on, for the plan they were loaded
    /// from: a stream and an arena of its own, the modules shared.
    pub fn with_kernels(
        kernels: Arc<LoadedKernels>,
        plan: DeviceProgram,
        options: CudaOptions,
    ) -> Result<Self, CudaError> {
        if kernels.functions.len() != plan.kernels.len() {
            return Err(CudaError::Driver {
                context: "pairing loaded kernels with a plan".into(),
                message: format!(
                    "{} loaded for {} launches",
                    kernels.functions.len(),
                    plan.kernels.len()
                ),
            });
        }
        let ordinal = kernels.ordinal;
        // Not the legacy default stream: it cannot be captured into a graph.
        let stream = kernels
            .ctx
            .new_stream()
            .map_err(|e| driver_error("creating a stream", e))?;
        arena_fits(&kernels.ctx, ordinal, plan.arena_bytes)?;
        let arena = stream
            .alloc_zeros::<u8>(plan.arena_bytes.max(1))
            .map_err(|e| {
                driver_error(&format!("allocating a {} byte arena", plan.arena_bytes), e)
            })?;
        let base = {
            let (ptr, _sync) = arena.device_ptr(&stream);
            ptr
        };
        let uploader = Uploader::new(&kernels.ctx)
            .map_err(|e| driver_error("creating the upload stream", e))?;
        Ok(CudaProgram {
            ordinal,
            stream,
            kernels,
            arena,
            base,
            plan,
            options,
            captured: None,
            uploader,
            staging: Staging::default(),
        })
    }

    pub(super) fn stream(&self) -> &Arc<CudaStream> {
        &self.stream
    }

    /// How the kernels were loaded.
    pub fn load_stats(&self) -> &LoadStats {
        self.kernels.stats()
    }

    /// Bytes of device memory the program holds.
    pub fn arena_bytes(&self) -> usize {
        self.plan.arena_bytes
    }

    /// The GPU the program is loaded on.
    pub fn ordinal(&self) -> usize {
        self.ordinal
    }

    /// Uploads the bound inputs and params, runs the schedule, and downloads the
    /// program outputs. On failure with an NCCL group bound, this replica leaves the
    /// group, so that its peers stop waiting for it.
    pub fn run(&mut self, bindings: &Bindings) -> Result<Outputs, RuntimeError> {
        let group = bindings.get_collective();
        let nccl = self.nccl_of(group);
        let result = self
            .upload(bindings)
            .and_then(|()| self.execute(group, nccl, &[], &[]))
            .and_then(|()| self.download());
        if let (Err(_), Some(n)) = (&result, nccl) {
            n.leave();
        }
        result
    }

    /// The NCCL rank of `group` if it is one on this GPU.
    fn nccl_of<'g>(&self, group: Option<&'g dyn Collective>) -> Option<&'g NcclRank> {
        group
            .and_then(|g| g.nccl())
            .filter(|n| n.ordinal() == self.ordinal)
    }

    /// Moves a batch staged by the step before into place, runs the schedule, then
    /// `copies`, stages `next` (whole buffers, checked against the arena by the caller)
    /// for the next step, and waits for the step.
    fn execute(
        &mut self,
        group: Option<&dyn Collective>,
        nccl: Option<&NcclRank>,
        copies: &[ArenaCopy],
        next: &[(BufferId, Vec<u8>)],
    ) -> Result<(), RuntimeError> {
        self.move_staged_into_place()?;
        self.enqueue_step(group, nccl, copies)?;
        let staged = match next.is_empty() {
            true => Ok(()),
            false => self.staging.stage(&mut self.uploader, &self.stream, next),
        };
        // Waited for even when staging failed: the arena must outlive what is enqueued.
        let waited = self.wait(nccl);
        staged.and(waited)?;
        self.staging.settle()
    }

    /// Enqueues the move of the batch staged for this step into its buffers.
    fn move_staged_into_place(&mut self) -> Result<(), RuntimeError> {
        let (base, offsets) = (self.base, &self.plan.offsets);
        self.staging
            .move_into_place(&self.stream, |b| base + offsets[b.0] as u64)
    }

    /// Enqueues the schedule, then `copies` (with host-staged all-reduces, runs it).
    fn enqueue_step(
        &mut self,
        group: Option<&dyn Collective>,
        nccl: Option<&NcclRank>,
        copies: &[ArenaCopy],
    ) -> Result<(), RuntimeError> {
        let staged = !self.plan.all_reduces.is_empty() && nccl.is_none();
        if let Some(n) = nccl {
            self.check_group(n)?;
        }
        if staged {
            if self.options.graph {
                return Err(RuntimeError::Device(
                    "a CUDA graph cannot capture all-reduces staged through the host: they \
                     need an NCCL communicator on this GPU (one GPU per replica, NCCL \
                     installed), or run without --cuda-graph"
                        .into(),
                ));
            }
            self.run_staged(group)?;
            self.carry_on_stream(copies)?;
        } else if self.options.graph {
            self.replay(nccl, copies)?;
        } else {
            self.enqueue(nccl)?;
            self.carry_on_stream(copies)?;
        }
        Ok(())
    }

    /// Blocks until everything enqueued on the stream has run.
    fn wait(&self, nccl: Option<&NcclRank>) -> Result<(), RuntimeError> {
        let end = self
            .stream
            .record_event(None)
            .map_err(|e| fail("recording the end of the step", e))?;
        match nccl {
            Some(n) => n.wait(&end).map_err(|e| self.collective_error(e)),
            None => end.synchronize().map_err(|e| fail("running the step", e)),
        }
    }

    /// Copies byte ranges of the arena on the stream, after what is enqueued so far.
    pub(super) fn carry_on_stream(&self, copies: &[ArenaCopy]) -> Result<(), RuntimeError> {
        if copies.is_empty() {
            return Ok(());
        }
        self.stream
            .context()
            .bind_to_thread()
            .map_err(|e| fail("making the GPU current", e))?;
        for c in copies {
            // SAFETY: both ranges lie inside the arena (plan offsets and sizes of two
            // distinct buffers that live through the whole step, so they never share
            // bytes), and the arena outlives the copy: every step is waited for.
            unsafe {
                cudarc::driver::result::memcpy_dtod_async(
                    self.base + c.to as u64,
                    self.base + c.from as u64,
                    c.len,
                    self.stream.cu_stream(),
                )
            }
            .map_err(|e| fail("carrying outputs into the next step's inputs", e))?;
        }
        Ok(())
    }

    fn check_group(&self, n: &NcclRank) -> Result<(), RuntimeError> {
        match self
            .plan
            .all_reduces
            .iter()
            .find(|c| c.replicas != n.world())
        {
            Some(c) => Err(self.collective_error(CollectiveError::GroupSize {
                graph: c.replicas,
                group: n.world(),
            })),
            None => Ok(()),
        }
    }

    fn collective_error(&self, source: CollectiveError) -> RuntimeError {
        let c = self.plan.all_reduces.first();
        RuntimeError::Op {
            node: c.map_or(0, |c| c.node),
            op: "all_reduce",
            scope: c.map_or(String::new(), |c| format!(" in kernel {}", c.kernel)),
            source: OpError::Collective(source),
        }
    }

    fn upload(&mut self, bindings: &Bindings) -> Result<(), RuntimeError> {
        for (id, tensor) in self.plan.bound_tensors(bindings)? {
            let start = self.plan.offsets[id.0];
            let bytes = self.plan.stored_bytes(id, tensor);
            let mut view = self.arena.slice_mut(start..start + bytes.len());
            self.stream.memcpy_htod(&bytes, &mut view).map_err(|e| {
                fail(
                    &format!("uploading {}", self.plan.program.buffers[id.0].name),
                    e,
                )
            })?;
        }
        Ok(())
    }

    fn download(&self) -> Result<Outputs, RuntimeError> {
        let mut outputs = Outputs::new();
        for o in &self.plan.program.outputs {
            let bytes = self.read_buffer(o.buffer)?;
            outputs.insert(o.name.clone(), self.plan.stored_tensor(o.buffer, &bytes)?);
        }
        Ok(outputs)
    }

    /// A buffer's bytes, after everything enqueued so far.
    fn read_buffer(&self, b: BufferId) -> Result<Vec<u8>, RuntimeError> {
        let start = self.plan.offsets[b.0];
        let len = self.plan.program.buffers[b.0].ty.size_bytes();
        self.stream
            .clone_dtoh(&self.arena.slice(start..start + len))
            .map_err(|e| fail("downloading", e))
    }

    fn address(&self, b: BufferId) -> u64 {
        self.base + self.plan.offsets[b.0] as u64
    }

    pub(super) fn launch(&self, i: usize) -> Result<(), RuntimeError> {
        let kernel = &self.plan.kernels[i];
        let addresses: Vec<u64> = kernel.params.iter().map(|&b| self.address(b)).collect();
        let mut launch = self.stream.launch_builder(&self.kernels.functions[i]);
        for a in &addresses {
            launch.arg(a);
        }
        let config = LaunchConfig {
            grid_dim: (kernel.grid[0], kernel.grid[1], kernel.grid[2]),
            block_dim: (kernel.block[0], kernel.block[1], kernel.block[2]),
            shared_mem_bytes: kernel.shared_bytes,
        };
        // SAFETY: every parameter is the address of a buffer inside the arena, sized
        // by the plan for the kernel's static shapes; codegen's PTX reads and writes
        // only within those buffers (checked on the simulator in CI).
        unsafe { launch.launch(config) }
            .map_err(|e| fail(&format!("launching {}", kernel.name), e))?;
        Ok(())
    }

    /// Enqueues the schedule; all-reduces (if any) go through `nccl` on its stream.
    fn enqueue(&self, nccl: Option<&NcclRank>) -> Result<(), RuntimeError> {
        let mut done: Vec<Option<CudaEvent>> =
            (0..self.plan.all_reduces.len()).map(|_| None).collect();
        for action in self.plan.schedule() {
            match action {
                Action::Launch(i) => self.launch(i)?,
                Action::StartAllReduce(c) => {
                    let n = nccl.expect("enqueue is called with NCCL when there are all-reduces");
                    let all_reduce = &self.plan.all_reduces[c];
                    let ty = &self.plan.program.buffer(all_reduce.input).ty;
                    let ready = self
                        .stream
                        .record_event(None)
                        .map_err(|e| fail("recording a gradient bucket", e))?;
                    // SAFETY: both addresses are arena buffers of `ty`'s size, and the
                    // arena outlives the step (the step is waited for before returning).
                    let event = unsafe {
                        n.all_reduce_device(
                            self.address(all_reduce.input),
                            self.address(all_reduce.output),
                            ty.numel(),
                            ty.dtype,
                            all_reduce.reduce,
                            &ready,
                        )
                    }
                    .map_err(|e| self.collective_error(e))?;
                    done[c] = Some(event);
                }
                Action::JoinAllReduce(c) => {
                    let event = done[c].as_ref().expect("joined after started");
                    self.stream
                        .wait(event)
                        .map_err(|e| fail("joining an all-reduce", e))?;
                }
            }
        }
        Ok(())
    }

    /// Runs the schedule with every all-reduce staged through the host at its join.
    fn run_staged(&mut self, group: Option<&dyn Collective>) -> Result<(), RuntimeError> {
        for action in self.plan.schedule() {
            match action {
                Action::Launch(i) => self.launch(i)?,
                Action::StartAllReduce(_) => {}
                Action::JoinAllReduce(c) => {
                    let all_reduce = self.plan.all_reduces[c].clone();
                    let input = self.read_buffer(all_reduce.input)?;
                    let reduced = all_reduce.reduce_on_host(&self.plan.program, &input, group)?;
                    let start = self.plan.offsets[all_reduce.output.0];
                    let mut view = self.arena.slice_mut(start..start + reduced.len());
                    self.stream
                        .memcpy_htod(&reduced, &mut view)
                        .map_err(|e| fail("uploading an all-reduced bucket", e))?;
                }
            }
        }
        Ok(())
    }

    /// Launches the captured graph, capturing it first (again, if the communicator or
    /// the copies changed since).
    fn replay(
        &mut self,
        nccl: Option<&NcclRank>,
        copies: &[ArenaCopy],
    ) -> Result<(), RuntimeError> {
        let comm = nccl.map(|n| n as *const NcclRank);
        if self
            .captured
            .as_ref()
            .is_none_or(|c| c.comm != comm || c.copies != copies)
        {
            self.captured = None;
            self.stream
                .begin_capture(CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL)
                .map_err(|e| fail("starting a CUDA graph capture", e))?;
            let enqueued = self
                .enqueue(nccl)
                .and_then(|()| self.carry_on_stream(copies));
            let graph = self
                .stream
                .end_capture(CUgraphInstantiate_flags(0))
                .map_err(|e| fail("instantiating the captured CUDA graph", e));
            enqueued?;
            let graph = graph?.ok_or_else(|| {
                RuntimeError::Device("the CUDA graph capture recorded nothing".into())
            })?;
            self.captured = Some(Captured {
                graph,
                comm,
                copies: copies.to_vec(),
            });
        }
        let captured = self.captured.as_ref().expect("captured above");
        captured
            .graph
            .launch()
            .map_err(|e| fail("launching the CUDA graph", e))
    }
}

impl CudaProgram {
    /// Where `buffer` lies in the arena, checked against the `bytes` given for it.
    fn arena_range(&self, buffer: BufferId, bytes: usize) -> Result<(usize, usize), RuntimeError> {
        let len = self.plan.program.buffer(buffer).ty.size_bytes();
        if bytes != len {
            return Err(RuntimeError::Device(format!(
                "{bytes} bytes for the {len} of buffer {buffer}"
            )));
        }
        Ok((self.plan.offsets[buffer.0], len))
    }
}

impl ResidentProgram for CudaProgram {
    fn plan(&self) -> &DeviceProgram {
        &self.plan
    }

    fn write(&mut self, buffer: BufferId, bytes: &[u8]) -> Result<(), RuntimeError> {
        let (start, len) = self.arena_range(buffer, bytes.len())?;
        let mut view = self.arena.slice_mut(start..start + len);
        self.stream.memcpy_htod(bytes, &mut view).map_err(|e| {
            let name = &self.plan.program.buffer(buffer).name;
            fail(&format!("uploading {name}"), e)
        })
    }

    /// Through page-locked memory on the copy stream; the step's stream waits for it.
    fn write_batch(&mut self, buffer: BufferId, bytes: &[u8]) -> Result<(), RuntimeError> {
        let (start, len) = self.arena_range(buffer, bytes.len())?;
        let mut view = self.arena.slice_mut(start..start + len);
        self.uploader
            .upload(buffer, bytes, &mut view, &self.stream)
            .map_err(|e| {
                let name = &self.plan.program.buffer(buffer).name;
                fail(&format!("uploading {name} through page-locked memory"), e)
            })
    }

    fn read(&mut self, buffer: BufferId) -> Result<Vec<u8>, RuntimeError> {
        self.read_buffer(buffer)
    }

    /// On failure with an NCCL group bound, this replica leaves the group.
    fn step(
        &mut self,
        group: Option<&dyn Collective>,
        copies: &[BufferCopy],
    ) -> Result<(), RuntimeError> {
        self.step_then_stage(group, copies, &[])
    }

    /// The copies of `next` overlap this step (`staging.rs`). On failure with an NCCL
    /// group bound, this replica leaves the group.
    fn step_then_stage(
        &mut self,
        group: Option<&dyn Collective>,
        copies: &[BufferCopy],
        next: &[(BufferId, Vec<u8>)],
    ) -> Result<(), RuntimeError> {
        for (buffer, bytes) in next {
            self.arena_range(*buffer, bytes.len())?;
        }
        let nccl = self.nccl_of(group);
        let copies = self.plan.arena_copies(copies);
        let result = self.execute(group, nccl, &copies, next);
        if let (Err(_), Some(n)) = (&result, nccl) {
            n.leave();
        }
        result
    }

    fn copy_times(&self) -> Option<CopyTimes> {
        Some(self.staging.times())
    }

    fn timed_step(
        &mut self,
        group: Option<&dyn Collective>,
        copies: &[BufferCopy],
    ) -> Result<Vec<f64>, RuntimeError> {
        if !self.plan.all_reduces.is_empty() || group.is_some_and(|g| g.world() > 1) {
            return Err(RuntimeError::Device(
                "per-launch timing runs one replica's step without all-reduces".into(),
            ));
        }
        let copies = self.plan.arena_copies(copies);
        self.move_staged_into_place()?;
        let times = self.time_launches(&copies)?;
        self.staging.settle()?;
        Ok(times)
    }

    fn stats(&self) -> serde_json::Value {
        serde_json::json!({
            "gpu": self.ordinal,
            "arena_bytes": self.plan.arena_bytes,
            "cuda_graph": self.options.graph,
            "kernels": self.kernels.stats(),
        })
    }
}
