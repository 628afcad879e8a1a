//! Writing IR as algebra: `g * y * (1.0 - y)` appends the nodes of a sigmoid's adjoint.
//!
//! An [`Emitter`] owns the graph under construction; [`Expr`] is a copyable handle to one
//! of its values with the arithmetic operators overloaded, so that rewrite rules read
//! like the formulas they implement. Scalars (`f64`) become constants of the other
//! operand's type, which keeps binary operands identically shaped without broadcasts.
//!
//! Operators cannot return `Result`, so a failing node poisons the emitter instead: the
//! first error is kept, every later expression is inert, and the pass collects the error
//! with [`Emitter::finish_rule`] once per rule. Rules run on type-checked graphs, so an
//! error here means a rule built an ill-typed node.

use calib_ir::{DType, Graph, IrError, Op, Shape, TensorType, Value};
use std::cell::RefCell;
use std::ops::{Add, Div, Mul, Neg, Sub};

/// A graph being extended through [`Expr`]s.
pub(crate) struct Emitter {
    graph: RefCell<Graph>,
    scope: RefCell<String>,
    error: RefCell<Option<IrError>>,
}

/// A value of the emitter's graph; `None` once the emitter is poisoned.
#[derive(Clone, Copy)]
pub(crate) struct Expr<'e> {
    em: &'e Emitter,
    value: Option<Value>,
}

impl Emitter {
    pub fn new(graph: Graph) -> Self {
        Emitter {
            graph: RefCell::new(graph),
            scope: RefCell::new(String::new()),
            error: RefCell::new(None),
        }
    }

    pub fn into_graph(self) -> Graph {
        self.graph.into_inner()
    }

    /// Runs `f` on the graph itself (to declare outputs, say).
    pub fn with_graph<T>(&self, f: impl FnOnce(&mut Graph) -> T) -> T {
        f(&mut self.graph.borrow_mut())
    }

    /// The scope recorded on the nodes emitted from now on.
    pub fn set_scope(&self, scope: &str) {
        *self.scope.borrow_mut() = scope.to_string();
    }

    /// The first error since the last call, if any node failed to type-check.
    pub fn finish_rule(&self) -> Result<(), IrError> {
        self.error.borrow_mut().take().map_or(Ok(()), Err)
    }

    /// A handle to an existing value.
    pub fn expr(&self, v: Value) -> Expr<'_> {
        Expr {
            em: self,
            value: Some(v),
        }
    }

    pub fn constant(&self, value: f64, ty: TensorType) -> Expr<'_> {
        if self.error.borrow().is_some() {
            return self.inert();
        }
        let pushed =
            self.graph
                .borrow_mut()
                .push_source(Op::Constant { value }, ty, &self.scope.borrow());
        self.record(pushed)
    }

    /// Appends `op` applied to `operands`; inert if any operand is.
    pub fn op(&self, op: Op, operands: &[Expr<'_>]) -> Expr<'_> {
        let values: Option<Vec<Value>> = operands.iter().map(|e| e.value).collect();
        match values {
            Some(values) if self.error.borrow().is_none() => {
                let pushed = self
                    .graph
                    .borrow_mut()
                    .push(op, values, &self.scope.borrow());
                self.record(pushed)
            }
            _ => self.inert(),
        }
    }

    pub fn concat<'e>(&'e self, parts: &[Expr<'e>], axis: usize) -> Expr<'e> {
        match parts {
            [single] => *single,
            _ => self.op(Op::Concat { axis }, parts),
        }
    }

    fn record(&self, pushed: calib_ir::Result<Value>) -> Expr<'_> {
        match pushed {
            Ok(v) => Expr {
                em: self,
                value: Some(v),
            },
            Err(e) => {
                self.error.borrow_mut().get_or_insert(e);
                self.inert()
            }
        }
    }

    fn inert(&self) -> Expr<'_> {
        Expr {
            em: self,
            value: None,
        }
    }
}

impl<'e> Expr<'e> {
    /// The value, or `None` if the emitter was poisoned on the way here.
    pub fn value(self) -> Option<Value> {
        self.value
    }

