//! Verifying fused code: a [`Backend`] that fuses every graph it is given and runs
//! the kernel plan, kernel body by kernel body, on the reference interpreter.

use calib_ir::{Graph, ProgramError};
use calib_passes::fusion::{fuse, prepare, FusionOptions};
use calib_runtime::reference::run_program;
use calib_runtime::{Backend, Bindings, Outputs, RuntimeError};

/// The reference interpreter behind fusion.
#[derive(Clone, Debug, Default)]
pub struct Fused {
    pub options: FusionOptions,
}

impl Backend for Fused {
    fn name(&self) -> &str {
        "reference (fused)"
    }

    fn run(&self, graph: &Graph, bindings: &Bindings) -> Result<Outputs, RuntimeError> {
        let fusion_error = |e: calib_passes::PassError| ProgramError::Fusion(e.to_string());
        // The graph as a device backend plans it (`fusion::prepare`), so that what is
        // verified is what runs.
        let graph = prepare(graph, &self.options).map_err(fusion_error)?;
        let fusion = fuse(&graph, &self.options).map_err(fusion_error)?;
        run_program(&fusion.program, bindings)
    }
}
