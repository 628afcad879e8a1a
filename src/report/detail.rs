//! What the page shows when a kernel is opened: its fused body drawn, the original
//! nodes it covers, egg's explanation as algebra and its PTX. Computed for every kernel
//! in parallel (an explanation re-saturates a small e-graph: all of SCNet-50's
//! thousand kernels take about a second) and stored in compressed chunks of [`CHUNK`]
//! kernels, inflated by the page on demand.

use super::body::body_graph;
use super::model::CompileOutput;
use super::pack::deflate_base64;
use anyhow::Result;
use indicatif::{ProgressBar, ProgressStyle};
use rayon::prelude::*;
use serde::Serialize;

/// Kernels per compressed chunk: neighbouring kernels share most of their PTX, so a
/// chunk compresses about 10% better than kernels one by one, and inflating 16 kernels'
/// text takes milliseconds.
pub const CHUNK: usize = 16;

#[derive(Serialize)]
struct Detail {
    svg: String,
    covers: Vec<Covered>,
    explain: String,
    /// A GEMM's schedule and why the compile chose it (`None` for other kernels).
    schedule: Option<String>,
    schedule_reason: Option<String>,
    /// `None` without `--emit-ptx`.
    ptx: Option<String>,
}

/// An original node a kernel computes.
#[derive(Serialize)]
struct Covered {
    id: usize,
    op: &'static str,
    scope: String,
    ty: String,
}

/// Every kernel's detail as JSON `{name: detail}` chunks, deflated and base64-encoded,
/// kernel `i` in chunk `i / CHUNK`. Shows a progress bar on a terminal.
pub fn packed_details(out: &CompileOutput) -> Result<Vec<String>> {
    let bar = ProgressBar::new(out.kernels.len() as u64).with_style(
        ProgressStyle::with_template("report: explaining kernels {bar:30} {pos}/{len} ({eta})")
            .expect("a valid template"),
    );
    let details: Vec<(String, Detail)> = out
        .kernels
        .par_iter()
        .zip(&out.program.kernels)
        .map(|(facts, kernel)| {
            let explanation = calib_passes::fusion::explain(&out.graph, &out.program, &kernel.name)
                .unwrap_or_else(|e| format!("no explanation for {}: {e}", kernel.name));
            let covers = kernel
                .covers
                .iter()
                .filter_map(|&id| {
                    let n = out.graph.nodes.get(id)?;
                    Some(Covered {
                        id,
                        op: n.op.name(),
                        scope: n.scope.clone(),
                        ty: n.ty.to_string(),
                    })
                })
                .collect();
            let detail = Detail {
                svg: body_graph(&out.program, kernel).svg("body"),
                covers,
                explain: explanation,
                schedule: facts.schedule.clone(),
                schedule_reason: facts.schedule_reason.clone(),
                ptx: out.ptx(facts)?,
            };
            bar.inc(1);
            Ok((kernel.name.clone(), detail))
        })
        .collect::<Result<_>>()?;
    bar.finish_and_clear();
    details
        .par_chunks(CHUNK)
        .map(|chunk| {
            let map: serde_json::Map<String, serde_json::Value> = chunk
                .iter()
                .map(|(name, d)| Ok((name.clone(), serde_json::to_value(d)?)))
                .collect::<Result<_>>()?;
            Ok(deflate_base64(serde_json::to_string(&map)?.as_bytes()))
        })
        .collect()
}
