//! The text form: exact round trips and line-numbered errors.

mod common;

use calib_ir::{text, DType, Graph, GraphBuilder, IrError, Mode, Op, Result, TensorType, Value};
use common::{assert_mentions, err_text, scconv_classifier, scconv_eval_bf16};

/// print -> parse gives an equal graph, and printing that gives identical text.
#[track_caller]
fn assert_round_trip(g: &Graph) -> String {
    let printed = text::print(g);
    let back = text::parse(&printed).unwrap_or_else(|e| panic!("{e}\n{printed}"));
    assert_eq!(&back, g);
    assert_eq!(text::print(&back), printed);
    printed
}

#[test]
fn scconv_graphs_round_trip() {
    let train = assert_round_trip(&scconv_classifier().unwrap());
    assert_mentions(
        &train,
        &[
            "%4 = avg_pool2d(%2) kernel=[4,4] stride=[4,4] padding=[0,0] ceil_mode=false count_include_pad=true : f32[2,4,4,4]  @block.k2\n",
            "= resize_nearest(",
            "= one_hot(%1) classes=10 dtype=\"f32\" : f32[2,10]\n",
            ") to=\"bf16\" : bf16[2,10]\n",
            "= param name=\"block.k2.2.num_batches_tracked\" : i64[]  @block.k2.2\n",
            "  return block.k2.2.running_mean=%",
        ],
    );
    let eval = assert_round_trip(&scconv_eval_bf16().unwrap());
    assert!(eval.starts_with("graph {\n  %0 = input name=\"input\" : bf16[1,4,8,8]\n"));
    let last = eval.lines().rev().nth(1).unwrap();
    assert!(last.starts_with("  return output=%"), "{eval}");
}

#[test]
fn display_and_from_str_are_the_text_form() {
    let g = scconv_eval_bf16().unwrap();
    assert_eq!(g.to_string(), text::print(&g));
    assert_eq!(g.to_string().parse::<Graph>().unwrap(), g);
}

/// One node of every op, so a serde rename that drifts from `Op::name` shows up.
fn every_op() -> Result<Graph> {
    let mut g = GraphBuilder::new(Mode::Eval, DType::F32);
    let x = g.input("x", DType::F32, vec![1, 2, 6, 6])?;
    let labels = g.input("labels", DType::I64, vec![3])?;
    let w = g.param("w", DType::F32, vec![2, 2, 3, 3])?;
    let y = g.conv2d(x, w, &calib_ir::ConvSpec::new(2, 3).padding(1))?;
    let p = g.max_pool2d(y, 3, 2, 1, true)?;
    let q = g.avg_pool2d(p, 2, 1, 1, true, false)?;
    let r = g.resize_nearest(q, [6, 6])?;
    let mut v = g.relu(r)?;
    for op in [Op::Neg, Op::Exp, Op::Log, Op::Sqrt, Op::Rsqrt, Op::Sigmoid] {
        v = g.unary(op, v)?;
    }
    for op in [
        Op::Add,
        Op::Sub,
        Op::Mul,
        Op::Div,
        Op::Max,
        Op::CmpGt,
        Op::CmpGe,
        Op::CmpEq,
    ] {
        v = g.binary(op, v, y)?;
    }
    let s = g.select(v, y, r)?;
    let sum = g.reduce_sum(s, &[2, 3], false)?;
    let sum = g.add_scalar(sum, 0.5)?;
    let mean = g.reduce_mean(s, &[1], true)?;
    let max = g.reduce_max(s, &[0, 1, 2, 3], false)?;
    let flat = g.reshape(mean, vec![6, 6])?;
    let head = g.slice(flat, 0, 1, 3)?;
    let both = g.concat(&[sum, sum], 0)?;
    let prod = g.matmul(both, head, true, false)?;
    let onehot = g.unary(
        Op::OneHot {
            classes: 4,
            dtype: DType::F16,
        },
        labels,
    )?;
    let half = g.cast(head, DType::F16)?;
    let reduced = g.all_reduce(prod, calib_ir::ReduceOp::Sum, 3)?;
    g.output("max", max)?;
    g.output("reduced", reduced)?;
    g.output("prod", prod)?;
    g.output("onehot", onehot)?;
    g.output("half", half)?;
    Ok(g.finish())
}

