//! Elementwise rules, including their tie and kink conventions.

use crate::check::GradCheck;
use crate::common::run;
use calib_ir::{DType, GraphBuilder, Mode, Op, Value};
use calib_passes::grad;
use calib_runtime::HostTensor;
use std::collections::BTreeMap;

const SHAPE: [usize; 3] = [2, 3, 4];

fn unary(op: Op) -> GradCheck {
    GradCheck::new(|b| {
        let x = b.input("x", DType::F32, SHAPE.to_vec())?;
        b.unary(op, x)
    })
}

fn binary(op: Op) -> GradCheck {
    GradCheck::new(|b| {
        let x = b.input("a", DType::F32, SHAPE.to_vec())?;
        let y = b.input("b", DType::F32, SHAPE.to_vec())?;
        b.binary(op, x, y)
    })
}

#[test]
fn neg_exp_sigmoid_relu() {
    for op in [Op::Neg, Op::Exp, Op::Sigmoid, Op::Relu] {
        unary(op).run();
    }
}

#[test]
fn log_sqrt_rsqrt_on_their_domain() {
    for op in [Op::Log, Op::Sqrt, Op::Rsqrt] {
        unary(op).range("x", 0.3, 3.0).run();
    }
}

#[test]
fn add_sub_mul_max() {
    for op in [Op::Add, Op::Sub, Op::Mul, Op::Max] {
        let grads = binary(op.clone()).run();
        assert!(grads["a"] > 0.0 && grads["b"] > 0.0, "{op:?}: {grads:?}");
    }
}

#[test]
fn div_away_from_zero() {
    binary(Op::Div).range("b", 0.5, 2.0).run();
    binary(Op::Div).range("b", -2.0, -0.5).run();
}

#[test]
fn select_routes_the_gradient_and_the_condition_gets_none() {
    let grads = GradCheck::new(|b| {
        let c = b.input("c", DType::F32, SHAPE.to_vec())?;
        let x = b.input("x", DType::F32, SHAPE.to_vec())?;
        let y = b.input("y", DType::F32, SHAPE.to_vec())?;
        let zero = b.full_like(c, 0.0)?;
        let cond = b.binary(Op::CmpGt, c, zero)?;
        let picked = b.select(cond, x, y)?;
        b.mul(picked, c)
    })
    .run();
    // `c` still gets the gradient of the product, just none through the comparison.
    assert!(grads["x"] > 0.0 && grads["y"] > 0.0 && grads["c"] > 0.0);
}

#[test]
fn comparisons_have_no_gradient() {
    let grads = GradCheck::new(|b| {
        let x = b.input("x", DType::F32, SHAPE.to_vec())?;
        let y = b.input("y", DType::F32, SHAPE.to_vec())?;
        let z = b.input("z", DType::F32, SHAPE.to_vec())?;
        let gt = b.binary(Op::CmpGt, x, y)?;
        let ge = b.binary(Op::CmpGe, y, x)?;
        let eq = b.binary(Op::CmpEq, x, x)?;
        let m = b.add(gt, ge)?;
        let m = b.add(m, eq)?;
        b.mul(m, z)
    })
    .run();
    assert_eq!((grads["x"], grads["y"]), (0.0, 0.0));
    assert!(grads["z"] > 0.0);
}

#[test]
fn casts_pass_float_gradients_and_stop_at_integers() {
    let grads = GradCheck::new(|b| {
        let x = b.input("x", DType::F32, SHAPE.to_vec())?;
        let same = b.cast(x, DType::F32)?;
        let truncated = b.cast(x, DType::I64)?;
        let back = b.cast(truncated, DType::F32)?;
        // d/dx [x * trunc(x)] = trunc(x) away from the integers.
        b.mul(same, back)
    })
    .range("x", -2.9, 2.9)
    .run();
    assert!(grads["x"] >= 1.0);
}

#[test]
fn a_value_read_several_times_sums_its_gradients() {
    GradCheck::new(|b| {
        let x = b.input("x", DType::F32, SHAPE.to_vec())?;
        let sq = b.mul(x, x)?;
        let s = b.sigmoid(x)?;
        let sx = b.mul(s, x)?;
        let sum = b.add(sq, sx)?;
        b.sub(sum, x)
    })
    .run();
}

/// Runs `grad(sum(f(x)))` on exact inputs and returns d/dx.
fn exact_grad(
    inputs: &[(&str, Vec<f64>)],
    f: impl Fn(&mut GraphBuilder, &[Value]) -> Value,
) -> Vec<Vec<f64>> {
    let mut b = GraphBuilder::new(Mode::Train, DType::F32);
    let n = inputs[0].1.len();
    let xs: Vec<Value> = inputs
        .iter()
        .map(|(name, _)| b.input(name, DType::F32, vec![n]).unwrap())
        .collect();
    let y = f(&mut b, &xs);
    let (mut g, grads) = grad(&b.finish(), y, &xs).unwrap();
    let mut values = BTreeMap::new();
    for ((name, data), d) in inputs.iter().zip(&grads) {
        g.add_output(format!("d{name}"), *d).unwrap();
        values.insert(
            name.to_string(),
            HostTensor::from_f64(vec![n], data.clone()).unwrap(),
        );
    }
    let out = run(&g, &values);
    inputs
        .iter()
        .map(|(name, _)| out[&format!("d{name}")].to_f64_vec())
        .collect()
}

#[test]
fn relu_derivative_at_zero_is_zero() {
    let d = exact_grad(&[("x", vec![-1.0, 0.0, 2.0])], |b, x| b.relu(x[0]).unwrap());
    assert_eq!(d[0], [0.0, 0.0, 1.0]);
}

#[test]
fn max_ties_go_to_the_first_operand() {
    let d = exact_grad(
        &[("a", vec![1.0, 2.0, 3.0]), ("b", vec![2.0, 2.0, 1.0])],
        |b, x| b.max(x[0], x[1]).unwrap(),
    );
    assert_eq!(d, [vec![0.0, 1.0, 1.0], vec![1.0, 0.0, 0.0]]);
}
