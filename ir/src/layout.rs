//! How a buffer's elements lie in memory.
//!
//! Types stay NCHW everywhere: a layout is a storage decision for one buffer of a
//! kernel plan, which code generation honours in every address it computes. What a
//! user binds (inputs, parameters, checkpoints) and reads back (outputs) keeps
//! PyTorch's layout on the host whatever the plan stores: a runtime permutes a
//! boundary buffer stored otherwise as it uploads and downloads it. Inside the plan, a
//! conversion happens exactly where a kernel reads a buffer of one layout and writes
//! one of another.

use serde::{Deserialize, Serialize};
use std::fmt;

/// The order of a buffer's axes in memory.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Layout {
    /// Axes in their logical order, the last adjacent (NCHW for images).
    #[default]
    RowMajor,
    /// A rank-4 NCHW tensor stored as NHWC: the channels of a pixel are adjacent, which
    /// makes a convolution's reduction axis contiguous (PyTorch's `channels_last`).
    ChannelsLast,
}

impl Layout {
    pub fn is_row_major(&self) -> bool {
        *self == Layout::RowMajor
    }

    /// Whether a tensor of rank `rank` can be stored this way.
    pub fn fits(self, rank: usize) -> bool {
        match self {
            Layout::RowMajor => true,
            Layout::ChannelsLast => rank == 4,
        }
    }

    /// The logical axes in memory order, outermost first (`rank` must fit).
    pub fn order(self, rank: usize) -> Vec<usize> {
        match self {
            Layout::RowMajor => (0..rank).collect(),
            Layout::ChannelsLast => {
                assert_eq!(rank, 4, "channels-last storage is for rank-4 tensors");
                vec![0, 2, 3, 1]
            }
        }
    }

    /// `items` (one per logical axis: extents, coordinates) in memory order.
    pub fn to_memory<T: Clone>(self, items: &[T]) -> Vec<T> {
        self.order(items.len())
            .into_iter()
            .map(|a| items[a].clone())
            .collect()
    }

    /// The inverse of [`Layout::to_memory`]: items in memory order back in logical order.
    pub fn to_logical<T: Clone>(self, items: &[T]) -> Vec<T> {
        let order = self.order(items.len());
        let mut logical = items.to_vec();
        for (position, &axis) in order.iter().enumerate() {
            logical[axis] = items[position].clone();
        }
        logical
    }

    /// The logical axis whose elements are adjacent in memory.
    pub fn innermost(self, rank: usize) -> usize {
        *self.order(rank).last().expect("a tensor with axes")
    }

    pub fn name(self) -> &'static str {
        match self {
            Layout::RowMajor => "row_major",
            Layout::ChannelsLast => "channels_last",
        }
    }
}

impl std::str::FromStr for Layout {
    type Err = String;

    /// `row_major` (also `row-major`, `nchw`) or `channels_last` (`channels-last`, `nhwc`).
    fn from_str(s: &str) -> Result<Layout, String> {
        match s.to_ascii_lowercase().replace('-', "_").as_str() {
            "row_major" | "nchw" => Ok(Layout::RowMajor),
            "channels_last" | "nhwc" => Ok(Layout::ChannelsLast),
            _ => Err(format!(
                "unknown layout `{s}`: expected row_major (nchw) or channels_last (nhwc)"
            )),
        }
    }
}

impl fmt::Display for Layout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channels_last_puts_channels_innermost() {
        let cl = Layout::ChannelsLast;
        assert_eq!(cl.to_memory(&[2, 3, 5, 7]), vec![2, 5, 7, 3]);
        assert_eq!(cl.to_logical(&[2, 5, 7, 3]), vec![2, 3, 5, 7]);
        assert_eq!(cl.innermost(4), 1);
        assert!(!cl.fits(2));
        assert_eq!(Layout::RowMajor.to_memory(&[4, 1, 9]), vec![4, 1, 9]);
        assert_eq!(Layout::RowMajor.innermost(3), 2);
    }

    #[test]
    fn names_parse() {
        assert_eq!("channels-last".parse(), Ok(Layout::ChannelsLast));
        assert_eq!("NHWC".parse(), Ok(Layout::ChannelsLast));
        assert_eq!("row_major".parse(), Ok(Layout::RowMajor));
        let err = "nchw4".parse::<Layout>().unwrap_err();
        assert!(err.contains("nchw4"), "{err}");
    }
}
