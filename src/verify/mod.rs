//! `calib verify`: rebuild a fixture's module, run it, and compare every stored tensor
//! that calib can produce with the tolerances of the fixtures' README.

mod fused;
mod tolerance;

pub use fused::Fused;
pub use tolerance::Tolerance;

use crate::train::SgdState;
use anyhow::{bail, Context, Result};
use calib_ir::{DType, Graph, Mode, Op};
use calib_models::{build, load_spec_file, Model};
use calib_passes::{grad, train_step, vjp, with_loss, Sgd, TrainConfig, LABELS, LOSS};
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
        self.rows.iter().any(|r| r.status == Status::Pass)
            && !self.rows.iter().any(|r| r.status == Status::Fail)
    }

    pub fn count(&self, status: Status) -> usize {
        self.rows.iter().filter(|r| r.status == status).count()
    }
}

/// Verifies the fixture in `dir` on `backend`.
pub fn verify_fixture(dir: &Path, backend: &dyn Backend) -> Result<Report> {
    let file = load_spec_file(dir)?;
    let input_shape = file.input_shape_or_default();
    let spec = file.spec;
    let params = load(dir, "params")?;
    let mut checker = Checker {
        dir,
        rows: vec![],
        done: BTreeSet::new(),
    };
    let result = spec.output_name();

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
    let eval_io = load(dir, "eval_io")?;
    let out = backend.run(
        &eval_model.graph,
        &Bindings::new().params(&params).input(
            "input",
            tensor(&eval_io, "input").context("eval_io.safetensors")?,
        ),
    )?;
    checker.compare("eval_io", &eval_io, result, &out, result, Tolerance::OUTPUT)?;

    // One train-mode step: forward, BN statistics, loss (networks) and every gradient.
    let train_io = load(dir, "train_io")?;
    let train_model = build(&spec, &input_shape, Mode::Train, DType::F32)?;
    let grads = GradientGraph::new(&train_model, train_io.contains_key(LABELS))?;
    let out = grads.run(backend, &params, &train_io)?;
    checker.compare(
        "train_io",
        &train_io,
        result,
        &out,
        result,
        Tolerance::OUTPUT,
    )?;
    if train_io.contains_key(LABELS) {
        checker.compare("train_io", &train_io, LOSS, &out, LOSS, Tolerance::LOSS)?;
    }
    checker.compare(
        "train_io",
        &train_io,
        "grad_input",
        &out,
        &GradientGraph::name("input"),
        Tolerance::GRADIENT,
    )?;
    checker.compare_all("train_buffers_after", &out, "")?;
    checker.compare_all("train_grads", &out, "grad.")?;

    if dir.join("state_after_sgd_step1.safetensors").exists() {
        verify_sgd_steps(
            dir,
            backend,
            &train_model,
            &grads,
            params,
            &train_io,
            &mut checker,
        )?;
    }
    checker.list_unchecked()?;
    Ok(Report {
        fixture: dir.display().to_string(),
        backend: backend.name().to_string(),
        rows: checker.rows,
    })
}

/// Two SGD steps on the fixture's batch with the optimizer its `meta.json` states.
fn verify_sgd_steps(
    dir: &Path,
    backend: &dyn Backend,
    model: &Model,
    grads: &GradientGraph,
    state: TensorMap,
    io: &TensorMap,
    checker: &mut Checker,
) -> Result<()> {
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("meta.json"))?)?;
    let opt = &meta["optimizer"];
    let num = |key: &str| {
        opt[key]
            .as_f64()
            .with_context(|| format!("meta.json optimizer has no `{key}`"))
    };
    if opt["dampening"].as_f64().unwrap_or(0.0) != 0.0 {
        bail!("meta.json asks for SGD dampening, which calib does not implement");
    }
    let sgd = Sgd {
        momentum: num("momentum")?,
        weight_decay: num("weight_decay")?,
        nesterov: opt["nesterov"].as_bool().unwrap_or(false),
    };
    let step = train_step(
        &model.graph,
        &TrainConfig {
            sgd,
            label_smoothing: 0.0,
        },
    )?;
    let lr = HostTensor::from_f32(Vec::<usize>::new(), vec![num("lr")? as f32])?;
    let mut state = SgdState::new(&step, state);
    for k in 1..=2 {
        if k == 2 {
            let out = grads.run(backend, &state.state, io)?;
            checker.compare_all("step2_io", &out, "")?;
            checker.compare_all("train_grads_step2", &out, "grad.")?;
        }
        let b = state.bindings(&step, tensor(io, "input")?, tensor(io, LABELS)?, &lr);
        let mut out = backend.run(&step.graph, &b)?;
        checker.compare_all(&format!("state_after_sgd_step{k}"), &out, "")?;
        if k == 1 {
            checker.compare_all("sgd_momentum_after_step1", &out, "momentum.")?;
        }
        state.absorb(&step, &mut out);
    }
    Ok(())
}

