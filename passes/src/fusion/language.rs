//! The e-graph's language: IR ops over e-classes, values from outside the region, and
//! fused kernels.
//!
//! egg's `define_language!` cannot give a variant both attributes and children, so the
//! language is written by hand: an e-node is a [`Head`] plus its children. An op's
//! attributes (strides, axes, a constant's value and type) are interned by the analysis
//! and carried as a number, which keeps e-nodes small and hashing cheap. A pattern's op
//! has [`ANY`] attributes and matches every node of that op, so rewrite rules are
//! written as patterns over op names and their guards read the attributes.

use egg::{FromOp, Id, Language, Symbol};
use std::fmt;

/// The attributes of a pattern op: matches any attributes of that op.
pub const ANY: u32 = u32::MAX;

/// What an e-node computes, apart from its children.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Head {
    /// The IR op called `kind`, with attributes interned as `attrs`.
    Op { kind: Symbol, attrs: u32 },
    /// A value defined outside the region: a graph input or parameter, or another
    /// region's result. The number is the original graph's node id.
    Leaf(u32),
    /// A fused kernel with interned body; its e-class holds the tuple of its outputs.
    Kernel(u32),
    /// Output `i` of the kernel that is the only child.
    Proj(u32),
}

/// One e-node.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ENode {
    pub head: Head,
    pub children: Vec<Id>,
}

impl ENode {
    pub fn new(head: Head, children: Vec<Id>) -> Self {
        ENode { head, children }
    }

    /// The op name, for op nodes.
    pub fn kind(&self) -> Option<&'static str> {
        match self.head {
            Head::Op { kind, .. } => Some(kind.as_str()),
            _ => None,
        }
    }
}

impl Language for ENode {
    type Discriminant = (u8, Symbol);

    fn discriminant(&self) -> Self::Discriminant {
        // Nodes that `matches` must share a discriminant, and equal discriminants must
        // be contiguous in the derived order: both hold for (variant, op name).
        match self.head {
            Head::Op { kind, .. } => (0, kind),
            Head::Leaf(_) => (1, Symbol::from("")),
            Head::Kernel(_) => (2, Symbol::from("")),
            Head::Proj(_) => (3, Symbol::from("")),
        }
    }

    fn matches(&self, other: &Self) -> bool {
        self.children.len() == other.children.len()
            && match (self.head, other.head) {
                (Head::Op { kind: a, attrs: x }, Head::Op { kind: b, attrs: y }) => {
                    a == b && (x == y || x == ANY || y == ANY)
                }
                (a, b) => a == b,
            }
    }

    fn children(&self) -> &[Id] {
        &self.children
    }

    fn children_mut(&mut self) -> &mut [Id] {
        &mut self.children
    }
}

impl fmt::Display for ENode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.head {
            Head::Op { kind, .. } => f.write_str(kind.as_str()),
            Head::Leaf(v) => write!(f, "%{v}"),
            Head::Kernel(b) => write!(f, "kernel{b}"),
            Head::Proj(i) => write!(f, "out{i}"),
        }
    }
}

/// Patterns name ops by their IR names; the attributes are left open.
impl FromOp for ENode {
    type Error = String;

    fn from_op(op: &str, children: Vec<Id>) -> Result<Self, Self::Error> {
        let plain = !op.is_empty()
            && op
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        if !plain {
            return Err(format!("`{op}` is not an op name"));
        }
        Ok(ENode::new(
            Head::Op {
                kind: Symbol::from(op),
                attrs: ANY,
            },
            children,
        ))
    }
}
