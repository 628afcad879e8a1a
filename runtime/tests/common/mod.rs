//! Helpers shared by the integration tests: one-op graphs and tensor shorthands.
#![allow(dead_code)]

use calib_ir::{DType, Graph, Op};
use calib_runtime::{reference, Bindings, HostTensor, Precision, RuntimeError};

/// An f32 tensor.
pub fn t(shape: &[usize], data: &[f32]) -> HostTensor {
    HostTensor::from_f32(shape.to_vec(), data.to_vec()).unwrap()
}

/// An f32 tensor holding `0, 1, 2, ...` in row-major order.
pub fn iota(shape: &[usize]) -> HostTensor {
    let n: usize = shape.iter().product();
    t(shape, &(0..n).map(|i| i as f32).collect::<Vec<_>>())
}

/// An i64 tensor.
pub fn ti(shape: &[usize], data: &[i64]) -> HostTensor {
    HostTensor::from_i64(shape.to_vec(), data.to_vec()).unwrap()
}

/// A graph `y = op(x0, x1, ...)` whose operands are inputs named `x0`, `x1`, ...
pub fn one_op_graph(op: Op, operands: &[&HostTensor]) -> Graph {
    let mut g = Graph::new();
    let vals = operands
        .iter()
        .enumerate()
        .map(|(i, x)| {
            g.push_source(
                Op::Input {
                    name: format!("x{i}"),
                },
                x.ty(),
                "",
            )
            .unwrap()
        })
        .collect();
    let y = g.push(op, vals, "test").unwrap();
    g.add_output("y", y).unwrap();
    g
}

/// Runs one op in the given precision.
pub fn try_op_in(
    op: Op,
    operands: &[&HostTensor],
    precision: Precision,
) -> Result<HostTensor, RuntimeError> {
    let g = one_op_graph(op, operands);
    let mut b = Bindings::new();
    for (i, x) in operands.iter().enumerate() {
        b = b.input(format!("x{i}"), x);
    }
    Ok(reference::run_with(&g, &b, precision)?.remove("y").unwrap())
}

/// Runs one op in f32 and returns its result.
pub fn op(op: Op, operands: &[&HostTensor]) -> HostTensor {
    try_op_in(op, operands, Precision::F32).unwrap()
}

/// Runs one op in f32 and in f64 and checks that both agree to f32 precision, so every
/// hand-computed case also exercises the f64 interpreter.
pub fn op_both(o: Op, operands: &[&HostTensor]) -> HostTensor {
    let y32 = try_op_in(o.clone(), operands, Precision::F32).unwrap();
    let y64 = try_op_in(o, operands, Precision::F64).unwrap();
    assert!(
        y64.as_f64().is_some() || y64.dtype() == DType::I64,
        "f64 run must hold floats in f64"
    );
    let scale = y64.max_abs().max(1.0);
    let diff = y32.max_abs_diff(&y64).unwrap();
    assert!(diff <= 1e-6 * scale, "f32 and f64 runs differ by {diff}");
    y32
}

/// Asserts that `got` has `shape` and matches `want` within `tol` (absolute).
pub fn assert_close(got: &HostTensor, shape: &[usize], want: &[f32], tol: f64) {
    assert_eq!(got.shape(), shape, "shape");
    let want = t(shape, want);
    let diff = got.max_abs_diff(&want).unwrap();
    assert!(
        diff <= tol,
        "max abs diff {diff} > {tol}\n got: {:?}\nwant: {:?}",
        got.to_f32_vec(),
        want.to_f32_vec()
    );
}

/// The fixtures directory shared beside the repository.
pub fn fixtures() -> std::path::PathBuf {
    std::path::Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../shared/fixtures"
    ))
    .to_path_buf()
}