/// The train-mode forward extended with the gradients of every parameter and of the
/// input: of the cross-entropy loss when the fixture has labels, else of
/// `sum(output * grad_output)`, i.e. seeded with the stored `grad_output`.
struct GradientGraph {
    graph: Graph,
}

impl GradientGraph {
    fn name(wrt: &str) -> String {
        format!("grad.{wrt}")
    }

    fn new(model: &Model, with_labels: bool) -> Result<Self> {
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
        let mut names = vec!["input".to_string()];
        let mut wrt = vec![
            graph
                .inputs()
                .find(|(n, _)| *n == "input")
                .context("model has an input")?
                .1,
        ];
        for (name, v) in graph.params() {
            if graph.ty(v).dtype.is_float() && graph.output(name).is_none() {
                names.push(name.to_string());
                wrt.push(v);
            }
        }
        let (mut graph, grads) = match seed {
            None => grad(&graph, of, &wrt)?,
            Some(seed) => vjp(&graph, of, seed, &wrt)?,
        };
        for (name, g) in names.iter().zip(grads) {
            graph.add_output(Self::name(name), g)?;
        }
        if with_labels {
            // The fixtures store the scalar loss with shape [1].
            let loss = graph.output(LOSS).context("loss output")?;
            let v = graph.push(Op::Reshape { shape: vec![1] }, vec![loss], "")?;
            graph.outputs.retain(|o| o.name != LOSS);
            graph.add_output(LOSS, v)?;
        }
        Ok(GradientGraph { graph })
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
}

fn tensor<'a>(map: &'a TensorMap, name: &str) -> Result<&'a HostTensor> {
    map.get(name)
        .with_context(|| format!("the fixture has no `{name}` tensor"))
}

fn load(dir: &Path, stem: &str) -> Result<TensorMap> {
    let path = dir.join(format!("{stem}.safetensors"));
    Ok(weights::load(&path)?)
}

/// The README's tolerance for a stored tensor, by file and name.
fn tolerance_for(file: &str, name: &str) -> Tolerance {
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
}

impl Checker<'_> {
    fn compare(
        &mut self,
        file: &str,
        reference: &TensorMap,
        ref_name: &str,
        outputs: &Outputs,
        out_name: &str,
        tol: Tolerance,
    ) -> Result<()> {
        let row_name = format!("{file}/{ref_name}");
        let Some(expected) = reference.get(ref_name) else {
            bail!(
                "{}/{file}.safetensors has no tensor `{ref_name}`",
                self.dir.display()
            )
        };
        let Some(got) = outputs.get(out_name) else {
            bail!("the graph produced no output `{out_name}`")
        };
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
        Ok(())
    }

    /// Compares every tensor of `file` with the output named `prefix + name`.
    fn compare_all(&mut self, file: &str, outputs: &Outputs, prefix: &str) -> Result<()> {
        let reference = load(self.dir, file)?;
        for name in reference.keys() {
            self.compare(
                file,
                &reference,
                name,
                outputs,
                &format!("{prefix}{name}"),
                tolerance_for(file, name),
            )?;
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
                if [
                    "eval_io/input",
                    "train_io/input",
                    "train_io/labels",
                    "train_io/grad_output",
                ]
                .contains(&row_name.as_str())
                    || self.done.contains(&row_name)
                {
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
