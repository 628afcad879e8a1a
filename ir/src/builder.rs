//! A builder whose calls read like the model: `let y = g.relu(g.batch_norm(x)?)?`.
//!
//! It owns the naming scheme (parameters get PyTorch `state_dict` names from the scope
//! stack), inserts the broadcasts that the IR keeps explicit, and expands the composite
//! layers (BatchNorm, linear, global average pooling, softmax cross-entropy) into
//! primitive ops (BatchNorm's expansion is in `batch_norm.rs`).

mod batch_norm;
mod names;

pub use batch_norm::{BN_EPS, BN_MOMENTUM};

use crate::{
    broadcasts_to, fmt_shape, DType, Graph, IrError, Op, Output, ReduceOp, Result, Shape,
    TensorType, Value,
};
use names::{Kind, Names};

/// Train or eval semantics for BatchNorm (and anything else mode-dependent).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Train,
    Eval,
}

/// Hyper-parameters of a convolution layer (a conv2d op plus its weight parameter).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvSpec {
    pub out_channels: usize,
    pub kernel: usize,
    pub stride: usize,
    pub padding: usize,
    pub dilation: usize,
    pub groups: usize,
}

impl ConvSpec {
    /// A `k x k` convolution with stride 1, no padding, no dilation, one group.
    pub fn new(out_channels: usize, kernel: usize) -> Self {
        ConvSpec {
            out_channels,
            kernel,
            stride: 1,
            padding: 0,
            dilation: 1,
            groups: 1,
        }
    }
    pub fn stride(self, stride: usize) -> Self {
        ConvSpec { stride, ..self }
    }
    pub fn padding(self, padding: usize) -> Self {
        ConvSpec { padding, ..self }
    }
    pub fn dilation(self, dilation: usize) -> Self {
        ConvSpec { dilation, ..self }
    }
    pub fn groups(self, groups: usize) -> Self {
        ConvSpec { groups, ..self }
    }
}

/// Builds a [`Graph`] with scoped names and composite layers.
pub struct GraphBuilder {
    graph: Graph,
    /// The names taken so far, so that a duplicate is found without scanning the graph:
    /// a scan per parameter made building quadratic in the depth of a network.
    names: Names,
    scope: Vec<String>,
    mode: Mode,
    float: DType,
    /// The data-parallel group size that train-mode BatchNorm synchronizes over.
    sync_bn: Option<usize>,
}

impl GraphBuilder {
    /// A builder for a graph whose floating values are `float` and whose BatchNorms use `mode`.
    pub fn new(mode: Mode, float: DType) -> Self {
        GraphBuilder {
            graph: Graph::new(),
            names: Names::default(),
            scope: vec![],
            mode,
            float,
            sync_bn: None,
        }
    }

    /// A builder that appends to an existing graph (a model, to add a loss to it).
    pub fn extend(graph: Graph, mode: Mode, float: DType) -> Self {
        GraphBuilder {
            names: Names::of(&graph),
            graph,
            scope: vec![],
            mode,
            float,
            sync_bn: None,
        }
    }

    /// Makes train-mode BatchNorm synchronized across a data-parallel group of
    /// `replicas`: batch statistics over the whole group's batch (PyTorch's
    /// `SyncBatchNorm`) instead of each replica's own. See `batch_norm` for the graph.
    pub fn with_sync_bn(mut self, replicas: usize) -> Self {
        self.sync_bn = Some(replicas);
        self
    }

    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// The group size BatchNorm synchronizes over, if it does.
    pub fn sync_bn(&self) -> Option<usize> {
        self.sync_bn
    }

    pub fn float(&self) -> DType {
        self.float
    }

    pub fn ty(&self, v: Value) -> &TensorType {
        self.graph.ty(v)
    }

    pub fn shape(&self, v: Value) -> Shape {
        self.graph.ty(v).shape.clone()
    }

    /// The finished graph.
    pub fn finish(self) -> Graph {
        self.graph
    }

    pub fn graph(&self) -> &Graph {
        &self.graph
    }

    /// Runs `f` with `name` appended to the scope (`layer1` then `0` gives `layer1.0.`).
    pub fn scoped<T>(&mut self, name: &str, f: impl FnOnce(&mut Self) -> Result<T>) -> Result<T> {
        self.scope.push(name.to_string());
        let r = f(self);
        self.scope.pop();
        r
    }

    /// The current scope joined with `local` by dots.
    pub fn qualified(&self, local: &str) -> String {
        let mut parts: Vec<&str> = self.scope.iter().map(String::as_str).collect();
        if !local.is_empty() {
            parts.push(local);
        }
        parts.join(".")
    }

