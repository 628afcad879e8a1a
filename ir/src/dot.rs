//! Graphviz DOT export, and the dataflow as a petgraph graph for graph algorithms.
//!
//! `dot -Tsvg` of [`to_dot`] draws one box per node (op, attributes, type, scope),
//! sources as ellipses (parameters shaded) and graph outputs as double octagons. Edges
//! into a node with several operands are labelled with the operand position, since
//! `sub`, `conv2d` or `select` care about order.

use crate::text::op_fields;
use crate::{Graph, Node, Op, OpClass, Output, Value};
use petgraph::dot::{Config, Dot};
use petgraph::graph::{DiGraph, EdgeReference, NodeIndex};
use petgraph::visit::EdgeRef;
use std::fmt;

/// The dataflow of `graph`: petgraph node `i` holds IR value `%i`, and an edge
/// `%a -> %b` with weight `k` says that `%a` is operand `k` of `%b`. Graph outputs are
/// not nodes here; read them from [`Graph::outputs`].
pub fn to_petgraph(graph: &Graph) -> DiGraph<Value, usize> {
    let edges = graph.nodes.iter().map(|n| n.inputs.len()).sum();
    let mut pg = DiGraph::with_capacity(graph.nodes.len(), edges);
    for id in 0..graph.nodes.len() {
        pg.add_node(Value(id));
    }
    for (id, node) in graph.nodes.iter().enumerate() {
        for (k, operand) in node.inputs.iter().enumerate() {
            pg.add_edge(NodeIndex::new(operand.0), NodeIndex::new(id), k);
        }
    }
    pg
}

/// The DOT text of `graph`.
pub fn to_dot(graph: &Graph) -> String {
    let mut pg = to_petgraph(graph).map(|_, &v| Shape::node(v, graph.node(v)), |_, &k| k);
    for output in &graph.outputs {
        let sink = pg.add_node(Shape::output(graph, output));
        pg.add_edge(NodeIndex::new(output.value.0), sink, 0);
    }
    let edge_attrs =
        |g: &DiGraph<Shape, usize>, e: EdgeReference<'_, usize>| match g[e.target()].kind {
            Kind::Output => "style = dashed ".to_string(),
            Kind::Compute { operands } if operands > 1 => format!("label = \"{}\" ", e.weight()),
            _ => String::new(),
        };
    let node_attrs =
        |_: &DiGraph<Shape, usize>, (_, shape): (NodeIndex, &Shape)| shape.kind.style().to_string();
    Dot::with_attr_getters(&pg, &[Config::EdgeNoLabel], &edge_attrs, &node_attrs).to_string()
}

/// How a drawn node looks.
#[derive(Clone, Copy)]
enum Kind {
    Source,
    Param,
    Compute { operands: usize },
    Output,
}

impl Kind {
    fn style(self) -> &'static str {
        match self {
            Kind::Source => "shape = ellipse ",
            Kind::Param => "shape = ellipse style = filled fillcolor = lightgrey ",
            Kind::Compute { .. } => "shape = box ",
            Kind::Output => "shape = doubleoctagon ",
        }
    }
}

/// A drawn node: petgraph's `Dot` prints `label` through `Display`, escaping quotes and
/// turning each newline into a left-justified line break.
struct Shape {
    label: String,
    kind: Kind,
}

impl Shape {
    fn node(v: Value, node: &Node) -> Shape {
        let (name, attrs) = op_fields(&node.op);
        let mut label = format!("{v} {name}\n");
        if !attrs.is_empty() {
            let attrs: Vec<String> = attrs.iter().map(|(k, val)| format!("{k}={val}")).collect();
            label += &attrs.join(" ");
            label.push('\n');
        }
        label += &format!("{}\n", node.ty);
        if !node.scope.is_empty() {
            label += &format!("@{}\n", node.scope);
        }
        let kind = match (&node.op, node.op.class()) {
            (Op::Param { .. }, _) => Kind::Param,
            (_, OpClass::Source) => Kind::Source,
            _ => Kind::Compute {
                operands: node.inputs.len(),
            },
        };
        Shape { label, kind }
    }

    fn output(graph: &Graph, output: &Output) -> Shape {
        Shape {
            label: format!("return {}\n{}\n", output.name, graph.ty(output.value)),
            kind: Kind::Output,
        }
    }
}

impl fmt::Display for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.label)
    }
}
