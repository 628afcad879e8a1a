//! Indices and index maps: `broadcast`, `reshape`, `slice` and `resize_nearest` become
//! address arithmetic, never copies.
//!
//! An [`Index`] names one element by its row-major flat index, its coordinates, or both,
//! and each form is derived from the other only when an op needs it. `reshape` keeps the
//! flat index as it is, so a reshaped value is found in the memo under the same key as
//! the value it reshapes.

use crate::ptx::{ins, Builder, Operand, Ty};
use crate::scope::ScopedMap;
use calib_ir::{Node, Op};

/// One element of a tensor whose shape the user of the index knows.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Index {
    flat: Option<Operand>,
    coords: Option<Vec<Operand>>,
}

/// The memo key of an index: the flat index whenever it is known.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) enum IndexKey {
    Flat(Operand),
    Coords(Vec<Operand>),
}

impl Index {
    pub fn flat(flat: Operand) -> Self {
        Index {
            flat: Some(flat),
            coords: None,
        }
    }

    pub fn coords(coords: Vec<Operand>) -> Self {
        Index {
            flat: None,
            coords: Some(coords),
        }
    }

    /// The coordinates, if this index has them already.
    pub(crate) fn coordinates(&self) -> Option<&[Operand]> {
        self.coords.as_deref()
    }

    pub fn both(flat: Operand, coords: Vec<Operand>) -> Self {
        Index {
            flat: Some(flat),
            coords: Some(coords),
        }
    }

    /// The key under which values at this index are memoized, for a tensor of `shape`.
    pub(crate) fn key(&self, shape: &[usize]) -> IndexKey {
        if let Some(f) = self.flat {
            return IndexKey::Flat(f);
        }
        let coords = self.coords.as_ref().expect("an index has a form");
        let constant: Option<Vec<i64>> = coords.iter().map(|c| c.as_int()).collect();
        match constant {
            Some(c) => IndexKey::Flat(Operand::Int(linear(&c, shape))),
            None => IndexKey::Coords(coords.clone()),
        }
    }
}

/// The row-major flat index of constant coordinates.
fn linear(coords: &[i64], shape: &[usize]) -> i64 {
    coords
        .iter()
        .zip(shape)
        .fold(0, |acc, (&c, &d)| acc * d as i64 + c)
}

/// Converts indices between their forms, emitting the arithmetic into a [`Builder`],
/// and remembers each conversion for as long as its registers live (scoped like the
/// evaluator's values).
#[derive(Debug)]
pub(crate) struct Indexer {
    conversions: ScopedMap<(IndexKey, Vec<usize>), Index>,
}

impl Indexer {
    pub fn new() -> Self {
        Indexer {
            conversions: ScopedMap::new(),
        }
    }

    /// Opens a scope: conversions made until [`Indexer::close`] are forgotten then.
    pub fn open(&mut self) {
        self.conversions.push();
    }

    pub fn close(&mut self) {
        self.conversions.pop();
    }

    /// The flat index of `at` in a tensor of `shape`.
    pub fn flat(&mut self, b: &mut Builder, at: &Index, shape: &[usize]) -> Operand {
        if let Some(f) = at.flat {
            return f;
        }
        let coords = at.coords.as_ref().expect("an index has a form");
        self.linearize(b, coords, shape)
    }

    /// The row-major flat index of `coords` in `shape` (memoized).
    pub fn linearize(&mut self, b: &mut Builder, coords: &[Operand], shape: &[usize]) -> Operand {
        let key = (IndexKey::Coords(coords.to_vec()), shape.to_vec());
        if let Some(Index { flat: Some(f), .. }) = self.conversions.get(&key) {
            return f;
        }
        let mut flat = Operand::Int(0);
        for (&c, &d) in coords.iter().zip(shape) {
            flat = b.mad_u32(flat, Operand::Int(d as i64), c);
        }
        self.conversions.insert(key, Index::flat(flat));
        flat
    }

