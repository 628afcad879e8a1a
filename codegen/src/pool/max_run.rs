//! Max pooling a run of outputs at a time: four adjacent outputs of a row read
//! overlapping windows, so the run loads each input row's stretch once, as vectors,
//! rather than each output its own nine taps.

use super::{stretch_start, LOWEST};
use crate::error::Result;
use crate::eval::{Emitter, Run};
use crate::flow::Check;
use crate::index::Index;
use crate::ptx::{ins, Operand, Reg, Ty};
use crate::window::Axis;
use calib_ir::{Layout, Value};

/// Whether max pooling with windows `w` of width `kernel` can take runs of `len`
/// outputs along a row ([`max_pool_run`]): the run's input stretch, `len * stride`
/// columns from a multiple of that, must tile the image's rows (so that its vector
/// loads are aligned and stay inside the row), and a window must reach at most the
/// stretches just before and after.
pub(super) fn takes_runs(w: [Axis; 2], kernel: [usize; 2], len: usize) -> bool {
    let stretch = len * w[1].stride;
    w[1].input.is_multiple_of(stretch)
        && w[1].padding <= stretch
        && (len - 1) * w[1].stride + kernel[1] <= 2 * stretch + w[1].padding
}

/// Max pooling of `x` (of shape `image`) at the outputs of `run`, adjacent along one
/// row from a column that is a multiple of their count: the window maximum of each,
/// taken over the same taps in the same order as one output alone ([`super::max_pool`]),
/// so the bits are the same. The stretches come in as vectors where `x` reads a
/// row-major buffer where it lies.
pub(super) fn max_pool_run(
    cx: &mut Emitter,
    x: Value,
    image: &[usize],
    run: &Run,
    w: [Axis; 2],
    kernel: [usize; 2],
) -> Result<Vec<Reg>> {
    let at = &run.elements[0];
    let len = run.elements.len();
    let stretch = (len * w[1].stride) as i64;
    // The first column of the run's own stretch; its first window starts `padding`
    // columns before it.
    let first = cx.b.mul_u32(at[3], Operand::Int(w[1].stride as i64));
    let stretches = Stretches {
        x,
        at,
        first,
        stretch,
        image,
        width: w[1].input,
    };
    let bests: Vec<Reg> = (0..len)
        .map(|_| cx.b.materialize(LOWEST, Ty::F32))
        .collect();
    for kh in 0..kernel[0] {
        let (row, row_inside) = w[0].input_pos(cx, at[2], Operand::Int(kh as i64));
        let row = cx.clamp_index(row, w[0].input);
        // The stretches the run's taps reach: from its first window's first column to
        // its last window's last.
        let lowest = -(w[1].padding as i64);
        let highest = ((len - 1) * w[1].stride + kernel[1] - 1) as i64 + lowest;
        for block in lowest.div_euclid(stretch)..=highest.div_euclid(stretch) {
            stretches.load(cx, row, block)?;
        }
        for (u, best) in bests.iter().enumerate() {
            for kw in 0..kernel[1] {
                let offset = (u * w[1].stride + kw) as i64 - w[1].padding as i64;
                let (value, inside) = stretches.tap(cx, row, offset)?;
                let inside = cx.all_of(vec![row_inside, inside]);
                // A tap in the padding reads as the lowest value, which never wins.
                let v = cx.select_or(vec![inside], Ty::F32, LOWEST, |_| Ok(value))?;
                ins!(cx.b, "max.NaN.f32 {best}, {best}, {v}");
            }
        }
    }
    Ok(bests)
}

/// The input stretches a run's windows read, `stretch` columns each from a multiple of
/// that: the run's own (from `first`) and those just before and after it.
struct Stretches<'a> {
    x: Value,
    /// The run's first output.
    at: &'a [Operand],
    /// The first column of the run's own stretch.
    first: Operand,
    stretch: i64,
    image: &'a [usize],
    width: usize,
}

impl Stretches<'_> {
    /// The first column of stretch `block` relative to the run's own ([`stretch_start`]).
    fn start(&self, cx: &mut Emitter, block: i64) -> Operand {
        stretch_start(cx, self.first, block, self.stretch as usize, self.width)
    }

    /// Input row `row`'s stretch `block`, loaded as vectors and bound to its positions.
    fn load(&self, cx: &mut Emitter, row: Operand, block: i64) -> Result<()> {
        let start = self.start(cx, block);
        let elements: Vec<Vec<Operand>> = (0..self.stretch)
            .map(|e| {
                let column = cx.b.add_u32(start, Operand::Int(e));
                vec![self.at[0], self.at[1], row, column]
            })
            .collect();
        let run = Run {
            elements: &elements,
            walked: 1,
        };
        cx.load_runs(&[self.x], self.image, Layout::RowMajor, &run)
    }

    /// The input at `offset` columns from the run's stretch in row `row`, and whether
    /// that column is inside the image (the row's own stretch always is).
    fn tap(&self, cx: &mut Emitter, row: Operand, offset: i64) -> Result<(Operand, Check)> {
        let block = offset.div_euclid(self.stretch);
        let start = self.start(cx, block);
        let column =
            cx.b.add_u32(start, Operand::Int(offset - block * self.stretch));
        let inside = match block {
            0 => Err(true),
            _ => {
                let p = match offset {
                    o if o >= 0 => cx.b.add_u32(self.first, Operand::Int(o)),
                    o => cx.b.sub_u32(self.first, Operand::Int(-o)),
                };
                cx.b.lt_u32(p, Operand::Int(self.width as i64))
            }
        };
        let value = cx.value(
            self.x,
            &Index::coords(vec![self.at[0], self.at[1], row, column]),
        )?;
        Ok((value, inside))
    }
}
