//! Rewrite rules, one file per family, and the small vocabulary they are written in.
//!
//! A rule is a left-hand pattern over op names (attributes open) and a right-hand side
//! built in Rust through [`Rhs`], whose guards return `None` to decline a match:
//!
//! ```text
//! rule("neg-neg", "(neg (neg ?x))", |r| Some(r.var("?x")))
//! ```
//!
//! Unions are justified by the rule's name, so egg's explanations name every step.
//! There are no commutativity or associativity rules: where operand order matters, a
//! rule lists both orders as separate patterns.

pub mod batchnorm;
pub mod batchnorm_grad;
pub mod cleanup;
pub mod siblings;

use super::analysis::{
    add_op, add_op_uncanonical, constant_value, find_op, EGraph, FusionAnalysis,
};
use super::language::ENode;
use calib_ir::{Op, TensorType};
use egg::{Applier, Id, MultiPattern, Pattern, PatternAst, Rewrite, Subst, Symbol, Var};
use std::sync::Arc;

pub type Rule = Rewrite<ENode, FusionAnalysis>;

/// The phases of saturation that rewrite (lowering to kernels is its own pass).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Exact clean-ups: views of views, identities.
    Simplify,
    /// Structural rewrites that open up fusion: BatchNorm folding, one-pass batch
    /// statistics, merged sibling convolutions.
    Explore,
}

/// The rules of `phase`.
pub fn rules(phase: Phase) -> Vec<Rule> {
    match phase {
        Phase::Simplify => cleanup::rules(),
        Phase::Explore => [
            batchnorm::rules(),
            batchnorm_grad::rules(),
            siblings::rules(),
            cleanup::rules(),
        ]
        .into_iter()
        .flatten()
        .collect(),
    }
}

/// A rule written outside calib (see [`FusionOptions::extra_rules`](super::FusionOptions)):
/// a left-hand pattern over op names and a right-hand side built through [`Rhs`], as
/// calib's own rules are.
#[derive(Clone)]
pub struct ExtraRule {
    name: String,
    // egg's rewrites are not `Clone` (the analysis is not); each saturation builds its own.
    make: Arc<dyn Fn() -> Rule + Send + Sync>,
}

impl ExtraRule {
    /// A rewrite from `lhs` (an s-expression over op names, `?x` for variables) to what
    /// `rhs` builds; `rhs` returns `None` to decline a match. Panics on a malformed
    /// pattern, as a rule's text is code, not input.
    pub fn new(
        name: &str,
        lhs: &str,
        rhs: impl Fn(&mut Rhs) -> Option<Id> + Send + Sync + 'static,
    ) -> Self {
        let rhs = Arc::new(rhs);
        let (owned_name, lhs) = (name.to_string(), lhs.to_string());
        let make = move || {
            let rhs = rhs.clone();
            rule(&owned_name, &lhs, move |r| rhs(r))
        };
        make(); // a malformed pattern panics here, where the rule is written
        ExtraRule {
            name: name.to_string(),
            make: Arc::new(make),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub(crate) fn rule(&self) -> Rule {
        (self.make)()
    }
}

impl std::fmt::Debug for ExtraRule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("ExtraRule").field(&self.name).finish()
    }
}

/// The matched e-graph, seen by a rule's right-hand side.
pub struct Rhs<'a> {
    pub(crate) egraph: &'a mut EGraph,
    subst: &'a Subst,
    /// The class the left-hand side matched.
    pub root: Id,
    /// The matched node, where a rule named it ([`Rhs::rewriting`]).
    from: Option<Id>,
}