#[test]
fn every_op_round_trips_under_its_own_name() {
    let g = every_op().unwrap();
    let printed = assert_round_trip(&g);
    for (id, (line, node)) in printed.lines().skip(1).zip(&g.nodes).enumerate() {
        let head = format!("  %{id} = {}", node.op.name());
        assert!(
            line.starts_with(&head),
            "`{line}` does not start with `{head}`"
        );
        let tag = serde_json::to_value(&node.op).unwrap()["op"].clone();
        assert_eq!(tag, node.op.name(), "serde tag and Op::name disagree");
    }
    for name in [
        "matmul(",
        "max_pool2d(",
        "cmp_ge(",
        "select(",
        "broadcast(",
        "all_reduce(",
    ] {
        assert!(printed.contains(name), "no `{name}` in\n{printed}");
    }
}

/// A graph of one constant per value, to check that f64 attributes survive exactly.
fn constants(values: &[f64]) -> Graph {
    let mut g = Graph::new();
    for &v in values {
        g.push_source(
            Op::Constant { value: v },
            TensorType::new(DType::F32, vec![]),
            "",
        )
        .unwrap();
    }
    g
}

fn constant_bits(g: &Graph) -> Vec<u64> {
    g.nodes
        .iter()
        .map(|n| match n.op {
            Op::Constant { value } => value.to_bits(),
            _ => panic!("not a constant: {:?}", n.op),
        })
        .collect()
}

/// Finite f64s from random bit patterns (xorshift, fixed seed) plus hand-picked edge cases.
fn awkward_floats() -> Vec<f64> {
    let mut values = vec![
        0.1,
        0.1 + 0.2,
        1.0 / 3.0,
        -0.0,
        1e-5,
        f64::MIN_POSITIVE,
        5e-324,
        f64::MAX,
        f64::MIN,
        f64::EPSILON,
        9007199254740993.0,
        0.10019569471624266,
    ];
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    while values.len() < 500 {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let v = f64::from_bits(state);
        if v.is_finite() {
            values.push(v);
        }
    }
    values
}

#[test]
fn f64_constants_round_trip_bit_exactly() {
    let values = awkward_floats();
    let printed = text::print(&constants(&values));
    let back = text::parse(&printed).unwrap();
    for (v, bits) in values.iter().zip(constant_bits(&back)) {
        assert_eq!(
            v.to_bits(),
            bits,
            "{v:e} came back as {:e}",
            f64::from_bits(bits)
        );
    }
    assert_eq!(text::print(&back), printed);
}

#[test]
fn non_finite_constants_round_trip() {
    let g = constants(&[f64::NEG_INFINITY, f64::INFINITY, f64::NAN]);
    let printed = text::print(&g);
    assert_mentions(
        &printed,
        &["value=\"-inf\"", "value=\"inf\"", "value=\"nan\""],
    );
    let back = text::parse(&printed).unwrap();
    assert_eq!(text::print(&back), printed);
    let bits = constant_bits(&back);
    assert_eq!(
        bits[..2],
        [f64::NEG_INFINITY.to_bits(), f64::INFINITY.to_bits()]
    );
    assert!(f64::from_bits(bits[2]).is_nan());
}

