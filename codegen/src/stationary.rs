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
use calib_ir::{Layout, Value};

/// Runs a pixel (`q`) where a group stored in `layout` taking `runs` can keep its
/// channels under a launch of `stride` threads: an NHWC group whose runs walk the
/// channels alone, with `q` dividing the stride.
pub(crate) fn channel_stationary(layout: Layout, runs: &Runs, stride: usize) -> Option<usize> {
    let [channels] = runs.walked[..] else {
        return None;
    };
    let per_pixel = channels / runs.len;
    (layout == Layout::ChannelsLast && stride.is_multiple_of(per_pixel)).then_some(per_pixel)
}

/// A group of outputs (`members`, of `shape`) walked with its threads keeping their
/// channels.
pub(crate) struct Stationary<'a> {
    pub members: &'a [usize],
    pub shape: &'a [usize],
    pub runs: &'a Runs,
    /// Runs a pixel: how many threads share a pixel.
    pub per_pixel: usize,
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
        let len = self.runs.len;
        let lane = cx.b.rem_u32(thread, self.per_pixel);
        let first = cx.b.mul_u32(lane, Operand::Int(len as i64));
        let channels: Vec<Operand> = (0..len)
            .map(|u| cx.b.add_u32(first, Operand::Int(u as i64)))
            .collect();
        let outputs: Vec<Value> = self
            .members
            .iter()
            .map(|&i| cx.kernel.body.outputs[i].value)
            .collect();
        self.channel_terms(cx, &outputs, &channels)?;
        // The pixels in memory order: `(n, h, w)`.
        let pixels = &self.runs.shape[..self.runs.shape.len() - 1];
        let count: usize = pixels.iter().product();
        let start = cx.b.div_u32(thread, self.per_pixel);
        cx.for_strided(start, count, stride / self.per_pixel, |cx, p| {
            let outer = cx.coords(&Index::flat(p), pixels);
            let elements = channels
                .iter()
                .map(|&c| {
                    let mut memory = outer.clone();
                    memory.push(c);
                    Layout::ChannelsLast.to_logical(&memory)
                })
                .collect();
            run(cx, elements)
        })
    }

    /// Evaluates, at each of `channels`, the values `outputs` read that depend on the
    /// channel alone and are read by values that do not (the per-channel terms), and
    /// loads the per-channel inputs the run reads.
    fn channel_terms(
        &self,
        cx: &mut Emitter,
        outputs: &[Value],
        channels: &[Operand],
    ) -> Result<()> {
        let at = |c: Operand| vec![Operand::Int(0), c, Operand::Int(0), Operand::Int(0)];
        let elements: Vec<Vec<Operand>> = channels.iter().map(|&c| at(c)).collect();
        let run = Run {
            elements: &elements,
            walked: 1,
        };
        cx.load_channel_runs(outputs, self.shape[1], &run)?;
        // Axes 0, 2 and 3 (batch, rows, columns).
        const PIXEL_AXES: u64 = 0b1101;
        let per_channel = |cx: &Emitter, v: Value| {
            cx.invariant_axes(v) & PIXEL_AXES == PIXEL_AXES && cx.ty(v).shape == self.shape
        };
        let read = cx.reads(outputs);
        let body = &cx.kernel.body;
        let mut terms = vec![];
        for (k, node) in body.nodes.iter().enumerate() {
            if !read[k] || per_channel(cx, Value(k)) {
                continue;
            }
            for &x in &node.inputs {
                if per_channel(cx, x) && !terms.contains(&x) {
                    terms.push(x);
                }
            }
        }
        for term in terms {
            for element in &elements {
                cx.value(term, &Index::coords(element.clone()))?;
            }
        }
        Ok(())
    }
}
