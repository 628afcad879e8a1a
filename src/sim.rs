//! The `sim` backend: a graph fused into a kernel plan, compiled to PTX, and run on the
//! PTX simulator. What it checks is the exact code a GPU would run, and its sessions
//! keep state in device buffers as a GPU's do.

use crate::device::compile_graph;
use calib_ir::Graph;
use calib_passes::fusion::FusionOptions;
use calib_runtime::reference::held_bytes;
use calib_runtime::session::ResidentSession;
use calib_runtime::{
    memory, Backend, Bindings, Carry, Outputs, Precision, RuntimeError, Session, SimProgram,
    SimResident,
};
use std::sync::{Arc, Mutex};

/// Bytes of a graph's inputs and params as the host holds them (f32, i64).
pub(crate) fn source_bytes(graph: &Graph) -> u64 {
    let held = |(_, v): (&str, calib_ir::Value)| held_bytes(graph.ty(v), Precision::F32);
    graph.inputs().chain(graph.params()).map(held).sum()
}

/// Runs graphs as PTX on the simulator. Compiled programs are kept per graph, so
/// running one graph again (a training step per batch) skips fusion and code
/// generation.
#[derive(Default)]
pub struct Sim {
    /// Fuse (as [`Sim::new`] does) or run one kernel per op.
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

    /// The fused plan made with `options` (another device to plan for, other limits).
    pub fn with_fusion(options: FusionOptions) -> Self {
        Sim {
            fused: true,
            options,
            ..Sim::default()
        }
    }

    /// One kernel per op (the eager baseline), for telling fusion bugs from codegen bugs.
    pub fn unfused() -> Self {
        Sim::default()
    }

    /// The program of `graph`, compiled and parsed for the simulator.
    pub fn prepare(&self, graph: &Graph) -> Result<Arc<SimProgram>, RuntimeError> {
        let mut cache = self.compiled.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, p)) = cache.iter().find(|(g, _)| g == graph) {
            return Ok(p.clone());
        }
        let fusion = self.fused.then_some(&self.options);
        let prepared = Arc::new(SimProgram::new(compile_graph(graph, fusion)?)?);
        cache.push((graph.clone(), prepared.clone()));
        Ok(prepared)
    }
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

    /// The plan's buffers and the host copies of its inputs and params, all in host
    /// memory, once per replica.
    fn check_memory(&self, graph: &Graph, replicas: usize) -> Result<(), RuntimeError> {
        let mut need = self.prepare(graph)?.memory_need();
        need.parts.push(("inputs and params", source_bytes(graph)));
        for (_, bytes) in &mut need.parts {
            *bytes = bytes.saturating_mul(replicas as u64);
        }
        if replicas > 1 {
            need.what = format!("{replicas} replicas of {}", need.what);
        }
        memory::check_host(&need)
    }

    /// State kept in simulated device buffers between steps, exactly as the `cuda`
    /// backend keeps it on a GPU (the same session code drives both).
    fn session<'a>(
        &'a self,
        graph: &Graph,
        carry: &Carry,
        _replica: usize,
    ) -> Result<Box<dyn Session + 'a>, RuntimeError> {
        let resident = SimResident::new(self.prepare(graph)?)?;
        Ok(Box::new(ResidentSession::new(resident, graph, carry)?))
    }
}
