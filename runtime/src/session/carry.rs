//! Which outputs of a step become which inputs or params of the next.

use crate::RuntimeError;
use calib_ir::{Graph, TensorType};
use std::collections::HashSet;

/// Output `output` of one step is input or param `into` of the next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Carried {
    pub output: String,
    pub into: String,
}

/// The outputs a session moves into inputs and params after every step.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Carry {
    carried: Vec<Carried>,
}

impl Carry {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds: output `output` becomes `into` for the next step.
    pub fn with(mut self, output: impl Into<String>, into: impl Into<String>) -> Self {
        self.carried.push(Carried {
            output: output.into(),
            into: into.into(),
        });
        self
    }

    pub fn iter(&self) -> impl Iterator<Item = &Carried> {
        self.carried.iter()
    }

    pub fn len(&self) -> usize {
        self.carried.len()
    }

    pub fn is_empty(&self) -> bool {
        self.carried.is_empty()
    }

    /// Checks the carry against `graph`: every output exists, every destination is an
    /// input or param of the output's type, and none is written twice.
    pub fn check(&self, graph: &Graph) -> Result<(), RuntimeError> {
        let source = |name: &str| -> Option<&TensorType> {
            graph
                .inputs()
                .chain(graph.params())
                .find(|(n, _)| *n == name)
                .map(|(_, v)| graph.ty(v))
        };
        let mut seen = HashSet::new();
        for c in &self.carried {
            let refuse = |why: String| {
                Err(RuntimeError::Session(format!(
                    "cannot carry output `{}` into `{}`: {why}",
                    c.output, c.into
                )))
            };
            let Some(out) = graph.output(&c.output) else {
                return refuse("the graph has no output of that name".into());
            };
            let Some(ty) = source(&c.into) else {
                return refuse("the graph has no input or param of that name".into());
            };
            if graph.ty(out) != ty {
                return refuse(format!(
                    "the output is {} but the destination is {ty}",
                    graph.ty(out)
                ));
            }
            if !seen.insert(c.into.as_str()) {
                return refuse("another output is carried there too".into());
            }
        }
        Ok(())
    }
}
