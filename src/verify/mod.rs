//! `calib verify`: rebuild a fixture's module, run it, and compare every stored tensor
//! that calib can produce with the tolerances of the fixtures' README.

mod fused;
pub mod precision;
pub mod protocol;
pub(crate) mod tolerance;
pub mod write;

pub use fused::Fused;
pub use protocol::{Case, SgdSteps};
pub use tolerance::Tolerance;

use anyhow::{bail, Context, Result};
use calib_ir::{DType, Mode, Precision};
use calib_models::{build, load_spec_file};
use calib_passes::{Sgd, LABELS, LOSS};
use calib_runtime::{check_state, weights, Backend, TensorMap};
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
    /// The precision policy the fixture ran under (its tolerances follow from it).
    pub precision: Precision,
    /// The longest chain of GEMMs in the module's forward pass, which the tolerances of
    /// a reduced precision grow with (`precision.rs`).
    pub gemm_depth: usize,
    /// ReLU and max-pool layers, whose decisions rounding may flip (`precision.rs`).
    pub decision_layers: usize,
    pub rows: Vec<Row>,
}

impl Report {
    /// True when no checked row failed and at least one row was checked.
    pub fn passed(&self) -> bool {
        self.rows.iter().any(|r| r.status == Status::Pass)
            && !self.rows.iter().any(|r| r.status == Status::Fail)
    }

    pub fn count(&self, status: Status) -> usize {
        self.rows.iter().filter(|r| r.status == status).count()
    }
}

/// Verifies the fixture in `dir` on `backend`.
pub fn verify_fixture(dir: &Path, backend: &dyn Backend) -> Result<Report> {
    verify_fixture_at(dir, backend, Precision::F32)
}

/// Verifies the fixture in `dir` on `backend` under precision policy `precision`, with
/// the tolerances derived for it (`docs/precision.md`; the README's for f32).
pub fn verify_fixture_at(
    dir: &Path,
    backend: &dyn Backend,
    precision: Precision,
) -> Result<Report> {
    let case = load_case(dir)?;
    let files = protocol::run_at(&case, backend, precision)?;
    let eval = build(&case.spec, &case.input_shape, Mode::Eval, DType::F32)?;
    let shape = precision::Shape {
        precision,
        depth: precision::gemm_depth(&eval.graph),
        decisions: precision::decision_layers(&eval.graph),
    };
    let mut checker = Checker {
        dir,
        rows: vec![],
        done: BTreeSet::new(),
        tolerance: &|file, name, norm| precision::tolerance_at(file, name, shape, norm),
    };
    for (file, produced) in &files {
        if dir.join(format!("{file}.safetensors")).exists() {
            checker.compare_file(file, produced)?;
        }
    }
    checker.list_unchecked()?;
    Ok(Report {
        fixture: dir.display().to_string(),
        backend: backend.name().to_string(),
        precision,
        gemm_depth: shape.depth,
        decision_layers: shape.decisions,
        rows: checker.rows,
    })
}

/// The case a fixture directory records: its module, initial state and batch, and
/// the optimizer its `meta.json` states when it has SGD steps.
pub fn load_case(dir: &Path) -> Result<Case> {
    let file = load_spec_file(dir)?;
    let input_shape = file.input_shape_or_default();
    let spec = file.spec;
    let params = load(dir, "params")?;
    let eval_model = build(&spec, &input_shape, Mode::Eval, DType::F32)?;
    let expected: Vec<_> = eval_model
        .state
        .iter()
        .map(|e| (e.name.clone(), e.ty.clone()))
        .collect();
    check_state(&expected, &params).with_context(|| {
        format!(
            "{}/params.safetensors does not match the model",
            dir.display()
        )
    })?;
    let eval_input = load(dir, "eval_io")?
        .remove("input")
        .with_context(|| format!("{}/eval_io.safetensors has no `input`", dir.display()))?;
    let train: TensorMap = load(dir, "train_io")?
        .into_iter()
        .filter(|(n, _)| ["input", LABELS, "grad_output"].contains(&n.as_str()))
        .collect();
    let sgd = if dir.join("state_after_sgd_step1.safetensors").exists() {
        Some(optimizer(dir)?)
    } else {
        None
    };
    Ok(Case {
        spec,
        input_shape,
        params,
        eval_input,
        train,
        sgd,
    })
}

