//! Runs a [`DeviceProgram`] on one GPU: PTX loaded once, one arena allocation, the
//! program's [`schedule`](DeviceProgram::schedule) enqueued on a stream of its own,
//! inputs uploaded and outputs downloaded per run.
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
//! NCCL calls, the events between the streams) as a CUDA graph and later runs replay
//! it: one driver call per step instead of one per kernel. Addresses are fixed by the
//! arena, so the graph stays valid as long as the program and the communicator do.

use super::{driver_error, driver_present, CudaError, NcclRank};
use crate::{
    Action, Bindings, Collective, CollectiveError, DeviceProgram, HostTensor, OpError, Outputs,
    RuntimeError,
};
use cudarc::driver::sys::{CUfunction_attribute, CUgraphInstantiate_flags, CUstreamCaptureMode};
use cudarc::driver::{
    CudaContext, CudaEvent, CudaFunction, CudaGraph, CudaSlice, CudaStream, DevicePtr, DriverError,
    LaunchConfig, PushKernelArg,
};
use cudarc::nvrtc::Ptx;
use rayon::prelude::*;
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
    functions: Vec<CudaFunction>,
    arena: CudaSlice<u8>,
    /// The arena's device address.
    base: u64,
    plan: DeviceProgram,
    options: CudaOptions,
    captured: Option<Captured>,
}

/// A captured schedule and the communicator it was captured with.
struct Captured {
    graph: CudaGraph,
    comm: Option<*const NcclRank>,
}

// SAFETY: a CUDA graph is not internally synchronized; it is only touched through
// `&mut CudaProgram`, so never from two threads at once.
unsafe impl Send for Captured {}

/// Dynamic shared memory every kernel may use without opting in.
const DEFAULT_SHARED_LIMIT: u32 = 48 * 1024;

fn fail(context: &str, e: DriverError) -> RuntimeError {
    RuntimeError::Device(driver_error(context, e).to_string())
}

impl CudaProgram {
    /// Loads every kernel's PTX on GPU `ordinal` (the driver JIT-compiles it for the
    /// device, modules in parallel) and allocates the arena.
    pub fn load(ordinal: usize, plan: DeviceProgram) -> Result<Self, CudaError> {
        Self::load_with(ordinal, plan, CudaOptions::default())
    }

    /// [`CudaProgram::load`] with options.
    pub fn load_with(
        ordinal: usize,
        plan: DeviceProgram,
        options: CudaOptions,
    ) -> Result<Self, CudaError> {
        if !driver_present() {
            return Err(CudaError::NoDriver);
        }
        let ctx = CudaContext::new(ordinal)
            .map_err(|e| driver_error(&format!("opening GPU {ordinal}"), e))?;
        // The executor orders its streams with its own events (the arena is one
        // allocation, so cudarc's per-allocation tracking would serialize everything,
        // and its events would leak into graph captures).
        // SAFETY: every cross-stream use below waits on an explicit event.
        unsafe { ctx.disable_event_tracking() };
        // Not the legacy default stream: it cannot be captured into a graph.
        let stream = ctx
            .new_stream()
            .map_err(|e| driver_error("creating a stream", e))?;
        // The driver JIT-compiles each module; hundreds of them load in parallel.
        let functions = plan
            .kernels
            .par_iter()
            .map(|k| {
                let module = ctx.load_module(Ptx::from_src(k.ptx.clone())).map_err(|e| {
                    driver_error(&format!("loading the PTX of kernel {}", k.name), e)
                })?;
                let function = module
                    .load_function(&k.name)
                    .map_err(|e| driver_error(&format!("finding entry {}", k.name), e))?;
                // Above 48 KiB, dynamic shared memory must be asked for per function.
                if k.shared_bytes > DEFAULT_SHARED_LIMIT {
                    function
                        .set_attribute(
                            CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                            k.shared_bytes as i32,
                        )
                        .map_err(|e| {
                            driver_error(
                                &format!(
                                    "allowing {} bytes of shared memory for {}",
                                    k.shared_bytes, k.name
                                ),
                                e,
                            )
                        })?;
                }
                Ok(function)
            })
            .collect::<Result<Vec<_>, _>>()?;
        let arena = stream
            .alloc_zeros::<u8>(plan.arena_bytes.max(1))
            .map_err(|e| {
                driver_error(&format!("allocating a {} byte arena", plan.arena_bytes), e)
            })?;
        let base = {
            let (ptr, _sync) = arena.device_ptr(&stream);
            ptr
        };
        Ok(CudaProgram {
            ordinal,
            stream,
            functions,
            arena,
            base,
            plan,
            options,
            captured: None,
        })
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
        let nccl = group
            .and_then(|g| g.nccl())
            .filter(|n| n.ordinal() == self.ordinal);
        let result = self.run_with(bindings, group, nccl);
        if let (Err(_), Some(n)) = (&result, nccl) {
            n.leave();
        }
        result
    }

