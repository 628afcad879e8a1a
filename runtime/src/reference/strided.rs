//! Walking a contiguous tensor while tracking the matching offset in a second tensor
//! that is addressed by strides, with 0 on the axes it is broadcast (or reduced) along.
//!
//! Broadcast reads the strided tensor and writes the contiguous output; reductions read
//! the contiguous input and accumulate into the strided output. Both visit runs of the
//! innermost axis, so the index bookkeeping happens once per run, not per element.

/// Row-major contiguous strides of `shape`.
pub(super) fn contiguous_strides(shape: &[usize]) -> Vec<usize> {
    let mut strides = vec![1; shape.len()];
    for a in (0..shape.len().saturating_sub(1)).rev() {
        strides[a] = strides[a + 1] * shape[a + 1];
    }
    strides
}

/// A row-major walk over the axes `dims` of a contiguous tensor, carrying the offset into
/// a tensor with `strides` over the same axes.
pub(super) struct Walk {
    dims: Vec<usize>,
    strides: Vec<usize>,
}

impl Walk {
    /// Drops size-1 axes and merges neighbours that step through the strided tensor as
    /// one axis would, which makes the innermost run as long as possible: broadcasting a
    /// `[1,C,1,1]` BatchNorm scale over `[N,C,H,W]` becomes `N*C` runs of `H*W`.
    pub fn new(dims: &[usize], strides: &[usize]) -> Walk {
        let (mut d, mut s): (Vec<usize>, Vec<usize>) = (vec![], vec![]);
        for (&n, &st) in dims.iter().zip(strides) {
            if n == 1 {
                continue;
            }
            match (d.last_mut(), s.last_mut()) {
                (Some(outer_n), Some(outer_s)) if *outer_s == st * n => {
                    *outer_n *= n;
                    *outer_s = st;
                }
                _ => {
                    d.push(n);
                    s.push(st);
                }
            }
        }
        if d.is_empty() {
            d.push(1);
            s.push(0);
        }
        Walk {
            dims: d,
            strides: s,
        }
    }

    /// The innermost run: its length and its stride in the strided tensor.
    pub fn run(&self) -> (usize, usize) {
        (
            self.dims[self.dims.len() - 1],
            self.strides[self.strides.len() - 1],
        )
    }

    /// How many runs the walk visits.
    pub fn runs(&self) -> usize {
        self.dims[..self.dims.len() - 1].iter().product()
    }

    /// Calls `f(contiguous offset, strided offset)` at the start of every run, in order.
    pub fn for_each_run(&self, f: impl FnMut(usize, usize)) {
        self.for_each_run_in(0..self.runs(), f)
    }

    /// [`Walk::for_each_run`] restricted to the runs numbered `range`.
    pub fn for_each_run_in(&self, range: std::ops::Range<usize>, mut f: impl FnMut(usize, usize)) {
        let rank = self.dims.len() - 1;
        let (len, _) = self.run();
        // Position of the first run: its multi-index over the outer axes.
        let mut index = vec![0; rank];
        let mut offset = 0;
        let mut rest = range.start;
        for a in (0..rank).rev() {
            index[a] = rest % self.dims[a];
            rest /= self.dims[a];
            offset += index[a] * self.strides[a];
        }
        for r in range {
            f(r * len, offset);
            for a in (0..rank).rev() {
                index[a] += 1;
                offset += self.strides[a];
                if index[a] < self.dims[a] {
                    break;
                }
                offset -= self.strides[a] * self.dims[a];
                index[a] = 0;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strides_are_row_major() {
        assert_eq!(contiguous_strides(&[2, 3, 4]), vec![12, 4, 1]);
        assert_eq!(contiguous_strides(&[]), Vec::<usize>::new());
    }

    #[test]
    fn batchnorm_broadcast_coalesces_to_long_runs() {
        // [1,3,1,1] over [2,3,4,5]: strides (0,1,0,0).
        let walk = Walk::new(&[2, 3, 4, 5], &[0, 1, 0, 0]);
        assert_eq!(walk.run(), (20, 0));
        let mut seen = vec![];
        walk.for_each_run(|c, s| seen.push((c, s)));
        assert_eq!(
            seen,
            vec![(0, 0), (20, 1), (40, 2), (60, 0), (80, 1), (100, 2)]
        );
    }

    #[test]
    fn contiguous_walk_is_one_run() {
        let walk = Walk::new(&[2, 3, 4], &[12, 4, 1]);
        assert_eq!(walk.run(), (24, 1));
    }
}
