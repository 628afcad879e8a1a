//! The e-class analysis: every e-class knows its tensor type(s), and whether its value
//! depends on parameters and constants only (what eval-mode BatchNorm folding needs).
//!
//! The analysis also owns the interning tables the language refers to by number: op
//! attributes, leaf types, and kernel bodies. Types never change when classes merge
//! (a rule that unions values of different types is a bug, and [`add_op`] refuses to
//! build ill-typed nodes in the first place); "params only" is an "or", since one
//! parameter-only way to compute a value makes the value parameter-only. `merge`
//! reports exactly which side changed, which keeps egg's rebuilds cheap.

use super::group::Group;
use super::language::{ENode, Head};
use calib_ir::{infer_type, Anchor, Graph, Op, TensorType};
use egg::{Analysis, DidMerge, Id, Symbol};
use std::collections::HashMap;

pub type EGraph = egg::EGraph<ENode, FusionAnalysis>;

/// What is known about an e-class.
#[derive(Clone, Debug, PartialEq)]
pub struct Data {
    /// One type for a value; one per output for a kernel's tuple.
    pub types: Vec<TensorType>,
    pub params_only: bool,
}

impl Data {
    /// The type of a value class.
    pub fn ty(&self) -> &TensorType {
        &self.types[0]
    }
}

/// An interned op: its attributes, and for constants (which have no operands to infer
/// from) its type.
#[derive(Clone, Debug)]
pub struct OpEntry {
    pub op: Op,
    pub ty: Option<TensorType>,
}

/// A fused kernel's body, as the lowering phase built it.
#[derive(Clone, Debug)]
pub struct KernelBody {
    pub body: Graph,
    pub anchor: Anchor,
    /// The group it was built from (over the region's DAG), to rebuild the body for
    /// the outputs extraction ends up using.
    pub group: Group,
}

/// A value from outside the region.
#[derive(Clone, Debug)]
pub struct LeafInfo {
    pub ty: TensorType,
    pub params_only: bool,
}

#[derive(Default)]
pub struct FusionAnalysis {
    ops: Vec<OpEntry>,
    op_keys: HashMap<String, u32>,
    pub leaves: HashMap<u32, LeafInfo>,
    kernels: Vec<KernelBody>,
    kernel_keys: HashMap<String, u32>,
    /// Nodes a rule replaced with a strictly better form that extraction should only
    /// fall back to (a two-pass variance that can never fuse into its producer).
    pub superseded: Vec<ENode>,
}

impl FusionAnalysis {
    /// The attributes number of `op` (with a constant's type).
    pub fn intern_op(&mut self, op: Op, ty: Option<TensorType>) -> u32 {
        let key = format!(
            "{}|{}",
            serde_json::to_string(&op).expect("ops serialize"),
            ty.as_ref().map_or(String::new(), |t| t.to_string())
        );
        if let Some(&i) = self.op_keys.get(&key) {
            return i;
        }
        let i = self.ops.len() as u32;
        self.ops.push(OpEntry { op, ty });
        self.op_keys.insert(key, i);
        i
    }

    pub fn op_entry(&self, attrs: u32) -> &OpEntry {
        &self.ops[attrs as usize]
    }

    /// The op of an op node (`None` for other nodes and for pattern nodes).
    pub fn op_of(&self, node: &ENode) -> Option<&Op> {
        match node.head {
            Head::Op { attrs, .. } if (attrs as usize) < self.ops.len() => {
                Some(&self.ops[attrs as usize].op)
            }
            _ => None,
        }
    }

    /// The number of a kernel body; equal bodies over equal inputs share one.
    pub fn intern_kernel(&mut self, key: String, body: KernelBody) -> u32 {
        if let Some(&i) = self.kernel_keys.get(&key) {
            return i;
        }
        let i = self.kernels.len() as u32;
        self.kernels.push(body);
        self.kernel_keys.insert(key, i);
        i
    }

    pub fn kernel(&self, k: u32) -> &KernelBody {
        &self.kernels[k as usize]
    }
}

impl Analysis<ENode> for FusionAnalysis {
    type Data = Data;

