//! The operator set.
//!
//! Deliberately small: BatchNorm, linear layers, global average pooling and softmax
//! cross-entropy are not ops but compositions emitted by the [`crate::GraphBuilder`]
//! (see `ARCHITECTURE.md`), so that autodiff, fusion and codegen each handle a handful of
//! primitive shapes of computation. An op stays here only if some composition needs it
//! and fusion or codegen cares about seeing it whole (convolution, pooling, resize).

use crate::DType;
use serde::{Deserialize, Serialize};

/// One IR operator with its static attributes. The serde form is internally tagged
/// (`{"op": "conv2d", "stride": [1, 1], ...}`); the text form reuses the same names.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum Op {
    /// A graph input (a batch, labels, a learning rate), bound by name at run time.
    Input {
        name: String,
    },
    /// A model parameter or buffer, bound by its PyTorch `state_dict` name.
    Param {
        name: String,
    },
    /// A tensor filled with one value; the node's type gives its shape and dtype.
    Constant {
        #[serde(with = "any_f64")]
        value: f64,
    },

    // Elementwise, one operand.
    Neg,
    Exp,
    Log,
    Sqrt,
    Rsqrt,
    Sigmoid,
    Relu,
    Cast {
        to: DType,
    },

    // Elementwise, two operands of identical type (the builder inserts broadcasts).
    Add,
    Sub,
    Mul,
    Div,
    Max,
    /// `1` where `a > b`, else `0`, in the operands' dtype.
    CmpGt,
    /// `1` where `a >= b`, else `0`.
    CmpGe,
    /// `1` where `a == b`, else `0`.
    CmpEq,
    /// `select(cond, a, b)`: `a` where `cond != 0`, else `b`.
    Select,

    /// NCHW convolution; operands `x [N,C,H,W]` and `w [O, C/groups, KH, KW]`, no bias.
    Conv2d {
        stride: [usize; 2],
        padding: [usize; 2],
        dilation: [usize; 2],
        groups: usize,
    },
    /// PyTorch's `AvgPool2d` (padding is implicit zeros).
    AvgPool2d {
        kernel: [usize; 2],
        stride: [usize; 2],
        padding: [usize; 2],
        ceil_mode: bool,
        count_include_pad: bool,
    },
    /// PyTorch's `MaxPool2d` (padding is implicit -inf).
    MaxPool2d {
        kernel: [usize; 2],
        stride: [usize; 2],
        padding: [usize; 2],
        ceil_mode: bool,
    },
    /// Nearest resize of an NCHW tensor to `size` with PyTorch's legacy rule:
    /// output index `d` reads source index `min(floor(d * in / out), in - 1)`, with the
    /// scale and product in f32 as ATen computes them (see the reference interpreter's
    /// `resize::source_index`; a few sizes differ from exact rational arithmetic).
    ResizeNearest {
        size: [usize; 2],
    },

    ReduceSum {
        axes: Vec<usize>,
        keepdims: bool,
    },
    ReduceMean {
        axes: Vec<usize>,
        keepdims: bool,
    },
    ReduceMax {
        axes: Vec<usize>,
        keepdims: bool,
    },

    /// Numpy-style broadcast to `shape` (operand dims aligned to the right, each 1 or equal).
    Broadcast {
        shape: Vec<usize>,
    },
    /// Same elements, new shape (row-major order kept).
    Reshape {
        shape: Vec<usize>,
    },
    /// Elements `start..end` along `axis`.
    Slice {
        axis: usize,
        start: usize,
        end: usize,
    },
    /// Operands joined along `axis`, in order.
    Concat {
        axis: usize,
    },
    /// `[M,K] x [K,N]`, with either operand optionally transposed (a linear layer is
    /// `matmul(x, w, transpose_b)`).
    #[serde(rename = "matmul")]
    MatMul {
        transpose_a: bool,
        transpose_b: bool,
    },
    /// Integer labels `[N]` to a float `[N, classes]` one-hot matrix.
    OneHot {
        classes: usize,
        dtype: DType,
    },

    // Adjoints of the windowed ops, emitted by autodiff. Each names the forward op's
    // attributes plus the one extent that the gradient alone cannot tell (a strided
    // window drops trailing input rows, so the input size is not a function of the
    // output size).
    /// Gradient of `conv2d` with respect to its input: operands `grad_out [N,O,OH,OW]`
    /// and `w [O, C/groups, KH, KW]`; result `[N, C, input_size]`.
    Conv2dBackwardData {
        stride: [usize; 2],
        padding: [usize; 2],
        dilation: [usize; 2],
        groups: usize,
        input_size: [usize; 2],
    },
    /// Gradient of `conv2d` with respect to its weight: operands `x [N,C,H,W]` and
    /// `grad_out [N,O,OH,OW]`; result `[O, C/groups, kernel]`.
    Conv2dBackwardWeight {
        stride: [usize; 2],
        padding: [usize; 2],
        dilation: [usize; 2],
        groups: usize,
        kernel: [usize; 2],
    },
    /// Gradient of `avg_pool2d`: operand `grad_out`; result `[N, C, input_size]`.
    AvgPool2dBackward {
        kernel: [usize; 2],
        stride: [usize; 2],
        padding: [usize; 2],
        ceil_mode: bool,
        count_include_pad: bool,
        input_size: [usize; 2],
    },
    /// Gradient of `max_pool2d`: operands `x` and `grad_out`; each window's gradient goes
    /// to the first maximum of the window in row-major order (PyTorch's choice).
    MaxPool2dBackward {
        kernel: [usize; 2],
        stride: [usize; 2],
        padding: [usize; 2],
        ceil_mode: bool,
    },
    /// Gradient of `resize_nearest`: operand `grad_out`; every source pixel sums the
    /// gradients of the output pixels that read it. Result `[N, C, input_size]`.
    ResizeNearestBackward {
        input_size: [usize; 2],
    },

    /// The operand reduced elementwise across the `replicas` of a data-parallel group;
    /// every replica gets the same result. `replicas` is part of the op because a
    /// per-replica graph is made for one world size (gradient means, synchronized
    /// BatchNorm's counts), so a runtime can refuse a group of another size. On one
    /// replica it is the identity.
    AllReduce {
        reduce: ReduceOp,
        replicas: usize,
    },
}