/// The SGD of the fixture's `meta.json`.
fn optimizer(dir: &Path) -> Result<SgdSteps> {
    let path = dir.join("meta.json");
    let meta: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path)?)
        .with_context(|| format!("{} is not JSON", path.display()))?;
    let opt = &meta["optimizer"];
    let num = |key: &str| {
        opt[key]
            .as_f64()
            .with_context(|| format!("{}: `optimizer` has no number `{key}`", path.display()))
    };
    if opt["dampening"].as_f64().unwrap_or(0.0) != 0.0 {
        bail!(
            "{} asks for SGD dampening, which calib does not implement",
            path.display()
        );
    }
    Ok(SgdSteps {
        sgd: Sgd {
            momentum: num("momentum")?,
            weight_decay: num("weight_decay")?,
            nesterov: opt["nesterov"].as_bool().unwrap_or(false),
        },
        lr: num("lr")?,
    })
}

fn load(dir: &Path, stem: &str) -> Result<TensorMap> {
    let path = dir.join(format!("{stem}.safetensors"));
    Ok(weights::load(&path)?)
}

/// Stored tensors that are inputs of the protocol, not results.
const INPUTS: [&str; 4] = [
    "eval_io/input",
    "train_io/input",
    "train_io/labels",
    "train_io/grad_output",
];

/// The README's tolerance for a stored tensor, by file and name.
pub fn tolerance_for(file: &str, name: &str) -> Tolerance {
    if name.ends_with("num_batches_tracked") {
        Tolerance::Exact
    } else if name == LOSS {
        Tolerance::LOSS
    } else if file.contains("grads") || name == "grad_input" {
        Tolerance::GRADIENT
    } else if file.ends_with("_io") {
        Tolerance::OUTPUT
    } else if file.starts_with("train_buffers") {
        Tolerance::RUNNING_STAT
    } else {
        Tolerance::SGD_STATE
    }
}

struct Checker<'a> {
    dir: &'a Path,
    rows: Vec<Row>,
    /// `file/tensor` names already compared.
    done: BTreeSet<String>,
    /// The tolerance of `file`, `tensor`, given the norm of the file's float tensors.
    tolerance: &'a dyn Fn(&str, &str, f64) -> Tolerance,
}

impl Checker<'_> {
    /// Compares every tensor stored in `file` with the one the protocol produced.
    fn compare_file(&mut self, file: &str, produced: &TensorMap) -> Result<()> {
        let stored = load(self.dir, file)?;
        let file_norm = tolerance::norm(
            stored
                .values()
                .filter(|t| t.dtype().is_float())
                .flat_map(|t| t.to_f64_vec()),
        );
        for (name, expected) in stored {
            let row_name = format!("{file}/{name}");
            if INPUTS.contains(&row_name.as_str()) {
                continue;
            }
            let Some(got) = produced.get(&name) else {
                bail!("calib computed no `{name}` for {file}.safetensors")
            };
            let tol = (self.tolerance)(file, &name, file_norm);
            let (err, bound, pass) = if expected.shape() != got.shape() {
                (f64::INFINITY, tol.bound(&expected.to_f64_vec()), false)
            } else {
                tol.compare(&expected.to_f64_vec(), &got.to_f64_vec())
            };
            self.rows.push(Row {
                name: row_name.clone(),
                max_abs_err: Some(err),
                tolerance: Some(bound),
                status: if pass { Status::Pass } else { Status::Fail },
            });
            self.done.insert(row_name);
        }
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
            let stem = path
                .file_stem()
                .unwrap_or_default()
                .to_string_lossy()
                .to_string();
            if stem == "params" {
                continue;
            }
            let tensors = weights::load(&path)?;
            for name in tensors.keys() {
                let row_name = format!("{stem}/{name}");
                if INPUTS.contains(&row_name.as_str()) || self.done.contains(&row_name) {
                    continue;
                }
                self.rows.push(Row {
                    name: row_name,
                    max_abs_err: None,
                    tolerance: None,
                    status: Status::NotChecked,
                });
            }
        }
        Ok(())
    }
}