    fn push(&mut self, op: Op, inputs: Vec<Value>) -> Result<Value> {
        let scope = self.qualified("");
        self.graph.push(op, inputs, &scope)
    }

    // ----- sources -------------------------------------------------------------------

    pub fn input(&mut self, name: &str, dtype: DType, shape: impl Into<Shape>) -> Result<Value> {
        self.names.check(Kind::Input, name)?;
        let scope = self.qualified("");
        let v = self.graph.push_source(
            Op::Input { name: name.into() },
            TensorType::new(dtype, shape),
            &scope,
        )?;
        self.names.take(Kind::Input, name);
        Ok(v)
    }

    /// A parameter or buffer named `<scope>.<local>`.
    pub fn param(&mut self, local: &str, dtype: DType, shape: impl Into<Shape>) -> Result<Value> {
        let name = self.qualified(local);
        self.names.check(Kind::Param, &name)?;
        let scope = self.qualified("");
        let v = self.graph.push_source(
            Op::Param { name: name.clone() },
            TensorType::new(dtype, shape),
            &scope,
        )?;
        self.names.take(Kind::Param, &name);
        Ok(v)
    }

    pub fn constant(&mut self, value: f64, dtype: DType, shape: impl Into<Shape>) -> Result<Value> {
        let scope = self.qualified("");
        self.graph.push_source(
            Op::Constant { value },
            TensorType::new(dtype, shape),
            &scope,
        )
    }

    /// A constant with the type of `like`.
    pub fn full_like(&mut self, like: Value, value: f64) -> Result<Value> {
        let t = self.ty(like).clone();
        self.constant(value, t.dtype, t.shape)
    }

    /// Declares a named graph result.
    pub fn output(&mut self, name: &str, v: Value) -> Result<()> {
        self.names.check(Kind::Output, name)?;
        if v.0 >= self.graph.nodes.len() {
            return Err(IrError::UndefinedValue {
                node: self.graph.nodes.len(),
                op: "output".into(),
                operand: v.0,
            });
        }
        self.graph.outputs.push(Output {
            name: name.into(),
            value: v,
        });
        self.names.take(Kind::Output, name);
        Ok(())
    }

    // ----- elementwise -----------------------------------------------------------------

    pub fn unary(&mut self, op: Op, x: Value) -> Result<Value> {
        self.push(op, vec![x])
    }
    pub fn relu(&mut self, x: Value) -> Result<Value> {
        self.unary(Op::Relu, x)
    }
    pub fn sigmoid(&mut self, x: Value) -> Result<Value> {
        self.unary(Op::Sigmoid, x)
    }
    pub fn exp(&mut self, x: Value) -> Result<Value> {
        self.unary(Op::Exp, x)
    }
    pub fn log(&mut self, x: Value) -> Result<Value> {
        self.unary(Op::Log, x)
    }
    pub fn neg(&mut self, x: Value) -> Result<Value> {
        self.unary(Op::Neg, x)
    }
    pub fn rsqrt(&mut self, x: Value) -> Result<Value> {
        self.unary(Op::Rsqrt, x)
    }
    pub fn sqrt(&mut self, x: Value) -> Result<Value> {
        self.unary(Op::Sqrt, x)
    }
    pub fn cast(&mut self, x: Value, to: DType) -> Result<Value> {
        self.unary(Op::Cast { to }, x)
    }

    /// A binary elementwise op with numpy broadcasting of both operands.
    pub fn binary(&mut self, op: Op, a: Value, b: Value) -> Result<Value> {
        let (sa, sb) = (self.shape(a), self.shape(b));
        let target = broadcast_shape(&sa, &sb).ok_or_else(|| IrError::Type {
            node: self.graph.nodes.len(),
            op: op.name().into(),
            scope: crate::graph::scope_suffix(&self.qualified("")),
            detail: "operand shapes do not broadcast".into(),
            operands: format!("{}, {}", self.ty(a), self.ty(b)),
        })?;
        let a = self.broadcast_to(a, &target)?;
        let b = self.broadcast_to(b, &target)?;
        self.push(op, vec![a, b])
    }
    pub fn add(&mut self, a: Value, b: Value) -> Result<Value> {
        self.binary(Op::Add, a, b)
    }
    pub fn sub(&mut self, a: Value, b: Value) -> Result<Value> {
        self.binary(Op::Sub, a, b)
    }
    pub fn mul(&mut self, a: Value, b: Value) -> Result<Value> {
        self.binary(Op::Mul, a, b)
    }
    pub fn div(&mut self, a: Value, b: Value) -> Result<Value> {
        self.binary(Op::Div, a, b)
    }
    pub fn max(&mut self, a: Value, b: Value) -> Result<Value> {
        self.binary(Op::Max, a, b)
    }