impl Rhs<'_> {
    /// The class bound to `?name`.
    pub fn var(&self, name: &str) -> Id {
        let v: Var = name.parse().expect("rule variables are written `?name`");
        self.subst[v]
    }

    pub fn ty(&self, id: Id) -> &TensorType {
        self.egraph[id].data.ty()
    }

    pub fn params_only(&self, id: Id) -> bool {
        self.egraph[id].data.params_only
    }

    /// The op (with its operand classes) of the first `kind` node in class `id`.
    pub fn op(&self, id: Id, kind: &str) -> Option<(Op, Vec<Id>)> {
        find_op(self.egraph, id, kind).map(|(op, n)| (op.clone(), n.children.clone()))
    }

    /// Every `kind` node of class `id`, with its operand classes.
    pub fn ops(&self, id: Id, kind: &str) -> Vec<(Op, Vec<Id>)> {
        self.egraph[id]
            .nodes
            .iter()
            .filter(|n| n.kind() == Some(kind))
            .filter_map(|n| {
                self.egraph
                    .analysis
                    .op_of(n)
                    .map(|op| (op.clone(), n.children.clone()))
            })
            .collect()
    }

    /// The op of a `kind` node in class `id` whose operands are `children`: how a rule
    /// reads the attributes of a node its pattern matched.
    pub fn op_over(&self, id: Id, kind: &str, children: &[Id]) -> Option<Op> {
        let want: Vec<Id> = children.iter().map(|&c| self.egraph.find(c)).collect();
        self.egraph[id].nodes.iter().find_map(|n| {
            let same = n.kind() == Some(kind)
                && n.children
                    .iter()
                    .map(|&c| self.egraph.find(c))
                    .eq(want.iter().copied());
            if same {
                self.egraph.analysis.op_of(n).cloned()
            } else {
                None
            }
        })
    }

    /// The value of a class that is a constant (or a broadcast of one).
    pub fn constant(&self, id: Id) -> Option<f64> {
        constant_value(self.egraph, id)
    }

    /// Names the node the rule rewrites, `op` over `children` in the matched class, for
    /// explanations: egg justifies a union by the two nodes it joins, and the matched
    /// class's first node is not the one rewritten where the class holds several forms
    /// (a sum that an earlier rewrite already gave another operand).
    pub fn rewriting(&mut self, op: Op, children: &[Id]) {
        if !self.egraph.are_explanations_enabled() {
            return;
        }
        let node = add_op_uncanonical(self.egraph, op, children);
        let root = self.egraph.find(self.root);
        self.from = node.filter(|&n| self.egraph.find(n) == root);
    }

    /// Adds `op` over `children`, if it type-checks. With explanations on, the id is
    /// this very node's even where its class exists already, so that egg justifies a
    /// union by the node a rule built, not by the first node of its class.
    pub fn add(&mut self, op: Op, children: &[Id]) -> Option<Id> {
        if self.egraph.are_explanations_enabled() {
            add_op_uncanonical(self.egraph, op, children)
        } else {
            add_op(self.egraph, op, children)
        }
    }

    /// Marks the `kind` node of class `id` as superseded (see `FusionAnalysis`).
    pub fn supersede(&mut self, id: Id, kind: &str) {
        if let Some((_, n)) = find_op(self.egraph, id, kind) {
            let n = n.clone();
            self.egraph.analysis.superseded.push(n);
        }
    }

    /// Marks the `kind` node over `children` in class `id` as superseded.
    pub fn supersede_over(&mut self, id: Id, kind: &str, children: &[Id]) {
        let want: Vec<Id> = children.iter().map(|&c| self.egraph.find(c)).collect();
        let found = self.egraph[id]
            .nodes
            .iter()
            .find(|n| {
                n.kind() == Some(kind)
                    && n.children
                        .iter()
                        .map(|&c| self.egraph.find(c))
                        .eq(want.iter().copied())
            })
            .cloned();
        self.egraph.analysis.superseded.extend(found);
    }
}

/// A rewrite from `lhs` to whatever `rhs` builds (nothing when it returns `None`).
pub fn rule(
    name: &str,
    lhs: &str,
    rhs: impl Fn(&mut Rhs) -> Option<Id> + Send + Sync + 'static,
) -> Rule {
    let pattern: Pattern<ENode> = lhs
        .parse()
        .unwrap_or_else(|e| panic!("rule {name}: bad pattern {lhs}: {e}"));
    Rewrite::new(
        name,
        pattern,
        Build(move |r: &mut Rhs| rhs(r).map(|id| vec![(r.from.unwrap_or(r.root), id)])),
    )
    .unwrap_or_else(|e| panic!("rule {name}: {e}"))
}

/// A rewrite over several matched classes at once (`?a = (...), ?b = (...)`); `rhs`
/// returns the pairs of classes to union.
pub fn multi_rule(
    name: &str,
    lhs: &str,
    rhs: impl Fn(&mut Rhs) -> Option<Vec<(Id, Id)>> + Send + Sync + 'static,
) -> Rule {
    let pattern: MultiPattern<ENode> = lhs
        .parse()
        .unwrap_or_else(|e| panic!("rule {name}: bad pattern {lhs}: {e:?}"));
    Rewrite::new(name, pattern, Build(rhs)).unwrap_or_else(|e| panic!("rule {name}: {e}"))
}

/// An applier that runs a Rust right-hand side and unions what it returns, justified by
/// the rule's name.
struct Build<F>(F);

impl<F> Applier<ENode, FusionAnalysis> for Build<F>
where
    F: Fn(&mut Rhs) -> Option<Vec<(Id, Id)>>,
{
    fn apply_one(
        &self,
        egraph: &mut EGraph,
        eclass: Id,
        subst: &Subst,
        _ast: Option<&PatternAst<ENode>>,
        rule: Symbol,
    ) -> Vec<Id> {
        let mut rhs = Rhs {
            egraph,
            subst,
            root: eclass,
            from: None,
        };
        let Some(pairs) = (self.0)(&mut rhs) else {
            return vec![];
        };
        pairs
            .into_iter()
            .filter(|&(a, b)| egraph.union_trusted(a, b, rule))
            .map(|(a, _)| a)
            .collect()
    }
}
