//! Choosing an executor by name on the command line.

use anyhow::{bail, Result};
use calib_passes::fusion::{FusionOptions, RuleSet};
use calib_runtime::{Backend, Reference};

/// The backends `--backend` accepts.
pub const BACKENDS: &[&str] = &["reference", "sim", "cuda"];

/// Choices that only some backends take.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct BackendOptions {
    /// `cuda`: capture each step as a CUDA graph and replay it.
    pub cuda_graph: bool,
    /// `reference`: fail at the first op that creates a NaN or an infinity, naming it.
    pub check_finite: bool,
    /// `sim`, `cuda`: the fusion rules that make the plan (all by default).
    pub rules: RuleSet,
    /// `cuda`: this process is one replica of a group of processes (a launcher's
    /// `LOCAL_RANK`): it runs on this GPU and all-reduces through the group it binds.
    /// The CPU backends need nothing of it.
    pub process_gpu: Option<usize>,
    /// `sim`, `cuda`: GEMM schedules measured by `calib tune`, used in place of the
    /// cost model's for the shapes they cover.
    pub tuning: Option<calib_passes::fusion::tuning::TuningCache>,
    /// `sim`, `cuda`: the device the planner costs kernels for (an H200 by default).
    pub device: Option<calib_passes::fusion::Device>,
    /// `sim`, `cuda`: the precision policy the graphs were built under
    /// (`passes::precision::apply` is the caller's: the reference runs the same graph),
    /// handed to the planner through `FusionOptions::precision`.
    pub precision: calib_ir::Precision,
    /// `sim`, `cuda`: how the plan stores image-shaped temporaries (row-major by
    /// default; `FusionOptions::layout`).
    pub layout: calib_passes::fusion::LayoutPolicy,
}

/// The backend called `name`.
pub fn backend(name: &str) -> Result<Box<dyn Backend + Send + Sync>> {
    backend_with(name, BackendOptions::default())
}

/// The backend called `name`, with `options`; an option the backend does not take is
/// refused rather than ignored.
pub fn backend_with(name: &str, options: BackendOptions) -> Result<Box<dyn Backend + Send + Sync>> {
    if options.cuda_graph && name != "cuda" {
        bail!("--cuda-graph needs --backend cuda (CUDA graphs are a GPU feature)");
    }
    if options.check_finite && name != "reference" {
        bail!(
            "--check-finite needs --backend reference (the interpreter checks every op's \
             output), not `{name}`"
        );
    }
    if !options.rules.is_all() && name == "reference" {
        bail!(
            "--disable-rule and --rules shape the fused plan: they need --backend sim or cuda \
             (the reference backend runs the graph unfused)"
        );
    }
    if options.layout != calib_passes::fusion::LayoutPolicy::RowMajor && name == "reference" {
        bail!(
            "--layout {} is how a fused plan stores its temporaries: it needs --backend sim \
             or cuda (the reference backend runs the graph unfused)",
            options.layout
        );
    }
    if options.tuning.is_some() && name == "reference" {
        bail!("tuned schedules shape the fused plan: they need --backend sim or cuda");
    }
    let fusion = FusionOptions {
        rules: options.rules.clone(),
        tuning: options.tuning.clone(),
        device: options.device.clone().unwrap_or_default(),
        precision: options.precision,
        layout: options.layout,
        ..FusionOptions::default()
    };
    match name {
        "reference" if options.check_finite => Ok(Box::new(Reference::new().checking_finite())),
        "reference" => Ok(Box::new(Reference::new())),
        "sim" => Ok(Box::new(crate::Sim::with_fusion(fusion))),
        "cuda" => Ok(Box::new(
            match options.process_gpu {
                Some(gpu) => crate::Cuda::new(gpu)
                    .map_err(|e| anyhow::anyhow!("backend cuda (LOCAL_RANK={gpu}): {e}"))?
                    .for_process(),
                None => crate::Cuda::new(0).map_err(|e| anyhow::anyhow!("backend cuda: {e}"))?,
            }
            .with_options(calib_runtime::cuda::CudaOptions {
                graph: options.cuda_graph,
            })
            .with_fusion(fusion),
        )),
        other => bail!(
            "unknown backend `{other}` (available: {})",
            BACKENDS.join(", ")
        ),
    }
}
