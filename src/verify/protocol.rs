//! The fixture protocol: everything a fixture directory stores, computed on any backend.
//!
//! One function runs a module or network through what the SCNet fixtures record (an
//! eval forward, a train-mode forward with every gradient and BN buffer, and for
//! networks two SGD steps) and returns the tensors keyed exactly as the fixture's
//! files are. `calib verify` compares those with stored files; `calib fixture` stores
//! what the f64 interpreter computes; the differential tester compares backends with
//! each other. One protocol keeps the three from drifting apart.

use crate::train::SgdState;
use anyhow::{Context, Result};
use calib_ir::{DType, Graph, Mode, Op, Precision};
use calib_models::{build, Model, ModelSpec};
use calib_passes::{grad, train_step, vjp, with_loss, Sgd, TrainConfig, LABELS, LOSS};
use calib_runtime::{Backend, Bindings, HostTensor, Outputs, TensorMap};
use std::collections::BTreeMap;

/// What a protocol run is given: a model, its state and a batch.
#[derive(Clone, Debug)]
pub struct Case {
    pub spec: ModelSpec,
    /// NCHW with the batch.
    pub input_shape: Vec<usize>,
    /// The full `state_dict` before anything ran.
    pub params: TensorMap,
    /// The eval-mode forward's input.
    pub eval_input: HostTensor,
    /// `input`, and `labels` (networks: mean cross-entropy) or `grad_output` (modules:
    /// the loss is `sum(output * grad_output)`).
    pub train: TensorMap,
    /// Two SGD steps on the training batch (networks only).
    pub sgd: Option<SgdSteps>,
}

/// The optimizer of the two SGD steps.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SgdSteps {
    pub sgd: Sgd,
    pub lr: f64,
}

/// Tensors by fixture file stem (`train_grads`), then by tensor name.
pub type Files = BTreeMap<String, TensorMap>;

/// Runs `case` on `backend` in f32. Each SGD step starts from the state the backend
/// itself produced, as a training run would.
pub fn run(case: &Case, backend: &dyn Backend) -> Result<Files> {
    run_at(case, backend, Precision::F32)
}

/// Runs `case` on `backend` under precision policy `precision`: every graph (the eval
/// forward, the gradient graph, the SGD step) goes through `passes::precision::apply`
/// once it is whole, so backward GEMMs are rounded as forward ones are (the SGD step
/// through `apply_step`, which carries its rounded weights as the trainer's does).
pub fn run_at(case: &Case, backend: &dyn Backend, precision: Precision) -> Result<Files> {
    let mut files = Files::new();
    let result = case.spec.output_name();
    let policy = |g: &Graph| calib_passes::precision::apply(g, precision);

    let eval_model = build(&case.spec, &case.input_shape, Mode::Eval, DType::F32)?;
    let out = backend.run(
        &policy(&eval_model.graph)?,
        &Bindings::new()
            .params(&case.params)
            .input("input", &case.eval_input),
    )?;
    let mut eval_io = TensorMap::new();
    eval_io.insert(result.into(), take(out, result)?);
    files.insert("eval_io".into(), eval_io);

    let train_model = build(&case.spec, &case.input_shape, Mode::Train, DType::F32)?;
    let labelled = case.train.contains_key(LABELS);
    let grads = GradientGraph::new(&train_model, labelled, precision)?;
    let out = grads.run(backend, &case.params, &case.train)?;
    let mut train_io = TensorMap::new();
    train_io.insert(result.into(), get(&out, result)?);
    if labelled {
        train_io.insert(LOSS.into(), get(&out, LOSS)?);
    }
    train_io.insert(
        "grad_input".into(),
        get(&out, &GradientGraph::name("input"))?,
    );
    files.insert("train_io".into(), train_io);
    files.insert("train_buffers_after".into(), buffers(&train_model, &out));
    files.insert("train_grads".into(), grads.parameter_gradients(&out));

    if let Some(steps) = &case.sgd {
        sgd_steps(
            case,
            steps,
            backend,
            &train_model,
            &grads,
            precision,
            &mut files,
        )?;
    }
    Ok(files)
}

