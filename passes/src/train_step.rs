//! A whole SGD training step as one graph: forward, loss, backward and update.
//!
//! Interface of the step graph (names are what a runtime binds):
//!
//! | inputs | outputs |
//! |---|---|
//! | every param and buffer, by `state_dict` name | `<name>`: each trained param after the step |
//! | `momentum.<name>` per trained param | `momentum.<name>`: its new momentum buffer |
//! | `input`, `labels` (i64 `[N]`) | the forward's own outputs: `logits` (or `output`) and the new BatchNorm running statistics and counters |
//! | `lr` (shape `[]`) | `loss` (shape `[]`) |
//!
//! Under the bf16 policy `precision::apply_step` adds a param `bf16.<name>` and an
//! output of the same name for each trained weight a GEMM reads (its rounded copy).
//!
//! The first step needs no graph of its own: PyTorch starts a momentum buffer at `d`
//! itself, and feeding zero buffers gives `momentum * 0 + d`, which is exactly `d` in
//! IEEE arithmetic (dampening being 0).

use crate::autodiff::grad;
use crate::emit::Emitter;
use crate::{cse, inline, prune, PassError, PruneOptions, Result};
use calib_ir::{DType, Graph, GraphBuilder, IrError, Mode, Op, TensorType, Value};
use std::collections::HashSet;

/// The learning-rate input of a step graph.
pub const LR: &str = "lr";
/// The labels input (added when the forward graph has none).
pub const LABELS: &str = "labels";
/// The loss output.
pub const LOSS: &str = "loss";

/// `torch.optim.SGD` with dampening 0. The learning rate is not here: it is the graph
/// input [`LR`], so that a schedule needs no recompilation.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sgd {
    pub momentum: f64,
    /// Applied to every trained parameter, BatchNorm affine and biases included.
    pub weight_decay: f64,
    /// Step along `d + momentum * buf` instead of `buf`.
    pub nesterov: bool,
}

impl Default for Sgd {
    /// SCNet's recipe: momentum 0.9, weight decay 1e-4, no Nesterov.
    fn default() -> Self {
        Sgd {
            momentum: 0.9,
            weight_decay: 1e-4,
            nesterov: false,
        }
    }
}

/// What a training step optimizes and how.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct TrainConfig {
    pub sgd: Sgd,
    /// PyTorch's `label_smoothing` of the cross-entropy loss (0 for none).
    pub label_smoothing: f64,
}

/// A training-step graph and the names of its state.
#[derive(Clone, Debug, PartialEq)]
pub struct TrainStep {
    pub graph: Graph,
    /// Trained parameters (`state_dict` names, graph order): each has a momentum input
    /// and output, and an output with its updated value.
    pub params: Vec<String>,
    /// Params that SGD leaves alone: BatchNorm running statistics and counters, which
    /// the forward pass updates through outputs of the same name.
    pub buffers: Vec<String>,
    /// Trained parameters whose GEMMs read a rounded copy carried from step to step:
    /// param `bf16.<name>` in, output `bf16.<name>` out (`precision::apply_step` adds
    /// them under the bf16 policy; empty until then).
    pub copies: Vec<String>,
}

/// The name of the momentum buffer of `param`, as a step graph's input and output.
pub fn momentum_name(param: &str) -> String {
    format!("momentum.{param}")
}

/// `forward` with a `loss` output: the mean softmax cross-entropy of its `logits` (or
/// `output`) against the i64 input `labels`, which is added if missing. A graph that
/// already has a `loss` output comes back unchanged.
pub fn with_loss(forward: &Graph, label_smoothing: f64) -> Result<Graph> {
    crate::renumber::check_structure(forward)?;
    if forward.output(LOSS).is_some() {
        return Ok(forward.clone());
    }
    let logits = forward
        .output("logits")
        .or_else(|| forward.output("output"))
        .ok_or(PassError::Missing {
            kind: "output",
            names: "`logits` or `output`".into(),
        })?;
    let ty = forward.ty(logits).clone();
    if ty.rank() != 2 || !ty.dtype.is_float() {
        return Err(PassError::WrongType {
            what: "the logits".into(),
            expected: "a float [batch, classes] matrix".into(),
            found: ty.to_string(),
        });
    }
    let labels_ty = TensorType::new(DType::I64, vec![ty.shape[0]]);
    let mut graph = forward.clone();
    let existing = graph
        .inputs()
        .find(|(name, _)| *name == LABELS)
        .map(|(_, v)| v);
    let labels = match existing {
        Some(v) => v,
        None => graph.push_source(
            Op::Input {
                name: LABELS.into(),
            },
            labels_ty.clone(),
            "",
        )?,
    };
    let mut b = GraphBuilder::new(Mode::Train, ty.dtype);
    let l = b.input("logits", ty.dtype, ty.shape.clone())?;
    let y = b.input(LABELS, DType::I64, labels_ty.shape)?;
    let loss = b.scoped(LOSS, |b| b.softmax_cross_entropy(l, y, label_smoothing))?;
    b.output(LOSS, loss)?;
    let outputs = inline(
        &mut graph,
        &b.finish(),
        &[("logits", logits), (LABELS, labels)],
    )?;
    graph.add_output(LOSS, outputs[0].1)?;
    Ok(graph)
}

