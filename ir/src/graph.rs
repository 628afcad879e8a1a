//! The dataflow graph: an SSA list of nodes in topological order.

use crate::{infer_type, IrError, Op, Result, TensorType};
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::fmt;

/// A handle to the value produced by a node (its index in [`Graph::nodes`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Value(pub usize);

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "%{}", self.0)
    }
}

/// One operation and the type of the value it produces.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Node {
    #[serde(flatten)]
    pub op: Op,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub inputs: Vec<Value>,
    #[serde(rename = "type")]
    pub ty: TensorType,
    /// The module path that created the node (`layer1.0.scconv.k2`), for reports; empty
    /// when unknown.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub scope: String,
}

/// A named graph result.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Output {
    pub name: String,
    pub value: Value,
}

/// A typed dataflow graph. Every node's operands precede it, so the node list is a
/// topological order and the graph is acyclic by construction.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Graph {
    pub nodes: Vec<Node>,
    pub outputs: Vec<Output>,
}

impl Graph {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn node(&self, v: Value) -> &Node {
        &self.nodes[v.0]
    }

    pub fn ty(&self, v: Value) -> &TensorType {
        &self.nodes[v.0].ty
    }

    /// Appends a node after checking its operands and inferring its type. Source nodes
    /// (inputs, params, constants) must use [`Graph::push_source`].
    pub fn push(&mut self, op: Op, inputs: Vec<Value>, scope: &str) -> Result<Value> {
        let id = self.nodes.len();
        let ty = self.infer_node(id, &op, &inputs, scope)?;
        self.nodes.push(Node {
            op,
            inputs,
            ty,
            scope: scope.to_string(),
        });
        Ok(Value(id))
    }

    /// Appends an input, param or constant node of the given type.
    pub fn push_source(&mut self, op: Op, ty: TensorType, scope: &str) -> Result<Value> {
        let id = self.nodes.len();
        if op.arity() != Some(0) {
            return Err(IrError::Type {
                node: id,
                op: op.name().into(),
                scope: scope_suffix(scope),
                detail: "is not a source op".into(),
                operands: String::new(),
            });
        }
        ty.check_size().map_err(|detail| IrError::Type {
            node: id,
            op: op.name().into(),
            scope: scope_suffix(scope),
            detail,
            operands: String::new(),
        })?;
        if let Op::Constant { value } = op {
            if !value.is_finite() && ty.dtype == crate::DType::I64 {
                return Err(IrError::Type {
                    node: id,
                    op: "constant".into(),
                    scope: scope_suffix(scope),
                    detail: format!("value {value} does not fit i64"),
                    operands: String::new(),
                });
            }
        }
        self.nodes.push(Node {
            op,
            inputs: vec![],
            ty,
            scope: scope.to_string(),
        });
        Ok(Value(id))
    }

