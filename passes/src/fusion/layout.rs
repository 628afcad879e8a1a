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
//! buffer, not an op, so kernels compute the same values in the same order.

use calib_ir::{Buffer, Layout, Program, Role};
use std::collections::HashSet;

/// Stores the program's image-shaped temporaries in `layout`; returns how many
/// buffers changed.
pub fn assign(program: &mut Program, layout: Layout) -> usize {
    if layout.is_row_major() {
        return 0;
    }
    let workspaces: HashSet<usize> = program
        .kernels
        .iter()
        .filter_map(|k| k.workspace.map(|w| w.0))
        .collect();
    let mut changed = 0;
    for (i, buffer) in program.buffers.iter_mut().enumerate() {
        if !workspaces.contains(&i) && is_image_temp(buffer) && buffer.layout != layout {
            buffer.layout = layout;
            changed += 1;
        }
    }
    changed
}

/// A temporary whose channels-last order differs from its row-major one.
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
}
