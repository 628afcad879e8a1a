//! Maps over channels-last images whose threads keep their channels.
//!
//! A run along an NHWC image's channels (`pointwise.rs`) has elements of different
//! channels, so whatever a map computes per channel (a BatchNorm's
//! `rsqrt(var + eps) * gamma`, its shift) is computed for every element, where a run
//! along an NCHW row shares it. A thread that keeps one run of channels and walks
//! pixels instead computes those terms once: when the launch's stride is a whole number
//! of pixels (`q` runs a pixel divide it), thread `t` takes channels
//! `(t % q) * len ..` at every pixel `t / q, t / q + stride / q, ...`, and the terms
//! that depend on nothing but the channel are evaluated before the loop, where every
//! iteration's lookup finds them (the evaluator keys such a value at its channel alone,
//! `Emitter::canonical`).

use crate::error::Result;
use crate::eval::{Emitter, Run};
use crate::index::Index;
use crate::ptx::Operand;
use crate::runs::Runs;
use calib_ir::{Layout, Op, OpClass, Value};

/// Runs a pixel (`q`) where a group stored in `layout` taking `runs` walks the
/// channels alone: an NHWC group whose threads can keep their channels, under a launch
/// whose stride `q` divides.
pub(crate) fn runs_a_pixel(layout: Layout, runs: &Runs) -> Option<usize> {
    let [channels] = runs.walked[..] else {
        return None;
    };
    (layout == Layout::ChannelsLast).then_some(channels / runs.len)
}

/// [`runs_a_pixel`] where a launch of `stride` threads lets the threads keep their
/// channels.
pub(crate) fn channel_stationary(layout: Layout, runs: &Runs, stride: usize) -> Option<usize> {
    runs_a_pixel(layout, runs).filter(|&q| stride.is_multiple_of(q))
}

/// A group of outputs (`members`, of `shape`) walked with its threads keeping their
/// channels.
pub(crate) struct Stationary<'a> {
    pub members: &'a [usize],
    pub shape: &'a [usize],
    pub runs: &'a Runs,
    /// Runs a pixel: how many threads share a pixel.
    pub per_pixel: usize,
    /// Where the group branches on column residues modulo this stride (a max-pooling
    /// adjoint): the pixels of a row are walked residue by residue, so that a warp's
    /// take one branch ([`Stationary::residue_order`]).
    pub column_stride: Option<usize>,
}

impl Stationary<'_> {
    /// Thread `thread`'s channels, their per-channel terms, and the loop over its
    /// pixels, `stride / per_pixel` apart, which calls `run` with each pixel's elements
    /// (logical coordinates).
    pub fn emit(
        &self,
        cx: &mut Emitter,
        thread: Operand,
        stride: usize,
        run: impl FnOnce(&mut Emitter, Vec<Vec<Operand>>) -> Result<()>,
    ) -> Result<()> {
        let channels = self.channels(cx, thread);
        let outputs: Vec<Value> = self
            .members
            .iter()
            .map(|&i| cx.kernel.body.outputs[i].value)
            .collect();
        channel_terms(cx, &outputs, self.shape, &channels)?;
        self.walk_pixels(cx, thread, stride, &channels, run)
    }

    /// [`Stationary::emit`] for a group whose one output is `concat`, along the
    /// channels, of operands that each hold whole runs: a thread's run lies within one
    /// operand, so the thread branches on it once, before its loop, and computes that
    /// operand's per-channel terms there. `run` gets the operand, the run's channels
    /// within it, and each pixel's elements.
    pub fn emit_concat(
        &self,
        cx: &mut Emitter,
        thread: Operand,
        stride: usize,
        concat: Value,
        mut run: impl FnMut(&mut Emitter, Value, &[Operand], Vec<Vec<Operand>>) -> Result<()>,
    ) -> Result<()> {
        let channels = self.channels(cx, thread);
        cx.concat_branches(concat, 1, channels[0], |cx, x, start| {
            let within: Vec<Operand> = (channels.iter())
                .map(|&c| cx.b.sub_u32(c, Operand::Int(start as i64)))
                .collect();
            let shape = cx.ty(x).shape.clone();
            channel_terms(cx, &[x], &shape, &within)?;
            self.walk_pixels(cx, thread, stride, &channels, |cx, elements| {
                run(cx, x, &within, elements)
            })
        })
    }

    /// Thread `thread`'s channels: a run of them, the first a multiple of its length.
    fn channels(&self, cx: &mut Emitter, thread: Operand) -> Vec<Operand> {
        let len = self.runs.len;
        let lane = cx.b.rem_u32(thread, self.per_pixel);
        let first = cx.b.mul_u32(lane, Operand::Int(len as i64));
        (0..len)
            .map(|u| cx.b.add_u32(first, Operand::Int(u as i64)))
            .collect()
    }

    /// The loop over thread `thread`'s pixels, calling `run` with the elements of
    /// `channels` at each.
    fn walk_pixels(
        &self,
        cx: &mut Emitter,
        thread: Operand,
        stride: usize,
        channels: &[Operand],
        run: impl FnOnce(&mut Emitter, Vec<Vec<Operand>>) -> Result<()>,
    ) -> Result<()> {
        // The pixels in memory order: `(n, h, w)`.
        let pixels = &self.runs.shape[..self.runs.shape.len() - 1];
        let count: usize = pixels.iter().product();
        let start = cx.b.div_u32(thread, self.per_pixel);
        let by_residue = self.residue_order();
        let outer_uniform = std::mem::replace(&mut cx.uniform_column_residue, by_residue);
        let walked = cx.for_strided(start, count, stride / self.per_pixel, |cx, p| {
            let mut outer = cx.coords(&Index::flat(p), pixels);
            if let Some(s) = by_residue {
                // The `i`-th pixel of a row is column `(i % (W / s)) * s + i / (W / s)`.
                let half = pixels[pixels.len() - 1] / s;
                let i = outer[outer.len() - 1];
                let (q, r) = (cx.b.div_u32(i, half), cx.b.rem_u32(i, half));
                outer[pixels.len() - 1] = cx.b.mad_u32(r, Operand::Int(s as i64), q);
            }
            let elements = channels
                .iter()
                .map(|&c| {
                    let mut memory = outer.clone();
                    memory.push(c);
                    Layout::ChannelsLast.to_logical(&memory)
                })
                .collect();
            run(cx, elements)
        });
        cx.uniform_column_residue = outer_uniform;
        walked
    }

    /// The column stride to walk a row's pixels by residue under, where that gives
    /// every warp pixels of one residue: the stride divides the row, and a warp's
    /// pixels (`32 / per_pixel`, consecutive in the walk) divide a residue's.
    fn residue_order(&self) -> Option<usize> {
        let s = self.column_stride?;
        let width = self.runs.shape[self.runs.shape.len() - 2];
        let warp_pixels = (32 / self.per_pixel).max(1);
        let fits = 32 % self.per_pixel.min(32) == 0 && width.is_multiple_of(s);
        (fits && (width / s).is_multiple_of(warp_pixels)).then_some(s)
    }
}

