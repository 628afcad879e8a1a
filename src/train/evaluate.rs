//! Counting a model's right answers: on a training batch's logits, and over the test
//! set with eval-mode graphs.

use crate::data::Dataset;
use anyhow::{Context, Result};
use calib_ir::{DType, Graph, Mode, Precision};
use calib_models::{build, ModelSpec};
use calib_passes::{with_loss, LOSS};
use calib_runtime::{Backend, Bindings, HostTensor, Outputs, TensorMap};
use std::collections::HashMap;

/// The first value of output `name` (a scalar's only one).
pub fn scalar(outputs: &Outputs, name: &str) -> Result<f64> {
    let t = outputs
        .get(name)
        .with_context(|| format!("graph has no output `{name}`"))?;
    Ok(t.to_f64_vec()[0])
}

/// How many rows of `logits` have their maximum at the label.
pub fn correct(logits: &HostTensor, labels: &[i64]) -> usize {
    let v = logits.to_f32_vec();
    let classes = v.len() / labels.len().max(1);
    v.chunks(classes)
        .zip(labels)
        .filter(|(row, &l)| {
            let best = row
                .iter()
                .enumerate()
                .fold(0, |b, (i, &x)| if x > row[b] { i } else { b });
            best as i64 == l
        })
        .count()
}

/// How many rows of `logits` rank the label among their `k` largest values. Ties are
/// broken by position, as [`correct`] does: an earlier equal value ranks higher, so
/// `k = 1` counts exactly what [`correct`] counts.
pub fn correct_top_k(logits: &HostTensor, labels: &[i64], k: usize) -> usize {
    let v = logits.to_f32_vec();
    let classes = v.len() / labels.len().max(1);
    v.chunks(classes)
        .zip(labels)
        .filter(|(row, &l)| {
            let l = l as usize;
            let Some(&x) = row.get(l) else { return false };
            let ahead = row
                .iter()
                .enumerate()
                .filter(|&(j, &y)| y > x || (y == x && j < l))
                .count();
            ahead < k
        })
        .count()
}

/// What an evaluation over a whole set found.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Evaluation {
    /// Mean cross-entropy (with the label smoothing of the graph: none).
    pub loss: f64,
    /// Top-1 accuracy.
    pub accuracy: f64,
    /// Top-`k` accuracy, `k` = min(5, classes).
    pub top_k: f64,
    pub k: usize,
    pub images: usize,
}

/// Test-set evaluation with eval-mode graphs, one per batch size used.
pub struct Evaluator<'a> {
    spec: &'a ModelSpec,
    set: &'a dyn Dataset,
    batch: usize,
    graphs: HashMap<usize, Graph>,
    /// The precision policy the eval graphs run under (the training run's).
    precision: Precision,
}

impl<'a> Evaluator<'a> {
    pub fn new(spec: &'a ModelSpec, set: &'a dyn Dataset, batch: usize) -> Self {
        Evaluator {
            spec,
            set,
            batch: batch.max(1),
            graphs: HashMap::new(),
            precision: Precision::F32,
        }
    }

    /// Evaluates under precision policy `precision` (a run evaluates as it trains).
    pub fn with_precision(mut self, precision: Precision) -> Self {
        self.precision = precision;
        self
    }

    /// Mean loss and accuracy over the whole set.
    pub fn run(&mut self, backend: &dyn Backend, state: &TensorMap) -> Result<(f64, f64)> {
        let e = self.evaluate(backend, state)?;
        Ok((e.loss, e.accuracy))
    }

    /// Mean loss, top-1 and top-k accuracy (k = min(5, classes)) over the whole set.
    pub fn evaluate(&mut self, backend: &dyn Backend, state: &TensorMap) -> Result<Evaluation> {
        let k = self.set.classes().clamp(1, 5);
        let (mut loss, mut right, mut right_k) = (0.0, 0usize, 0usize);
        let n = self.set.len();
        let [c, h, w] = self.set.image_shape();
        for start in (0..n).step_by(self.batch) {
            let indices: Vec<usize> = (start..(start + self.batch).min(n)).collect();
            let b = indices.len();
            if !self.graphs.contains_key(&b) {
                let shape = [b, c, h, w];
                let model = build(self.spec, &shape, Mode::Eval, DType::F32)?;
                let graph = with_loss(&model.graph, 0.0)?;
                let graph = calib_passes::precision::apply(&graph, self.precision)?;
                self.graphs.insert(b, graph);
            }
            let batch = self.set.batch(&indices, None)?;
            let (pixels, labels) = (batch.pixels, batch.labels);
            let x = HostTensor::from_f32(vec![b, c, h, w], pixels)?;
            let y = HostTensor::from_i64(vec![b], labels.clone())?;
            let bindings = Bindings::new()
                .params(state)
                .input("input", &x)
                .input("labels", &y);
            let out = backend.run(&self.graphs[&b], &bindings)?;
            loss += scalar(&out, LOSS)? * b as f64;
            let logits = out.get("logits").context("eval graph has no logits")?;
            right += correct(logits, &labels);
            right_k += correct_top_k(logits, &labels, k);
        }
        let share = |count: usize| count as f64 / n.max(1) as f64;
        Ok(Evaluation {
            loss: loss / n.max(1) as f64,
            accuracy: share(right),
            top_k: share(right_k),
            k,
            images: n,
        })
    }
}
