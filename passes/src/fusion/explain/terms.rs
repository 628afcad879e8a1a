//! Kernel bodies as e-graph terms over original values, splicing in the bodies of the
//! kernels that wrote the rewrite-made values a body reads.

use super::super::analysis::{add_constant, add_op_uncanonical};
use super::super::partition::Partition;
use super::super::region::RegionGraph;
use crate::{PassError, Result};
use calib_ir::{BufferId, DType, Graph, Op, Program};
use egg::Id;
use std::collections::HashMap;

/// Kernel bodies as e-graph terms over original values.
pub(super) struct Terms<'a> {
    pub graph: &'a Graph,
    pub program: &'a Program,
    pub part: &'a Partition,
    pub original: &'a dyn Fn(BufferId) -> Option<usize>,
    /// Each buffer's writers, in the order of the slices they store.
    pub writer: &'a HashMap<BufferId, Vec<(usize, usize)>>,
    pub memo: HashMap<(usize, usize), Option<Id>>,
}

impl Terms<'_> {
    /// Output `j` of kernel `k`.
    pub fn output(&mut self, rg: &mut RegionGraph, k: usize, j: usize) -> Result<Option<Id>> {
        let v = self.program.kernels[k].body.outputs[j].value.0;
        self.node(rg, k, v)
    }

    /// The bf16 value a buffer `narrow-stores` narrowed holds for original f32 value `v`:
    /// the inner `cast(y, bf16)` of a round trip `v = cast(cast(y, bf16), f32)`, or the
    /// rounding `cast(v, bf16)` of a value every reader rounds.
    pub fn narrowed(&mut self, rg: &mut RegionGraph, v: usize) -> Result<Id> {
        let node = &self.graph.nodes[v];
        let inner = node.inputs.first().map(|u| u.0);
        if let (Op::Cast { to: DType::F32 }, Some(u)) = (&node.op, inner) {
            if self.graph.nodes[u].ty.dtype == DType::BF16 {
                return rg.operand(self.graph, self.part, u);
            }
        }
        let wide = rg.operand(self.graph, self.part, v)?;
        add_op_uncanonical(&mut rg.egraph, Op::Cast { to: DType::BF16 }, &[wide])
            .ok_or_else(|| PassError::Fusion(format!("original node %{v} does not round to bf16")))
    }

    /// A buffer that `writes` each store a slice of, along one axis and in order: the
    /// concatenation of what they store.
    fn slices(&mut self, rg: &mut RegionGraph, writes: &[(usize, usize)]) -> Result<Option<Id>> {
        let slice = |&(p, j): &(usize, usize)| self.program.kernels[p].outputs[j].slice;
        let Some(axis) = writes.first().and_then(slice).map(|s| s.axis) else {
            return Ok(None);
        };
        let mut parts = vec![];
        for w in writes {
            if slice(w).is_none_or(|s| s.axis != axis) {
                return Ok(None);
            }
            match self.output(rg, w.0, w.1)? {
                Some(part) => parts.push(part),
                None => return Ok(None),
            }
        }
        let concat = add_op_uncanonical(&mut rg.egraph, Op::Concat { axis }, &parts);
        concat.map(Some).ok_or_else(|| {
            PassError::Fusion("the slices of a concat view do not concatenate".into())
        })
    }

    /// Body node `i` of kernel `k`; `None` if it reads something no term reaches.
    fn node(&mut self, rg: &mut RegionGraph, k: usize, i: usize) -> Result<Option<Id>> {
        if let Some(&t) = self.memo.get(&(k, i)) {
            return Ok(t);
        }
        let kernel = &self.program.kernels[k];
        let node = &kernel.body.nodes[i];
        let term = match &node.op {
            Op::Input { name } => {
                let slot: usize = name
                    .strip_prefix("in")
                    .and_then(|s| s.parse().ok())
                    .ok_or_else(|| {
                        PassError::Fusion(format!("body input `{name}` is not named in<k>"))
                    })?;
                let b = kernel.inputs[slot];
                match ((self.original)(b), self.writer.get(&b).map(Vec::as_slice)) {
                    (Some(v), _) if node.ty.dtype == DType::BF16 => Some(self.narrowed(rg, v)?),
                    (Some(v), _) => Some(rg.operand(self.graph, self.part, v)?),
                    (None, Some(&[(p, j)])) => self.output(rg, p, j)?,
                    (None, Some(writes)) => self.slices(rg, writes)?,
                    (None, None) => None,
                }
            }
            Op::Constant { value } => Some(add_constant(&mut rg.egraph, *value, node.ty.clone())),
            op => {
                let mut children = vec![];
                for v in &node.inputs {
                    match self.node(rg, k, v.0)? {
                        Some(c) => children.push(c),
                        None => {
                            self.memo.insert((k, i), None);
                            return Ok(None);
                        }
                    }
                }
                Some(
                    add_op_uncanonical(&mut rg.egraph, op.clone(), &children).ok_or_else(|| {
                        PassError::Fusion(format!(
                            "kernel {} body node %{i} does not type-check",
                            kernel.name
                        ))
                    })?,
                )
            }
        };
        self.memo.insert((k, i), term);
        Ok(term)
    }
}