    /// `x * s` for a scalar `s`.
    pub fn scale(&mut self, x: Value, s: f64) -> Result<Value> {
        let c = self.constant(s, self.ty(x).dtype, vec![])?;
        self.mul(x, c)
    }

    /// `x + s` for a scalar `s`.
    pub fn add_scalar(&mut self, x: Value, s: f64) -> Result<Value> {
        let c = self.constant(s, self.ty(x).dtype, vec![])?;
        self.add(x, c)
    }

    pub fn select(&mut self, cond: Value, a: Value, b: Value) -> Result<Value> {
        self.push(Op::Select, vec![cond, a, b])
    }

    // ----- layout ------------------------------------------------------------------------

    /// Broadcasts `x` to `shape`; no node when the shape already matches.
    pub fn broadcast_to(&mut self, x: Value, shape: &[usize]) -> Result<Value> {
        if self.shape(x) == shape {
            return Ok(x);
        }
        self.push(
            Op::Broadcast {
                shape: shape.to_vec(),
            },
            vec![x],
        )
    }
    pub fn reshape(&mut self, x: Value, shape: impl Into<Shape>) -> Result<Value> {
        let shape = shape.into();
        if self.shape(x) == shape {
            return Ok(x);
        }
        self.push(Op::Reshape { shape }, vec![x])
    }
    pub fn slice(&mut self, x: Value, axis: usize, start: usize, end: usize) -> Result<Value> {
        self.push(Op::Slice { axis, start, end }, vec![x])
    }
    pub fn concat(&mut self, xs: &[Value], axis: usize) -> Result<Value> {
        self.push(Op::Concat { axis }, xs.to_vec())
    }

    // ----- reductions ---------------------------------------------------------------------

    pub fn reduce_sum(&mut self, x: Value, axes: &[usize], keepdims: bool) -> Result<Value> {
        self.push(
            Op::ReduceSum {
                axes: axes.to_vec(),
                keepdims,
            },
            vec![x],
        )
    }
    pub fn reduce_mean(&mut self, x: Value, axes: &[usize], keepdims: bool) -> Result<Value> {
        self.push(
            Op::ReduceMean {
                axes: axes.to_vec(),
                keepdims,
            },
            vec![x],
        )
    }
    pub fn reduce_max(&mut self, x: Value, axes: &[usize], keepdims: bool) -> Result<Value> {
        self.push(
            Op::ReduceMax {
                axes: axes.to_vec(),
                keepdims,
            },
            vec![x],
        )
    }

    /// `x` reduced elementwise across a data-parallel group of `replicas`.
    pub fn all_reduce(&mut self, x: Value, reduce: ReduceOp, replicas: usize) -> Result<Value> {
        self.push(Op::AllReduce { reduce, replicas }, vec![x])
    }

    // ----- spatial ops --------------------------------------------------------------------

    pub fn conv2d(&mut self, x: Value, w: Value, spec: &ConvSpec) -> Result<Value> {
        let op = Op::Conv2d {
            stride: [spec.stride; 2],
            padding: [spec.padding; 2],
            dilation: [spec.dilation; 2],
            groups: spec.groups,
        };
        self.push(op, vec![x, w])
    }

    /// `AvgPool2d(kernel, stride, padding, ceil_mode, count_include_pad)`.
    pub fn avg_pool2d(
        &mut self,
        x: Value,
        kernel: usize,
        stride: usize,
        padding: usize,
        ceil_mode: bool,
        count_include_pad: bool,
    ) -> Result<Value> {
        let op = Op::AvgPool2d {
            kernel: [kernel; 2],
            stride: [stride; 2],
            padding: [padding; 2],
            ceil_mode,
            count_include_pad,
        };
        self.push(op, vec![x])
    }

    pub fn max_pool2d(
        &mut self,
        x: Value,
        kernel: usize,
        stride: usize,
        padding: usize,
        ceil_mode: bool,
    ) -> Result<Value> {
        let op = Op::MaxPool2d {
            kernel: [kernel; 2],
            stride: [stride; 2],
            padding: [padding; 2],
            ceil_mode,
        };
        self.push(op, vec![x])
    }

    pub fn resize_nearest(&mut self, x: Value, size: [usize; 2]) -> Result<Value> {
        self.push(Op::ResizeNearest { size }, vec![x])
    }

    pub fn matmul(
        &mut self,
        a: Value,
        b: Value,
        transpose_a: bool,
        transpose_b: bool,
    ) -> Result<Value> {
        self.push(
            Op::MatMul {
                transpose_a,
                transpose_b,
            },
            vec![a, b],
        )
    }

