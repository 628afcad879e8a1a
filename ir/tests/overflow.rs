//! Element counts and byte sizes never overflow silently: a shape too large to count,
//! or window arithmetic past `usize`, is an error naming the node, in every form a
//! graph can arrive in (text, JSON, the builder).

use calib_ir::{
    checked_numel, json, numel, text, DType, GraphBuilder, IrError, Mode, Op, TensorType,
    MAX_TENSOR_BYTES,
};

fn text_error(body: &str) -> String {
    let src = format!("graph {{\n{body}\n  return\n}}\n");
    text::parse(&src)
        .expect_err("expected the graph to be rejected")
        .to_string()
}

#[track_caller]
fn assert_has(message: &str, parts: &[&str]) {
    for p in parts {
        assert!(message.contains(p), "`{p}` missing from: {message}");
    }
}

#[test]
fn counts_saturate_or_report_instead_of_wrapping() {
    assert_eq!(checked_numel(&[1 << 32, 1 << 32]), None);
    assert_eq!(numel(&[1 << 32, 1 << 32]), usize::MAX);
    assert_eq!(checked_numel(&[usize::MAX, 2]), None);
    // A zero extent makes an empty tensor whatever the other extents are.
    assert_eq!(checked_numel(&[usize::MAX, 2, 0]), Some(0));
    assert_eq!(checked_numel(&[]), Some(1));
    let big = TensorType::new(DType::F32, vec![1 << 62]);
    assert_eq!(big.checked_size_bytes(), None);
    assert_eq!(big.size_bytes(), usize::MAX);
    assert!(big
        .check_size()
        .unwrap_err()
        .contains("f32[4611686018427387904]"));
    let limit = TensorType::new(DType::I64, vec![MAX_TENSOR_BYTES / 8]);
    assert_eq!(limit.check_size(), Ok(()));
    let over = TensorType::new(DType::I64, vec![MAX_TENSOR_BYTES / 8 + 1]);
    assert!(over.check_size().unwrap_err().contains("over the limit"));
}

#[test]
fn a_text_input_too_large_to_count_is_refused_before_a_reshape_can_hide_it() {
    // 2^32 * 2^32 elements wrap to 0 in 64 bits, which `reshape shape=[0]` would match.
    let e = text_error(
        "  %0 = input name=\"x\" : f32[4294967296,4294967296]\n  %1 = reshape(%0) shape=[0] : f32[0]",
    );
    assert_has(
        &e,
        &["line 2", "node %0 (input)", "f32[4294967296,4294967296]"],
    );
    let e = text_error(
        "  %0 = input name=\"x\" : f32[18446744073709551615,2]\n  %1 = reshape(%0) shape=[18446744073709551614] : f32[18446744073709551614]",
    );
    assert_has(&e, &["line 2", "node %0 (input)", "64-bit"]);
}

#[test]
fn a_reshape_to_a_shape_too_large_to_count_names_the_node() {
    let e = text_error(
        "  %0 = input name=\"x\" : f32[2]\n  %1 = reshape(%0) shape=[4294967296,4294967296,2] : f32[4294967296,4294967296,2]",
    );
    assert_has(&e, &["line 3", "node %1 (reshape)", "overflows"]);
}

#[test]
fn window_arithmetic_past_usize_is_an_error_not_a_wrap() {
    let e = text_error(
        "  %0 = input name=\"x\" : f32[1,1,4,4]\n  %1 = param name=\"w\" : f32[1,1,3,3]\n  %2 = conv2d(%0, %1) stride=[1,1] padding=[9223372036854775808,0] dilation=[1,1] groups=1 : f32[1,1,4,4]",
    );
    assert_has(&e, &["line 4", "node %2 (conv2d)", "too large to count"]);
    let e = text_error(
        "  %0 = input name=\"x\" : f32[1,1,4,4]\n  %1 = param name=\"w\" : f32[1,1,3,3]\n  %2 = conv2d(%0, %1) stride=[1,1] padding=[1,1] dilation=[9223372036854775808,1] groups=1 : f32[1,1,4,4]",
    );
    assert_has(&e, &["node %2 (conv2d)", "too large to count"]);
    let e = text_error(
        "  %0 = input name=\"x\" : f32[1,1,4,4]\n  %1 = max_pool2d(%0) kernel=[18446744073709551615,3] stride=[1,1] padding=[9223372036854775807,1] ceil_mode=true : f32[1,1,4,4]",
    );
    assert_has(&e, &["node %1 (max_pool2d)", "too large to count"]);
}

#[test]
fn a_concatenated_extent_past_usize_names_the_node() {
    // Empty tensors may have any extents; concatenating two of them must not wrap.
    let e = text_error(
        "  %0 = input name=\"a\" : f32[0,9223372036854775808]\n  %1 = input name=\"b\" : f32[0,9223372036854775808]\n  %2 = concat(%0, %1) axis=1 : f32[0,0]",
    );
    assert_has(&e, &["node %2 (concat)", "overflows"]);
}

#[test]
fn a_broadcast_past_the_tensor_limit_names_the_node() {
    let e = text_error(
        "  %0 = input name=\"x\" : f32[1]\n  %1 = broadcast(%0) shape=[1099511627776,1099511627776] : f32[1099511627776,1099511627776]",
    );
    assert_has(&e, &["line 3", "node %1 (broadcast)", "64-bit"]);
}

#[test]
fn json_graphs_get_the_same_checks() {
    let src = r#"{"nodes": [
        {"op": "input", "name": "x", "type": {"dtype": "f32", "shape": [4294967296, 4294967296]}},
        {"op": "reshape", "shape": [0], "inputs": [0], "type": {"dtype": "f32", "shape": [0]}}
    ], "outputs": [{"name": "y", "value": 1}]}"#;
    let e = json::from_str(src).unwrap_err();
    assert!(matches!(e, IrError::Type { node: 0, .. }), "{e:?}");
    assert_has(
        &e.to_string(),
        &["node %0 (input)", "f32[4294967296,4294967296]"],
    );
}

#[test]
fn the_builder_refuses_oversized_sources_and_results() {
    let mut g = GraphBuilder::new(Mode::Eval, DType::F32);
    let e = g
        .input("x", DType::F32, vec![1 << 40, 1 << 40])
        .unwrap_err()
        .to_string();
    assert_has(&e, &["node %0 (input)", "64-bit"]);
    let e = g
        .param("w", DType::F32, vec![1 << 47])
        .unwrap_err()
        .to_string();
    assert_has(&e, &["node %0 (param)", "over the limit"]);
    let x = g.input("y", DType::F32, vec![1]).unwrap();
    let e = g
        .graph()
        .clone()
        .push(
            Op::Broadcast {
                shape: vec![1 << 30, 1 << 30],
            },
            vec![x],
            "",
        )
        .unwrap_err()
        .to_string();
    assert_has(
        &e,
        &["node %1 (broadcast)", "over the limit", "operands: f32[1]"],
    );
}
