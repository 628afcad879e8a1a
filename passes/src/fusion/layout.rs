//! Storage layouts for a plan's temporaries (`FusionOptions::layout`, `--layout`).
//!
//! Under `channels_last`, every image-shaped temporary (rank 4, more than one channel
//! and more than one pixel: the activations and activation gradients the convolutions
//! read and write) is stored NHWC, and so is every convolution weight whose window
//! orders its channels innermost (stored OHWI: a forward GEMM reads each output's
//! whole `k` as one stretch, a data gradient each tap's channels; in `[O, C, KH, KW]`
//! order both are scattered a window apart). Inputs and other parameters and outputs
//! stay row-major, so the kernels that read or write them are where the layout
//! converts; a weight stored OHWI is permuted by the runtime as it is uploaded and
//! read back, so checkpoints keep PyTorch's names and layout. A workspace is private
//! scratch and keeps its own flat layout.
//!
//! The plan is otherwise unchanged: a layout is how code generation addresses a
//! buffer, not an op, so kernels compute the same values in the same order (only
//! schedules, chosen for the layout, may differ: [`relayout`]).

use super::{schedule, FusionOptions};
use calib_ir::{operand_input, weight_taps_outer, Buffer, Layout, Op, Program, Role, Value};
use std::collections::HashSet;
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

/// Stores the program's image-shaped temporaries and its convolution weights
/// (`convolution_weights`) in `layout`; returns how many buffers changed.
pub fn assign(program: &mut Program, layout: Layout) -> usize {
    if layout.is_row_major() {
        return 0;
    }
    let weights = convolution_weights(program);
    let mut changed = 0;
    for (buffer, weight) in program.buffers.iter_mut().zip(weights) {
        if (is_image_temp(buffer) || weight) && buffer.layout != layout {
            buffer.layout = layout;
            changed += 1;
        }
    }
    changed
}

/// By buffer, whether it holds a convolution weight to store channels-last: a param
/// that an ungrouped convolution (forward or data gradient) reads as its weight, as it
/// is or rounded, whose window orders its channels innermost
/// ([`calib_ir::weight_taps_outer`]); and the output of the same name, which a training
/// session carries into that param byte for byte (the updated weight, or its rounded
/// copy), so it must lie the same way.
fn convolution_weights(program: &Program) -> Vec<bool> {
    let mut marked = vec![false; program.buffers.len()];
    for k in &program.kernels {
        let inputs: Vec<Value> = k.body.inputs().map(|(_, v)| v).collect();
        for node in &k.body.nodes {
            let convolution = matches!(
                node.op,
                Op::Conv2d { groups: 1, .. } | Op::Conv2dBackwardData { groups: 1, .. }
            );
            let Some(&w) = node.inputs.get(1).filter(|_| convolution) else {
                continue;
            };
            let read = operand_input(&k.body, w).and_then(|x| inputs.iter().position(|&v| v == x));
            if let Some(b) = read.map(|slot| k.inputs[slot]) {
                let buffer = program.buffer(b);
                marked[b.0] |= buffer.role == Role::Param && weight_taps_outer(&buffer.ty.shape);
            }
        }
    }
    let params: HashSet<&str> = program
        .buffers
        .iter()
        .zip(&marked)
        .filter(|&(_, &m)| m)
        .map(|(b, _)| b.name.as_str())
        .collect();
    for o in &program.outputs {
        marked[o.buffer.0] |= params.contains(o.name.as_str());
    }
    marked
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

    /// A 3x3 weight of eight channels is stored OHWI, with the output of its name (a
    /// session carries the update into it); a 1x1 weight, a 3-channel 3x3 weight
    /// (channels outer in its window's `k`) and other outputs stay row-major.
    #[test]
    fn convolution_weights_are_stored_ohwi_with_their_updates() {
        let g = calib_ir::text::parse(
            "graph {
              %0 = input name=\"x\" : f32[2,8,6,6]
              %1 = param name=\"w\" : f32[8,8,3,3]
              %2 = param name=\"p\" : f32[8,8,1,1]
              %3 = param name=\"s\" : f32[8,3,3,3]
              %4 = input name=\"x3\" : f32[2,3,6,6]
              %5 = conv2d(%0, %1) stride=[1,1] padding=[1,1] dilation=[1,1] groups=1 : f32[2,8,6,6]
              %6 = conv2d(%5, %2) stride=[1,1] padding=[0,0] dilation=[1,1] groups=1 : f32[2,8,6,6]
              %7 = conv2d(%4, %3) stride=[1,1] padding=[1,1] dilation=[1,1] groups=1 : f32[2,8,6,6]
              %8 = relu(%1) : f32[8,8,3,3]
              %9 = relu(%2) : f32[8,8,1,1]
              %10 = relu(%3) : f32[8,3,3,3]
              return y=%6, z=%7, w=%8, p=%9, s=%10
            }",
        )
        .expect("graph");
        let mut program = super::super::fuse(&g, &FusionOptions::default())
            .expect("fused")
            .program;
        assign(&mut program, Layout::ChannelsLast);
        let param = |name: &str| {
            let b = program
                .buffers
                .iter()
                .find(|b| b.name == name && b.role == Role::Param);
            b.expect("a param").layout
        };
        let output = |name: &str| {
            let o = program
                .outputs
                .iter()
                .find(|o| o.name == name)
                .expect("an output");
            program.buffer(o.buffer).layout
        };
        assert_eq!(param("w"), Layout::ChannelsLast);
        assert_eq!(output("w"), Layout::ChannelsLast);
        for name in ["p", "s"] {
            assert_eq!(param(name), Layout::RowMajor, "{name}");
            assert_eq!(output(name), Layout::RowMajor, "{name}");
        }
        program.validate().expect("a valid plan");
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
