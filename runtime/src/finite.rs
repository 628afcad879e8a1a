//! Counting the values of a tensor that are not finite: the trainer refuses to keep a
//! state that holds any, and the reference interpreter's finite check blames the op
//! that first produced one.

use crate::{HostTensor, Storage};
use std::fmt;

/// How many of a tensor's values are NaN or infinite, and where the first one is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Finiteness {
    pub nan: usize,
    pub infinite: usize,
    /// Flat index of the first non-finite value.
    pub first: Option<usize>,
    /// How many values were looked at.
    pub total: usize,
}

impl Finiteness {
    /// The census of `tensor` (integer tensors are always finite).
    pub fn of(tensor: &HostTensor) -> Self {
        match tensor.storage() {
            Storage::F32(v) => Self::count(v.iter().map(|&x| f64::from(x))),
            Storage::F64(v) => Self::count(v.iter().copied()),
            Storage::I64(v) => Finiteness {
                total: v.len(),
                ..Finiteness::default()
            },
        }
    }

    fn count(values: impl Iterator<Item = f64>) -> Self {
        let mut census = Finiteness::default();
        for (i, x) in values.enumerate() {
            census.total += 1;
            if x.is_finite() {
                continue;
            }
            if x.is_nan() {
                census.nan += 1;
            } else {
                census.infinite += 1;
            }
            census.first.get_or_insert(i);
        }
        census
    }

    /// Whether every value is finite.
    pub fn is_finite(&self) -> bool {
        self.nan == 0 && self.infinite == 0
    }

    /// How many values are NaN or infinite.
    pub fn non_finite(&self) -> usize {
        self.nan + self.infinite
    }
}

impl fmt::Display for Finiteness {
    /// "3 of 4608 values are not finite (2 NaN, 1 infinite; the first at index 17)".
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} of {} values are not finite ({} NaN, {} infinite",
            self.non_finite(),
            self.total,
            self.nan,
            self.infinite
        )?;
        if let Some(i) = self.first {
            write!(f, "; the first at index {i}")?;
        }
        f.write_str(")")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_nan_and_infinities_and_finds_the_first() {
        let t = HostTensor::from_f32(
            vec![5],
            vec![1.0, f32::INFINITY, 2.0, f32::NAN, f32::NEG_INFINITY],
        )
        .unwrap();
        let c = Finiteness::of(&t);
        assert_eq!((c.nan, c.infinite, c.first, c.total), (1, 2, Some(1), 5));
        assert!(!c.is_finite());
        assert_eq!(
            c.to_string(),
            "3 of 5 values are not finite (1 NaN, 2 infinite; the first at index 1)"
        );
    }

    #[test]
    fn finite_and_integer_tensors_are_finite() {
        let t = HostTensor::from_f64(vec![2], vec![1e300, -1e300]).unwrap();
        assert!(Finiteness::of(&t).is_finite());
        let t = HostTensor::from_i64(vec![2], vec![i64::MAX, i64::MIN]).unwrap();
        assert!(Finiteness::of(&t).is_finite());
    }
}
