//! The tensors a graph runs on: inputs by `Op::Input` name, parameters by `Op::Param`
//! name. Bindings borrow, so a checkpoint is not copied for every run. A replica of a
//! data-parallel group also binds its [`Collective`] here, which keeps the `Backend`
//! trait to one `run`.

use crate::{Collective, HostTensor, TensorMap};
use std::collections::HashMap;

/// Tensors bound to a graph's inputs and parameters, built by chaining:
/// `Bindings::new().input("input", &x).params(&weights)`.
#[derive(Clone, Debug, Default)]
pub struct Bindings<'a> {
    inputs: HashMap<String, &'a HostTensor>,
    params: HashMap<String, &'a HostTensor>,
    collective: Option<&'a dyn Collective>,
}

impl<'a> Bindings<'a> {
    pub fn new() -> Self {
        Self::default()
    }

    /// Binds the input named `name` (replacing an earlier binding).
    pub fn input(mut self, name: impl Into<String>, tensor: &'a HostTensor) -> Self {
        self.inputs.insert(name.into(), tensor);
        self
    }

    /// Binds the parameter named `name` (replacing an earlier binding).
    pub fn param(mut self, name: impl Into<String>, tensor: &'a HostTensor) -> Self {
        self.params.insert(name.into(), tensor);
        self
    }

    /// Binds every tensor of a checkpoint as a parameter; names the graph does not use
    /// are ignored.
    pub fn params(mut self, tensors: &'a TensorMap) -> Self {
        self.params
            .extend(tensors.iter().map(|(n, t)| (n.clone(), t)));
        self
    }

    /// Binds the replica's handle on its data-parallel group, through which the graph's
    /// `all_reduce` nodes run. Without one, a graph may all-reduce only across a group
    /// of one replica (the identity).
    pub fn collective(mut self, group: &'a dyn Collective) -> Self {
        self.collective = Some(group);
        self
    }

    pub fn get_input(&self, name: &str) -> Option<&'a HostTensor> {
        self.inputs.get(name).copied()
    }

    pub fn get_param(&self, name: &str) -> Option<&'a HostTensor> {
        self.params.get(name).copied()
    }

    pub fn get_collective(&self) -> Option<&'a dyn Collective> {
        self.collective
    }

    /// Every bound input, by name.
    pub fn bound_inputs(&self) -> impl Iterator<Item = (&str, &'a HostTensor)> {
        self.inputs.iter().map(|(n, &t)| (n.as_str(), t))
    }

    /// Every bound parameter, by name.
    pub fn bound_params(&self) -> impl Iterator<Item = (&str, &'a HostTensor)> {
        self.params.iter().map(|(n, &t)| (n.as_str(), t))
    }
}
