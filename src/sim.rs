//! The `sim` backend: a graph fused into a kernel plan, compiled to PTX, and run on the
//! PTX simulator. What it checks is the exact code a GPU would run.

use calib_codegen::{compile, CompiledProgram};
use calib_ir::{Graph, Program, ProgramError};
use calib_passes::fusion::{fuse, unfused, FusionOptions};
use calib_runtime::{Backend, Bindings, Outputs, RuntimeError, SimLaunch, SimProgram};
use std::sync::{Arc, Mutex};

/// Runs graphs as PTX on the simulator. Compiled plans are kept per graph, so running
/// one graph again (a training step per batch) skips fusion and code generation.
#[derive(Default)]
pub struct Sim {
    /// Fuse (the default) or run one kernel per op.
    pub fused: bool,
    pub options: FusionOptions,
    compiled: Mutex<Vec<(Graph, Arc<SimProgram>)>>,
}

impl Sim {
    /// The fused plan of every graph, as a GPU would run it.
    pub fn new() -> Self {
        Sim {
            fused: true,
            ..Sim::default()
        }
    }

    /// One kernel per op (the eager baseline), for telling fusion bugs from codegen bugs.
    pub fn unfused() -> Self {
        Sim::default()
    }

    /// The plan of `graph` compiled and parsed for the simulator.
    pub fn prepare(&self, graph: &Graph) -> Result<Arc<SimProgram>, RuntimeError> {
        let mut cache = self.compiled.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, p)) = cache.iter().find(|(g, _)| g == graph) {
            return Ok(p.clone());
        }
        let fusion_error = |e: calib_passes::PassError| ProgramError::Fusion(e.to_string());
        let program = if self.fused {
            fuse(graph, &self.options).map_err(fusion_error)?.program
        } else {
            unfused(graph).map_err(fusion_error)?
        };
        let compiled = compile(&program).map_err(|e| RuntimeError::Codegen(e.to_string()))?;
        let prepared = Arc::new(SimProgram::new(program, launches(&compiled))?);
        cache.push((graph.clone(), prepared.clone()));
        Ok(prepared)
    }
}

/// Each compiled kernel as a simulator launch.
pub fn launches(compiled: &CompiledProgram) -> Vec<SimLaunch> {
    compiled
        .kernels
        .iter()
        .map(|k| SimLaunch {
            ptx: k.ptx.clone(),
            entry: k.name.clone(),
            grid: k.grid,
            block: k.block,
            shared_bytes: k.shared_bytes,
            args: k.params.iter().map(|p| p.buffer).collect(),
        })
        .collect()
}

/// Compiles `program` and runs it once on the simulator.
pub fn run_program(program: &Program, bindings: &Bindings) -> Result<Outputs, RuntimeError> {
    let compiled = compile(program).map_err(|e| RuntimeError::Codegen(e.to_string()))?;
    SimProgram::new(program.clone(), launches(&compiled))?.run(bindings)
}

impl Backend for Sim {
    fn name(&self) -> &str {
        if self.fused {
            "sim"
        } else {
            "sim (unfused)"
        }
    }

    fn run(&self, graph: &Graph, bindings: &Bindings) -> Result<Outputs, RuntimeError> {
        self.prepare(graph)?.run(bindings)
    }
}