/// The training step of a train-mode forward graph (see the module docs for its
/// interface), CSE'd and pruned; unused params stay as inputs.
pub fn train_step(forward: &Graph, config: &TrainConfig) -> Result<TrainStep> {
    train_step_with(forward, config, |_, grads| {
        Ok(grads.iter().map(|(_, g)| *g).collect())
    })
}

/// [`train_step`] with `combine` between the backward pass and the update: given the
/// graph after the backward pass and each trained parameter's name with its gradient
/// (graph order), it returns the gradients SGD is to use, in the same order, and may
/// append nodes (the data-parallel step all-reduces the gradients there).
pub(crate) fn train_step_with(
    forward: &Graph,
    config: &TrainConfig,
    combine: impl FnOnce(&mut Graph, &[(String, Value)]) -> Result<Vec<Value>>,
) -> Result<TrainStep> {
    let mut graph = with_loss(forward, config.label_smoothing)?;
    let loss = graph.output(LOSS).expect("with_loss adds it");
    if graph.ty(loss).numel() != 1 {
        return Err(PassError::WrongType {
            what: "the loss".into(),
            expected: "a single value".into(),
            found: graph.ty(loss).to_string(),
        });
    }
    let float = graph.ty(loss).dtype;
    // A param that the forward pass itself updates (an output of the same name) is a
    // buffer; so is anything integer. Names are looked up in sets, not by scanning the
    // graph per param, which made the step quadratic in a network's depth.
    let updated: HashSet<&str> = graph.outputs.iter().map(|o| o.name.as_str()).collect();
    let (trained, buffers): (Vec<_>, Vec<_>) = graph
        .params()
        .map(|(name, v)| (name.to_string(), v))
        .partition(|(name, v)| graph.ty(*v).dtype.is_float() && !updated.contains(name.as_str()));

    let mut inputs: HashSet<String> = graph.inputs().map(|(n, _)| n.to_string()).collect();
    let lr = fresh_input(&mut graph, &mut inputs, LR, TensorType::new(float, vec![]))?;
    let mut momentum = Vec::with_capacity(trained.len());
    for (name, p) in &trained {
        let ty = graph.ty(*p).clone();
        momentum.push(fresh_input(
            &mut graph,
            &mut inputs,
            &momentum_name(name),
            ty,
        )?);
    }
    let wrt: Vec<Value> = trained.iter().map(|(_, p)| *p).collect();
    let (mut graph, grads) = grad(&graph, loss, &wrt)?;
    let named: Vec<(String, Value)> = trained.iter().map(|(n, _)| n.clone()).zip(grads).collect();
    let grads = combine(&mut graph, &named)?;

    let em = Emitter::new(graph);
    em.set_scope("sgd");
    let Sgd {
        momentum: mu,
        weight_decay,
        nesterov,
    } = config.sgd;
    let mut updates = Vec::with_capacity(2 * trained.len());
    for (((name, p), buf), dp) in trained.iter().zip(momentum).zip(grads) {
        let (p, buf, dp) = (em.expr(*p), em.expr(buf), em.expr(dp));
        let lr = em.expr(lr).broadcast(&p.shape());
        let d = if weight_decay != 0.0 {
            dp + p * weight_decay
        } else {
            dp
        };
        let buf = buf * mu + d;
        let step = if nesterov { d + buf * mu } else { buf };
        updates.push((name.clone(), p - lr * step));
        updates.push((momentum_name(name), buf));
    }
    em.finish_rule()?;
    em.with_graph(|g| {
        g.add_outputs(
            updates
                .into_iter()
                .map(|(name, e)| (name, e.value().expect("no update failed, so none is inert"))),
        )
    })?;
    let (graph, _) = cse(&em.into_graph())?;
    let graph = prune(&graph, PruneOptions { keep_sources: true })?;
    Ok(TrainStep {
        graph,
        params: trained.into_iter().map(|(name, _)| name).collect(),
        buffers: buffers.into_iter().map(|(name, _)| name).collect(),
        copies: vec![],
    })
}

/// A new input, refusing a name in `taken` (the graph's input names, kept up to date).
fn fresh_input(
    graph: &mut Graph,
    taken: &mut HashSet<String>,
    name: &str,
    ty: TensorType,
) -> Result<Value> {
    if taken.contains(name) {
        return Err(IrError::DuplicateName {
            kind: "input",
            name: name.into(),
        }
        .into());
    }
    let v = graph.push_source(Op::Input { name: name.into() }, ty, "sgd")?;
    taken.insert(name.into());
    Ok(v)
}
