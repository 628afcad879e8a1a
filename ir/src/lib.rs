//! calib's tensor IR.
//!
//! A [`Graph`] is a list of [`Node`]s in topological order; each node applies one [`Op`]
//! to earlier values and has a static [`TensorType`] (dtype plus NCHW shape), inferred
//! and checked when the node is created. Models are written with [`GraphBuilder`], which
//! names parameters by PyTorch `state_dict` path and expands composite layers into
//! primitives. Graphs have three interchangeable forms: a text form ([`text`]), JSON
//! (serde) and Graphviz DOT ([`dot`]).

mod builder;
mod channel_teams;
mod copy_source;
pub mod dot;
mod dtype;
mod error;
mod gemm_layout;
mod graph;
mod infer;
mod invariant;
pub mod json;
pub mod kernel;
mod layout;
mod op;
mod phases;
mod precision;
mod run;
mod schedule;
pub mod text;
mod types;

pub use builder::{broadcast_shape, ConvSpec, GraphBuilder, Mode, BN_EPS, BN_MOMENTUM};
pub use channel_teams::{
    channel_team_blocks, channel_team_split, reduction_chunk, BLOCK_TEAM_FROM, MAX_TEAMS,
    MIN_CHANNEL_BLOCKS, WARP_CHANNELS,
};
pub use copy_source::{
    bf16_input, bf16_run_along_k, copy_source, gemm_operands, tile_input, tile_run_along_k,
    CopySource,
};
pub use dtype::{round_tf32, DType, TF32_DROPPED_BITS};
pub use error::{IrError, Result};
pub use gemm_layout::{
    channels_last_stretch, input_layout, operand_input, operand_layout, walks_width,
    weight_taps_outer, InputLayouts, Stretch,
};
pub use graph::{Graph, Node, Output, Value};
pub use infer::{broadcasts_to, infer_type, window_output_size};
pub use invariant::{divides_along, invariant_axes};
pub use kernel::{
    Anchor, Buffer, BufferId, Kernel, KernelOutput, Program, ProgramError, ProgramOutput, Role,
};
pub use layout::Layout;
pub use op::{Op, OpClass, ReduceOp};
pub use phases::Phases;
pub use precision::Precision;
pub use run::{
    pointwise_run, reduction_run, run_axes, ThreadRun, MIN_RUN_THREADS, RUN_LENGTHS,
    WINDOWED_RUN_THREADS,
};
pub use schedule::{
    gemm_anchor, taps_outer, window_k, GemmDims, GemmInstruction, GemmSchedule, ReductionSchedule,
    Schedule, SERIAL_COMBINE_BLOCKS, SERIAL_COMBINE_ELEMENTS,
};
pub use types::{checked_numel, fmt_shape, numel, Shape, TensorType, MAX_TENSOR_BYTES};
