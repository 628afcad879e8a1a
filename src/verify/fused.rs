//! Verifying fused code: a [`Backend`] that fuses every graph it is given and runs
//! the kernel plan, kernel body by kernel body, on the reference interpreter.

use calib_ir::{Graph, ProgramError};
use calib_passes::fusion::{fuse, FusionOptions};
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
        let fusion = fuse(graph, &self.options).map_err(|e| ProgramError::Fusion(e.to_string()))?;
        run_program(&fusion.program, bindings)
    }
}
