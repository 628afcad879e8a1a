//! The `cuda` backend: a graph fused into a kernel plan, compiled to PTX and run on an
//! NVIDIA GPU through cudarc. Compiled and loaded programs are kept per graph, so a
//! training loop pays fusion, code generation and the driver's JIT once.

use crate::device::compile_graph;
use calib_ir::Graph;
use calib_passes::fusion::FusionOptions;
use calib_runtime::cuda::{devices, CudaError, CudaProgram};
use calib_runtime::{Backend, Bindings, Outputs, RuntimeError};
use std::sync::{Arc, Mutex};

/// Runs graphs on GPU `ordinal`.
pub struct Cuda {
    ordinal: usize,
    options: FusionOptions,
    loaded: Mutex<Vec<(Graph, Arc<Mutex<CudaProgram>>)>>,
}

impl Cuda {
    /// The backend for GPU `ordinal`, or why it cannot run here (no driver, no GPU).
    pub fn new(ordinal: usize) -> Result<Self, CudaError> {
        let found = devices()?;
        if ordinal >= found.len() {
            return Err(CudaError::Driver {
                context: format!("selecting GPU {ordinal}"),
                message: format!("only {} GPU(s) present", found.len()),
            });
        }
        Ok(Cuda {
            ordinal,
            options: FusionOptions::default(),
            loaded: Mutex::new(vec![]),
        })
    }

    fn prepare(&self, graph: &Graph) -> Result<Arc<Mutex<CudaProgram>>, RuntimeError> {
        let mut cache = self.loaded.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, p)) = cache.iter().find(|(g, _)| g == graph) {
            return Ok(p.clone());
        }
        let plan = compile_graph(graph, Some(&self.options))?;
        let program = CudaProgram::load(self.ordinal, plan)
            .map_err(|e| RuntimeError::Device(e.to_string()))?;
        let program = Arc::new(Mutex::new(program));
        cache.push((graph.clone(), program.clone()));
        Ok(program)
    }
}

impl Backend for Cuda {
    fn name(&self) -> &str {
        "cuda"
    }

    fn run(&self, graph: &Graph, bindings: &Bindings) -> Result<Outputs, RuntimeError> {
        let program = self.prepare(graph)?;
        let mut program = program.lock().unwrap_or_else(|e| e.into_inner());
        program.run(bindings)
    }
}