#[test]
fn names_and_scopes_that_need_quotes_round_trip() {
    let mut g = Graph::new();
    let x = g
        .push_source(
            Op::Input {
                name: "my input \"x\"\n".into(),
            },
            TensorType::new(DType::F32, vec![2]),
            "odd scope/with spaces=and,commas",
        )
        .unwrap();
    let y = g.push(Op::Relu, vec![x], "λ.layer-1/conv_2").unwrap();
    g.add_output("y out", y).unwrap();
    g.add_output("plain.name", x).unwrap();
    g.add_output("", y).unwrap();
    let printed = assert_round_trip(&g);
    assert_mentions(
        &printed,
        &[
            "@\"odd scope/with spaces=and,commas\"",
            "@\"λ.layer-1/conv_2\"",
            "return \"y out\"=%1, plain.name=%0, \"\"=%1",
        ],
    );
}

#[test]
fn hand_written_text_with_comments_and_free_spacing() {
    let src = r#"
// A tiny SCConv-style k2 branch.
graph {
  %0 = input name="input" : f32[2,8,16,16]
  %1   =   param name="k2.1.weight":f32[8,8,3,3] @k2.1

  %2 = avg_pool2d( %0 ) kernel=[4, 4] stride=[4,4] padding=[0,0] ceil_mode=false count_include_pad=true : f32[2,8,4,4]  @k2.0
  %3 = conv2d(%2,%1) stride=[1,1] padding=[1,1] dilation=[1,1] groups=1 : f32[2,8,4,4]  @k2.1
  %4 = resize_nearest(%3) size=[16,16] : f32[2,8,16,16]
  %5 = sigmoid(%4) : f32[2,8,16,16]
  %6 = constant value=1 : i64[]
  return output=%5, "steps"=%6
}
"#;
    let g = text::parse(src).unwrap();
    assert_eq!(g.nodes.len(), 7);
    assert_eq!(
        g.nodes[2].op,
        Op::AvgPool2d {
            kernel: [4, 4],
            stride: [4, 4],
            padding: [0, 0],
            ceil_mode: false,
            count_include_pad: true,
        }
    );
    assert_eq!(g.nodes[3].inputs, vec![Value(2), Value(1)]);
    assert_eq!(g.nodes[1].scope, "k2.1");
    assert_eq!(g.nodes[4].scope, "");
    assert_eq!(g.nodes[6].op, Op::Constant { value: 1.0 });
    assert_eq!(g.output("output"), Some(Value(5)));
    assert_eq!(g.output("steps"), Some(Value(6)));
    // Canonical spacing on the way out, and stable from then on.
    let printed = text::print(&g);
    assert_mentions(
        &printed,
        &["  %1 = param name=\"k2.1.weight\" : f32[8,8,3,3]  @k2.1\n"],
    );
    assert_eq!(text::print(&text::parse(&printed).unwrap()), printed);
}

/// `graph { <body> return <outputs> }` with the body's lines starting on line 2.
fn in_graph(body: &str, outputs: &str) -> String {
    format!("graph {{\n{body}\n  return {outputs}\n}}\n")
}

#[track_caller]
fn assert_parse_error(src: &str, line: usize, parts: &[&str]) {
    let err = text::parse(src).expect_err("expected a parse error");
    match &err {
        IrError::Parse { line: l, .. } => assert_eq!(*l, line, "wrong line in `{err}`"),
        other => panic!("not a parse error: {other:?}"),
    }
    assert_mentions(&err.to_string(), parts);
}

const INPUT: &str = "  %0 = input name=\"x\" : f32[2,3]";

