//! What a GEMM-shaped op tells the template: its extents, which way its operands lie in
//! memory, and for each operand element the body value and position it reads
//! ([`Element`]), so that the loader can evaluate it (a prologue runs while the tile
//! loads) or, for a plain read of a buffer, copy it with `cp.async`.

use crate::error::Result;
use crate::eval::Emitter;
use crate::flow::Check;
use crate::index::Index;
use crate::ptx::{Address, Operand, Ty};
use calib_ir::{CopySource, GemmDims, GemmInstruction, Value};

/// Which dimension is adjacent in memory, so that consecutive threads access
/// consecutive addresses.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Contiguity {
    /// `A` along `m` (else along `k`).
    pub a_m: bool,
    /// `B` along `n` (else along `k`).
    pub b_n: bool,
    /// `C` along `m` (else along `n`).
    pub c_m: bool,
}

/// One element of an operand: body value `value` at coordinates `at` where all of
/// `inside` hold, zero elsewhere. `at` is clamped into the value's shape wherever a
/// check can fail at run time, so reading there is always safe (tile loads run without
/// branches).
pub(crate) struct Element {
    pub value: Value,
    pub at: Vec<Operand>,
    pub inside: Vec<Check>,
}

/// Where a `cp.async` finds an element: its global address, and whether it is inside
/// the operand (else the copy fills zeros).
pub(crate) struct Source {
    pub address: Address,
    pub inside: Check,
}

impl Element {
    /// An element that is never outside its operand.
    pub fn whole(value: Value, at: Vec<Operand>) -> Element {
        Element {
            value,
            at,
            inside: vec![],
        }
    }

    /// The element's value, through the body evaluator (its prologue included).
    pub fn read(self, cx: &mut Emitter) -> Result<Operand> {
        let Element { value, at, inside } = self;
        cx.select_or_zero(inside, Ty::F32, |cx| cx.value(value, &Index::coords(at)))
    }

    /// Where the element is in kernel input `input`: the buffer [`copy_source`] found
    /// for its value. An element that constants put outside is given the buffer's first
    /// address (an unclamped position may lie outside the buffer; the copy reads none of
    /// it).
    pub fn source(self, cx: &mut Emitter, input: Value) -> Source {
        let Element { at, inside, .. } = self;
        let inside = cx.all_of(inside);
        let at = match inside {
            Err(false) => vec![Operand::Int(0); at.len()],
            _ => at,
        };
        Source {
            address: cx.input_address(input, &Index::coords(at)),
            inside,
        }
    }
}

/// The kernel input a `cp.async` can copy into the tiles of operand `operand` (0 for
/// `A`) of GEMM anchor `anchor` multiplied by `instruction` ([`calib_ir::copy_source`]:
/// f32 words for TF32 tiles, runs of bf16 for bf16 ones), unless this launch reads it
/// back from an earlier one.
pub(crate) fn copy_source(
    cx: &Emitter,
    anchor: Value,
    operand: usize,
    instruction: GemmInstruction,
) -> Option<CopySource> {
    let layouts = cx.input_layouts();
    calib_ir::copy_source(&cx.kernel.body, anchor, operand, instruction, &layouts)
        .filter(|c| cx.is_plain_input(c.input))
}

/// A GEMM-shaped anchor op.
pub(crate) trait Operands {
    fn dims(&self) -> GemmDims;
    fn contiguity(&self) -> Contiguity;
    /// Where `A[g; m, k]` comes from.
    fn a_element(&self, cx: &mut Emitter, g: Operand, m: &[Operand], k: &[Operand]) -> Element;
    /// Where `B[g; k, n]` comes from.
    fn b_element(&self, cx: &mut Emitter, g: Operand, k: &[Operand], n: &[Operand]) -> Element;
    /// `A[g; m, k]`, zero outside the operand.
    fn a(&self, cx: &mut Emitter, g: Operand, m: &[Operand], k: &[Operand]) -> Result<Operand> {
        self.a_element(cx, g, m, k).read(cx)
    }
    /// `B[g; k, n]`, zero outside the operand.
    fn b(&self, cx: &mut Emitter, g: Operand, k: &[Operand], n: &[Operand]) -> Result<Operand> {
        self.b_element(cx, g, k, n).read(cx)
    }
    /// The anchor-output coordinates of `C[g; m, n]`.
    fn c(&self, cx: &mut Emitter, g: Operand, m: &[Operand], n: &[Operand]) -> Vec<Operand>;
    /// How many elements of the anchor's output lie adjacent in memory along its
    /// contiguous GEMM axis (`m` where `contiguity().c_m`, else `n`), from every multiple
    /// of that count on: a convolution's output plane, a weight gradient's `[C, KH, KW]`,
    /// a matmul's row (1 where consecutive positions are not adjacent).
    fn c_contiguous(&self) -> usize;
    /// The inverse of [`Operands::c`].
    fn split(&self, cx: &mut Emitter, coords: &[Operand]) -> (Operand, Vec<Operand>, Vec<Operand>);
    /// For a GEMM over a lattice of the anchor's positions (a strided 1x1 data
    /// gradient): the strides along the anchor's axes 2 and 3. Positions off the lattice
    /// are zero, and the GEMM's blocks write them too.
    fn lattice(&self) -> Option<[usize; 2]> {
        None
    }
}
