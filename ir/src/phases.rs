//! The data gradient of a strided convolution, one GEMM per phase.
//!
//! A convolution with stride `s` reads input row `ih = oh * s + kh - p` (dilation 1).
//! Its data gradient at row `h` gathers from the output rows `oh = (h + p - kh) / s`
//! where the division is exact, so of a window's `KH` taps a row meets only those with
//! `kh ≡ h + p (mod s)`: one or two of a 3x3 window's three at stride 2. Summed over
//! every tap, as one dense GEMM, three quarters of a 3x3 stride-2 gradient's products
//! are zeros.
//!
//! Rows of one phase `r = h mod s` meet the same taps, `kh = c + t * s` for
//! `t = 0, 1, ...` with `c = (r + p) mod s`, and read output row `h / s + (r + p) / s - t`:
//! a dense GEMM over the phase's positions, its `k` the phase's taps. The gradient is
//! `s_h * s_w` such GEMMs, one group each (`GemmDims::groups` counts the convolution's
//! groups times the phases), which together multiply exactly the forward convolution's
//! products. Their `k` is laid out for the phase with the most taps (`[t_h, t_w, o]`,
//! taps outside the channels); a phase with fewer steps through fewer of them.

use serde::{Deserialize, Serialize};

/// The phases of a strided data gradient ([`Phases::of`]), for `GemmDims::phases`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Phases {
    pub stride: [usize; 2],
    pub padding: [usize; 2],
    pub kernel: [usize; 2],
}

impl Phases {
    /// The phases of the data gradient of a convolution with this window, or `None`
    /// when one dense GEMM is the way: no stride, dilation, a window narrower than its
    /// stride along an axis (a phase would meet no tap: a 1x1 window's lattice, see
    /// `GemmDims::lattice`), an input that is not whole strides, or channels a step
    /// through `k` (at most 32) would straddle taps with.
    pub fn of(
        stride: [usize; 2],
        padding: [usize; 2],
        dilation: [usize; 2],
        kernel: [usize; 2],
        input: [usize; 2],
        channels: usize,
    ) -> Option<Phases> {
        let fits = (0..2).all(|a| kernel[a] >= stride[a] && input[a].is_multiple_of(stride[a]));
        (stride != [1, 1] && dilation == [1, 1] && fits && channels.is_multiple_of(32)).then_some(
            Phases {
                stride,
                padding,
                kernel,
            },
        )
    }

    /// How many phases: GEMM groups per convolution group.
    pub fn count(&self) -> usize {
        self.stride[0] * self.stride[1]
    }

    /// The first tap phase `r` meets along `axis`, and its output row offset:
    /// `(c, b)` with `c = (r + p) mod s` and `b = (r + p) / s`, so that position
    /// `h = r + s * i` reads output row `i + b - t` through tap `c + s * t`.
    pub fn first_tap(&self, axis: usize, r: usize) -> (usize, usize) {
        let (s, p) = (self.stride[axis], self.padding[axis]);
        ((r + p) % s, (r + p) / s)
    }

    /// The taps phase `r` meets along `axis`.
    pub fn taps(&self, axis: usize, r: usize) -> usize {
        let (c, _) = self.first_tap(axis, r);
        (self.kernel[axis] - c).div_ceil(self.stride[axis])
    }

    /// The most taps a phase meets along `axis`: the extent of that axis of `k`.
    pub fn most_taps(&self, axis: usize) -> usize {
        self.kernel[axis].div_ceil(self.stride[axis])
    }

    /// Whether GEMM groups take the phases in reverse row-major order: where the last
    /// phase meets more taps than the first (a 3x3 window padded by 1 at stride 2), so
    /// that the longest blocks, as blocks start in group order, start first.
    pub fn reversed(&self) -> bool {
        let [sh, sw] = self.stride;
        self.taps(0, sh - 1) * self.taps(1, sw - 1) > self.taps(0, 0) * self.taps(1, 0)
    }

    /// The phase `[r_h, r_w]` of GEMM group `j` within a convolution group.
    pub fn phase(&self, j: usize) -> [usize; 2] {
        let j = if self.reversed() {
            self.count() - 1 - j
        } else {
            j
        };
        [j / self.stride[1], j % self.stride[1]]
    }

    /// The GEMM group, within a convolution group, of phase `[r_h, r_w]`.
    pub fn group_of(&self, [rh, rw]: [usize; 2]) -> usize {
        let j = rh * self.stride[1] + rw;
        if self.reversed() {
            self.count() - 1 - j
        } else {
            j
        }
    }

    /// The share of `k` the phases step through, on average: the window's taps over
    /// the phases' laid-out taps.
    pub fn share_of_k(&self) -> f64 {
        let laid_out = self.count() * self.most_taps(0) * self.most_taps(1);
        (self.kernel[0] * self.kernel[1]) as f64 / laid_out as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_3x3_window_at_stride_2_meets_one_two_two_and_four_taps() {
        let p = Phases::of([2, 2], [1, 1], [1, 1], [3, 3], [56, 56], 128).unwrap();
        // Even rows (r = 0) meet the middle tap only; odd rows the outer two.
        assert_eq!(p.first_tap(0, 0), (1, 0));
        assert_eq!(p.first_tap(0, 1), (0, 1));
        assert_eq!([p.taps(0, 0), p.taps(0, 1)], [1, 2]);
        assert!(p.reversed());
        assert_eq!(
            (0..4).map(|j| p.phase(j)).collect::<Vec<_>>(),
            [[1, 1], [1, 0], [0, 1], [0, 0]]
        );
        assert!((0..4).all(|j| p.group_of(p.phase(j)) == j));
        // Every tap belongs to exactly one phase along each axis: the forward's products.
        assert_eq!(p.share_of_k(), 9.0 / 16.0);
    }

    #[test]
    fn phases_only_where_every_phase_meets_a_tap_and_steps_stay_on_one() {
        let of = |stride, kernel, input, channels| {
            Phases::of(stride, [0, 0], [1, 1], kernel, input, channels).is_some()
        };
        assert!(of([2, 2], [2, 2], [8, 8], 64));
        assert!(!of([1, 1], [3, 3], [8, 8], 64), "no stride");
        assert!(!of([2, 2], [1, 1], [8, 8], 64), "a 1x1 window's lattice");
        assert!(!of([2, 2], [3, 3], [7, 8], 64), "odd rows");
        assert!(
            !of([2, 2], [3, 3], [8, 8], 48),
            "a step of 32 would straddle taps"
        );
        assert!(Phases::of([2, 2], [1, 1], [2, 2], [3, 3], [8, 8], 64).is_none());
    }
}