    // ----- layers (create parameters) -----------------------------------------------------

    /// A bias-free `Conv2d` layer: its weight is the parameter `<scope>.<name>.weight`.
    pub fn conv_layer(&mut self, name: &str, x: Value, spec: &ConvSpec) -> Result<Value> {
        let in_ch = self.shape(x).get(1).copied().unwrap_or(0);
        if spec.groups == 0 || in_ch % spec.groups != 0 {
            return Err(IrError::Type {
                node: self.graph.nodes.len(),
                op: "conv2d".into(),
                scope: format!(" in {}", self.qualified(name)),
                detail: format!("groups={} must divide input channels {in_ch}", spec.groups),
                operands: self.ty(x).to_string(),
            });
        }
        let float = self.float;
        let w = self.scoped(name, |g| {
            g.param(
                "weight",
                float,
                vec![
                    spec.out_channels,
                    in_ch / spec.groups,
                    spec.kernel,
                    spec.kernel,
                ],
            )
        })?;
        self.scoped(name, |g| g.conv2d(x, w, spec))
    }

    /// `Linear(in, out)`: `x @ weight^T + bias`, parameters `<name>.weight [out, in]`, `<name>.bias`.
    pub fn linear(
        &mut self,
        name: &str,
        x: Value,
        out_features: usize,
        bias: bool,
    ) -> Result<Value> {
        let shape = self.shape(x);
        if shape.len() != 2 {
            return Err(IrError::Type {
                node: self.graph.nodes.len(),
                op: "linear".into(),
                scope: format!(" in {}", self.qualified(name)),
                detail: "expects a [batch, features] input".into(),
                operands: self.ty(x).to_string(),
            });
        }
        let float = self.float;
        self.scoped(name, |g| {
            let w = g.param("weight", float, vec![out_features, shape[1]])?;
            let y = g.matmul(x, w, false, true)?;
            if !bias {
                return Ok(y);
            }
            let b = g.param("bias", float, vec![out_features])?;
            g.add(y, b)
        })
    }

    /// Global average pooling `[N,C,H,W] -> [N,C]` (adaptive pool to 1x1 plus flatten).
    pub fn global_avg_pool(&mut self, x: Value) -> Result<Value> {
        self.reduce_mean(x, &[2, 3], false)
    }

    /// Mean softmax cross-entropy of `logits [N,K]` against i64 `labels [N]`, with label
    /// smoothing `eps` (PyTorch's: targets `(1 - eps) * onehot + eps / K`). Result shape `[]`.
    pub fn softmax_cross_entropy(
        &mut self,
        logits: Value,
        labels: Value,
        eps: f64,
    ) -> Result<Value> {
        let t = self.ty(logits).clone();
        if t.rank() != 2 {
            return Err(IrError::Type {
                node: self.graph.nodes.len(),
                op: "softmax_cross_entropy".into(),
                scope: String::new(),
                detail: format!(
                    "logits must be [batch, classes], got {}",
                    fmt_shape(&t.shape)
                ),
                operands: t.to_string(),
            });
        }
        let (n, k) = (t.shape[0], t.shape[1]);
        let max = self.reduce_max(logits, &[1], true)?;
        let shifted = self.sub(logits, max)?;
        let e = self.exp(shifted)?;
        let sum = self.reduce_sum(e, &[1], true)?;
        let lse = self.log(sum)?;
        let log_probs = self.sub(shifted, lse)?;
        let onehot = self.push(
            Op::OneHot {
                classes: k,
                dtype: t.dtype,
            },
            vec![labels],
        )?;
        let target = if eps > 0.0 {
            let on = self.scale(onehot, 1.0 - eps)?;
            self.add_scalar(on, eps / k as f64)?
        } else {
            onehot
        };
        let picked = self.mul(target, log_probs)?;
        let total = self.reduce_sum(picked, &[0, 1], false)?;
        self.scale(total, -1.0 / n as f64)
    }
}

/// The numpy broadcast of two shapes, if they are compatible.
pub fn broadcast_shape(a: &[usize], b: &[usize]) -> Option<Shape> {
    let rank = a.len().max(b.len());
    let dim = |s: &[usize], i: usize| {
        if i + s.len() >= rank {
            s[i + s.len() - rank]
        } else {
            1
        }
    };
    let out: Shape = (0..rank)
        .map(|i| {
            let (x, y) = (dim(a, i), dim(b, i));
            if x == y || y == 1 {
                x
            } else if x == 1 {
                y
            } else {
                usize::MAX
            }
        })
        .collect();
    (!out.contains(&usize::MAX) && broadcasts_to(a, &out) && broadcasts_to(b, &out)).then_some(out)
}