/// Two SGD steps on the training batch, and the forward and gradients between them.
fn sgd_steps(
    case: &Case,
    steps: &SgdSteps,
    backend: &dyn Backend,
    model: &Model,
    grads: &GradientGraph,
    precision: Precision,
    files: &mut Files,
) -> Result<()> {
    let step = train_step(
        &model.graph,
        &TrainConfig {
            sgd: steps.sgd,
            label_smoothing: 0.0,
        },
    )?;
    let step = calib_passes::precision::apply_step(&step, precision)?;
    let lr = HostTensor::from_f32(Vec::<usize>::new(), vec![steps.lr as f32])?;
    let input = tensor(&case.train, "input")?;
    let labels = tensor(&case.train, LABELS)?;
    let mut state = SgdState::new(&step, case.params.clone());
    for k in 1..=2 {
        if k == 2 {
            let out = grads.run(backend, &state.state, &case.train)?;
            let mut io = TensorMap::new();
            for name in [case.spec.output_name(), LOSS] {
                io.insert(name.into(), get(&out, name)?);
            }
            files.insert("step2_io".into(), io);
            files.insert("train_grads_step2".into(), grads.parameter_gradients(&out));
        }
        let mut out = backend.run(&step.graph, &state.bindings(&step, input, labels, &lr))?;
        state.absorb(&step, &mut out);
        files.insert(format!("state_after_sgd_step{k}"), state.state.clone());
        if k == 1 {
            files.insert("sgd_momentum_after_step1".into(), state.momentum.clone());
        }
    }
    Ok(())
}

/// The BN buffers a train-mode forward updates, by `state_dict` name.
fn buffers(model: &Model, out: &Outputs) -> TensorMap {
    model
        .state
        .iter()
        .filter_map(|e| Some((e.name.clone(), out.get(&e.name)?.clone())))
        .collect()
}

/// The train-mode forward extended with the gradients of every parameter and of the
/// input: of the cross-entropy loss when the case has labels, else of
/// `sum(output * grad_output)`, i.e. seeded with the given `grad_output`.
struct GradientGraph {
    graph: Graph,
    /// Parameters with a gradient output, by `state_dict` name.
    params: Vec<String>,
}

impl GradientGraph {
    fn name(wrt: &str) -> String {
        format!("grad.{wrt}")
    }

    fn new(model: &Model, with_labels: bool, precision: Precision) -> Result<Self> {
        let (graph, of, seed) = if with_labels {
            let g = with_loss(&model.graph, 0.0)?;
            let loss = g.output(LOSS).context("loss graph has a loss")?;
            (g, loss, None)
        } else {
            let mut g = model.graph.clone();
            let ty = g.ty(model.output()).clone();
            let seed = g.push_source(
                Op::Input {
                    name: "grad_output".into(),
                },
                ty,
                "",
            )?;
            (g, model.output(), Some(seed))
        };
        let input = graph
            .inputs()
            .find(|(n, _)| *n == "input")
            .context("model has an input")?
            .1;
        let mut params = vec![];
        let mut wrt = vec![input];
        for (name, v) in graph.params() {
            if graph.ty(v).dtype.is_float() && graph.output(name).is_none() {
                params.push(name.to_string());
                wrt.push(v);
            }
        }
        let (mut graph, grads) = match seed {
            None => grad(&graph, of, &wrt)?,
            Some(seed) => vjp(&graph, of, seed, &wrt)?,
        };
        let names = std::iter::once("input").chain(params.iter().map(String::as_str));
        for (name, g) in names.zip(grads) {
            graph.add_output(Self::name(name), g)?;
        }
        if with_labels {
            // The fixtures store the scalar loss with shape [1].
            let loss = graph.output(LOSS).context("loss output")?;
            let v = graph.push(Op::Reshape { shape: vec![1] }, vec![loss], "")?;
            graph.outputs.retain(|o| o.name != LOSS);
            graph.add_output(LOSS, v)?;
        }
        let graph = calib_passes::precision::apply(&graph, precision)?;
        Ok(GradientGraph { graph, params })
    }

    fn run(&self, backend: &dyn Backend, state: &TensorMap, io: &TensorMap) -> Result<Outputs> {
        let mut b = Bindings::new()
            .params(state)
            .input("input", tensor(io, "input")?);
        for name in [LABELS, "grad_output"] {
            if let Some(t) = io.get(name) {
                b = b.input(name, t);
            }
        }
        Ok(backend.run(&self.graph, &b)?)
    }

    /// The gradient of every parameter, by `state_dict` name.
    fn parameter_gradients(&self, out: &Outputs) -> TensorMap {
        self.params
            .iter()
            .filter_map(|p| Some((p.clone(), out.get(&Self::name(p))?.clone())))
            .collect()
    }
}

fn tensor<'a>(map: &'a TensorMap, name: &str) -> Result<&'a HostTensor> {
    map.get(name)
        .with_context(|| format!("the fixture has no `{name}` tensor"))
}

fn get(out: &Outputs, name: &str) -> Result<HostTensor> {
    out.get(name)
        .cloned()
        .with_context(|| format!("the graph produced no output `{name}`"))
}

fn take(mut out: Outputs, name: &str) -> Result<HostTensor> {
    out.remove(name)
        .with_context(|| format!("the graph produced no output `{name}`"))
}
