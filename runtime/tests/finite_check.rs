//! The interpreter's finite check: the op that first creates a NaN or an infinity is
//! named (node, op, scope); ops that only carry a `-inf` mask along are not blamed.

use calib_ir::{DType, Graph, GraphBuilder, Mode, Op};
use calib_runtime::{reference, Backend, Bindings, HostTensor, OpError, Reference, RuntimeError};

/// In scope `head`: `masked = max(x, -inf)`, `shifted = masked + -inf` (carries the
/// mask's infinity), `y = log(x)`, `z = exp(y)`; all four are outputs.
fn graph() -> Graph {
    let mut g = GraphBuilder::new(Mode::Eval, DType::F32);
    let x = g.input("x", DType::F32, vec![3]).unwrap();
    g.scoped("head", |g| {
        let mask = g.constant(f64::NEG_INFINITY, DType::F32, vec![3])?;
        let masked = g.max(x, mask)?;
        let shifted = g.add(masked, mask)?;
        let y = g.log(x)?;
        let z = g.exp(y)?;
        g.output("masked", masked)?;
        g.output("shifted", shifted)?;
        g.output("y", y)?;
        g.output("z", z)
    })
    .unwrap();
    g.finish()
}

fn x(values: [f32; 3]) -> HostTensor {
    HostTensor::from_f32(vec![3], values.to_vec()).unwrap()
}

#[test]
fn finite_values_and_carried_masks_pass_and_give_the_same_outputs() {
    let g = graph();
    let x = x([1.0, 2.0, 3.0]);
    let b = Bindings::new().input("x", &x);
    let checked = reference::run_checking_finite(&g, &b, Default::default()).unwrap();
    assert_eq!(checked, reference::run(&g, &b).unwrap());
    // `shifted` holds -inf, made from an operand that already did: not an error.
    assert!(checked["shifted"].as_f32().unwrap()[0].is_infinite());
}

#[test]
fn the_op_that_creates_an_infinity_is_named_with_its_scope() {
    let g = graph();
    let x = x([1.0, 0.0, 2.0]);
    let err = Reference::new()
        .checking_finite()
        .run(&g, &Bindings::new().input("x", &x))
        .unwrap_err();
    let log_node = g
        .nodes
        .iter()
        .position(|n| n.op == Op::Log)
        .expect("the graph has a log");
    match &err {
        RuntimeError::Op {
            node,
            op,
            scope,
            source: OpError::NonFinite(census),
        } => {
            assert_eq!((*node, *op, scope.as_str()), (log_node, "log", " in head"));
            assert_eq!((census.infinite, census.nan, census.first), (1, 0, Some(1)));
        }
        other => panic!("expected the log to be blamed, got {other}"),
    }
    let text = err.to_string();
    assert!(
        text.contains(&format!("node %{log_node} (log in head)")) && text.contains("non-finite"),
        "{text}"
    );
    // Without the check the same run succeeds and returns the infinity.
    assert!(Reference::new()
        .run(&g, &Bindings::new().input("x", &x))
        .is_ok());
}

#[test]
fn a_nan_made_from_infinities_is_blamed_on_its_op() {
    let mut g = GraphBuilder::new(Mode::Eval, DType::F32);
    let inf = g.constant(f64::INFINITY, DType::F32, vec![2]).unwrap();
    let nan = g.sub(inf, inf).unwrap();
    g.output("nan", nan).unwrap();
    let g = g.finish();
    let err = reference::run_checking_finite(&g, &Bindings::new(), Default::default()).unwrap_err();
    assert!(
        matches!(&err, RuntimeError::Op { op: "sub", source: OpError::NonFinite(c), .. } if c.nan == 2),
        "{err}"
    );
}

#[test]
fn a_non_finite_binding_is_named() {
    let g = graph();
    let x = x([1.0, f32::NAN, 2.0]);
    let err =
        reference::run_checking_finite(&g, &Bindings::new().input("x", &x), Default::default())
            .unwrap_err();
    assert!(
        matches!(&err, RuntimeError::NonFiniteBinding { kind: "input", name, .. } if name == "x"),
        "{err}"
    );
    assert!(
        err.to_string()
            .contains("input `x`: 1 of 3 values are not finite"),
        "{err}"
    );
}