#[test]
fn malformed_lines_name_the_line_and_the_problem() {
    let cases: &[(&str, usize, &[&str])] = &[
        (
            "hello world",
            3,
            &["line 3: expected a node `%1 = ...` or `return`, found `hello`"],
        ),
        ("  %1 = relu(%0)", 3, &["relu: missing the value's type"]),
        (
            "  %1 = relu(%0) f32[2,3]",
            3,
            &["expected `=` after attribute `f32`"],
        ),
        (
            "  %1 = relu(%0 : f32[2,3]",
            3,
            &["expected `,` or `)` after operand %0, found `:`"],
        ),
        (
            "  %1 = relu(%0) : f32[2,3",
            3,
            &["expected `,` or `]` in the shape, found end of line"],
        ),
        (
            "  %1 = relu(%0) : f32[2,3]]",
            3,
            &["unexpected `]` at the end of the line"],
        ),
        ("  %1 = relu(%0) : q8[2,3]", 3, &["unknown dtype `q8`"]),
        (
            "  %1 = relu(%0) : f32[2,x]",
            3,
            &["expected a dimension, found `x]`"],
        ),
        (
            "  %1 = relu(% 0) : f32[2,3]",
            3,
            &["expected a number right after `%`"],
        ),
        (
            "  %1 relu(%0) : f32[2,3]",
            3,
            &["expected `=` after %1, found `relu(%0)`"],
        ),
        (
            "  %1 = reshape(%0) shape=[6 : f32[6]",
            3,
            &["bad value for attribute `shape`"],
        ),
        (
            "  %1 = reshape(%0) shape= : f32[6]",
            3,
            &["bad value for attribute `shape`"],
        ),
        (
            "  %1 = reshape(%0) shape=[6] shape=[6] : f32[6]",
            3,
            &["attribute `shape` given twice"],
        ),
    ];
    for (body_line, line, parts) in cases {
        assert_parse_error(
            &in_graph(&format!("{INPUT}\n{body_line}"), "y=%1"),
            *line,
            parts,
        );
    }
}

#[test]
fn ids_must_be_dense_in_order_and_defined() {
    let cases: &[(&str, usize, &[&str])] = &[
        (
            "  %2 = relu(%0) : f32[2,3]",
            3,
            &["expected %1 next, found %2"],
        ),
        (
            "  %0 = relu(%0) : f32[2,3]",
            3,
            &["%0 is already defined on line 2"],
        ),
        (
            "  %1 = relu(%1) : f32[2,3]",
            3,
            &["relu: operand %1 is not defined before %1"],
        ),
        (
            "  %1 = add(%0, %7) : f32[2,3]",
            3,
            &["add: operand %7 is not defined before %1"],
        ),
    ];
    for (body_line, line, parts) in cases {
        assert_parse_error(
            &in_graph(&format!("{INPUT}\n{body_line}"), "y=%1"),
            *line,
            parts,
        );
    }
    assert_parse_error(
        &in_graph(INPUT, "y=%3"),
        3,
        &["output `y` refers to undefined %3"],
    );
    assert_parse_error(
        &in_graph(INPUT, "y=%0, y=%0"),
        3,
        &["duplicate output name `y`"],
    );
    assert_parse_error(
        &in_graph(INPUT, "y=%0 z=%0"),
        3,
        &["expected `,` between outputs"],
    );
}

#[test]
fn unknown_ops_and_bad_attributes_are_named() {
    let conv = "  %1 = param name=\"w\" : f32[3,2,1,1]\n  %2 = conv2d(%0, %1)";
    let x = "  %0 = input name=\"x\" : f32[1,2,4,4]";
    let cases: &[(String, &[&str])] = &[
        (format!("{x}\n  %1 = frobnicate(%0) : f32[1,2,4,4]"), &["line 3: op `frobnicate`: unknown variant `frobnicate`"]),
        (format!("{x}\n  %1 = relu(%0) alpha=0.1 : f32[1,2,4,4]"), &["line 3: op `relu` has no attribute `alpha`"]),
        (format!("{x}\n  %1 = relu(%0) op=\"exp\" : f32[1,2,4,4]"), &["line 3: relu: `op` is not an attribute"]),
        (format!("{x}\n{conv} stride=[1,1] padding=[0,0] dilation=[1,1] : f32[1,3,4,4]"), &["line 4: op `conv2d`: missing field `groups`"]),
        (format!("{x}\n{conv} stride=[1,1] padding=[0,0] dilation=[1,1] groups=1 bias=true : f32[1,3,4,4]"), &["line 4: op `conv2d`: unknown field `bias`"]),
        (format!("{x}\n{conv} stride=[1,1] padding=[0,0] dilation=[1,1] groups=\"1\" : f32[1,3,4,4]"), &["line 4: op `conv2d`: invalid type: string \"1\""]),
        (format!("{x}\n{conv} stride=[1,1,1] padding=[0,0] dilation=[1,1] groups=1 : f32[1,3,4,4]"), &["line 4: op `conv2d`: invalid length 3"]),
        (format!("{x}\n  %1 = cast(%0) to=\"f8\" : f32[1,2,4,4]"), &["line 3: op `cast`: unknown variant `f8`"]),
    ];
    for (body, parts) in cases {
        let src = in_graph(body, "");
        let err = err_text(text::parse(&src));
        assert_mentions(&err, parts);
    }
}