/// Evaluates, at each of `channels`, the values `outputs` read that depend on the
/// channel alone and are read by values that do not (the per-channel terms), and
/// loads the per-channel inputs the run reads: a thread that keeps its channels (here,
/// and in a channels-last reduction) does so once, before its loop over pixels.
///
/// A term is evaluated at the channel its readers read it at: the run's own, or one a
/// slice along the channels shifts (a concatenation's second operand reads a
/// BatchNorm's statistics of all its channels from `C` on), [`channel_offsets`].
pub(crate) fn channel_terms(
    cx: &mut Emitter,
    outputs: &[Value],
    shape: &[usize],
    channels: &[Operand],
) -> Result<()> {
    let at = |c: Operand| vec![Operand::Int(0), c, Operand::Int(0), Operand::Int(0)];
    let elements: Vec<Vec<Operand>> = channels.iter().map(|&c| at(c)).collect();
    let run = Run {
        elements: &elements,
        walked: 1,
    };
    cx.load_channel_runs(outputs, shape[1], &run)?;
    // Axes 0, 2 and 3 (batch, rows, columns).
    const PIXEL_AXES: u64 = 0b1101;
    let per_channel = |cx: &Emitter, v: Value| {
        cx.invariant_axes(v) & PIXEL_AXES == PIXEL_AXES && cx.ty(v).rank() == 4
    };
    let offsets = channel_offsets(cx, outputs);
    let body = &cx.kernel.body;
    let mut terms = vec![];
    for (k, node) in body.nodes.iter().enumerate() {
        if offsets[k].is_empty() || per_channel(cx, Value(k)) {
            continue;
        }
        for &x in &node.inputs {
            if per_channel(cx, x) && !terms.contains(&x) {
                terms.push(x);
            }
        }
    }
    for term in terms {
        for &offset in &offsets[term.0] {
            for &c in channels {
                let c = cx.b.add_u32(c, Operand::Int(offset as i64));
                cx.value(term, &Index::coords(at(c)))?;
            }
        }
    }
    Ok(())
}

/// For each body value, the offsets from the run's channel at which `outputs` read it
/// where they read it at the same pixel's channel (plus a constant): through
/// elementwise ops, broadcasts over other axes, resizes, slices and pooling windows.
/// Empty for a value they do not read so (a reduced operand, one read back from
/// memory).
fn channel_offsets(cx: &Emitter, outputs: &[Value]) -> Vec<Vec<usize>> {
    let nodes = &cx.kernel.body.nodes;
    let mut offsets: Vec<Vec<usize>> = vec![vec![]; nodes.len()];
    for v in outputs {
        offsets[v.0] = vec![0];
    }
    for k in (0..nodes.len()).rev() {
        let node = &nodes[k];
        if offsets[k].is_empty() || cx.is_stored(Value(k)) || node.ty.rank() != 4 {
            continue;
        }
        let shift = match node.op {
            Op::Slice { axis: 1, start, .. } => start,
            Op::Slice { .. } | Op::ResizeNearest { .. } | Op::Broadcast { .. } => 0,
            ref op if op.class() == OpClass::Elementwise || op.reads_windows() => 0,
            _ => continue,
        };
        let reached: Vec<usize> = offsets[k].iter().map(|o| o + shift).collect();
        for &x in &node.inputs {
            let input = &cx.ty(x).shape;
            let channels_line_up = input.len() == 4 && input[1] > 1;
            if !channels_line_up {
                continue;
            }
            for &o in &reached {
                if !offsets[x.0].contains(&o) {
                    offsets[x.0].push(o);
                }
            }
        }
    }
    offsets
}
