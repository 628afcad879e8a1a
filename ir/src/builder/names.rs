//! The input, param and output names a builder has given out, so that a duplicate is
//! found in constant time: scanning the graph for every new parameter made building
//! quadratic in the depth of a network.

use crate::{Graph, IrError, Result};
use std::collections::HashSet;

/// What a name names; each kind is its own namespace, as in [`Graph::validate`].
#[derive(Clone, Copy)]
pub(super) enum Kind {
    Input,
    Param,
    Output,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Input => "input",
            Kind::Param => "param",
            Kind::Output => "output",
        }
    }
}

/// Names in use, by kind.
#[derive(Default)]
pub(super) struct Names {
    inputs: HashSet<String>,
    params: HashSet<String>,
    outputs: HashSet<String>,
}

impl Names {
    /// The names `graph` already uses.
    pub(super) fn of(graph: &Graph) -> Self {
        Names {
            inputs: graph.inputs().map(|(n, _)| n.to_string()).collect(),
            params: graph.params().map(|(n, _)| n.to_string()).collect(),
            outputs: graph.outputs.iter().map(|o| o.name.clone()).collect(),
        }
    }

    fn set(&self, kind: Kind) -> &HashSet<String> {
        match kind {
            Kind::Input => &self.inputs,
            Kind::Param => &self.params,
            Kind::Output => &self.outputs,
        }
    }

    /// The error for `name` if a `kind` of that name exists.
    pub(super) fn check(&self, kind: Kind, name: &str) -> Result<()> {
        if self.set(kind).contains(name) {
            return Err(IrError::DuplicateName {
                kind: kind.name(),
                name: name.into(),
            });
        }
        Ok(())
    }

    /// Records `name` as used by a `kind`.
    pub(super) fn take(&mut self, kind: Kind, name: &str) {
        let set = match kind {
            Kind::Input => &mut self.inputs,
            Kind::Param => &mut self.params,
            Kind::Output => &mut self.outputs,
        };
        set.insert(name.into());
    }
}
