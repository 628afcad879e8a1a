//! Parameter and MAC counts of a graph, overall and per layer (`calib info`).
//!
//! MACs follow the convention of the structure fixtures: `out_elements * in_ch/groups *
//! kh * kw` per convolution and `M * N * K` per matmul; pooling, normalization, pointwise
//! ops and resizes are free. Parameters are trainable scalars only (no BN buffers).

use crate::StateKind;
use calib_ir::{fmt_shape, Graph, Node, Op, OpClass, Shape};
use std::collections::HashMap;
use std::fmt;

/// One layer: the nodes that share a scope (a PyTorch leaf module, or the glue of a block).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LayerRow {
    /// The module path (`layer1.0.scconv.k2.1`); empty for top-level glue.
    pub scope: String,
    /// What the layer computes: `batch_norm`, or its ops joined by `+` (`conv2d`,
    /// `matmul+add`, `resize_nearest+add+sigmoid+mul`).
    pub op: String,
    /// Shape of the layer's last value.
    pub shape: Shape,
    /// Trainable parameters owned by the layer.
    pub params: usize,
    pub macs: u64,
}

/// Totals and the per-layer table of a graph.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Summary {
    pub parameters: usize,
    pub macs: u64,
    /// In order of each scope's first node.
    pub layers: Vec<LayerRow>,
}

impl Summary {
    /// The row of the layer with this scope.
    pub fn layer(&self, scope: &str) -> Option<&LayerRow> {
        self.layers.iter().find(|r| r.scope == scope)
    }
}

/// Multiply-accumulates of one node (zero for everything but conv2d and matmul).
pub fn node_macs(graph: &Graph, node: &Node) -> u64 {
    let out = node.ty.numel() as u64;
    match &node.op {
        Op::Conv2d { .. } => {
            // Weight [O, C/groups, KH, KW]: every output reads C/groups * KH * KW inputs.
            let w = &graph.ty(node.inputs[1]).shape;
            out.saturating_mul((w[1] * w[2] * w[3]) as u64)
        }
        Op::MatMul { transpose_a, .. } => {
            let a = &graph.ty(node.inputs[0]).shape;
            let k = if *transpose_a { a[0] } else { a[1] };
            out.saturating_mul(k as u64)
        }
        _ => 0,
    }
}

/// Summarizes any graph: the parameters are its `param` nodes that are not BN buffers.
pub fn summarize(graph: &Graph) -> Summary {
    let mut rows: Vec<Row> = Vec::new();
    let mut index: HashMap<&str, usize> = HashMap::new();
    for node in &graph.nodes {
        let at = *index.entry(node.scope.as_str()).or_insert_with(|| {
            rows.push(Row::new(&node.scope));
            rows.len() - 1
        });
        rows[at].add(graph, node);
    }
    let layers: Vec<LayerRow> = rows.into_iter().filter_map(Row::finish).collect();
    Summary {
        parameters: layers.iter().map(|r| r.params).sum(),
        macs: layers.iter().fold(0u64, |m, r| m.saturating_add(r.macs)),
        layers,
    }
}

/// A layer under construction.
struct Row {
    scope: String,
    ops: Vec<&'static str>,
    is_batch_norm: bool,
    shape: Option<Shape>,
    params: usize,
    macs: u64,
}

impl Row {
    fn new(scope: &str) -> Self {
        Row {
            scope: scope.to_string(),
            ops: vec![],
            is_batch_norm: false,
            shape: None,
            params: 0,
            macs: 0,
        }
    }

    fn add(&mut self, graph: &Graph, node: &Node) {
        match &node.op {
            Op::Param { name } => {
                if StateKind::of(name) == StateKind::Param {
                    self.params += node.ty.numel();
                }
                // BatchNorm is a builder expansion, recognizable by the buffer it owns.
                self.is_batch_norm |= name.ends_with(".running_mean") || name == "running_mean";
            }
            _ if node.op.class() == OpClass::Source => {}
            op => {
                // Broadcasts and reshapes only restate shapes; concat is a real step.
                let bookkeeping = op.class() == OpClass::Layout && !matches!(op, Op::Concat { .. });
                if !bookkeeping && !self.ops.contains(&op.name()) {
                    self.ops.push(op.name());
                }
                self.shape = Some(node.ty.shape.clone());
                self.macs = self.macs.saturating_add(node_macs(graph, node));
            }
        }
    }

    /// Scopes that hold only sources (the graph input) are not layers.
    fn finish(self) -> Option<LayerRow> {
        let shape = self.shape?;
        let op = if self.is_batch_norm {
            "batch_norm".to_string()
        } else {
            self.ops.join("+")
        };
        Some(LayerRow {
            scope: self.scope,
            op,
            shape,
            params: self.params,
            macs: self.macs,
        })
    }
}

impl fmt::Display for Summary {
    /// A fixed-width table followed by the totals.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scope_w = self
            .layers
            .iter()
            .map(|r| r.scope.len())
            .max()
            .unwrap_or(0)
            .max(5);
        let op_w = self
            .layers
            .iter()
            .map(|r| r.op.len())
            .max()
            .unwrap_or(0)
            .max(2);
        writeln!(
            f,
            "{:scope_w$}  {:op_w$}  {:>18}  {:>10}  {:>14}",
            "layer", "op", "output", "params", "MACs"
        )?;
        for r in &self.layers {
            let scope = if r.scope.is_empty() { "-" } else { &r.scope };
            let shape = fmt_shape(&r.shape);
            writeln!(
                f,
                "{scope:scope_w$}  {:op_w$}  {shape:>18}  {:>10}  {:>14}",
                r.op, r.params, r.macs
            )?;
        }
        writeln!(f, "total parameters: {}", self.parameters)?;
        write!(f, "total MACs (conv + linear): {}", self.macs)
    }
}
