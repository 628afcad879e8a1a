//! egg's explanations as algebra over layer names: each rewrite step shows only the
//! subterm it changed, before and after, in infix (`(a - b) * c`). Its operands are
//! named by the original node they equal where there is one (`conv2d@conv1#2`,
//! `layer1.0.bn1_b.weight`), so a step reads as the rule applied to named layers;
//! views are written as indexing (`x[1: 4..8]`).

use super::analysis::EGraph;
use super::language::{ENode, Head};
use calib_ir::{Graph, Op};
use egg::{FlatTerm, Id, Symbol};
use std::collections::HashMap;

/// Longest rendering of one subterm before it is cut with `…`.
const MAX_CHARS: usize = 240;

/// One rewrite of an explanation: its rule, and the subterm before and after.
pub struct Step {
    pub rule: String,
    pub forward: bool,
    pub before: String,
    pub after: String,
}

/// The steps between consecutive terms of a flat explanation; `names` maps e-classes to
/// the original node each holds.
pub fn steps(
    egraph: &EGraph,
    graph: &Graph,
    names: &HashMap<Id, usize>,
    terms: &[FlatTerm<ENode>],
) -> Vec<Step> {
    let printer = Printer {
        egraph,
        graph,
        names,
    };
    terms
        .windows(2)
        .filter_map(|w| {
            let (before, after, rule, forward) = changed(&w[0], &w[1])?;
            Some(Step {
                rule: rule.to_string(),
                forward,
                before: printer.term(before),
                after: printer.term(after),
            })
        })
        .collect()
}

/// The subterm of `next` a rule rewrote, the same position in `prev`, and the rule.
fn changed<'t>(
    prev: &'t FlatTerm<ENode>,
    next: &'t FlatTerm<ENode>,
) -> Option<(&'t FlatTerm<ENode>, &'t FlatTerm<ENode>, Symbol, bool)> {
    if let Some(rule) = next.forward_rule {
        return Some((prev, next, rule, true));
    }
    if let Some(rule) = next.backward_rule {
        return Some((prev, next, rule, false));
    }
    prev.children
        .iter()
        .zip(&next.children)
        .find_map(|(p, n)| changed(p, n))
}

struct Printer<'a> {
    egraph: &'a EGraph,
    graph: &'a Graph,
    names: &'a HashMap<Id, usize>,
}

impl Printer<'_> {
    fn term(&self, t: &FlatTerm<ENode>) -> String {
        let mut s = self.render(t, true).0;
        if s.chars().count() > MAX_CHARS {
            s = s.chars().take(MAX_CHARS).collect::<String>() + "…";
        }
        s
    }

    /// `t` as text, and its e-class. Below the top, a subterm that equals an original
    /// node is written as that node's name.
    fn render(&self, t: &FlatTerm<ENode>, top: bool) -> (String, Option<Id>) {
        let children: Vec<(String, Option<Id>)> =
            t.children.iter().map(|c| self.render(c, false)).collect();
        let class = children
            .iter()
            .map(|(_, c)| *c)
            .collect::<Option<Vec<Id>>>()
            .and_then(|ids| self.egraph.lookup(ENode::new(t.node.head, ids)));
        if let Some(&v) = class.and_then(|c| self.names.get(&self.egraph.find(c))) {
            if !top && !matches!(t.node.head, Head::Leaf(_)) {
                return (self.leaf(v), class);
            }
        }
        let args: Vec<String> = children.into_iter().map(|(s, _)| s).collect();
        let text = match t.node.head {
            Head::Leaf(v) => self.leaf(v as usize),
            Head::Kernel(k) => format!("kernel{k}({})", args.join(", ")),
            Head::Proj(i) => format!("{}.out{i}", args.join(", ")),
            Head::Op { .. } => match self.egraph.analysis.op_of(&t.node) {
                Some(op) => op_text(op, &args),
                None => format!("{}({})", t.node, args.join(", ")),
            },
        };
        (text, class)
    }

    fn leaf(&self, v: usize) -> String {
        node_name(self.graph, v)
    }
}

/// An original value by its name (inputs, parameters) or its op and layer:
/// `relu@layer1.0#106`.
pub fn node_name(graph: &Graph, v: usize) -> String {
    let Some(node) = graph.nodes.get(v) else {
        return format!("%{v}");
    };
    match &node.op {
        Op::Input { name } | Op::Param { name } => name.clone(),
        op if node.scope.is_empty() => format!("{}#{v}", op.name()),
        op => format!("{}@{}#{v}", op.name(), node.scope),
    }
}

fn op_text(op: &Op, args: &[String]) -> String {
    let arg = |i: usize| args.get(i).map_or("?", String::as_str);
    let infix = |sym: &str| format!("({} {sym} {})", arg(0), arg(1));
    match op {
        Op::Add => infix("+"),
        Op::Sub => infix("-"),
        Op::Mul => infix("*"),
        Op::Div => infix("/"),
        Op::Neg => format!("-{}", arg(0)),
        Op::Constant { value } => format!("{value}"),
        // Broadcasts and reshapes change no value, only how it is indexed.
        Op::Broadcast { .. } | Op::Reshape { .. } => arg(0).to_string(),
        Op::Slice { axis, start, end } => format!("{}[{axis}: {start}..{end}]", arg(0)),
        Op::ReduceMean { axes, .. } => format!("mean{axes:?}({})", arg(0)),
        Op::ReduceSum { axes, .. } => format!("sum{axes:?}({})", arg(0)),
        Op::ReduceMax { axes, .. } => format!("max{axes:?}({})", arg(0)),
        Op::Concat { axis } => format!("concat{axis}({})", args.join(", ")),
        op => format!("{}({})", op.name(), args.join(", ")),
    }
}
