//! Storage layouts for a plan's temporaries (`FusionOptions::layout`, `--layout`).
//!
//! Under `channels_last`, every image-shaped temporary (rank 4, more than one channel
//! and more than one pixel: the activations and activation gradients the convolutions
//! read and write) is stored NHWC. Inputs, parameters and outputs stay row-major, so
//! the kernels that read or write them are where the layout converts, and weights keep
//! PyTorch's names and layout at the checkpoint boundary. A workspace is private
//! scratch and keeps its own flat layout.
//!
//! The plan is otherwise unchanged: a layout is how code generation addresses a
//! buffer, not an op, so kernels compute the same values in the same order (only
//! schedules, chosen for the layout, may differ: [`relayout`]).

use super::{schedule, FusionOptions};
use calib_ir::{Buffer, Layout, Program, Role};
use std::fmt;

/// How a plan's image-shaped temporaries are to be stored (`--layout`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LayoutPolicy {
    /// Every temporary row-major (NCHW).
    #[default]
    RowMajor,
    /// Image-shaped temporaries NHWC.
    ChannelsLast,
    /// Whichever of the two the cost model predicts faster for the whole plan, as
    /// compiled, each scheduled for its layout ([`relayout`]): chosen where kernels are
    /// compiled (`calib::device::choose_layout`); fusion itself leaves the plan
    /// row-major.
    Auto,
}

impl LayoutPolicy {
    /// The layout fusion stores image-shaped temporaries in.
    pub fn planned(self) -> Layout {
        match self {
            LayoutPolicy::ChannelsLast => Layout::ChannelsLast,
            LayoutPolicy::RowMajor | LayoutPolicy::Auto => Layout::RowMajor,
        }
    }
}

impl std::str::FromStr for LayoutPolicy {
    type Err = String;

    /// `auto`, or a layout's name ([`Layout`]'s `FromStr`).
    fn from_str(s: &str) -> Result<LayoutPolicy, String> {
        if s.eq_ignore_ascii_case("auto") {
            return Ok(LayoutPolicy::Auto);
        }
        match s.parse::<Layout>() {
            Ok(Layout::RowMajor) => Ok(LayoutPolicy::RowMajor),
            Ok(Layout::ChannelsLast) => Ok(LayoutPolicy::ChannelsLast),
            Err(e) => Err(format!("{e}, or auto")),
        }
    }
}

impl fmt::Display for LayoutPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LayoutPolicy::Auto => f.write_str("auto"),
            other => other.planned().fmt(f),
        }
    }
}

/// A fused `program` with its image-shaped temporaries stored in `layout` and every
/// kernel scheduled afresh for it under `options` (a GEMM's tiles and a reduction's
/// split depend on which way their operands lie); returns how many buffers changed
/// (none: the program is as it was, schedules included).
pub fn relayout(program: &mut Program, layout: Layout, options: &FusionOptions) -> usize {
    let changed = assign(program, layout);
    if changed > 0 {
        schedule::reassign(program, options);
    }
    changed
}

/// Stores the program's image-shaped temporaries in `layout`; returns how many
/// buffers changed.
pub fn assign(program: &mut Program, layout: Layout) -> usize {
    if layout.is_row_major() {
        return 0;
    }
    let mut changed = 0;
    for buffer in &mut program.buffers {
        if is_image_temp(buffer) && buffer.layout != layout {
            buffer.layout = layout;
            changed += 1;
        }
    }
    changed
}

/// A temporary whose channels-last order differs from its row-major one (never a
/// workspace, which is flat).
fn is_image_temp(buffer: &Buffer) -> bool {
    let shape = &buffer.ty.shape;
    buffer.role == Role::Temp && shape.len() == 4 && shape[1] > 1 && shape[2] * shape[3] > 1
}

#[cfg(test)]
mod tests {
    use super::*;
    use calib_ir::{DType, TensorType};

    #[test]
    fn only_image_temporaries_change() {
        let ty = |shape: &[usize]| TensorType::new(DType::F32, shape.to_vec());
        let mut program = Program {
            buffers: vec![
                Buffer::new("x", ty(&[2, 3, 4, 4]), Role::Input),
                Buffer::new("a", ty(&[2, 3, 4, 4]), Role::Temp),
                Buffer::new("pooled", ty(&[2, 3, 1, 1]), Role::Temp),
                Buffer::new("flat", ty(&[2, 48]), Role::Temp),
                Buffer::new("y", ty(&[2, 3, 4, 4]), Role::Output),
            ],
            ..Program::default()
        };
        assert_eq!(assign(&mut program, Layout::RowMajor), 0);
        assert_eq!(assign(&mut program, Layout::ChannelsLast), 1);
        let layouts: Vec<Layout> = program.buffers.iter().map(|b| b.layout).collect();
        use Layout::*;
        assert_eq!(
            layouts,
            [RowMajor, ChannelsLast, RowMajor, RowMajor, RowMajor]
        );
        assert_eq!(assign(&mut program, Layout::ChannelsLast), 0);
    }

    #[test]
    fn policies_parse_and_print() {
        for name in ["row_major", "channels_last", "auto"] {
            let policy: LayoutPolicy = name.parse().unwrap();
            assert_eq!(policy.to_string(), name);
        }
        assert_eq!("NHWC".parse(), Ok(LayoutPolicy::ChannelsLast));
        let err = "blocked".parse::<LayoutPolicy>().unwrap_err();
        assert!(err.contains("`blocked`") && err.contains("auto"), "{err}");
    }
}
