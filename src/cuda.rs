//! The `cuda` backend: a graph fused into a kernel plan, compiled to PTX and run on
//! NVIDIA GPUs through cudarc. A graph is compiled once and its kernels loaded once per
//! GPU (as cubins from `ptxas` and the user's cache where it can), so a training loop
//! pays fusion, code generation and assembly once. Each [`Backend::run`] replica and
//! each session has an arena of its own; a session keeps its state there between steps.
//!
//! Data parallelism: replica `r` of a group (the rank of the bound
//! [`Collective`]) runs on GPU `(first + r) % count`. When
//! every replica has a GPU of its own and NCCL loads, the group's all-reduces go
//! through one NCCL communicator per GPU, created on first use and kept, overlapped
//! with the backward pass; otherwise (more replicas than GPUs, no NCCL) they are
//! staged through the host and the bound group.

use crate::device::compile_graph;
use calib_ir::Graph;
use calib_passes::fusion::FusionOptions;
use calib_runtime::cuda::{
    check_device_memory, devices, nccl_present, CudaError, CudaOptions, CudaProgram, LoadedKernels,
    NcclGroup, NcclRank,
};
use calib_runtime::session::{BufferCopy, ResidentProgram, ResidentSession};
use calib_runtime::{
    memory, Backend, Bindings, Carry, Collective, DeviceProgram, Outputs, RuntimeError, Session,
};
use std::sync::{Arc, Mutex};

/// A program loaded for one replica, shared by the calls of that replica.
type Loaded = Arc<Mutex<CudaProgram>>;

/// Runs graphs on NVIDIA GPUs.
pub struct Cuda {
    first: usize,
    count: usize,
    fusion: FusionOptions,
    options: CudaOptions,
    use_nccl: bool,
    /// One replica of a group of processes: every replica of this backend runs on GPU
    /// `first`, whatever its rank in the group.
    process: bool,
    compiled: Mutex<Vec<(Graph, Arc<DeviceProgram>)>>,
    /// Loaded kernels by graph and GPU.
    kernels: Mutex<Vec<(Graph, usize, Arc<LoadedKernels>)>>,
    /// Programs for [`Backend::run`] by graph and replica rank (replicas sharing a GPU
    /// each have their own arena: one waits in an all-reduce while the other runs).
    loaded: Mutex<Vec<(Graph, usize, Loaded)>>,
    groups: Mutex<Vec<Arc<NcclGroup>>>,
}

impl Cuda {
    /// The backend with GPU `first` for replica 0, or why it cannot run here (no
    /// driver, no GPU).
    pub fn new(first: usize) -> Result<Self, CudaError> {
        let count = devices()?.len();
        if first >= count {
            return Err(CudaError::Driver {
                context: format!("selecting GPU {first}"),
                message: format!("only {count} GPU(s) present"),
            });
        }
        Ok(Cuda {
            first,
            count,
            fusion: FusionOptions::default(),
            options: CudaOptions::default(),
            use_nccl: true,
            process: false,
            compiled: Mutex::new(vec![]),
            kernels: Mutex::new(vec![]),
            loaded: Mutex::new(vec![]),
            groups: Mutex::new(vec![]),
        })
    }

    /// With executor options (CUDA graph capture).
    pub fn with_options(mut self, options: CudaOptions) -> Self {
        self.options = options;
        self
    }

    /// Plans with `fusion` (other rules, another device to cost for).
    pub fn with_fusion(mut self, fusion: FusionOptions) -> Self {
        self.fusion = fusion;
        self
    }

    /// Stages every all-reduce through the host and the bound group even where NCCL
    /// could run it (for comparing the two paths).
    pub fn without_nccl(mut self) -> Self {
        self.use_nccl = false;
        self
    }

    /// For one replica of a group of processes (started by a launcher): its replica,
    /// whatever its rank, runs on GPU `first` (the process's `LOCAL_RANK`), and its
    /// all-reduces go through the collective the caller binds (the process's NCCL rank,
    /// or the TCP group staged through the host), never an in-process NCCL group,
    /// whose other ranks would be GPUs of this process.
    pub fn for_process(mut self) -> Self {
        self.process = true;
        self.use_nccl = false;
        self
    }

    /// The GPU replica `rank` runs on.
    pub fn gpu_of(&self, rank: usize) -> usize {
        if self.process {
            return self.first;
        }
        (self.first + rank) % self.count
    }

    fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
        m.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The compiled plan of `graph`; all-reduce overlap is checked against its arena.
    fn compile(&self, graph: &Graph) -> Result<Arc<DeviceProgram>, RuntimeError> {
        let mut cache = Self::lock(&self.compiled);
        if let Some((_, p)) = cache.iter().find(|(g, _)| g == graph) {
            return Ok(p.clone());
        }
        let plan = compile_graph(graph, Some(&self.fusion))?;
        plan.check_overlap().map_err(|e| {
            RuntimeError::Codegen(format!("the arena plan cannot overlap all-reduces: {e}"))
        })?;
        let plan = Arc::new(plan);
        cache.push((graph.clone(), plan.clone()));
        Ok(plan)
    }

    /// A new program of `graph` for replica `rank`: its plan compiled and its kernels
    /// loaded on the replica's GPU (each once), an arena of its own.
    fn program(&self, graph: &Graph, rank: usize) -> Result<CudaProgram, RuntimeError> {
        let plan = self.compile(graph)?;
        let gpu = self.gpu_of(rank);
        let device = |e: CudaError| RuntimeError::Device(e.to_string());
        let cached = Self::lock(&self.kernels)
            .iter()
            .find(|(g, o, _)| *o == gpu && g == graph)
            .map(|(_, _, k)| k.clone());
        let kernels = match cached {
            Some(k) => k,
            None => {
                let k = LoadedKernels::load(gpu, &plan.kernels).map_err(device)?;
                Self::lock(&self.kernels).push((graph.clone(), gpu, k.clone()));
                k
            }
        };
        CudaProgram::with_kernels(kernels, (*plan).clone(), self.options).map_err(device)
    }

    fn prepare(&self, graph: &Graph, rank: usize) -> Result<Loaded, RuntimeError> {
        if let Some((_, _, p)) = Self::lock(&self.loaded)
            .iter()
            .find(|(g, r, _)| *r == rank && g == graph)
        {
            return Ok(p.clone());
        }
        let program = Arc::new(Mutex::new(self.program(graph, rank)?));
        Self::lock(&self.loaded).push((graph.clone(), rank, program.clone()));
        Ok(program)
    }

    /// Runs `f` with the collective the replica's all-reduces should use: the bound
    /// one, or in its place this replica's rank of an NCCL group when the group can
    /// have one (see [`Cuda::nccl_group`]). A replica that fails or panics with an NCCL
    /// rank leaves the group, so its peers stop waiting.
    fn with_group<T>(
        &self,
        bound: Option<&dyn Collective>,
        f: impl FnOnce(Option<&dyn Collective>) -> Result<T, RuntimeError>,
    ) -> Result<T, RuntimeError> {
        let (rank, world) = bound.map_or((0, 1), |g| (g.rank(), g.world()));
        // A communicator bound by the caller is used as it is.
        let group = match bound.and_then(|g| g.nccl()) {
            Some(_) => None,
            None => self.nccl_group(world)?,
        };
        match &group {
            Some(group) => {
                let nccl = group.rank(rank);
                struct LeaveOnPanic<'a>(&'a NcclRank);
                impl Drop for LeaveOnPanic<'_> {
                    fn drop(&mut self) {
                        if std::thread::panicking() {
                            self.0.leave();
                        }
                    }
                }
                let _guard = LeaveOnPanic(nccl);
                f(Some(nccl))
            }
            None => f(bound),
        }
    }

    /// The NCCL group for `world` replicas, if they each have a GPU and NCCL loads.
    /// Every replica reaches the same answer, so they all take the same path.
    fn nccl_group(&self, world: usize) -> Result<Option<Arc<NcclGroup>>, RuntimeError> {
        if !self.use_nccl || world < 2 || world > self.count || !nccl_present() {
            return Ok(None);
        }
        let mut groups = Self::lock(&self.groups);
        groups.retain(|g| !g.is_spent());
        if let Some(g) = groups.iter().find(|g| g.world() == world) {
            return Ok(Some(g.clone()));
        }
        let ordinals: Vec<usize> = (0..world).map(|r| self.gpu_of(r)).collect();
        let group =
            Arc::new(NcclGroup::new(&ordinals).map_err(|e| RuntimeError::Device(e.to_string()))?);
        groups.push(group.clone());
        Ok(Some(group))
    }
}

impl Backend for Cuda {
    fn name(&self) -> &str {
        "cuda"
    }

    fn devices(&self) -> Option<usize> {
        Some(self.count)
    }

