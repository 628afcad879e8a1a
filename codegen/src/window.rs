//! One spatial axis of a sliding window (convolution or pooling): which input position
//! an output position's tap reads, and which output position reads an input position
//! through a given tap.
//!
//! Positions are wrapping `u32`: a tap in the leading padding wraps to a huge value, so
//! one unsigned `< extent` compare checks both edges.

use crate::eval::Emitter;
use crate::flow::Check;
use crate::ptx::Operand;

#[derive(Clone, Copy, Debug)]
pub(crate) struct Axis {
    pub stride: usize,
    pub padding: usize,
    pub dilation: usize,
    /// Extent of the input (the image convolved or pooled).
    pub input: usize,
    /// Extent of the output.
    pub output: usize,
}

impl Axis {
    /// `o * stride + k * dilation - padding`, and whether it lies inside the input.
    pub fn input_pos(&self, cx: &mut Emitter, o: Operand, k: Operand) -> (Operand, Check) {
        let base = cx.b.mul_u32(o, Operand::Int(self.stride as i64));
        let pos = cx.b.mad_u32(k, Operand::Int(self.dilation as i64), base);
        let pos = cx.b.sub_u32(pos, Operand::Int(self.padding as i64));
        let check = cx.b.lt_u32(pos, Operand::Int(self.input as i64));
        (pos, check)
    }

    /// The output position `(i + padding - k * dilation) / stride` whose tap `k` reads
    /// input position `i`, with the checks that it exists: the division is exact and
    /// the quotient in range. A negative dividend wraps to at least 2^32 - 2^16; divided
    /// by any realistic stride it stays above every output extent.
    pub fn output_pos(&self, cx: &mut Emitter, i: Operand, k: Operand) -> (Operand, Vec<Check>) {
        let shifted = cx.b.add_u32(i, Operand::Int(self.padding as i64));
        let tap = cx.b.mul_u32(k, Operand::Int(self.dilation as i64));
        let t = cx.b.sub_u32(shifted, tap);
        let q = cx.b.div_u32(t, self.stride);
        let mut checks = vec![cx.b.lt_u32(q, Operand::Int(self.output as i64))];
        if self.stride > 1 {
            let r = cx.b.rem_u32(t, self.stride);
            checks.push(cx.b.eq_u32(r, Operand::Int(0)));
        }
        (q, checks)
    }
}
