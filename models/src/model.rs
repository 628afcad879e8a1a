//! A built model: its graph and its `state_dict`.

use crate::bottleneck::sc_bottleneck;
use crate::resnet::resnet;
use crate::scconv::scconv;
use crate::scnet::scnet;
use crate::spec::{Stage, MAX_BATCH, MAX_SIDE};
use crate::{ModelError, ModelSpec};
use calib_ir::{fmt_shape, DType, Graph, GraphBuilder, IrError, Mode, TensorType, Value};

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
    check_input_shape(spec, input_shape)?;
    let float = g.float();
    if !float.is_float() {
        return Err(ModelError::NotFloat(float));
    }
    let x = g.input("input", float, input_shape.to_vec())?;
    // Each builder creates its submodules in PyTorch's registration order, which for these
    // modules is also an evaluation order; so the graph's param nodes are already in
    // state_dict order (the structure-file tests hold every model to this).
    let y = match spec {
        ModelSpec::ScConv(s) => scconv(&mut g, x, s),
        ModelSpec::ScBottleneck(s) => sc_bottleneck(&mut g, x, s),
        ModelSpec::ScNet(s) => scnet(&mut g, x, s),
        ModelSpec::ResNet(s) => resnet(&mut g, x, s),
    }
    .map_err(|e| in_spec_terms(spec, input_shape, g.graph(), e))?;
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

/// Checks an NCHW input shape against `spec` (rank, channels, and every extent within
/// [`MAX_BATCH`] and [`MAX_SIDE`]) before anything is built.
pub fn check_input_shape(spec: &ModelSpec, shape: &[usize]) -> Result<(), ModelError> {
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
    if let Some(&d) = shape.iter().find(|&&d| d == 0) {
        return fail(format!("every extent must be positive, got {d}"));
    }
    if shape[0] > MAX_BATCH {
        return fail(format!(
            "the batch {} is over the limit of {MAX_BATCH}",
            shape[0]
        ));
    }
    if let Some(&side) = shape[2..].iter().find(|&&d| d > MAX_SIDE) {
        return fail(format!(
            "the image side {side} is over the limit of {MAX_SIDE}"
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

/// A network's layer that cannot be built for the input (a stride or window too large
/// for the feature map it meets) is reported against the spec entry that made it: the
/// stage (`layerK` is `stages[K-1]`), the stem or the max-pool, with the size of the
/// map entering it (a stride earlier on may be what shrank it). Modules keep the IR's
/// error, which names their layer already.
fn in_spec_terms(spec: &ModelSpec, shape: &[usize], graph: &Graph, error: IrError) -> ModelError {
    let (stem, maxpool, stages) = match spec {
        ModelSpec::ScNet(s) => (&s.stem, s.maxpool, &s.stages),
        ModelSpec::ResNet(s) => (&s.stem, s.maxpool, &s.stages),
        ModelSpec::ScConv(_) | ModelSpec::ScBottleneck(_) => return error.into(),
    };
    let IrError::Type { scope, .. } = &error else {
        return error.into();
    };
    let Some(module) = scope.trim_start_matches(" in ").split('.').next() else {
        return error.into();
    };
    let stage = |layer: &str| -> Option<(String, &Stage)> {
        let k: usize = layer.strip_prefix("layer")?.parse().ok()?;
        Some((format!("stages[{}]", k.checked_sub(1)?), stages.get(k - 1)?))
    };
    let (field, values) = match module {
        "conv1" | "bn1" => (
            "stem".to_string(),
            format!(
                "{:?} width {}, stride {}",
                stem.kind, stem.width, stem.stride
            ),
        ),
        "maxpool" if maxpool => ("maxpool".into(), "3x3, stride 2".into()),
        layer => match stage(layer) {
            Some((field, s)) => (
                field,
                format!(
                    "planes {}, blocks {}, stride {}, dilation {}",
                    s.planes, s.blocks, s.stride, s.dilation
                ),
            ),
            None => return error.into(),
        },
    };
    ModelError::DoesNotFit {
        field,
        values,
        shape: fmt_shape(shape),
        entering: map_entering(graph, module).unwrap_or_else(|| "?".into()),
        cause: Box::new(error),
    }
}

/// `HxW` of the first operand of the first node built in `module`: the feature map the
/// module was given.
fn map_entering(graph: &Graph, module: &str) -> Option<String> {
    let inside = |scope: &str| {
        scope
            .strip_prefix(module)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('.'))
    };
    // Its params come first and have no operands.
    let node = graph
        .nodes
        .iter()
        .find(|n| inside(&n.scope) && !n.inputs.is_empty())?;
    let shape = &graph.ty(node.inputs[0]).shape;
    match shape.as_slice() {
        [_, _, h, w] => Some(format!("{h}x{w}")),
        _ => None,
    }
}
