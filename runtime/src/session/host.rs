//! A session on host tensors: each step runs the whole graph through
//! [`Backend::run`] with the kept state bound beside the batch. For the reference
//! interpreter the host is where it computes, so nothing is copied that a device
//! would keep. A staged batch is kept as host tensors until the step it is for.

use super::staging::StagedNames;
use super::{not_an_output, Carry, Session, Transfers};
use crate::{Backend, Bindings, HostTensor, Outputs, RuntimeError, TensorMap};
use calib_ir::{Graph, TensorType};
use std::collections::HashMap;

/// Whether a graph source is an input or a param, and its type.
#[derive(Clone, Debug)]
struct Source {
    input: bool,
    ty: TensorType,
}

/// The session every [`Backend`] has unless it keeps state on a device of its own.
pub struct HostSession<'a, B: Backend + ?Sized> {
    backend: &'a B,
    graph: Graph,
    carry: Carry,
    sources: HashMap<String, Source>,
    state: TensorMap,
    /// The next step's staged inputs and params, by name.
    staged: TensorMap,
    transfers: Transfers,
}

impl<'a, B: Backend + ?Sized> HostSession<'a, B> {
    /// A session of `graph` on `backend` for data-parallel rank `replica` (0 without a
    /// group); `carry` is checked against the graph, and the graph's memory against
    /// the machine ([`Backend::check_memory`]) for this replica and the ones before
    /// it, whose sessions share the host.
    pub fn new(
        backend: &'a B,
        graph: &Graph,
        carry: &Carry,
        replica: usize,
    ) -> Result<Self, RuntimeError> {
        carry.check(graph)?;
        // Before any state is loaded: it is part of what the sessions will hold.
        backend.check_memory(graph, replica + 1)?;
        let source = |input: bool| {
            move |(name, v): (&str, calib_ir::Value)| {
                let ty = graph.ty(v).clone();
                (name.to_string(), Source { input, ty })
            }
        };
        let sources = graph
            .inputs()
            .map(source(true))
            .chain(graph.params().map(source(false)))
            .collect();
        Ok(HostSession {
            backend,
            graph: graph.clone(),
            carry: carry.clone(),
            sources,
            state: TensorMap::new(),
            staged: TensorMap::new(),
            transfers: Transfers::default(),
        })
    }

    /// The bytes of the batch tensors the graph reads.
    fn batch_bytes(&self, batch: &Bindings) -> u64 {
        batch
            .bound_inputs()
            .filter(|(n, _)| self.sources.get(*n).is_some_and(|s| s.input))
            .chain(
                batch
                    .bound_params()
                    .filter(|(n, _)| self.sources.get(*n).is_some_and(|s| !s.input)),
            )
            .map(|(_, t)| bytes(t))
            .sum()
    }
}

fn bytes(t: &HostTensor) -> u64 {
    t.ty().size_bytes() as u64
}

impl<B: Backend + ?Sized> Session for HostSession<'_, B> {
    fn load(&mut self, state: &TensorMap) -> Result<(), RuntimeError> {
        for (name, tensor) in state {
            let Some(source) = self.sources.get(name) else {
                continue;
            };
            if tensor.ty() != source.ty {
                return Err(RuntimeError::BindingType {
                    kind: if source.input { "input" } else { "param" },
                    name: name.clone(),
                    expected: source.ty.clone(),
                    found: tensor.ty(),
                });
            }
            self.transfers.uploaded_bytes += bytes(tensor);
            self.state.insert(name.clone(), tensor.clone());
        }
        Ok(())
    }

    fn step(&mut self, batch: &Bindings, fetch: &[&str]) -> Result<Outputs, RuntimeError> {
        let staged = std::mem::take(&mut self.staged);
        self.run_step(batch, fetch, staged)
    }

    fn step_and_stage(
        &mut self,
        batch: &Bindings,
        fetch: &[&str],
        next: &Bindings,
    ) -> Result<Outputs, RuntimeError> {
        let staged = std::mem::take(&mut self.staged);
        let outputs = self.run_step(batch, fetch, staged)?;
        // Kept (copied: `next` borrows the caller's tensors) until the next step.
        self.staged = next
            .bound_inputs()
            .chain(next.bound_params())
            .map(|(n, t)| (n.to_string(), t.clone()))
            .collect();
        self.transfers.uploaded_bytes += self.batch_bytes(next);
        Ok(outputs)
    }

    fn read(&mut self, names: &[&str]) -> Result<TensorMap, RuntimeError> {
        names
            .iter()
            .map(|&name| {
                let tensor = self.state.get(name).ok_or_else(|| never_loaded(name))?;
                self.transfers.downloaded_bytes += bytes(tensor);
                Ok((name.to_string(), tensor.clone()))
            })
            .collect()
    }

    fn transfers(&self) -> Transfers {
        self.transfers
    }
}

