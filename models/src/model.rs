//! A built model: its graph and its `state_dict`.

use crate::bottleneck::sc_bottleneck;
use crate::resnet::resnet;
use crate::scconv::scconv;
use crate::scnet::scnet;
use crate::spec::MAX_EXTENT;
use crate::{ModelError, ModelSpec};
use calib_ir::{DType, Graph, GraphBuilder, Mode, TensorType, Value};

/// Whether a `state_dict` entry is trained or only tracked.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum StateKind {
    /// A trainable parameter (`model.parameters()` in PyTorch).
    Param,
    /// A buffer: BatchNorm's running statistics and its batch counter.
    Buffer,
}

impl StateKind {
    /// The kind of the entry called `name`. The builders create no buffers but
    /// BatchNorm's, which PyTorch names by these suffixes.
    pub fn of(name: &str) -> StateKind {
        const BUFFERS: [&str; 3] = ["running_mean", "running_var", "num_batches_tracked"];
        let leaf = name.rsplit('.').next().unwrap_or(name);
        if BUFFERS.contains(&leaf) {
            StateKind::Buffer
        } else {
            StateKind::Param
        }
    }
}

/// One parameter or buffer, named as in PyTorch's `state_dict`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StateEntry {
    pub name: String,
    pub ty: TensorType,
    pub kind: StateKind,
}

/// A model as a graph plus its state.
#[derive(Clone, Debug, PartialEq)]
pub struct Model {
    /// Input `input` (NCHW); outputs: the result (`output` or `logits`) first, then in
    /// Train mode BatchNorm's new running statistics, named by their state entries.
    pub graph: Graph,
    /// Every parameter and buffer in PyTorch's `state_dict` order.
    pub state: Vec<StateEntry>,
}

impl Model {
    /// The model's result (`output` for modules, `logits` for networks): the first graph
    /// output, which [`build`] puts there. Panics only on a hand-made model without outputs.
    pub fn output(&self) -> Value {
        self.graph.outputs[0].value
    }

    /// Number of trainable scalars.
    pub fn parameter_count(&self) -> usize {
        self.state
            .iter()
            .filter(|e| e.kind == StateKind::Param)
            .map(|e| e.ty.numel())
            .sum()
    }
}

/// Builds `spec` for an NCHW input of `input_shape`. BatchNorm follows `mode`; parameters,
/// the input and activations have dtype `float` (counters stay i64).
pub fn build(
    spec: &ModelSpec,
    input_shape: &[usize],
    mode: Mode,
    float: DType,
) -> Result<Model, ModelError> {
    build_with(spec, input_shape, GraphBuilder::new(mode, float))
}

/// [`build`] into an empty builder configured by the caller (synchronized BatchNorm
/// for a data-parallel replica, say); its mode and float type apply.
pub fn build_with(
    spec: &ModelSpec,
    input_shape: &[usize],
    mut g: GraphBuilder,
) -> Result<Model, ModelError> {
    spec.validate()?;
    check_input(spec, input_shape)?;
    let float = g.float();
    if !float.is_float() {
        return Err(ModelError::NotFloat(float));
    }
    let x = g.input("input", float, input_shape.to_vec())?;
    // Each builder creates its submodules in PyTorch's registration order, which for these
    // modules is also an evaluation order; so the graph's param nodes are already in
    // state_dict order (the structure-file tests hold every model to this).
    let y = match spec {
        ModelSpec::ScConv(s) => scconv(&mut g, x, s)?,
        ModelSpec::ScBottleneck(s) => sc_bottleneck(&mut g, x, s)?,
        ModelSpec::ScNet(s) => scnet(&mut g, x, s)?,
        ModelSpec::ResNet(s) => resnet(&mut g, x, s)?,
    };
    g.output(spec.output_name(), y)?;
    let mut graph = g.finish();
    // In Train mode BatchNorm declared its state outputs while the body was built; the
    // model's result goes first so that consumers find it at a fixed place.
    graph.outputs.rotate_right(1);
    let state = graph
        .params()
        .map(|(name, v)| StateEntry {
            name: name.to_string(),
            ty: graph.ty(v).clone(),
            kind: StateKind::of(name),
        })
        .collect();
    Ok(Model { graph, state })
}

/// Bounds the input so that no activation's element count can overflow.
const MAX_INPUT_ELEMENTS: usize = 1 << 40;

fn check_input(spec: &ModelSpec, shape: &[usize]) -> Result<(), ModelError> {
    let fail = |message: String| {
        Err(ModelError::InputShape {
            shape: shape.to_vec(),
            message,
        })
    };
    if shape.len() != 4 {
        return fail(format!(
            "expected 4 dimensions (N, C, H, W), got {}",
            shape.len()
        ));
    }
    if let Some(&d) = shape.iter().find(|&&d| d == 0 || d > MAX_EXTENT) {
        return fail(format!(
            "every extent must lie in 1..={MAX_EXTENT}, got {d}"
        ));
    }
    let elements = shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d));
    if elements.is_none_or(|n| n > MAX_INPUT_ELEMENTS) {
        return fail(format!("more than {MAX_INPUT_ELEMENTS} elements"));
    }
    if shape[1] != spec.in_channels() {
        return fail(format!(
            "the {} expects {} input channels, got {}",
            spec.kind(),
            spec.in_channels(),
            shape[1]
        ));
    }
    Ok(())
}
