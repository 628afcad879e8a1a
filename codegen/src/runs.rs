//! Runs: the adjacent elements a thread takes at once. A tensor's innermost axes (in
//! memory order) are cut into runs of a fixed length, each walking the fewest innermost
//! axes whose extents the length divides: a run shares its coordinates on the axes
//! outside the walk, and everything computed from them, and its elements come in and go
//! out as vectors ([`crate::eval::Run`]).

use crate::eval::Emitter;
use crate::index::Index;
use crate::ptx::Operand;

/// How runs of `len` elements cover a tensor of (memory-order) extents.
pub(crate) struct Runs {
    /// Elements per run.
    pub len: usize,
    /// The extents with the walked ones merged and divided by `len`: one element per run.
    pub shape: Vec<usize>,
    /// The walked (innermost) extents.
    pub walked: Vec<usize>,
}

impl Runs {
    /// Runs of `len` over `extents`, walking at most `most` innermost axes
    /// ([`calib_ir::run_axes`]); `None` where `len` divides no such product.
    pub fn over(extents: &[usize], len: usize, most: usize) -> Option<Runs> {
        let rank = extents.len();
        let walked = calib_ir::run_axes(extents, len, most)?;
        let mut shape = extents[..rank - walked].to_vec();
        shape.push(extents[rank - walked..].iter().product::<usize>() / len);
        Some(Runs {
            len,
            shape,
            walked: extents[rank - walked..].to_vec(),
        })
    }

    /// How many runs there are.
    pub fn count(&self) -> usize {
        calib_ir::numel(&self.shape)
    }

    /// The coordinates (over the extents the runs cover) of each element of run `r`.
    pub fn elements(&self, cx: &mut Emitter, r: Operand) -> Vec<Vec<Operand>> {
        let mut outer = cx.coords(&Index::flat(r), &self.shape);
        let q = outer.pop().expect("a walked axis");
        let first = cx.b.mul_u32(q, Operand::Int(self.len as i64));
        (0..self.len)
            .map(|u| {
                let f = cx.b.add_u32(first, Operand::Int(u as i64));
                let mut at = outer.clone();
                at.extend(cx.coords(&Index::flat(f), &self.walked));
                at
            })
            .collect()
    }
}
