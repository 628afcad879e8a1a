//! Which GEMM operand tiles `cp.async` can fill straight from a kernel input, bypassing
//! registers: the planner prices such copies, and code generation emits them, from the
//! same answer.

use crate::{DType, GemmInstruction, Graph, Op, Value};

/// The body values GEMM anchor `anchor` reads as `A` and `B` (a weight gradient's `A`
/// is the output gradient, its second input).
pub fn gemm_operands(body: &Graph, anchor: Value) -> [Value; 2] {
    let node = &body.nodes[anchor.0];
    match node.op {
        Op::Conv2dBackwardWeight { .. } => [node.inputs[1], node.inputs[0]],
        _ => [node.inputs[0], node.inputs[1]],
    }
}

/// The bf16 input buffer operand `operand` of GEMM anchor `anchor` reads, as it is or
/// widened to f32 (as the bf16 plans read them), with nothing computed between: its
/// elements are the bits a bf16 tile holds, whatever way the buffer lies in memory.
pub fn bf16_input(body: &Graph, anchor: Value, operand: usize) -> Option<Value> {
    let v = gemm_operands(body, anchor)[operand];
    let node = &body.nodes[v.0];
    let widened = node.op == (Op::Cast { to: DType::F32 }) && node.inputs.len() == 1;
    let x = if widened { node.inputs[0] } else { v };
    let n = &body.nodes[x.0];
    (matches!(n.op, Op::Input { .. }) && n.ty.dtype == DType::BF16).then_some(x)
}

/// The input buffer a `cp.async` can copy straight into the shared tiles of operand
/// `operand` (0 for `A`, 1 for `B`, see [`gemm_operands`]) of GEMM anchor `anchor`
/// multiplied by `instruction`; `None` for an operand computed by a prologue, and under
/// FMA products.
///
/// * TF32 tiles hold f32 words, which the fragment loads round: the operand itself
///   when it is an f32 (or tf32) input, or the input under a rounding round trip
///   `cast(cast(x, tf32), f32)` (the precision policy's casts), which those loads
///   repeat bit for bit.
/// * bf16 tiles hold 16-bit elements, so only a bf16 input is a source (an f32
///   buffer's bits would need converting), and a copy moves at least 4 bytes: two
///   elements adjacent along the tile's width, which must be adjacent and 4-byte
///   aligned in the buffer, and both inside the operand or both outside. That holds for
///   a matmul operand contiguous along its tile's width (`A` transposed, `B` not) with
///   an even number of columns; a convolution's implicit-GEMM operands (windows of the
///   image, shifted by the padding; weights contiguous along `k`) have no such pairs
///   and load through registers.
pub fn copy_source(
    body: &Graph,
    anchor: Value,
    operand: usize,
    instruction: GemmInstruction,
) -> Option<Value> {
    let v = gemm_operands(body, anchor)[operand];
    let input = |x: Value, dtypes: &[DType]| {
        let n = &body.nodes[x.0];
        (matches!(n.op, Op::Input { .. }) && dtypes.contains(&n.ty.dtype)).then_some(x)
    };
    match instruction {
        GemmInstruction::Fma => None,
        GemmInstruction::MmaTf32 => {
            let words = [DType::F32, DType::TF32];
            if let Some(x) = input(v, &words) {
                return Some(x);
            }
            let outer = &body.nodes[v.0];
            let inner = &body.nodes[outer.inputs.first()?.0];
            let round_trip = outer.op == (Op::Cast { to: DType::F32 })
                && inner.op == (Op::Cast { to: DType::TF32 });
            round_trip.then(|| input(*inner.inputs.first()?, &words))?
        }
        GemmInstruction::MmaBf16 => {
            let x = bf16_input(body, anchor, operand)?;
            let Op::MatMul {
                transpose_a,
                transpose_b,
            } = body.nodes[anchor.0].op
            else {
                return None;
            };
            let along_width = if operand == 0 {
                transpose_a
            } else {
                !transpose_b
            };
            let columns = body.nodes[x.0].ty.shape.last().copied().unwrap_or(1);
            (along_width && columns % 2 == 0).then_some(x)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::text::parse;

    /// `y = a @ b` (transposed as told) of bf16 inputs `a` and `b` read widened: shapes
    /// as `"4,6"`; the anchor is `%4`.
    fn widened(a: &str, b: &str, y: &str, ta: bool, tb: bool) -> Graph {
        parse(&format!(
            "graph {{
              %0 = input name=\"a\" : bf16[{a}]
              %1 = input name=\"b\" : bf16[{b}]
              %2 = cast(%0) to=\"f32\" : f32[{a}]
              %3 = cast(%1) to=\"f32\" : f32[{b}]
              %4 = matmul(%2, %3) transpose_a={ta} transpose_b={tb} : f32[{y}]
              return y=%4
            }}"
        ))
        .expect("graph")
    }

    #[test]
    fn bf16_inputs_are_copied_in_pairs_along_an_even_contiguous_width() {
        let bf16 = GemmInstruction::MmaBf16;
        let y = Value(4);
        // A [k][m] (transposed, m contiguous), B [k][n]: both copy.
        let g = widened("4,6", "4,8", "6,8", true, false);
        assert_eq!(copy_source(&g, y, 0, bf16), Some(Value(0)));
        assert_eq!(copy_source(&g, y, 1, bf16), Some(Value(1)));
        // TF32 tiles take no bf16 bits.
        assert_eq!(copy_source(&g, y, 0, GemmInstruction::MmaTf32), None);
        // A [m][k] and B [n][k] are contiguous along k: no pairs along the width.
        let g = widened("6,4", "8,4", "6,8", false, true);
        assert_eq!(copy_source(&g, y, 0, bf16), None);
        assert_eq!(copy_source(&g, y, 1, bf16), None);
        // An odd width would leave a pair straddling two rows.
        let g = widened("4,6", "4,7", "6,7", true, false);
        assert_eq!(copy_source(&g, y, 0, bf16), Some(Value(0)));
        assert_eq!(copy_source(&g, y, 1, bf16), None);
    }

    #[test]
    fn f32_inputs_fill_tf32_tiles_only() {
        let g = parse(
            "graph {
              %0 = input name=\"a\" : f32[4,6]
              %1 = input name=\"b\" : f32[4,8]
              %2 = matmul(%0, %1) transpose_a=true transpose_b=false : f32[6,8]
              return y=%2
            }",
        )
        .expect("graph");
        let y = Value(2);
        assert_eq!(
            copy_source(&g, y, 0, GemmInstruction::MmaTf32),
            Some(Value(0))
        );
        assert_eq!(copy_source(&g, y, 1, GemmInstruction::MmaBf16), None);
        assert_eq!(copy_source(&g, y, 0, GemmInstruction::Fma), None);
    }
}
