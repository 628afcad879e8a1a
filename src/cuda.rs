//! The `cuda` backend: a graph fused into a kernel plan, compiled to PTX and run on
//! NVIDIA GPUs through cudarc. A graph is compiled once and loaded once per replica, so
//! a training loop pays fusion, code generation and the driver's JIT once.
//!
//! Data parallelism: replica `r` of a group (the rank of the bound
//! [`Collective`](calib_runtime::Collective)) runs on GPU `(first + r) % count`. When
//! every replica has a GPU of its own and NCCL loads, the group's all-reduces go
//! through one NCCL communicator per GPU, created on first use and kept, overlapped
//! with the backward pass; otherwise (more replicas than GPUs, no NCCL) they are
//! staged through the host and the bound group.

use crate::device::compile_graph;
use calib_ir::Graph;
use calib_passes::fusion::FusionOptions;
use calib_runtime::cuda::{devices, nccl_present, CudaError, CudaOptions, CudaProgram, NcclGroup};
use calib_runtime::{Backend, Bindings, DeviceProgram, Outputs, RuntimeError};
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
    compiled: Mutex<Vec<(Graph, Arc<DeviceProgram>)>>,
    /// Loaded programs by graph and replica rank (replicas sharing a GPU each have their
    /// own arena: one waits in an all-reduce while the other runs).
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
            compiled: Mutex::new(vec![]),
            loaded: Mutex::new(vec![]),
            groups: Mutex::new(vec![]),
        })
    }

    /// With executor options (CUDA graph capture).
    pub fn with_options(mut self, options: CudaOptions) -> Self {
        self.options = options;
        self
    }

    /// Stages every all-reduce through the host and the bound group even where NCCL
    /// could run it (for comparing the two paths).
    pub fn without_nccl(mut self) -> Self {
        self.use_nccl = false;
        self
    }

    /// The GPU replica `rank` runs on.
    pub fn gpu_of(&self, rank: usize) -> usize {
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

    fn prepare(&self, graph: &Graph, rank: usize) -> Result<Loaded, RuntimeError> {
        if let Some((_, _, p)) = Self::lock(&self.loaded)
            .iter()
            .find(|(g, r, _)| *r == rank && g == graph)
        {
            return Ok(p.clone());
        }
        let plan = self.compile(graph)?;
        let program = CudaProgram::load_with(self.gpu_of(rank), (*plan).clone(), self.options)
            .map_err(|e| RuntimeError::Device(e.to_string()))?;
        let program = Arc::new(Mutex::new(program));
        Self::lock(&self.loaded).push((graph.clone(), rank, program.clone()));
        Ok(program)
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

    fn run(&self, graph: &Graph, bindings: &Bindings) -> Result<Outputs, RuntimeError> {
        let bound = bindings.get_collective();
        let (rank, world) = bound.map_or((0, 1), |g| (g.rank(), g.world()));
        // A communicator bound by the caller is used as it is.
        let group = match bound.and_then(|g| g.nccl()) {
            Some(_) => None,
            None => self.nccl_group(world)?,
        };
        let program = self.prepare(graph, rank)?;
        let mut program = Self::lock(&program);
        match &group {
            Some(group) => {
                let nccl = group.rank(rank);
                // A replica that panics leaves the group too, so its peers stop waiting.
                struct LeaveOnPanic<'a>(&'a calib_runtime::cuda::NcclRank);
                impl Drop for LeaveOnPanic<'_> {
                    fn drop(&mut self) {
                        if std::thread::panicking() {
                            self.0.leave();
                        }
                    }
                }
                let _guard = LeaveOnPanic(nccl);
                program.run(&bindings.clone().collective(nccl))
            }
            None => program.run(bindings),
        }
    }
}
