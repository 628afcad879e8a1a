//! `calib verify`: rebuild a fixture's module, run it, and compare every stored tensor
//! that calib can produce with the tolerances of the fixtures' README.

mod tolerance;

pub use tolerance::Tolerance;

use anyhow::{bail, Context, Result};
use calib_ir::{DType, GraphBuilder, Mode};
use calib_models::{build, load_spec_file, Model, ModelSpec};
use calib_runtime::{check_state, weights, Backend, Bindings, HostTensor, Outputs, TensorMap};
use serde::Serialize;
use std::collections::BTreeSet;
use std::path::Path;

/// The verdict on one stored tensor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Pass,
    Fail,
    /// Produced by a stage calib does not have yet; never counted as passed.
    NotChecked,
}

/// One line of the verification table: `file/tensor`.
#[derive(Clone, Debug, Serialize)]
pub struct Row {
    pub name: String,
    pub max_abs_err: Option<f64>,
    pub tolerance: Option<f64>,
    pub status: Status,
}

/// All rows for one fixture directory.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub fixture: String,
    pub backend: String,
    pub rows: Vec<Row>,
}

impl Report {
    /// True when no checked row failed and at least one row was checked.
    pub fn passed(&self) -> bool {
        self.rows.iter().any(|r| r.status == Status::Pass) && !self.rows.iter().any(|r| r.status == Status::Fail)
    }

    pub fn count(&self, status: Status) -> usize {
        self.rows.iter().filter(|r| r.status == status).count()
    }
}

/// Names the model's primary result in the fixture files: modules store `output`,
/// networks `logits`.
fn result_name(spec: &ModelSpec) -> &'static str {
    spec.output_name()
}

/// Verifies the fixture in `dir` on `backend`.
pub fn verify_fixture(dir: &Path, backend: &dyn Backend) -> Result<Report> {
    let file = load_spec_file(dir)?;
    let input_shape = file.input_shape_or_default();
    let spec = file.spec;
    let params = load(dir, "params")?;
    let mut checker = Checker { dir, rows: vec![], done: BTreeSet::new() };

    let eval_model = build(&spec, &input_shape, Mode::Eval, DType::F32)?;
    check_state(&model_state(&eval_model), &params)
        .with_context(|| format!("{}/params.safetensors does not match the model", dir.display()))?;

    let eval_io = load(dir, "eval_io")?;
    let out = run(backend, &eval_model, &params, &eval_io, None)?;
    checker.compare("eval_io", &eval_io, result_name(&spec), &out, result_name(&spec), Tolerance::OUTPUT)?;

    let train_io = load(dir, "train_io")?;
    let mut train_model = build(&spec, &input_shape, Mode::Train, DType::F32)?;
    let labels = train_io.get("labels");
    if labels.is_some() {
        train_model = with_loss(train_model)?;
    }
    let out = run(backend, &train_model, &params, &train_io, labels)?;
    checker.compare("train_io", &train_io, result_name(&spec), &out, result_name(&spec), Tolerance::OUTPUT)?;
    if labels.is_some() {
        checker.compare("train_io", &train_io, "loss", &out, "loss", Tolerance::LOSS)?;
    }
    let buffers = load(dir, "train_buffers_after")?;
    for (name, _) in &buffers {
        let tol = if name.ends_with("num_batches_tracked") { Tolerance::Exact } else { Tolerance::RUNNING_STAT };
        checker.compare("train_buffers_after", &buffers, name, &out, name, tol)?;
    }
    checker.list_unchecked()?;
    Ok(Report { fixture: dir.display().to_string(), backend: backend.name().to_string(), rows: checker.rows })
}

fn model_state(model: &Model) -> Vec<(String, calib_ir::TensorType)> {
    model.state.iter().map(|e| (e.name.clone(), e.ty.clone())).collect()
}

fn load(dir: &Path, stem: &str) -> Result<TensorMap> {
    let path = dir.join(format!("{stem}.safetensors"));
    Ok(weights::load(&path)?)
}

/// Appends the mean cross-entropy against the `labels` input as output `loss`, stored
/// with shape [1] as the fixtures do.
fn with_loss(model: Model) -> Result<Model> {
    let logits = model.output();
    let batch = model.graph.ty(logits).shape[0];
    let mut g = GraphBuilder::extend(model.graph, Mode::Train, DType::F32);
    let labels = g.input("labels", DType::I64, vec![batch])?;
    let loss = g.softmax_cross_entropy(logits, labels, 0.0)?;
    let loss = g.reshape(loss, vec![1])?;
    g.output("loss", loss)?;
    Ok(Model { graph: g.finish(), state: model.state })
}

fn run(backend: &dyn Backend, model: &Model, params: &TensorMap, io: &TensorMap, labels: Option<&HostTensor>) -> Result<Outputs> {
    let Some(input) = io.get("input") else { bail!("the fixture's io file has no `input` tensor") };
    let mut bindings = Bindings::new().params(params).input("input", input);
    if let Some(labels) = labels {
        bindings = bindings.input("labels", labels);
    }
    Ok(backend.run(&model.graph, &bindings)?)
}

struct Checker<'a> {
    dir: &'a Path,
    rows: Vec<Row>,
    /// `file/tensor` names already compared.
    done: BTreeSet<String>,
}

impl Checker<'_> {
    fn compare(&mut self, file: &str, reference: &TensorMap, ref_name: &str, outputs: &Outputs, out_name: &str, tol: Tolerance) -> Result<()> {
        let row_name = format!("{file}/{ref_name}");
        let Some(expected) = reference.get(ref_name) else { bail!("{}/{file}.safetensors has no tensor `{ref_name}`", self.dir.display()) };
        let Some(got) = outputs.get(out_name) else { bail!("the graph produced no output `{out_name}`") };
        let (err, bound, pass) = if expected.shape() != got.shape() {
            (f64::INFINITY, tol.bound(&expected.to_f64_vec()), false)
        } else {
            tol.compare(&expected.to_f64_vec(), &got.to_f64_vec())
        };
        self.rows.push(Row { name: row_name.clone(), max_abs_err: Some(err), tolerance: Some(bound), status: if pass { Status::Pass } else { Status::Fail } });
        self.done.insert(row_name);
        Ok(())
    }

    /// Adds a `not checked` row for every stored tensor that was not compared.
    fn list_unchecked(&mut self) -> Result<()> {
        let mut files: Vec<_> = std::fs::read_dir(self.dir)?
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "safetensors"))
            .collect();
        files.sort();
        for path in files {
            let stem = path.file_stem().unwrap_or_default().to_string_lossy().to_string();
            if stem == "params" {
                continue;
            }
            let tensors = weights::load(&path)?;
            for name in tensors.keys() {
                let row_name = format!("{stem}/{name}");
                if ["eval_io/input", "train_io/input", "train_io/labels", "train_io/grad_output"].contains(&row_name.as_str()) || self.done.contains(&row_name) {
                    continue;
                }
                self.rows.push(Row { name: row_name, max_abs_err: None, tolerance: None, status: Status::NotChecked });
            }
        }
        Ok(())
    }
}
