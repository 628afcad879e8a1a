//! The reference interpreter: runs a graph node by node on the host.
//!
//! It is meant to be obviously right first and fast enough to train small nets second:
//! convolutions and matmuls go through GEMM, big elementwise maps and convolution
//! batches through rayon, and every value is freed right after its last reader, so
//! memory holds only the live frontier of the graph. Nodes that no output depends on
//! are not computed.

#[macro_use]
mod dispatch;
mod conv;
mod elementwise;
mod finite_check;
mod layout;
mod matmul;
mod pool;
pub mod profile;
mod program;
mod reduce;
mod resize;
mod strided;

use crate::tensor::cast_storage;
use crate::{Bindings, Collective, HostTensor, OpError, Outputs, Precision, RuntimeError, Storage};
use calib_ir::{Graph, Node, Op, OpClass, TensorType};
use finite_check::FiniteCheck;
use std::borrow::Cow;

pub use program::{run_program, run_program_with};

/// Runs `graph` in `f32`; returns every graph output by name.
pub fn run(graph: &Graph, bindings: &Bindings) -> Result<Outputs, RuntimeError> {
    run_with(graph, bindings, Precision::F32)
}

/// Runs `graph` with every floating value computed in `f64`; bound tensors are widened.
/// Outputs keep their declared dtypes but are held in `f64`.
pub fn run_f64(graph: &Graph, bindings: &Bindings) -> Result<Outputs, RuntimeError> {
    run_with(graph, bindings, Precision::F64)
}

/// Runs `graph` with floating values held in `precision`.
pub fn run_with(
    graph: &Graph,
    bindings: &Bindings,
    precision: Precision,
) -> Result<Outputs, RuntimeError> {
    interpret(graph, bindings, precision, None)
}

/// Like [`run_with`], but every bound tensor must be finite and the run fails at the
/// first op that creates a NaN or an infinity (see `finite_check.rs`), naming it.
/// Slower: every value is scanned once.
pub fn run_checking_finite(
    graph: &Graph,
    bindings: &Bindings,
    precision: Precision,
) -> Result<Outputs, RuntimeError> {
    interpret(
        graph,
        bindings,
        precision,
        Some(FiniteCheck::new(graph.nodes.len())),
    )
}

fn interpret(
    graph: &Graph,
    bindings: &Bindings,
    precision: Precision,
    mut check: Option<FiniteCheck>,
) -> Result<Outputs, RuntimeError> {
    graph.validate()?;
    let mut uses = live_uses(graph);
    let mut values: Vec<Option<Cow<HostTensor>>> = vec![None; graph.nodes.len()];
    for (id, node) in graph.nodes.iter().enumerate() {
        let value = match &node.op {
            // Bindings are checked even when unused, so a wrong checkpoint never slips by.
            Op::Input { name } => {
                let value = bound("input", name, bindings.get_input(name), &node.ty, precision)?;
                if let Some(check) = &check {
                    check.bound("input", name, &value)?;
                }
                value
            }
            Op::Param { name } => {
                let value = bound("param", name, bindings.get_param(name), &node.ty, precision)?;
                if let Some(check) = &check {
                    check.bound("param", name, &value)?;
                }
                value
            }
            _ if uses[id] == 0 => continue,
            Op::Constant { value } => {
                if let Some(check) = &mut check {
                    check.constant(id, *value);
                }
                Cow::Owned(HostTensor::full(&node.ty, *value, precision))
            }
            _ => {
                let value = compute(id, node, &values, precision, bindings.get_collective())?;
                if let Some(check) = &mut check {
                    check.computed(id, node, &value)?;
                }
                Cow::Owned(value)
            }
        };
        for v in &node.inputs {
            uses[v.0] -= 1;
            if uses[v.0] == 0 {
                values[v.0] = None;
            }
        }
        if uses[id] > 0 {
            values[id] = Some(value);
        }
    }
    let mut outputs = Outputs::with_capacity(graph.outputs.len());
    for o in &graph.outputs {
        let slot = &mut values[o.value.0];
        uses[o.value.0] -= 1;
        let tensor = if uses[o.value.0] == 0 {
            slot.take()
        } else {
            slot.clone()
        };
        let tensor = tensor.expect("outputs are live until read").into_owned();
        outputs.insert(o.name.clone(), tensor);
    }
    Ok(outputs)
}

/// Evaluates a computed node from its operands' live values.
fn compute(
    id: usize,
    node: &Node,
    values: &[Option<Cow<HostTensor>>],
    precision: Precision,
    group: Option<&dyn Collective>,
) -> Result<HostTensor, RuntimeError> {
    let args: Vec<&HostTensor> = node
        .inputs
        .iter()
        .map(|v| {
            values[v.0]
                .as_deref()
                .expect("operands are live until their last reader")
        })
        .collect();
    let fail = |source| RuntimeError::Op {
        node: id,
        op: node.op.name(),
        scope: scope_suffix(node),
        source,
    };
    let started = profile::is_enabled().then(std::time::Instant::now);
    let storage = eval(&node.op, &args, &node.ty, precision, group).map_err(fail)?;
    if let Some(t) = started {
        profile::record(node.op.name(), t.elapsed(), node.ty.numel());
    }
    HostTensor::new(node.ty.dtype, node.ty.shape.clone(), storage).map_err(|e| fail(e.into()))
}