/// How [`Op::AllReduce`] combines the replicas' tensors.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReduceOp {
    Sum,
    /// The sum divided by the number of replicas.
    Mean,
}

/// How an op treats its operands, for passes that work per family.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpClass {
    Source,
    Elementwise,
    Convolution,
    Pool,
    Resize,
    Reduction,
    Layout,
    MatMul,
    /// Communication between the replicas of a data-parallel group.
    Collective,
}

impl Op {
    /// Whether the op is a GEMM (a convolution, either of its gradients, or a matmul):
    /// what code generation tiles and tensor cores multiply.
    pub fn is_gemm(&self) -> bool {
        matches!(
            self,
            Op::Conv2d { .. }
                | Op::Conv2dBackwardData { .. }
                | Op::Conv2dBackwardWeight { .. }
                | Op::MatMul { .. }
        )
    }

    /// Whether each element reads a window of its operand (pooling and its adjoints,
    /// and the nearest resize's adjoint): neighbouring elements read at a stride.
    pub fn reads_windows(&self) -> bool {
        self.class() == OpClass::Pool || matches!(self, Op::ResizeNearestBackward { .. })
    }

    /// The op's name as written in the text and JSON forms.
    pub fn name(&self) -> &'static str {
        match self {
            Op::Input { .. } => "input",
            Op::Param { .. } => "param",
            Op::Constant { .. } => "constant",
            Op::Neg => "neg",
            Op::Exp => "exp",
            Op::Log => "log",
            Op::Sqrt => "sqrt",
            Op::Rsqrt => "rsqrt",
            Op::Sigmoid => "sigmoid",
            Op::Relu => "relu",
            Op::Cast { .. } => "cast",
            Op::Add => "add",
            Op::Sub => "sub",
            Op::Mul => "mul",
            Op::Div => "div",
            Op::Max => "max",
            Op::CmpGt => "cmp_gt",
            Op::CmpGe => "cmp_ge",
            Op::CmpEq => "cmp_eq",
            Op::Select => "select",
            Op::Conv2d { .. } => "conv2d",
            Op::AvgPool2d { .. } => "avg_pool2d",
            Op::MaxPool2d { .. } => "max_pool2d",
            Op::ResizeNearest { .. } => "resize_nearest",
            Op::ReduceSum { .. } => "reduce_sum",
            Op::ReduceMean { .. } => "reduce_mean",
            Op::ReduceMax { .. } => "reduce_max",
            Op::Broadcast { .. } => "broadcast",
            Op::Reshape { .. } => "reshape",
            Op::Slice { .. } => "slice",
            Op::Concat { .. } => "concat",
            Op::MatMul { .. } => "matmul",
            Op::OneHot { .. } => "one_hot",
            Op::Conv2dBackwardData { .. } => "conv2d_backward_data",
            Op::Conv2dBackwardWeight { .. } => "conv2d_backward_weight",
            Op::AvgPool2dBackward { .. } => "avg_pool2d_backward",
            Op::MaxPool2dBackward { .. } => "max_pool2d_backward",
            Op::ResizeNearestBackward { .. } => "resize_nearest_backward",
            Op::AllReduce { .. } => "all_reduce",
        }
    }

    pub fn class(&self) -> OpClass {
        match self {
            Op::Input { .. } | Op::Param { .. } | Op::Constant { .. } => OpClass::Source,
            Op::Conv2d { .. } | Op::Conv2dBackwardData { .. } | Op::Conv2dBackwardWeight { .. } => {
                OpClass::Convolution
            }
            Op::AvgPool2d { .. }
            | Op::MaxPool2d { .. }
            | Op::AvgPool2dBackward { .. }
            | Op::MaxPool2dBackward { .. } => OpClass::Pool,
            Op::ResizeNearest { .. } | Op::ResizeNearestBackward { .. } => OpClass::Resize,
            Op::ReduceSum { .. } | Op::ReduceMean { .. } | Op::ReduceMax { .. } => {
                OpClass::Reduction
            }
            Op::Broadcast { .. }
            | Op::Reshape { .. }
            | Op::Slice { .. }
            | Op::Concat { .. }
            | Op::OneHot { .. } => OpClass::Layout,
            Op::MatMul { .. } => OpClass::MatMul,
            Op::AllReduce { .. } => OpClass::Collective,
            _ => OpClass::Elementwise,
        }
    }

    /// The number of operands the op takes; `None` for variadic ops (concat).
    pub fn arity(&self) -> Option<usize> {
        Some(match self {
            Op::Input { .. } | Op::Param { .. } | Op::Constant { .. } => 0,
            Op::Add
            | Op::Sub
            | Op::Mul
            | Op::Div
            | Op::Max
            | Op::CmpGt
            | Op::CmpGe
            | Op::CmpEq
            | Op::Conv2d { .. }
            | Op::Conv2dBackwardData { .. }
            | Op::Conv2dBackwardWeight { .. }
            | Op::MaxPool2dBackward { .. }
            | Op::MatMul { .. } => 2,
            Op::Select => 3,
            Op::Concat { .. } => return None,
            _ => 1,
        })
    }

    /// Whether the op only makes sense on floating-point operands.
    pub fn needs_float(&self) -> bool {
        matches!(
            self,
            Op::Exp
                | Op::Log
                | Op::Sqrt
                | Op::Rsqrt
                | Op::Sigmoid
                | Op::Div
                | Op::Conv2d { .. }
                | Op::Conv2dBackwardData { .. }
                | Op::Conv2dBackwardWeight { .. }
                | Op::AvgPool2d { .. }
                | Op::AvgPool2dBackward { .. }
                | Op::MaxPool2dBackward { .. }
                | Op::ResizeNearestBackward { .. }
                | Op::ReduceMean { .. }
                | Op::MatMul { .. }
                | Op::AllReduce { .. }
        )
    }
}