    fn run_with(
        &mut self,
        bindings: &Bindings,
        group: Option<&dyn Collective>,
        nccl: Option<&NcclRank>,
    ) -> Result<Outputs, RuntimeError> {
        self.upload(bindings)?;
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
        } else if self.options.graph {
            self.replay(nccl)?;
        } else {
            self.enqueue(nccl)?;
        }
        let end = self
            .stream
            .record_event(None)
            .map_err(|e| fail("recording the end of the step", e))?;
        match nccl {
            Some(n) => n.wait(&end).map_err(|e| self.collective_error(e))?,
            None => end.synchronize().map_err(|e| fail("running the step", e))?,
        }
        self.download()
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
            let bytes = tensor.to_le_bytes();
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
            let buf = &self.plan.program.buffers[o.buffer.0];
            let bytes = self.read(o.buffer)?;
            let tensor = HostTensor::from_le_bytes(&buf.ty, &bytes)
                .map_err(|e| RuntimeError::Device(e.to_string()))?;
            outputs.insert(o.name.clone(), tensor);
        }
        Ok(outputs)
    }

    /// A buffer's bytes, after everything enqueued so far.
    fn read(&self, b: calib_ir::BufferId) -> Result<Vec<u8>, RuntimeError> {
        let start = self.plan.offsets[b.0];
        let len = self.plan.program.buffers[b.0].ty.size_bytes();
        self.stream
            .clone_dtoh(&self.arena.slice(start..start + len))
            .map_err(|e| fail("downloading", e))
    }

    fn address(&self, b: calib_ir::BufferId) -> u64 {
        self.base + self.plan.offsets[b.0] as u64
    }

    fn launch(&self, i: usize) -> Result<(), RuntimeError> {
        let kernel = &self.plan.kernels[i];
        let addresses: Vec<u64> = kernel.params.iter().map(|&b| self.address(b)).collect();
        let mut launch = self.stream.launch_builder(&self.functions[i]);
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
                    let input = self.read(all_reduce.input)?;
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

    /// Launches the captured graph, capturing it first (again, if the communicator
    /// changed since).
    fn replay(&mut self, nccl: Option<&NcclRank>) -> Result<(), RuntimeError> {
        let comm = nccl.map(|n| n as *const NcclRank);
        if self.captured.as_ref().is_none_or(|c| c.comm != comm) {
            self.captured = None;
            self.stream
                .begin_capture(CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL)
                .map_err(|e| fail("starting a CUDA graph capture", e))?;
            let enqueued = self.enqueue(nccl);
            let graph = self
                .stream
                .end_capture(CUgraphInstantiate_flags(0))
                .map_err(|e| fail("instantiating the captured CUDA graph", e));
            enqueued?;
            let graph = graph?.ok_or_else(|| {
                RuntimeError::Device("the CUDA graph capture recorded nothing".into())
            })?;
            self.captured = Some(Captured { graph, comm });
        }
        let captured = self.captured.as_ref().expect("captured above");
        captured
            .graph
            .launch()
            .map_err(|e| fail("launching the CUDA graph", e))
    }
}