    fn make(egraph: &mut EGraph, enode: &ENode, _id: Id) -> Data {
        let child = |i: usize| &egraph[enode.children[i]].data;
        match enode.head {
            Head::Op { attrs, .. } => {
                let entry = egraph.analysis.op_entry(attrs);
                let params_only = (0..enode.children.len()).all(|i| child(i).params_only);
                let ty = match &entry.ty {
                    Some(t) => t.clone(),
                    None => {
                        let types: Vec<&TensorType> =
                            (0..enode.children.len()).map(|i| child(i).ty()).collect();
                        // add_op checks before adding, so this only fails on a rule bug;
                        // the node then keeps its first operand's type and is never chosen
                        // (lowering re-infers every body).
                        infer_type(&entry.op, &types).unwrap_or_else(|_| types[0].clone())
                    }
                };
                Data {
                    types: vec![ty],
                    params_only,
                }
            }
            Head::Leaf(v) => {
                let leaf = &egraph.analysis.leaves[&v];
                Data {
                    types: vec![leaf.ty.clone()],
                    params_only: leaf.params_only,
                }
            }
            Head::Kernel(k) => {
                let body = &egraph.analysis.kernel(k).body;
                let types = body
                    .outputs
                    .iter()
                    .map(|o| body.ty(o.value).clone())
                    .collect();
                Data {
                    types,
                    params_only: false,
                }
            }
            Head::Proj(i) => Data {
                types: vec![child(0).types[i as usize].clone()],
                params_only: false,
            },
        }
    }

    fn merge(&mut self, a: &mut Data, b: Data) -> DidMerge {
        debug_assert_eq!(a.types, b.types, "a rule merged values of different types");
        let params_only = a.params_only || b.params_only;
        let changed = DidMerge(params_only != a.params_only, params_only != b.params_only);
        a.params_only = params_only;
        changed
    }
}

/// Adds `op` over `children` if it type-checks; `None` otherwise, so that a rule whose
/// guard missed a case adds nothing rather than an ill-typed node.
pub fn add_op(egraph: &mut EGraph, op: Op, children: &[Id]) -> Option<Id> {
    op_node(egraph, op, children).map(|n| egraph.add(n))
}

/// [`add_op`], keeping the id of this very node (what explanations start from) even
/// when its class already exists.
pub fn add_op_uncanonical(egraph: &mut EGraph, op: Op, children: &[Id]) -> Option<Id> {
    op_node(egraph, op, children).map(|n| egraph.add_uncanonical(n))
}

fn op_node(egraph: &mut EGraph, op: Op, children: &[Id]) -> Option<ENode> {
    let types: Vec<&TensorType> = children.iter().map(|&c| egraph[c].data.ty()).collect();
    infer_type(&op, &types).ok()?;
    let kind = Symbol::from(op.name());
    let attrs = egraph.analysis.intern_op(op, None);
    Some(ENode::new(Head::Op { kind, attrs }, children.to_vec()))
}

/// Adds a constant of type `ty`.
pub fn add_constant(egraph: &mut EGraph, value: f64, ty: TensorType) -> Id {
    let attrs = egraph.analysis.intern_op(Op::Constant { value }, Some(ty));
    egraph.add(ENode::new(
        Head::Op {
            kind: Symbol::from("constant"),
            attrs,
        },
        vec![],
    ))
}

/// The first node of class `id` whose op is called `kind`, with its op.
pub fn find_op<'a>(egraph: &'a EGraph, id: Id, kind: &str) -> Option<(&'a Op, &'a ENode)> {
    egraph[id]
        .nodes
        .iter()
        .find(|n| n.kind() == Some(kind))
        .and_then(|n| egraph.analysis.op_of(n).map(|op| (op, n)))
}

/// The value of a class that holds a constant, or a broadcast or reshape of one.
pub fn constant_value(egraph: &EGraph, id: Id) -> Option<f64> {
    for n in &egraph[id].nodes {
        match egraph.analysis.op_of(n) {
            Some(Op::Constant { value }) => return Some(*value),
            Some(Op::Broadcast { .. } | Op::Reshape { .. }) => {
                if let Some(v) = egraph[n.children[0]].nodes.iter().find_map(|c| {
                    match egraph.analysis.op_of(c) {
                        Some(Op::Constant { value }) => Some(*value),
                        _ => None,
                    }
                }) {
                    return Some(v);
                }
            }
            _ => {}
        }
    }
    None
}