    pub fn emitter(self) -> &'e Emitter {
        self.em
    }

    /// The value's type; a scalar f32 placeholder for an inert expression (whatever is
    /// built from it stays inert).
    pub fn ty(self) -> TensorType {
        match self.value {
            Some(v) => self.em.graph.borrow().ty(v).clone(),
            None => TensorType::new(DType::F32, vec![]),
        }
    }

    pub fn shape(self) -> Shape {
        self.ty().shape
    }

    /// A constant of this value's type.
    pub fn full_like(self, value: f64) -> Expr<'e> {
        match self.value {
            Some(_) => self.em.constant(value, self.ty()),
            None => self,
        }
    }

    pub fn zeros_like(self) -> Expr<'e> {
        self.full_like(0.0)
    }

    fn unary(self, op: Op) -> Expr<'e> {
        self.em.op(op, &[self])
    }

    fn binary(self, op: Op, rhs: Expr<'e>) -> Expr<'e> {
        self.em.op(op, &[self, rhs])
    }

    pub fn cast(self, to: DType) -> Expr<'e> {
        if self.ty().dtype == to {
            return self;
        }
        self.unary(Op::Cast { to })
    }

    /// `1` where `self > rhs`, else `0`.
    pub fn gt(self, rhs: Expr<'e>) -> Expr<'e> {
        self.binary(Op::CmpGt, rhs)
    }

    /// `1` where `self >= rhs`, else `0`.
    pub fn ge(self, rhs: Expr<'e>) -> Expr<'e> {
        self.binary(Op::CmpGe, rhs)
    }

    /// `1` where `self == rhs`, else `0`.
    pub fn equals(self, rhs: Expr<'e>) -> Expr<'e> {
        self.binary(Op::CmpEq, rhs)
    }

    /// `then` where `self != 0`, else `otherwise`.
    pub fn select(self, then: Expr<'e>, otherwise: Expr<'e>) -> Expr<'e> {
        self.em.op(Op::Select, &[self, then, otherwise])
    }

    /// Broadcast to `shape`; no node when the shape already matches.
    pub fn broadcast(self, shape: &[usize]) -> Expr<'e> {
        if self.value.is_none() || self.shape() == shape {
            return self;
        }
        self.unary(Op::Broadcast {
            shape: shape.to_vec(),
        })
    }

    /// Reshape to `shape`; no node when the shape already matches.
    pub fn reshape(self, shape: &[usize]) -> Expr<'e> {
        if self.value.is_none() || self.shape() == shape {
            return self;
        }
        self.unary(Op::Reshape {
            shape: shape.to_vec(),
        })
    }

    /// Sum over `axes`; no node when there is nothing to sum.
    pub fn sum(self, axes: &[usize], keepdims: bool) -> Expr<'e> {
        if axes.is_empty() {
            return self;
        }
        self.unary(Op::ReduceSum {
            axes: axes.to_vec(),
            keepdims,
        })
    }

    pub fn slice(self, axis: usize, start: usize, end: usize) -> Expr<'e> {
        self.unary(Op::Slice { axis, start, end })
    }

    pub fn matmul(self, rhs: Expr<'e>, transpose_a: bool, transpose_b: bool) -> Expr<'e> {
        self.binary(
            Op::MatMul {
                transpose_a,
                transpose_b,
            },
            rhs,
        )
    }
}

/// `Expr ∘ Expr`, `Expr ∘ f64` and `f64 ∘ Expr` for one arithmetic operator.
macro_rules! arithmetic {
    ($trait:ident, $method:ident, $op:expr) => {
        impl<'e> $trait for Expr<'e> {
            type Output = Expr<'e>;
            fn $method(self, rhs: Expr<'e>) -> Expr<'e> {
                self.binary($op, rhs)
            }
        }
        impl<'e> $trait<f64> for Expr<'e> {
            type Output = Expr<'e>;
            fn $method(self, rhs: f64) -> Expr<'e> {
                self.binary($op, self.full_like(rhs))
            }
        }
        impl<'e> $trait<Expr<'e>> for f64 {
            type Output = Expr<'e>;
            fn $method(self, rhs: Expr<'e>) -> Expr<'e> {
                rhs.full_like(self).binary($op, rhs)
            }
        }
    };
}

arithmetic!(Add, add, Op::Add);
arithmetic!(Sub, sub, Op::Sub);
arithmetic!(Mul, mul, Op::Mul);
arithmetic!(Div, div, Op::Div);

impl<'e> Neg for Expr<'e> {
    type Output = Expr<'e>;
    fn neg(self) -> Expr<'e> {
        self.unary(Op::Neg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formulas_append_typed_nodes() {
        let mut g = Graph::new();
        let x = g
            .push_source(
                Op::Input { name: "x".into() },
                TensorType::new(DType::F32, vec![3]),
                "",
            )
            .unwrap();
        let em = Emitter::new(g);
        em.set_scope("act");
        let x = em.expr(x);
        let y = ((1.0 - x) * x).value();
        em.finish_rule().unwrap();
        let g = em.into_graph();
        let ops: Vec<&str> = g.nodes.iter().map(|n| n.op.name()).collect();
        assert_eq!(ops, ["input", "constant", "sub", "mul"]);
        assert_eq!(g.nodes[1].op, Op::Constant { value: 1.0 });
        assert_eq!(g.nodes[1].ty, TensorType::new(DType::F32, vec![3]));
        assert_eq!(y, Some(Value(3)));
        assert_eq!(g.nodes[3].scope, "act");
    }

    #[test]
    fn an_ill_typed_node_poisons_until_collected() {
        let mut g = Graph::new();
        let ty = |s: Vec<usize>| TensorType::new(DType::F32, s);
        let a = g
            .push_source(Op::Input { name: "a".into() }, ty(vec![2]), "")
            .unwrap();
        let b = g
            .push_source(Op::Input { name: "b".into() }, ty(vec![3]), "")
            .unwrap();
        let em = Emitter::new(g);
        let bad = em.expr(a) + em.expr(b);
        let later = bad * 2.0 + em.expr(a);
        assert!(bad.value().is_none() && later.value().is_none());
        assert!(matches!(em.finish_rule(), Err(IrError::Type { .. })));
        // Collected: the emitter works again, and nothing was appended meanwhile.
        assert!((em.expr(a) * 2.0).value().is_some());
        assert!(em.finish_rule().is_ok());
        assert_eq!(em.into_graph().nodes.len(), 4);
    }
}
