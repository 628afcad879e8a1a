//! The GEMM template's side of a strided data gradient computed phase by phase
//! ([`calib_ir::Phases`]): which phase a block's group is, how many steps through `k`
//! its slice takes (a phase steps through the taps it meets, not every tap laid out),
//! and where each of those steps starts.
//!
//! Everything here is integer arithmetic on the block's group, emitted once before the
//! `k` loop: the builder remembers each expression, so the convolution's operands,
//! which ask for the phase again for every element, reuse those registers.

use crate::eval::Emitter;
use crate::ptx::{ins, Operand, Reg, Ty};
use calib_ir::Phases;

/// The phase of a block's GEMM group, as registers.
pub(crate) struct Phase {
    /// The convolution group.
    pub group: Operand,
    /// Along rows and columns: the phase `r` (`h mod s`).
    pub r: [Operand; 2],
    /// The first tap the phase meets, `c` ([`Phases::first_tap`]).
    pub first_tap: [Operand; 2],
    /// The output row a position's first tap reads, less the position's own: `b`.
    pub offset: [Operand; 2],
    /// How many taps the phase meets.
    pub taps: [Operand; 2],
}

impl Phase {
    /// The phase of GEMM group `g`: `group * phases + j`, phase `j` in the order
    /// [`Phases::phase`] gives.
    pub fn of(cx: &mut Emitter, p: &Phases, g: Operand) -> Phase {
        let count = p.count();
        let group = cx.b.div_u32(g, count);
        let j = cx.b.rem_u32(g, count);
        let j = match p.reversed() {
            true => {
                let j = cx.b.sub_u32(Operand::Int(count as i64 - 1), j);
                bounded(cx, j, count - 1)
            }
            false => j,
        };
        let r = [cx.b.div_u32(j, p.stride[1]), cx.b.rem_u32(j, p.stride[1])];
        let axis = |cx: &mut Emitter, a: usize| {
            let (s, k) = (p.stride[a], p.kernel[a]);
            let shifted = cx.b.add_u32(r[a], Operand::Int(p.padding[a] as i64));
            let c = cx.b.rem_u32(shifted, s);
            let b = cx.b.div_u32(shifted, s);
            // `(k - c).div_ceil(s)`, with `c < s <= k`.
            let left = cx.b.sub_u32(Operand::Int((k + s - 1) as i64), c);
            let taps = cx.b.div_u32(left, s);
            (c, b, taps)
        };
        let (ch, bh, th) = axis(cx, 0);
        let (cw, bw, tw) = axis(cx, 1);
        Phase {
            group,
            r,
            first_tap: [ch, cw],
            offset: [bh, bw],
            taps: [th, tw],
        }
    }
}

/// A block's walk through `k` over its phase's taps: its slice's steps, and where each
/// starts in the `k` laid out as `[t_h, t_w, channels]`.
pub(crate) struct Walk {
    /// Steps this block takes (at most `most_steps`).
    pub count: Operand,
    pub most_steps: usize,
    /// Steps a block takes on average, for the instruction census.
    pub mean: f64,
    /// The block's first step among its phase's.
    first: Operand,
    /// The phase's taps along columns.
    taps_w: Operand,
    most: [usize; 2],
    channels: usize,
    bk: usize,
}

impl Walk {
    /// The walk of slice `slice` (of `slices`, each at most `per_slice` steps) of a
    /// block in `phase`, stepping `bk` rows of `k = [t_h, t_w, channels]` at a time
    /// (`bk` divides `channels`: a step stays on one tap).
    pub fn of(
        cx: &mut Emitter,
        p: &Phases,
        phase: &Phase,
        [channels, bk]: [usize; 2],
        (slice, slices, per_slice): (Operand, usize, usize),
    ) -> Walk {
        let per_tap = channels / bk;
        let taps = cx.b.mul_u32(phase.taps[0], phase.taps[1]);
        let total = cx.b.mul_u32(taps, Operand::Int(per_tap as i64));
        let laid_out = p.most_taps(0) * p.most_taps(1) * per_tap;
        let (first, count) = match slices {
            1 => (Operand::Int(0), bounded(cx, total, per_slice)),
            _ => {
                // The steps left past the slices before this one, none to `per_slice`.
                let first = cx.b.mul_u32(slice, Operand::Int(per_slice as i64));
                let left = cx.b.sub_u32(total, first);
                let some = cx.b.reg(Ty::U32);
                ins!(cx.b, "max.s32 {some}, {left}, 0");
                let count = cx.b.min_u32(some.into(), Operand::Int(per_slice as i64));
                (first, bounded(cx, count, per_slice))
            }
        };
        Walk {
            count,
            most_steps: per_slice,
            mean: (laid_out as f64 * p.share_of_k() / slices as f64).min(per_slice as f64),
            first,
            taps_w: phase.taps[1],
            most: [p.most_taps(0), p.most_taps(1)],
            channels,
            bk,
        }
    }

    /// The `k` at which this block's step `kt` starts: its phase's tap
    /// `(t_h, t_w) = (j / taps_w, j % taps_w)` for the step's tap index `j`, and the
    /// step's channels within it.
    pub fn k_origin(&self, cx: &mut Emitter, kt: Operand) -> Operand {
        let per_tap = self.channels / self.bk;
        let t = cx.b.add_u32(self.first, kt);
        let j = cx.b.div_u32(t, per_tap);
        let within = cx.b.rem_u32(t, per_tap);
        let (th, tw) = (cx.b.reg(Ty::U32), cx.b.reg(Ty::U32));
        ins!(cx.b, "div.u32 {th}, {j}, {}", self.taps_w);
        ins!(cx.b, "rem.u32 {tw}, {j}, {}", self.taps_w);
        cx.b.bound(th, self.most[0] as u64 - 1);
        cx.b.bound(tw, self.most[1] as u64 - 1);
        let tap =
            cx.b.mad_u32(th.into(), Operand::Int(self.most[1] as i64), tw.into());
        let channel = cx.b.mul_u32(within, Operand::Int(self.bk as i64));
        cx.b.mad_u32(tap, Operand::Int(self.channels as i64), channel)
    }
}

/// `x`, known to be at most `max`: a register gets the bound (a constant needs none).
fn bounded(cx: &mut Emitter, x: Operand, max: usize) -> Operand {
    let r: Reg = cx.b.materialize(x, Ty::U32);
    cx.b.bound(r, max as u64);
    r.into()
}
