//! The DOT export and the petgraph view.

mod common;

use calib_ir::{dot, ConvSpec, DType, Graph, GraphBuilder, Mode, Value};
use common::{assert_mentions, scconv_classifier};
use petgraph::algo::{is_cyclic_directed, toposort};
use petgraph::graph::NodeIndex;
use petgraph::visit::EdgeRef;

/// Braces and brackets nest and every quoted string (with `\"` escapes) is closed.
fn assert_balanced(dot: &str) {
    let mut stack = Vec::new();
    let mut chars = dot.chars();
    let mut in_string = false;
    while let Some(c) = chars.next() {
        match (in_string, c) {
            (true, '\\') => {
                chars.next();
            }
            (true, '"') | (false, '"') => in_string = !in_string,
            (true, _) => {}
            (false, '{' | '[') => stack.push(c),
            (false, '}') => assert_eq!(stack.pop(), Some('{'), "unbalanced `}}` in\n{dot}"),
            (false, ']') => assert_eq!(stack.pop(), Some('['), "unbalanced `]` in\n{dot}"),
            _ => {}
        }
    }
    assert!(!in_string, "unterminated string in\n{dot}");
    assert!(stack.is_empty(), "unclosed {stack:?} in\n{dot}");
}

/// input -> conv (with a weight) -> relu, with a quote in the output's name.
fn small() -> Graph {
    let mut g = GraphBuilder::new(Mode::Eval, DType::F32);
    let x = g.input("x", DType::F32, vec![1, 3, 8, 8]).unwrap();
    let y = g
        .conv_layer("conv", x, &ConvSpec::new(4, 3).padding(1))
        .unwrap();
    let z = g.relu(y).unwrap();
    g.output("the \"y\"", z).unwrap();
    g.finish()
}

#[test]
fn nodes_edges_and_outputs_are_drawn() {
    let s = dot::to_dot(&small());
    assert_balanced(&s);
    assert!(s.starts_with("digraph {\n"), "{s}");
    assert_mentions(
        &s,
        &[
            r#"0 [ label = "%0 input\lname=\"x\"\lf32[1,3,8,8]\l" shape = ellipse ]"#,
            r#"1 [ label = "%1 param\lname=\"conv.weight\"\lf32[4,3,3,3]\l@conv\l" shape = ellipse style = filled"#,
            r#"2 [ label = "%2 conv2d\lstride=[1,1] padding=[1,1] dilation=[1,1] groups=1\lf32[1,4,8,8]\l@conv\l" shape = box ]"#,
            r#"3 [ label = "%3 relu\lf32[1,4,8,8]\l" shape = box ]"#,
            r#"4 [ label = "return the \"y\"\lf32[1,4,8,8]\l" shape = doubleoctagon ]"#,
            // Operand positions on multi-operand users only; outputs dashed.
            "0 -> 2 [ label = \"0\" ]",
            "1 -> 2 [ label = \"1\" ]",
            "2 -> 3 [ ]",
            "3 -> 4 [ style = dashed ]",
        ],
    );
    assert_eq!(s.matches(" -> ").count(), 4);
}

#[test]
fn scconv_dot_has_one_shape_per_node_and_output() {
    let g = scconv_classifier().unwrap();
    let s = dot::to_dot(&g);
    assert_balanced(&s);
    let shapes = s.lines().filter(|l| l.contains(" shape = ")).count();
    assert_eq!(shapes, g.nodes.len() + g.outputs.len());
    let edges = s.matches(" -> ").count();
    let operands: usize = g.nodes.iter().map(|n| n.inputs.len()).sum();
    assert_eq!(edges, operands + g.outputs.len());
    assert_mentions(
        &s,
        &[
            "resize_nearest\\lsize=[16,16]",
            "return loss\\lf32[]\\l",
            "cast\\lto=\\\"bf16\\\"",
        ],
    );
}

#[test]
fn petgraph_view_mirrors_the_dataflow() {
    let g = scconv_classifier().unwrap();
    let pg = dot::to_petgraph(&g);
    assert_eq!(pg.node_count(), g.nodes.len());
    assert_eq!(
        pg.edge_count(),
        g.nodes.iter().map(|n| n.inputs.len()).sum::<usize>()
    );
    assert!(!is_cyclic_directed(&pg));
    for (id, node) in g.nodes.iter().enumerate() {
        assert_eq!(pg[NodeIndex::new(id)], Value(id));
        let mut operands: Vec<(usize, Value)> = pg
            .edges_directed(NodeIndex::new(id), petgraph::Direction::Incoming)
            .map(|e| (*e.weight(), pg[e.source()]))
            .collect();
        operands.sort();
        let expected: Vec<(usize, Value)> = node.inputs.iter().copied().enumerate().collect();
        assert_eq!(operands, expected, "operands of %{id}");
    }
    // Any topological order petgraph finds puts operands first, like the node list.
    let order = toposort(&pg, None).unwrap();
    let position: Vec<usize> = {
        let mut p = vec![0; order.len()];
        for (i, n) in order.iter().enumerate() {
            p[n.index()] = i;
        }
        p
    };
    for e in pg.edge_references() {
        assert!(position[e.source().index()] < position[e.target().index()]);
    }
}