/// " in <scope>" for error messages, or nothing for a node outside any scope.
fn scope_suffix(node: &Node) -> String {
    if node.scope.is_empty() {
        String::new()
    } else {
        format!(" in {}", node.scope)
    }
}

/// How many live readers each value has (graph outputs count as readers), where a node
/// is live if some output depends on it. Dead nodes read nothing.
fn live_uses(graph: &Graph) -> Vec<usize> {
    let n = graph.nodes.len();
    let mut live = vec![false; n];
    for o in &graph.outputs {
        live[o.value.0] = true;
    }
    for id in (0..n).rev() {
        if live[id] {
            for v in &graph.nodes[id].inputs {
                live[v.0] = true;
            }
        }
    }
    let mut uses = vec![0; n];
    for (id, node) in graph.nodes.iter().enumerate() {
        if live[id] {
            node.inputs.iter().for_each(|v| uses[v.0] += 1);
        }
    }
    graph.outputs.iter().for_each(|o| uses[o.value.0] += 1);
    uses
}

/// A bound tensor checked against its node's type and held in `precision`; borrowed
/// when it already is.
fn bound<'a>(
    kind: &'static str,
    name: &str,
    tensor: Option<&'a HostTensor>,
    expected: &TensorType,
    precision: Precision,
) -> Result<Cow<'a, HostTensor>, RuntimeError> {
    let tensor = tensor.ok_or_else(|| RuntimeError::Unbound {
        kind,
        name: name.into(),
        expected: expected.clone(),
    })?;
    if tensor.dtype() != expected.dtype || tensor.shape() != expected.shape {
        return Err(RuntimeError::BindingType {
            kind,
            name: name.into(),
            expected: expected.clone(),
            found: tensor.ty(),
        });
    }
    let held = match tensor.storage() {
        Storage::F32(_) => Some(Precision::F32),
        Storage::F64(_) => Some(Precision::F64),
        Storage::I64(_) => None,
    };
    Ok(match held {
        Some(p) if p != precision => Cow::Owned(tensor.clone().into_precision(precision)),
        _ => Cow::Borrowed(tensor),
    })
}

/// Evaluates one computed op; `out` is the node's (validated) type, `group` the
/// replica's data-parallel group if it has one.
fn eval(
    op: &Op,
    x: &[&HostTensor],
    out: &TensorType,
    precision: Precision,
    group: Option<&dyn Collective>,
) -> Result<Storage, OpError> {
    let y = &out.shape;
    match op {
        Op::Input { .. } | Op::Param { .. } | Op::Constant { .. } => {
            Err(OpError::NotComputed(op.name()))
        }
        Op::Cast { to } => Ok(cast_storage(x[0].storage(), *to, precision)),
        Op::Select => elementwise::select(x[0], x[1], x[2]),
        _ if op.class() == OpClass::Elementwise => elementwise::eval(op, x),
        Op::Conv2d { .. } | Op::Conv2dBackwardData { .. } | Op::Conv2dBackwardWeight { .. } => {
            conv::eval(op, x, y)
        }
        Op::AvgPool2d { .. }
        | Op::AvgPool2dBackward { .. }
        | Op::MaxPool2d { .. }
        | Op::MaxPool2dBackward { .. } => pool::eval(op, x, y),
        Op::ResizeNearest { .. } => resize::forward(x[0], y),
        Op::ResizeNearestBackward { .. } => resize::backward(x[0], y),
        Op::ReduceSum { axes, .. } => reduce::reduce(x[0], axes, reduce::Kind::Sum),
        Op::ReduceMean { axes, .. } => reduce::reduce(x[0], axes, reduce::Kind::Mean),
        Op::ReduceMax { axes, .. } => reduce::reduce(x[0], axes, reduce::Kind::Max),
        Op::Broadcast { .. } => layout::broadcast(x[0], y),
        Op::Reshape { .. } => Ok(x[0].storage().clone()),
        &Op::Slice { axis, start, end } => layout::slice(x[0], axis, start, end),
        &Op::Concat { axis } => layout::concat(x, axis),
        &Op::MatMul {
            transpose_a: ta,
            transpose_b: tb,
        } => matmul::matmul(x[0], x[1], y, ta, tb),
        &Op::OneHot { classes, .. } => layout::one_hot(x[0], classes, precision),
        &Op::AllReduce { reduce, replicas } => {
            crate::collective::all_reduce_bound(x[0], reduce, replicas, group)
        }
        _ => Err(OpError::NotComputed(op.name())),
    }
}

/// Below this many elements, splitting work across threads costs more than it saves.
const PAR_MIN: usize = 1 << 14;