    /// The coordinates of `at` in a tensor of `shape` (memoized).
    pub fn coords(&mut self, b: &mut Builder, at: &Index, shape: &[usize]) -> Vec<Operand> {
        if let Some(c) = &at.coords {
            return c.clone();
        }
        let flat = at.flat.expect("an index has a form");
        let key = (IndexKey::Flat(flat), shape.to_vec());
        if let Some(Index {
            coords: Some(c), ..
        }) = self.conversions.get(&key)
        {
            return c;
        }
        let mut coords = vec![Operand::Int(0); shape.len()];
        let mut rest = flat;
        for (k, &d) in shape.iter().enumerate().rev() {
            // The outermost coordinate needs no remainder: the index is in range.
            coords[k] = if k == 0 { rest } else { b.rem_u32(rest, d) };
            rest = b.div_u32(rest, d);
        }
        self.conversions.insert(key, Index::coords(coords.clone()));
        // And back: linearizing these coordinates in this shape gives `flat` again,
        // which is how a kernel walking a channels-last buffer in memory order finds
        // each element's offset without recomputing it.
        let back = (IndexKey::Coords(coords.clone()), shape.to_vec());
        self.conversions.insert(back, Index::flat(flat));
        coords
    }

    /// For an index map `node` (broadcast, reshape, slice, resize_nearest) reading an
    /// operand of shape `from`: the index of the operand that element `at` reads; `None`
    /// for any other op.
    pub fn operand_index(
        &mut self,
        b: &mut Builder,
        node: &Node,
        from: &[usize],
        at: &Index,
    ) -> Option<Index> {
        let shape = &node.ty.shape;
        Some(match &node.op {
            Op::Reshape { .. } => Index::flat(self.flat(b, at, shape)),
            Op::Broadcast { .. } => {
                let coords = self.coords(b, at, shape);
                let lead = shape.len() - from.len();
                let inner = from
                    .iter()
                    .zip(&coords[lead..])
                    .map(|(&d, &c)| if d == 1 { Operand::Int(0) } else { c })
                    .collect();
                Index::coords(inner)
            }
            Op::Slice { axis, start, .. } => {
                let mut coords = self.coords(b, at, shape);
                coords[*axis] = b.add_u32(coords[*axis], Operand::Int(*start as i64));
                Index::coords(coords)
            }
            Op::ResizeNearest { .. } => {
                let mut coords = self.coords(b, at, shape);
                for axis in [2, 3] {
                    coords[axis] = resize_source(b, coords[axis], from[axis], shape[axis]);
                }
                Index::coords(coords)
            }
            _ => return None,
        })
    }
}

/// The `k` of an axis resized from `input` to `out = input << k` elements: ATen's f32
/// index rule is then exact (the scale `2^-k` is an f32, and so is every product), and
/// output index `d` reads `d >> k`.
pub(crate) fn power_of_two_upsampling(input: usize, out: usize) -> Option<u32> {
    let ratio = out.checked_div(input)?;
    (ratio * input == out && ratio.is_power_of_two()).then(|| ratio.trailing_zeros())
}

/// The source index output index `d` reads along an axis resized from `input` to
/// `out` elements, bit for bit as ATen's legacy nearest computes it: identity and
/// power-of-two upsampling are exact shifts ([`power_of_two_upsampling`]), otherwise
/// `floor(f32(d) * f32(in/out))` in f32 arithmetic, clamped to the last source index.
pub(crate) fn resize_source(b: &mut Builder, d: Operand, input: usize, out: usize) -> Operand {
    if let Some(k) = power_of_two_upsampling(input, out) {
        return match (k, d.as_int()) {
            (0, _) => d,
            (k, Some(x)) => Operand::Int(x >> k),
            // A shift the builder remembers, so that the elements of a run share it
            // (and with it the address a vector load of their pixel is keyed by).
            (k, None) => b.div_u32(d, 1 << k),
        };
    }
    let scale = input as f32 / out as f32;
    if let Some(x) = d.as_int() {
        let source = ((x as f32 * scale).floor() as i64).min(input as i64 - 1);
        return Operand::Int(source);
    }
    let scale = Operand::f32(scale);
    let (f, g, i) = (b.reg(Ty::F32), b.reg(Ty::F32), b.reg(Ty::U32));
    ins!(b, "cvt.rn.f32.u32 {f}, {d}");
    ins!(b, "mul.rn.f32 {g}, {f}, {scale}");
    ins!(b, "cvt.rmi.u32.f32 {i}, {g}");
    b.min_u32(i.into(), Operand::Int(input as i64 - 1))
}
