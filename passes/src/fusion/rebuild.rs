//! Kernel bodies rebuilt by the plan passes that change what a kernel stores or how it
//! reads a buffer (`narrow.rs`, `shared_rounding.rs`): the nodes some output needs, in
//! order, each input replaced by what the pass reads there.

use calib_ir::{Graph, Kernel, Node, Value};

/// How a pass rebuilds a body.
pub(super) trait Inputs {
    /// Adds body input `node`, the `position`-th, to `g`; returns the value that stands
    /// for it in the rebuilt body.
    fn input(&mut self, g: &mut Graph, position: usize, node: &Node) -> Value;

    /// A value of `g` that node `node` over operands `operands` (rebuilt) amounts to
    /// without a node of its own, if any.
    fn fold(&self, _node: &Node, _operands: &[Value]) -> Option<Value> {
        None
    }
}

/// `body` with `outputs` (old values, in order) as its outputs, named by position, and
/// its inputs as `inputs` has them. Nodes no output needs are left out; every input
/// stays, so positions keep matching the kernel's input buffers.
pub(super) fn rebuild(body: &Graph, outputs: &[Value], inputs: &mut impl Inputs) -> Graph {
    let mut live = vec![false; body.nodes.len()];
    let mut stack: Vec<Value> = outputs.to_vec();
    while let Some(v) = stack.pop() {
        if !std::mem::replace(&mut live[v.0], true) {
            stack.extend(&body.nodes[v.0].inputs);
        }
    }
    let mut g = Graph::new();
    let mut map: Vec<Option<Value>> = vec![None; body.nodes.len()];
    let mut position = 0;
    for (i, node) in body.nodes.iter().enumerate() {
        let input = matches!(node.op, calib_ir::Op::Input { .. });
        if !live[i] && !input {
            continue;
        }
        let operands: Vec<Value> = (node.inputs.iter())
            .map(|x| map[x.0].expect("operands come first"))
            .collect();
        map[i] = Some(if input {
            position += 1;
            inputs.input(&mut g, position - 1, node)
        } else if let Some(v) = inputs.fold(node, &operands) {
            v
        } else if node.inputs.is_empty() {
            (g.push_source(node.op.clone(), node.ty.clone(), &node.scope))
                .expect("a source of a valid body")
        } else {
            (g.push(node.op.clone(), operands, &node.scope))
                .expect("the same op over values of the same types")
        });
    }
    for (i, &v) in outputs.iter().enumerate() {
        g.add_output(Kernel::output_name(i), map[v.0].expect("outputs are live"))
            .expect("distinct output names");
    }
    g
}
