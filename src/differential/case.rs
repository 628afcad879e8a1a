//! A protocol case for a drawn shape: state initialized as the fixtures' generator does
//! (so that every BN parameter and running statistic matters), a random batch, and for
//! networks the fixtures' SGD.

use super::specs::Shape;
use crate::data::rng::Rng;
use crate::verify::{Case, SgdSteps};
use anyhow::{bail, Result};
use calib_ir::{DType, Mode, Op};
use calib_models::{build, StateEntry};
use calib_passes::{Sgd, LABELS};
use calib_runtime::{HostTensor, TensorMap};

/// The fixtures' learning rate; with their initialization a second step is where
/// momentum first matters and where statistics drift from their first-step values.
const LR: f64 = 0.1;

/// The case for `shape`, drawn from `seed`. Refuses shapes whose BatchNorm sees a
/// single value per channel (PyTorch refuses those too: the variance is undefined).
pub fn case(shape: &Shape, seed: u64) -> Result<Case> {
    let model = build(&shape.spec, &shape.input, Mode::Train, DType::F32)?;
    if let Some(count) = smallest_batch_norm(&model.graph) {
        if count < 2 {
            bail!("a BatchNorm of this shape sees {count} value per channel");
        }
    }
    let mut rng = Rng::new(seed);
    let params = init(&model.state, &mut rng);
    let n: usize = shape.input.iter().product();
    let input = HostTensor::from_f32(
        shape.input.clone(),
        (0..n).map(|_| rng.normal() as f32).collect(),
    )?;
    let mut train = TensorMap::new();
    let network = shape.spec.output_name() == "logits";
    if network {
        let classes = model.graph.ty(model.output()).shape[1] as u64;
        let labels = (0..shape.input[0])
            .map(|_| rng.below(classes) as i64)
            .collect();
        train.insert(
            LABELS.into(),
            HostTensor::from_i64(vec![shape.input[0]], labels)?,
        );
    } else {
        let out = model.graph.ty(model.output()).clone();
        let g = (0..out.numel()).map(|_| rng.normal() as f32).collect();
        train.insert("grad_output".into(), HostTensor::from_f32(out.shape, g)?);
    }
    train.insert("input".into(), input.clone());
    Ok(Case {
        spec: shape.spec.clone(),
        input_shape: shape.input.clone(),
        params,
        eval_input: input,
        train,
        sgd: network.then_some(SgdSteps {
            sgd: Sgd::default(),
            lr: LR,
        }),
    })
}

/// The fewest values any train-mode BatchNorm averages per channel (its mean is the
/// only reduction over N, H and W).
fn smallest_batch_norm(graph: &calib_ir::Graph) -> Option<usize> {
    graph
        .nodes
        .iter()
        .filter_map(|node| match &node.op {
            Op::ReduceMean { axes, .. } if axes[..] == [0, 2, 3] => {
                let x = &graph.ty(node.inputs[0]).shape;
                Some(axes.iter().map(|&a| x[a]).product())
            }
            _ => None,
        })
        .min()
}

/// The fixtures' initialization (`shared/fixtures/README.md`): convolutions
/// kaiming-normal (fan_out, ReLU gain); BN weight U(0.5, 1.5), bias N(0, 0.1²), running
/// mean U(-0.5, 0.5), running variance U(0.5, 2); linear weight N(0, 0.1²), bias
/// U(-0.1, 0.1).
fn init(state: &[StateEntry], rng: &mut Rng) -> TensorMap {
    let is_bn = |module: &str| {
        state
            .iter()
            .any(|e| e.name == format!("{module}.running_mean"))
    };
    let mut out = TensorMap::new();
    for e in state {
        let (module, leaf) = e.name.rsplit_once('.').unwrap_or(("", &e.name));
        let shape = e.ty.shape.clone();
        let n = e.ty.numel();
        let values = match (leaf, shape.len(), is_bn(module)) {
            ("num_batches_tracked", ..) => {
                let t = HostTensor::from_i64(shape, vec![0; n]).expect("shape and data agree");
                out.insert(e.name.clone(), t);
                continue;
            }
            ("running_mean", ..) => uniform(rng, n, -0.5, 0.5),
            ("running_var", ..) => uniform(rng, n, 0.5, 2.0),
            ("weight", 1, true) => uniform(rng, n, 0.5, 1.5),
            ("bias", 1, true) => (0..n).map(|_| 0.1 * rng.normal()).collect(),
            ("weight", 4, _) => {
                let std = (2.0 / (shape[0] * shape[2] * shape[3]) as f64).sqrt();
                (0..n).map(|_| std * rng.normal()).collect()
            }
            ("weight", 2, _) => (0..n).map(|_| 0.1 * rng.normal()).collect(),
            ("bias", _, _) => uniform(rng, n, -0.1, 0.1),
            _ => vec![0.0; n],
        };
        let values = values.into_iter().map(|v| v as f32).collect();
        let t = HostTensor::from_f32(shape, values).expect("shape and data agree");
        out.insert(e.name.clone(), t);
    }
    out
}

fn uniform(rng: &mut Rng, n: usize, lo: f64, hi: f64) -> Vec<f64> {
    (0..n).map(|_| lo + (hi - lo) * rng.unit_f64()).collect()
}
