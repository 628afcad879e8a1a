//! A kernel's fused body as a drawable graph: its inputs (`in<k>`, each naming the
//! buffer it reads), the body's ops coloured by kind (the anchor's loop nest, index maps
//! that become address arithmetic, elementwise prologue and epilogue), and its outputs
//! (`out<k>`, each naming the buffer, or the channel slice, it stores).

use super::layout::{DrawGraph, DrawNode};
use calib_ir::{Kernel, Op, OpClass, Program};

/// The CSS class of an op's kind, shared by every drawn graph of the page.
pub fn kind(op: &Op) -> &'static str {
    match op.class() {
        OpClass::Source => "k-source",
        OpClass::Elementwise => "k-elementwise",
        OpClass::Convolution | OpClass::MatMul => "k-gemm",
        OpClass::Pool | OpClass::Resize => "k-window",
        OpClass::Reduction => "k-reduction",
        OpClass::Layout => "k-layout",
        OpClass::Collective => "k-collective",
    }
}

/// The body of `kernel` (of `program`) as a graph to lay out.
pub fn body_graph(program: &Program, kernel: &Kernel) -> DrawGraph {
    let body = &kernel.body;
    let mut g = DrawGraph::default();
    for (i, node) in body.nodes.iter().enumerate() {
        let (label, title) = match &node.op {
            Op::Input { name } => {
                let buffer = name
                    .strip_prefix("in")
                    .and_then(|k| k.parse::<usize>().ok())
                    .and_then(|k| kernel.inputs.get(k))
                    .map(|&b| program.buffer(b).name.clone())
                    .unwrap_or_default();
                (
                    format!("{name} ← {buffer}"),
                    format!("{name} reads buffer {buffer}"),
                )
            }
            Op::Param { name } => (name.clone(), format!("parameter {name}")),
            op => (op.name().to_string(), format!("%{i} = {op:?}")),
        };
        g.nodes.push(DrawNode {
            label,
            detail: node.ty.to_string(),
            class: kind(&node.op).to_string(),
            title: format!("{title} : {}", node.ty),
            ..Default::default()
        });
        g.edges.extend(node.inputs.iter().map(|v| (v.0, i)));
    }
    for (k, out) in body.outputs.iter().enumerate() {
        let stored = kernel.outputs.get(k).map_or(String::new(), |o| {
            let name = &program.buffer(o.buffer).name;
            match &o.slice {
                Some(s) => format!("{name}[axis {}: {}..{}]", s.axis, s.start, s.end),
                None => name.clone(),
            }
        });
        g.nodes.push(DrawNode {
            label: format!("{} → {stored}", out.name),
            detail: body.ty(out.value).to_string(),
            class: "k-output".into(),
            title: format!("{} is stored to {stored}", out.name),
            ..Default::default()
        });
        g.edges.push((out.value.0, g.nodes.len() - 1));
    }
    g
}