/// Serde for an `f64` that may be infinite or NaN (`-inf` masks are legitimate
/// constants). JSON has no such numbers and serde_json would silently write `null`, so
/// they travel as the strings `"inf"`, `"-inf"` and `"nan"`; finite values stay numbers.
mod any_f64 {
    use serde::de::{self, Deserializer, Visitor};
    use serde::Serializer;
    use std::fmt;

    pub fn serialize<S: Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
        match *v {
            v if v.is_finite() => s.serialize_f64(v),
            v if v.is_nan() => s.serialize_str("nan"),
            v if v > 0.0 => s.serialize_str("inf"),
            _ => s.serialize_str("-inf"),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        d.deserialize_any(AnyF64)
    }

    struct AnyF64;

    impl Visitor<'_> for AnyF64 {
        type Value = f64;

        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a number or one of \"inf\", \"-inf\", \"nan\"")
        }
        fn visit_f64<E: de::Error>(self, v: f64) -> Result<f64, E> {
            Ok(v)
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<f64, E> {
            Ok(v as f64)
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<f64, E> {
            Ok(v as f64)
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<f64, E> {
            match v {
                "inf" => Ok(f64::INFINITY),
                "-inf" => Ok(f64::NEG_INFINITY),
                "nan" => Ok(f64::NAN),
                _ => Err(E::invalid_value(de::Unexpected::Str(v), &self)),
            }
        }
    }
}