impl<B: Backend + ?Sized> HostSession<'_, B> {
    /// One step on `batch` and the tensors `staged` for it (taken out of the session:
    /// they serve this step only, whether it succeeds or not).
    fn run_step(
        &mut self,
        batch: &Bindings,
        fetch: &[&str],
        staged: TensorMap,
    ) -> Result<Outputs, RuntimeError> {
        if let Some(name) = fetch.iter().find(|n| self.graph.output(n).is_none()) {
            return Err(not_an_output(name));
        }
        let staged_names = StagedNames::of(&self.bind(&staged, Bindings::new()));
        staged_names.check_not_bound_again(batch)?;
        let mut bindings = self.bind(&self.state, Bindings::new());
        bindings = self.bind(&staged, bindings);
        for (name, tensor) in batch.bound_inputs() {
            bindings = bindings.input(name, tensor);
        }
        for (name, tensor) in batch.bound_params() {
            bindings = bindings.param(name, tensor);
        }
        if let Some(group) = batch.get_collective() {
            bindings = bindings.collective(group);
        }
        let mut outputs = self.backend.run(&self.graph, &bindings)?;
        self.transfers.uploaded_bytes += self.batch_bytes(batch);

        // Outputs move out, except where another fetch or carry still needs them.
        let mut uses: HashMap<String, usize> = HashMap::new();
        for name in fetch
            .iter()
            .copied()
            .chain(self.carry.iter().map(|c| c.output.as_str()))
        {
            *uses.entry(name.to_string()).or_default() += 1;
        }
        let mut take = |name: &str| -> Result<HostTensor, RuntimeError> {
            let left = uses.get_mut(name).expect("counted above");
            *left -= 1;
            match *left {
                0 => outputs.remove(name),
                _ => outputs.get(name).cloned(),
            }
            .ok_or_else(|| not_an_output(name))
        };
        let mut fetched = Outputs::new();
        for &name in fetch {
            let tensor = take(name)?;
            self.transfers.downloaded_bytes += bytes(&tensor);
            fetched.insert(name.to_string(), tensor);
        }
        // A value the batch bound (or staged) served this step only.
        for (name, _) in batch.bound_inputs().chain(batch.bound_params()) {
            self.state.remove(name);
        }
        for name in staged_names.iter() {
            self.state.remove(name);
        }
        for c in self.carry.iter() {
            let value = take(&c.output)?;
            self.state.insert(c.into.clone(), value);
        }
        Ok(fetched)
    }

    /// `bindings` with `values` bound as the graph's inputs or params by name (names
    /// the graph lacks are bound as inputs, for `Backend::run` to judge as it would a
    /// batch's).
    fn bind<'t>(&self, values: &'t TensorMap, mut bindings: Bindings<'t>) -> Bindings<'t> {
        for (name, tensor) in values {
            bindings = match self.sources.get(name).is_none_or(|s| s.input) {
                true => bindings.input(name.as_str(), tensor),
                false => bindings.param(name.as_str(), tensor),
            };
        }
        bindings
    }
}

pub(super) fn never_loaded(name: &str) -> RuntimeError {
    RuntimeError::Session(format!(
        "`{name}` holds no value: it was never loaded, nor carried by a step"
    ))
}
