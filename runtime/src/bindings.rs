//! The tensors a graph runs on: inputs by `Op::Input` name, parameters by `Op::Param`
//! name. Bindings borrow, so a checkpoint is not copied for every run.

use crate::{HostTensor, TensorMap};
use std::collections::HashMap;

/// Tensors bound to a graph's inputs and parameters, built by chaining:
/// `Bindings::new().input("input", &x).params(&weights)`.
#[derive(Clone, Debug, Default)]
pub struct Bindings<'a> {
    inputs: HashMap<String, &'a HostTensor>,
    params: HashMap<String, &'a HostTensor>,
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

    pub fn get_input(&self, name: &str) -> Option<&'a HostTensor> {
        self.inputs.get(name).copied()
    }

    pub fn get_param(&self, name: &str) -> Option<&'a HostTensor> {
        self.params.get(name).copied()
    }
}