#[test]
fn graph_structure_errors() {
    assert_parse_error("", 1, &["unexpected end of input: expected `graph {`"]);
    assert_parse_error(
        "graph\n",
        1,
        &["expected `{` after `graph`, found end of line"],
    );
    assert_parse_error(
        "digraph {\n}\n",
        1,
        &["expected `graph` to open the graph, found `digraph`"],
    );
    assert_parse_error(
        &format!("graph {{\n{INPUT}\n}}\n"),
        3,
        &["missing `return` before the closing `}`"],
    );
    assert_parse_error(
        &format!("graph {{\n{INPUT}\n"),
        2,
        &["unexpected end of input: missing `return` and `}`"],
    );
    assert_parse_error(
        &format!("graph {{\n{INPUT}\n  return\n"),
        3,
        &["missing the closing `}`"],
    );
    assert_parse_error(
        &format!("graph {{\n{INPUT}\n  return\n}}\n  %1 = relu(%0) : f32[2,3]\n"),
        5,
        &["unexpected `%1` after the closing `}`"],
    );
    assert_parse_error(
        &format!("graph {{\n{INPUT}\n  return\n}} }}\n"),
        4,
        &["unexpected `}` at the end"],
    );
}

#[test]
fn inference_errors_point_at_the_node_line() {
    // Declared type disagrees with inference.
    assert_parse_error(
        &in_graph(&format!("{INPUT}\n  %1 = relu(%0) : f32[3,2]"), "y=%1"),
        3,
        &["line 3: node %1 (relu): declared type f32[3,2] but the op produces f32[2,3]"],
    );
    // Operand shapes differ.
    assert_parse_error(
        &in_graph(
            &format!(
                "{INPUT}\n  %1 = input name=\"t\" : f32[3,2]\n\n  %2 = add(%0, %1) : f32[2,3]"
            ),
            "",
        ),
        5,
        &[
            "line 5: node %2 (add): operand shapes differ: [2,3] vs [3,2]",
            "operands: f32[2,3], f32[3,2]",
        ],
    );
    // Dtypes differ.
    assert_parse_error(
        &in_graph(
            &format!("{INPUT}\n  %1 = input name=\"n\" : i64[2,3]\n  %2 = mul(%0, %1) : f32[2,3]"),
            "",
        ),
        4,
        &["node %2 (mul): operands must share one dtype, got f32, i64"],
    );
    // Duplicate parameter names: reported on the second definition.
    assert_parse_error(
        &in_graph(
            &format!("{INPUT}\n  %1 = param name=\"w\" : f32[3]\n  %2 = param name=\"w\" : f32[3]"),
            "",
        ),
        4,
        &["duplicate param name `w`"],
    );
    // Operands on a source node.
    assert_parse_error(
        &in_graph(
            &format!("{INPUT}\n  %1 = param(%0) name=\"w\" : f32[3]"),
            "",
        ),
        3,
        &["node %1 (param): source nodes take no operands"],
    );
}