    /// The replicas' arenas against the free memory of the GPUs they run on (an arena
    /// each, several on a GPU that replicas share), and the host copies of their
    /// inputs and params against host memory. Every arena is checked again when it is
    /// allocated.
    fn check_memory(&self, graph: &Graph, replicas: usize) -> Result<(), RuntimeError> {
        let plan = self.compile(graph)?;
        let mut arenas = std::collections::BTreeMap::new();
        for rank in 0..replicas {
            *arenas.entry(self.gpu_of(rank)).or_insert(0usize) += 1;
        }
        for (gpu, count) in arenas {
            check_device_memory(gpu, plan.arena_bytes.saturating_mul(count))
                .map_err(|e| RuntimeError::Device(e.to_string()))?;
        }
        let sources = crate::sim::source_bytes(graph).saturating_mul(replicas as u64);
        memory::check_host(&memory::Need {
            what: "the host copies of the graph's inputs and params".into(),
            parts: vec![("inputs and params", sources)],
        })
    }

    fn run(&self, graph: &Graph, bindings: &Bindings) -> Result<Outputs, RuntimeError> {
        let rank = bindings.get_collective().map_or(0, |g| g.rank());
        let program = self.prepare(graph, rank)?;
        let mut program = Self::lock(&program);
        self.with_group(bindings.get_collective(), |group| match group {
            Some(g) => program.run(&bindings.clone().collective(g)),
            None => program.run(bindings),
        })
    }

    /// The state stays in the replica's arena on its GPU; each step's carry is a set of
    /// device-to-device copies on the step's stream (inside the CUDA graph with
    /// `--cuda-graph`).
    fn session<'a>(
        &'a self,
        graph: &Graph,
        carry: &Carry,
        replica: usize,
    ) -> Result<Box<dyn Session + 'a>, RuntimeError> {
        let program = Replica {
            backend: self,
            rank: replica,
            program: self.program(graph, replica)?,
        };
        Ok(Box::new(ResidentSession::new(program, graph, carry)?))
    }
}

/// A session's program: one replica's, all-reducing through the backend's NCCL groups.
struct Replica<'a> {
    backend: &'a Cuda,
    rank: usize,
    program: CudaProgram,
}

impl Replica<'_> {
    /// The replica's group, checked to be for this replica.
    fn group<'g>(
        &self,
        group: Option<&'g dyn Collective>,
    ) -> Result<Option<&'g dyn Collective>, RuntimeError> {
        match group {
            Some(g) if g.rank() != self.rank => Err(RuntimeError::Session(format!(
                "replica {}'s session was given rank {}'s group",
                self.rank,
                g.rank()
            ))),
            _ => Ok(group),
        }
    }
}

impl ResidentProgram for Replica<'_> {
    fn plan(&self) -> &DeviceProgram {
        self.program.plan()
    }

    fn write(&mut self, buffer: calib_ir::BufferId, bytes: &[u8]) -> Result<(), RuntimeError> {
        self.program.write(buffer, bytes)
    }

    fn write_batch(
        &mut self,
        buffer: calib_ir::BufferId,
        bytes: &[u8],
    ) -> Result<(), RuntimeError> {
        self.program.write_batch(buffer, bytes)
    }

    fn read(&mut self, buffer: calib_ir::BufferId) -> Result<Vec<u8>, RuntimeError> {
        self.program.read(buffer)
    }

    fn step(
        &mut self,
        group: Option<&dyn Collective>,
        copies: &[BufferCopy],
    ) -> Result<(), RuntimeError> {
        self.step_then_stage(group, copies, &[])
    }

    fn step_then_stage(
        &mut self,
        group: Option<&dyn Collective>,
        copies: &[BufferCopy],
        next: &[(calib_ir::BufferId, Vec<u8>)],
    ) -> Result<(), RuntimeError> {
        let group = self.group(group)?;
        let program = &mut self.program;
        self.backend
            .with_group(group, |g| program.step_then_stage(g, copies, next))
    }

    fn copy_times(&self) -> Option<calib_runtime::session::CopyTimes> {
        self.program.copy_times()
    }

    fn timed_step(
        &mut self,
        group: Option<&dyn Collective>,
        copies: &[BufferCopy],
    ) -> Result<Vec<f64>, RuntimeError> {
        let group = self.group(group)?;
        self.program.timed_step(group, copies)
    }

    fn stats(&self) -> serde_json::Value {
        self.program.stats()
    }
}
