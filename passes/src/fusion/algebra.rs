//! egg's explanations as algebra over layer names: each rewrite step shows only the
//! subterm it changed, before and after, in infix (`(a - b) * c`). Its operands are
//! named by the original node they equal where there is one (`conv2d@conv1#2`,
//! `layer1.0.bn1_b.weight`), so a step reads as the rule applied to named layers;
//! views are written as indexing (`x[1: 4..8]`).

use super::analysis::EGraph;
use super::language::{ENode, Head};
use calib_ir::{Graph, Op};
use egg::{Id, TreeTerm};
use std::cell::RefCell;
use std::collections::HashMap;
use std::collections::HashSet;
use std::rc::Rc;

/// Longest rendering of one subterm before it is cut with `…`.
const MAX_CHARS: usize = 240;

/// One rewrite of an explanation: its rule, and the subterm before and after.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Step {
    pub rule: String,
    pub forward: bool,
    pub before: String,
    pub after: String,
}

/// The rewrites of a tree explanation, each once, in proof order: at each level, the
/// rewrite that reaches a term, then the proofs of its children. egg's proof trees
/// share the proofs of shared subterms; walking them as a tree (or flattening them,
/// which copies the whole term at every step) is exponential in how deeply a kernel
/// body reuses its values, so every proof and term is visited once. `names` maps
/// e-classes to what to call them: the original node each holds, or the kernel output
/// that holds a value rewriting made.
pub fn steps(
    egraph: &EGraph,
    graph: &Graph,
    names: &HashMap<Id, String>,
    proof: &[Rc<TreeTerm<ENode>>],
) -> Vec<Step> {
    let printer = Printer::new(egraph, graph, names);
    let mut out = vec![];
    printer.walk(proof, &mut HashSet::new(), &mut out);
    out
}

/// The term a proof starts from, with its operands named as in [`steps`].
pub fn term(
    egraph: &EGraph,
    graph: &Graph,
    names: &HashMap<Id, String>,
    proof: &[Rc<TreeTerm<ENode>>],
) -> String {
    match proof.first() {
        Some(first) => Printer::new(egraph, graph, names).top(first, End::First),
        None => String::new(),
    }
}

/// Which end of a proof a term is read at: the term it starts from or ends at.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
enum End {
    First,
    Last,
}

/// A proof node, by address: egg shares them between the proofs of shared subterms.
type ProofKey = (*const TreeTerm<ENode>, End);

struct Printer<'a> {
    egraph: &'a EGraph,
    graph: &'a Graph,
    names: &'a HashMap<Id, String>,
    /// Each proof node's text (cut to [`MAX_CHARS`]) and e-class, by the end read.
    memo: RefCell<HashMap<ProofKey, (String, Option<Id>)>>,
}

impl<'a> Printer<'a> {
    fn new(egraph: &'a EGraph, graph: &'a Graph, names: &'a HashMap<Id, String>) -> Self {
        Printer {
            egraph,
            graph,
            names,
            memo: RefCell::new(HashMap::new()),
        }
    }

    fn walk(
        &self,
        proof: &[Rc<TreeTerm<ENode>>],
        seen: &mut HashSet<*const TreeTerm<ENode>>,
        out: &mut Vec<Step>,
    ) {
        for (i, t) in proof.iter().enumerate() {
            let rule = t.forward_rule.or(t.backward_rule);
            if let (Some(rule), Some(prev)) = (rule, i.checked_sub(1).map(|p| &proof[p])) {
                let step = Step {
                    rule: rule.to_string(),
                    forward: t.forward_rule.is_some(),
                    before: self.top(prev, End::Last),
                    after: self.top(t, End::First),
                };
                if !out.contains(&step) {
                    out.push(step);
                }
            }
            if seen.insert(Rc::as_ptr(t)) {
                for child in &t.child_proofs {
                    self.walk(child, seen, out);
                }
            }
        }
    }

    /// `t` read at `end`, written out at its top even where it has a name.
    fn top(&self, t: &TreeTerm<ENode>, end: End) -> String {
        self.render(t, end, true).0
    }

    /// `t` read at `end` as text, and its e-class. Below the top, a subterm that equals
    /// a named value is written as that name.
    fn render(&self, t: &TreeTerm<ENode>, end: End, top: bool) -> (String, Option<Id>) {
        let key = (t as *const TreeTerm<ENode>, end);
        if !top {
            if let Some(done) = self.memo.borrow().get(&key) {
                return done.clone();
            }
        }
        let children: Vec<(String, Option<Id>)> = t
            .child_proofs
            .iter()
            .filter_map(|proof| match end {
                End::First => proof.first(),
                End::Last => proof.last(),
            })
            .map(|c| self.render(c, end, false))
            .collect();
        let class = children
            .iter()
            .map(|(_, c)| *c)
            .collect::<Option<Vec<Id>>>()
            .and_then(|ids| self.egraph.lookup(ENode::new(t.node.head, ids)));
        let named = class.and_then(|c| self.names.get(&self.egraph.find(c)));
        let text = match named {
            Some(name) if !top && !matches!(t.node.head, Head::Leaf(_)) => name.clone(),
            _ => cut(self.text(&t.node, children.into_iter().map(|(s, _)| s).collect())),
        };
        if !top {
            self.memo.borrow_mut().insert(key, (text.clone(), class));
        }
        (text, class)
    }

    fn text(&self, node: &ENode, args: Vec<String>) -> String {
        match node.head {
            Head::Leaf(v) => node_name(self.graph, v as usize),
            Head::Kernel(k) => format!("kernel{k}({})", args.join(", ")),
            Head::Proj(i) => format!("{}.out{i}", args.join(", ")),
            Head::Op { .. } => match self.egraph.analysis.op_of(node) {
                Some(op) => op_text(op, &args),
                None => format!("{}({})", node, args.join(", ")),
            },
        }
    }
}

/// `s`, cut with `…` past [`MAX_CHARS`].
fn cut(s: String) -> String {
    if s.chars().count() > MAX_CHARS {
        s.chars().take(MAX_CHARS).collect::<String>() + "…"
    } else {
        s
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
