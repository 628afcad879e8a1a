//! The JSON form: round trips and the errors of graphs read from outside.

mod common;

use calib_ir::{json, text, DType, Graph, IrError, Op, TensorType};
use common::{assert_mentions, err_text, scconv_classifier, scconv_eval_bf16};

#[track_caller]
fn assert_json_round_trip(g: &Graph) {
    let s = json::to_string(g);
    let back = json::from_str(&s).unwrap_or_else(|e| panic!("{e}\n{s}"));
    assert_eq!(&back, g);
    assert_eq!(json::to_string(&back), s);
}

#[test]
fn scconv_graphs_round_trip_through_json() {
    let g = scconv_classifier().unwrap();
    assert_json_round_trip(&g);
    assert_json_round_trip(&scconv_eval_bf16().unwrap());
    let s = json::to_string(&g);
    assert_mentions(
        &s,
        &[
            "\"op\": \"matmul\"",
            "\"op\": \"one_hot\"",
            "\"to\": \"bf16\"",
            "\"dtype\": \"i64\"",
        ],
    );
}

#[test]
fn json_and_text_forms_agree() {
    let g = scconv_classifier().unwrap();
    let via_text =
        text::parse(&text::print(&json::from_str(&json::to_string(&g)).unwrap())).unwrap();
    assert_eq!(via_text, g);
}

#[test]
fn non_finite_constants_survive_json() {
    let mut g = Graph::new();
    for v in [f64::NEG_INFINITY, f64::INFINITY, 0.1 + 0.2] {
        g.push_source(
            Op::Constant { value: v },
            TensorType::new(DType::F32, vec![4]),
            "",
        )
        .unwrap();
    }
    let s = json::to_string(&g);
    assert_mentions(
        &s,
        &[
            "\"value\": \"-inf\"",
            "\"value\": \"inf\"",
            "\"value\": 0.30000000000000004",
        ],
    );
    assert_json_round_trip(&g);
}

/// A JSON graph from node objects (the `type` written as `dtype[dims]` for brevity).
fn graph_json(nodes: &[&str]) -> String {
    format!("{{\"nodes\": [{}], \"outputs\": []}}", nodes.join(", "))
}

fn input(name: &str, dtype: &str, shape: &str) -> String {
    format!(
        r#"{{"op": "input", "name": "{name}", "type": {{"dtype": "{dtype}", "shape": {shape}}}}}"#
    )
}

fn node(op: &str, inputs: &str, dtype: &str, shape: &str) -> String {
    format!(
        r#"{{"op": "{op}", "inputs": {inputs}, "type": {{"dtype": "{dtype}", "shape": {shape}}}}}"#
    )
}

fn read_error(nodes: &[&str]) -> IrError {
    json::from_str(&graph_json(nodes)).expect_err("expected the JSON graph to be rejected")
}

#[test]
fn a_hand_written_json_graph_is_read() {
    let a = input("a", "f32", "[2,3]");
    let b = input("b", "f32", "[2,3]");
    let sum = node("add", "[0, 1]", "f32", "[2,3]");
    let g = json::from_str(&graph_json(&[&a, &b, &sum])).unwrap();
    assert_eq!(g.nodes[2].op, Op::Add);
    assert_eq!(g.nodes[2].ty, TensorType::new(DType::F32, vec![2, 3]));
}

#[test]
fn malformed_json_is_a_json_error() {
    for (src, part) in [
        ("{\"nodes\": [", "EOF while parsing"),
        ("{\"nodes\": [], \"outputs\": [],}", "trailing comma"),
        ("42", "invalid type: integer `42`, expected struct Graph"),
    ] {
        let err = json::from_str(src).expect_err(src);
        assert!(matches!(err, IrError::Json(_)), "{err:?}");
        assert_mentions(&err.to_string(), &["invalid IR JSON", part]);
    }
}

#[test]
fn unknown_op_and_bad_attributes_in_json() {
    let a = input("a", "f32", "[2,3]");
    let frob = node("frobnicate", "[0]", "f32", "[2,3]");
    let err = err_text(json::from_str(&graph_json(&[&a, &frob])));
    assert_mentions(&err, &["invalid IR JSON", "unknown variant `frobnicate`"]);

    let bad_cast =
        r#"{"op": "cast", "to": "f8", "inputs": [0], "type": {"dtype": "f32", "shape": [2,3]}}"#;
    let err = err_text(json::from_str(&graph_json(&[&a, bad_cast])));
    assert_mentions(&err, &["invalid IR JSON", "unknown variant `f8`"]);
}

#[test]
fn shape_and_dtype_errors_in_json_name_the_node() {
    let a = input("a", "f32", "[2,3]");
    let t = input("t", "f32", "[3,2]");
    let n = input("n", "i64", "[2,3]");

    let err = read_error(&[&a, &t, &node("add", "[0, 1]", "f32", "[2,3]")]);
    assert!(matches!(err, IrError::Type { node: 2, .. }), "{err:?}");
    assert_mentions(
        &err.to_string(),
        &["node %2 (add): operand shapes differ: [2,3] vs [3,2]"],
    );

    let err = read_error(&[&a, &n, &node("add", "[0, 1]", "f32", "[2,3]")]);
    assert_mentions(
        &err.to_string(),
        &["node %2 (add): operands must share one dtype, got f32, i64"],
    );

    let err = read_error(&[&n, &node("exp", "[0]", "i64", "[2,3]")]);
    assert_mentions(
        &err.to_string(),
        &["node %1 (exp): needs floating-point operands"],
    );
}

#[test]
fn undefined_operands_declared_types_and_duplicates_in_json() {
    let a = input("a", "f32", "[2,3]");
    let err = read_error(&[&a, &node("relu", "[5]", "f32", "[2,3]")]);
    assert_eq!(
        err,
        IrError::UndefinedValue {
            node: 1,
            op: "relu".into(),
            operand: 5
        }
    );
    assert_mentions(
        &err.to_string(),
        &["node %1 (relu): operand %5 is not defined before it"],
    );

    // A node may not read itself either.
    let err = read_error(&[&a, &node("relu", "[1]", "f32", "[2,3]")]);
    assert!(
        matches!(
            err,
            IrError::UndefinedValue {
                node: 1,
                operand: 1,
                ..
            }
        ),
        "{err:?}"
    );

    let err = read_error(&[&a, &node("relu", "[0]", "f16", "[2,3]")]);
    assert!(
        matches!(err, IrError::TypeMismatch { node: 1, .. }),
        "{err:?}"
    );
    assert_mentions(
        &err.to_string(),
        &["node %1 (relu): declared type f16[2,3] but the op produces f32[2,3]"],
    );

    let w = r#"{"op": "param", "name": "w", "type": {"dtype": "f32", "shape": [3]}}"#;
    let err = read_error(&[&a, w, w]);
    assert_eq!(
        err,
        IrError::DuplicateName {
            kind: "param",
            name: "w".into()
        }
    );
    assert_eq!(err.to_string(), "duplicate param name `w`");

    let outputs = r#"{"nodes": [], "outputs": [{"name": "y", "value": 0}]}"#;
    assert_mentions(
        &err_text(json::from_str(outputs)),
        &["(output y): operand %0 is not defined"],
    );
}
