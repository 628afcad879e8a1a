//! The pointwise family: one thread per output element, the whole body evaluated at
//! that element. It is also what every other family uses for outputs outside its anchor's
//! iteration space (side outputs), and the fallback for any body without a specialized
//! anchor: correct for every op the evaluator knows, fast for maps.

use crate::error::Result;
use crate::eval::Emitter;
use crate::index::Index;
use crate::kernel::Geometry;
use crate::ptx::Operand;
use calib_ir::numel;

pub(crate) const THREADS: usize = 256;
/// Blocks of a pointwise launch; larger outputs are covered by grid-stride loops.
const MAX_BLOCKS: usize = 1 << 16;

/// The pointwise kernel computing body outputs `outputs`.
pub(crate) fn emit(cx: &mut Emitter, outputs: &[usize]) -> Result<Geometry> {
    let largest = outputs
        .iter()
        .map(|&i| numel(&cx.ty(cx.kernel.body.outputs[i].value).shape))
        .max()
        .unwrap_or(1);
    let geometry = Geometry {
        blocks: largest.div_ceil(THREADS).clamp(1, MAX_BLOCKS),
        threads: THREADS,
        shared_bytes: 0,
    };
    passes(cx, outputs, &geometry)?;
    Ok(geometry)
}

/// Grid-stride loops over every thread of a launch of shape `geometry`, one per distinct
/// element count among `outputs`: outputs of one count are computed together, sharing
/// their common subexpressions.
pub(crate) fn passes(cx: &mut Emitter, outputs: &[usize], geometry: &Geometry) -> Result<()> {
    let mut groups: Vec<(usize, Vec<usize>)> = vec![];
    for &i in outputs {
        let n = numel(&cx.ty(cx.kernel.body.outputs[i].value).shape);
        match groups.iter_mut().find(|g| g.0 == n) {
            Some(g) => g.1.push(i),
            None => groups.push((n, vec![i])),
        }
    }
    if groups.is_empty() {
        return Ok(());
    }
    let (tid, ctaid) = (cx.tid(), cx.ctaid());
    let thread =
        cx.b.mad_u32(ctaid, Operand::Int(geometry.threads as i64), tid);
    let stride = geometry.blocks * geometry.threads;
    for (n, members) in groups {
        cx.for_strided(thread, n, stride, |cx, e| {
            let at = Index::flat(e);
            for &i in &members {
                let out = cx.kernel.body.outputs[i].value;
                let value = cx.value(out, &at)?;
                cx.store(i, &at, value)?;
            }
            Ok(())
        })?;
    }
    Ok(())
}