    fn infer_node(&self, id: usize, op: &Op, inputs: &[Value], scope: &str) -> Result<TensorType> {
        for v in inputs {
            if v.0 >= id || v.0 >= self.nodes.len() {
                return Err(IrError::UndefinedValue {
                    node: id,
                    op: op.name().into(),
                    operand: v.0,
                });
            }
        }
        let types: Vec<&TensorType> = inputs.iter().map(|v| self.ty(*v)).collect();
        infer_type(op, &types)
            .and_then(|ty| ty.check_size().map(|()| ty))
            .map_err(|detail| IrError::Type {
                node: id,
                op: op.name().into(),
                scope: scope_suffix(scope),
                detail,
                operands: types
                    .iter()
                    .map(|t| t.to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
            })
    }

    pub fn add_output(&mut self, name: impl Into<String>, value: Value) -> Result<()> {
        self.add_outputs([(name.into(), value)])
    }

    /// [`Graph::add_output`] for many outputs at once, with the names looked up in a set
    /// rather than by scanning the outputs per name. On an error the outputs before the
    /// bad one have been added.
    pub fn add_outputs(
        &mut self,
        outputs: impl IntoIterator<Item = (String, Value)>,
    ) -> Result<()> {
        let mut taken: HashSet<String> = self.outputs.iter().map(|o| o.name.clone()).collect();
        for (name, value) in outputs {
            if taken.contains(&name) {
                return Err(IrError::DuplicateName {
                    kind: "output",
                    name,
                });
            }
            if value.0 >= self.nodes.len() {
                return Err(IrError::UndefinedValue {
                    node: self.nodes.len(),
                    op: "output".into(),
                    operand: value.0,
                });
            }
            taken.insert(name.clone());
            self.outputs.push(Output { name, value });
        }
        Ok(())
    }

    pub fn output(&self, name: &str) -> Option<Value> {
        self.outputs
            .iter()
            .find(|o| o.name == name)
            .map(|o| o.value)
    }

    /// Graph inputs in order: (name, value).
    pub fn inputs(&self) -> impl Iterator<Item = (&str, Value)> {
        self.sources(|op| match op {
            Op::Input { name } => Some(name),
            _ => None,
        })
    }

    /// Parameters and buffers in order: (state_dict name, value).
    pub fn params(&self) -> impl Iterator<Item = (&str, Value)> {
        self.sources(|op| match op {
            Op::Param { name } => Some(name),
            _ => None,
        })
    }

    fn sources<'a>(
        &'a self,
        pick: impl Fn(&'a Op) -> Option<&'a String> + 'a,
    ) -> impl Iterator<Item = (&'a str, Value)> + 'a {
        self.nodes
            .iter()
            .enumerate()
            .filter_map(move |(i, n)| pick(&n.op).map(|name| (name.as_str(), Value(i))))
    }

    /// Re-checks a graph that came from outside (JSON, text): operand order, names, and
    /// every node's declared type against inference.
    pub fn validate(&self) -> Result<()> {
        let mut inputs = HashSet::new();
        let mut params = HashSet::new();
        for (id, node) in self.nodes.iter().enumerate() {
            match &node.op {
                Op::Input { name } if !inputs.insert(name) => {
                    return Err(IrError::DuplicateName {
                        kind: "input",
                        name: name.clone(),
                    })
                }
                Op::Param { name } if !params.insert(name) => {
                    return Err(IrError::DuplicateName {
                        kind: "param",
                        name: name.clone(),
                    })
                }
                _ => {}
            }
            if node.op.arity() == Some(0) {
                let source_error = |detail: String| IrError::Type {
                    node: id,
                    op: node.op.name().into(),
                    scope: scope_suffix(&node.scope),
                    detail,
                    operands: String::new(),
                };
                if !node.inputs.is_empty() {
                    return Err(source_error("source nodes take no operands".into()));
                }
                node.ty.check_size().map_err(source_error)?;
                continue;
            }
            let inferred = self.infer_node(id, &node.op, &node.inputs, &node.scope)?;
            if inferred != node.ty {
                return Err(IrError::TypeMismatch {
                    node: id,
                    op: node.op.name().into(),
                    declared: node.ty.to_string(),
                    inferred: inferred.to_string(),
                });
            }
        }
        let mut names = HashSet::new();
        for o in &self.outputs {
            if o.value.0 >= self.nodes.len() {
                return Err(IrError::UndefinedValue {
                    node: self.nodes.len(),
                    op: format!("output {}", o.name),
                    operand: o.value.0,
                });
            }
            if !names.insert(&o.name) {
                return Err(IrError::DuplicateName {
                    kind: "output",
                    name: o.name.clone(),
                });
            }
        }
        Ok(())
    }

    /// How many nodes read each value (graph outputs count as readers).
    pub fn use_counts(&self) -> Vec<usize> {
        let mut uses = vec![0; self.nodes.len()];
        for n in &self.nodes {
            for v in &n.inputs {
                uses[v.0] += 1;
            }
        }
        for o in &self.outputs {
            uses[o.value.0] += 1;
        }
        uses
    }
}

pub(crate) fn scope_suffix(scope: &str) -> String {
    if scope.is_empty() {
        String::new()
    } else {
        format!(" in {scope}")
    }
}
