//! The fixture README's comparison criteria.

use serde::Serialize;

/// How a computed tensor is compared with its reference.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "value")]
pub enum Tolerance {
    /// max |got - ref| <= factor * max(1, max |ref|): outputs, logits, gradients.
    Scaled(f64),
    /// max |got - ref| <= bound: BN running statistics, SGD states.
    Absolute(f64),
    /// |got - ref| <= bound * |ref|: the scalar loss.
    Relative(f64),
    /// Bit-for-bit equality: integer counters.
    Exact,
    /// ||got - ref||₂ <= bound: gradients under a reduced precision, where a ReLU
    /// decision that rounding flips moves single elements by their whole value, so only
    /// the norm of the error is bounded (`docs/precision.md`; the bound is a fraction of
    /// the norm of the whole file, the gradient as SGD sees it).
    NormL2(f64),
}

impl Tolerance {
    /// Forward outputs and logits.
    pub const OUTPUT: Tolerance = Tolerance::Scaled(1e-4);
    /// Gradients of the input and of parameters.
    pub const GRADIENT: Tolerance = Tolerance::Scaled(1e-4);
    pub const LOSS: Tolerance = Tolerance::Relative(1e-5);
    pub const RUNNING_STAT: Tolerance = Tolerance::Absolute(1e-5);
    pub const SGD_STATE: Tolerance = Tolerance::Absolute(1e-5);

    /// The largest error this tolerance allows against `reference`.
    pub fn bound(&self, reference: &[f64]) -> f64 {
        let max_ref = reference.iter().fold(0.0f64, |m, v| m.max(v.abs()));
        match *self {
            Tolerance::Scaled(f) => f * max_ref.max(1.0),
            Tolerance::Absolute(b) => b,
            Tolerance::Relative(r) => r * max_ref,
            Tolerance::Exact => 0.0,
            Tolerance::NormL2(b) => b,
        }
    }

    /// Returns (error, allowed bound, pass): the error is the max abs error, or for
    /// [`Tolerance::NormL2`] the norm of the difference. NaNs always fail.
    pub fn compare(&self, reference: &[f64], got: &[f64]) -> (f64, f64, bool) {
        if let Tolerance::NormL2(_) = self {
            let err = norm(reference.iter().zip(got).map(|(r, g)| r - g));
            let bound = self.bound(reference);
            // `!(err > bound)` would pass a NaN.
            let pass = reference.len() == got.len() && err <= bound;
            return (err, bound, pass);
        }
        let err = reference
            .iter()
            .zip(got)
            .map(|(r, g)| (r - g).abs())
            .fold(0.0f64, |m, e| {
                if e.is_nan() || m.is_nan() {
                    f64::NAN
                } else {
                    m.max(e)
                }
            });
        let bound = self.bound(reference);
        let pass = reference.len() == got.len() && err <= bound;
        (err, bound, pass)
    }
}

/// The Euclidean norm, NaN if any element is.
pub fn norm(values: impl Iterator<Item = f64>) -> f64 {
    values.map(|x| x * x).sum::<f64>().sqrt()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scaled_tolerance_grows_with_the_reference() {
        let (err, bound, pass) = Tolerance::OUTPUT.compare(&[20.0, -1.0], &[20.0015, -1.0]);
        assert!((bound - 2e-3).abs() < 1e-12);
        assert!((err - 1.5e-3).abs() < 1e-9);
        assert!(pass);
        assert!(!Tolerance::OUTPUT.compare(&[0.5], &[0.5002]).2);
    }

    #[test]
    fn nan_and_length_mismatch_fail() {
        assert!(!Tolerance::Absolute(1.0).compare(&[0.0], &[f64::NAN]).2);
        assert!(!Tolerance::Absolute(1.0).compare(&[0.0, 1.0], &[0.0]).2);
        assert!(Tolerance::Exact.compare(&[3.0], &[3.0]).2);
        assert!(!Tolerance::Exact.compare(&[3.0], &[4.0]).2);
        assert!(!Tolerance::NormL2(1.0).compare(&[0.0], &[f64::NAN]).2);
    }

    #[test]
    fn norm_l2_bounds_the_norm_of_the_error() {
        // ||(0.3, 0.4, 0, 0)|| = 0.5: over 0.45, under 0.55, whatever the largest element.
        let r = [3.0, 4.0, 0.0, 0.0];
        let got = [3.3, 4.4, 0.0, 0.0];
        let (err, bound, pass) = Tolerance::NormL2(0.55).compare(&r, &got);
        assert!((err - 0.5).abs() < 1e-12 && bound == 0.55 && pass);
        assert!(!Tolerance::NormL2(0.45).compare(&r, &got).2);
    }
}
