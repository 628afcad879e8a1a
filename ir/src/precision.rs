//! Numeric precision as a policy over a whole graph.
//!
//! The policy says what a training step's GEMM-shaped ops (convolutions, their
//! gradients, matmuls) multiply and what activations are stored in; everything else
//! (master weights, momentum, BatchNorm statistics, reductions, the loss) stays `f32`.
//! It is applied to the IR as casts, so that the reference interpreter computes exactly
//! what the policy means and fusion sees the casts like any other op.

use serde::{Deserialize, Serialize};

/// `--precision`: how a graph's GEMMs multiply and its activations are stored.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Precision {
    /// Everything in f32, products on FMA units.
    #[default]
    F32,
    /// f32 storage; GEMM operands rounded to TF32 (10-bit mantissa, as `cvt.rna.tf32`),
    /// products on tensor cores with f32 accumulation: what PyTorch does for
    /// convolutions by default.
    Tf32,
    /// Activations and activation gradients stored in bf16, GEMM operands in bf16,
    /// products on tensor cores with f32 accumulation; master weights, optimizer state,
    /// BatchNorm statistics, reductions and the loss in f32.
    Bf16,
}

impl Precision {
    pub const ALL: [Precision; 3] = [Precision::F32, Precision::Tf32, Precision::Bf16];

    pub fn name(self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::Tf32 => "tf32",
            Precision::Bf16 => "bf16",
        }
    }
}

impl std::fmt::Display for Precision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Precision {
    type Err = String;

    fn from_str(s: &str) -> Result<Precision, String> {
        Precision::ALL
            .into_iter()
            .find(|p| p.name() == s)
            .ok_or_else(|| format!("unknown precision `{s}`: expected f32, tf32 or bf16"))
    }
}
