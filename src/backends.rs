//! Choosing an executor by name on the command line.

use anyhow::{bail, Result};
use calib_runtime::{Backend, Reference};

/// The backends `--backend` accepts.
pub const BACKENDS: &[&str] = &["reference", "sim", "cuda"];

/// The backend called `name`.
pub fn backend(name: &str) -> Result<Box<dyn Backend + Send + Sync>> {
    match name {
        "reference" => Ok(Box::new(Reference::new())),
        "sim" => Ok(Box::new(crate::Sim::new())),
        "cuda" => Ok(Box::new(
            crate::Cuda::new(0).map_err(|e| anyhow::anyhow!("backend cuda: {e}"))?,
        )),
        other => bail!(
            "unknown backend `{other}` (available: {})",
            BACKENDS.join(", ")
        ),
    }
}
