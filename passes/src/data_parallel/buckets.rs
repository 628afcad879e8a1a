//! Gradient buckets: many small all-reduces cost more than a few large ones (each pays
//! the latency of a round across the group), and one all-reduce of everything could
//! start only after the whole backward pass. DDP's compromise, kept here: gradients go
//! into buckets of a bounded size in the order the backward pass completes them, and
//! each bucket is reduced as soon as its last gradient exists, while the backward pass
//! goes on (see `overlap.rs`). DDP guesses that order as the reverse of
//! `model.parameters()`; the graph knows it: a gradient is complete at its node.
//!
//! A bucket is one flat tensor: each gradient reshaped to a vector, concatenated,
//! all-reduced, then sliced and reshaped back. Parameters whose gradients are one
//! computation (the biases of two BatchNorms whose outputs are added, as in a residual
//! block with a downsampling branch) share one slot, so it is sent once.

use crate::{cse, Result};
use calib_ir::{Graph, Op, ReduceOp, Value};

/// The nodes of the data-parallel additions carry this scope.
pub(super) const SCOPE: &str = "ddp";

/// The gradients that one all-reduce averages.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bucket {
    /// Trained parameters, in the order their gradients are completed.
    pub params: Vec<String>,
    /// The bucket's size.
    pub bytes: usize,
    /// One entry per distinct gradient tensor: the indices, in the step's gradient list,
    /// of the parameters it is the gradient of.
    slots: Vec<Vec<usize>>,
}

/// Buckets of at most `cap` bytes (or one oversized gradient), filled greedily in the
/// order the gradients are completed; gradients of different dtypes never share one.
pub(super) fn plan(graph: &Graph, grads: &[(String, Value)], cap: usize) -> Result<Vec<Bucket>> {
    // Which gradients are the same tensor: CSE merges them in the finished step anyway.
    let (_, merged) = cse(graph)?;
    let canonical = |i: usize| {
        merged
            .get(grads[i].1)
            .expect("CSE keeps or merges, never drops")
    };
    let mut order: Vec<usize> = (0..grads.len()).collect();
    order.sort_by_key(|&i| (canonical(i), i));
    let mut buckets: Vec<Bucket> = vec![];
    let mut last: Option<Value> = None;
    for i in order {
        let bucket = buckets.last_mut();
        if last == Some(canonical(i)) {
            let bucket = bucket.expect("a previous gradient has a bucket");
            bucket.params.push(grads[i].0.clone());
            bucket.slots.last_mut().expect("non-empty").push(i);
            continue;
        }
        last = Some(canonical(i));
        let ty = graph.ty(grads[i].1);
        let bytes = ty.numel() * ty.dtype.size_bytes();
        match bucket {
            Some(b)
                if b.bytes + bytes <= cap && graph.ty(grads[b.slots[0][0]].1).dtype == ty.dtype =>
            {
                b.params.push(grads[i].0.clone());
                b.slots.push(vec![i]);
                b.bytes += bytes;
            }
            _ => buckets.push(Bucket {
                params: vec![grads[i].0.clone()],
                bytes,
                slots: vec![vec![i]],
            }),
        }
    }
    Ok(buckets)
}

/// Appends the all-reduce of every bucket; returns the averaged gradients in the order
/// of `grads`.
pub(super) fn all_reduce(
    graph: &mut Graph,
    grads: &[(String, Value)],
    buckets: &[Bucket],
    replicas: usize,
) -> Result<Vec<Value>> {
    let mut reduced: Vec<Value> = grads.iter().map(|(_, g)| *g).collect();
    let op = Op::AllReduce {
        reduce: ReduceOp::Mean,
        replicas,
    };
    for bucket in buckets {
        let grad = |slot: &Vec<usize>| grads[slot[0]].1;
        let parts: Vec<Value> = if let [slot] = &bucket.slots[..] {
            vec![graph.push(op.clone(), vec![grad(slot)], SCOPE)?]
        } else {
            let mut flat = Vec::with_capacity(bucket.slots.len());
            for slot in &bucket.slots {
                let n = graph.ty(grad(slot)).numel();
                flat.push(graph.push(Op::Reshape { shape: vec![n] }, vec![grad(slot)], SCOPE)?);
            }
            let packed = graph.push(Op::Concat { axis: 0 }, flat, SCOPE)?;
            let packed = graph.push(op.clone(), vec![packed], SCOPE)?;
            let mut start = 0;
            let mut parts = Vec::with_capacity(bucket.slots.len());
            for slot in &bucket.slots {
                let shape = graph.ty(grad(slot)).shape.clone();
                let end = start + calib_ir::numel(&shape);
                let part = graph.push(
                    Op::Slice {
                        axis: 0,
                        start,
                        end,
                    },
                    vec![packed],
                    SCOPE,
                )?;
                parts.push(graph.push(Op::Reshape { shape }, vec![part], SCOPE)?);
                start = end;
            }
            parts
        };
        for (slot, part) in bucket.slots.iter().zip(parts) {
            slot.iter().for_each(|&i| reduced[i] = part);
        }
    }
    Ok(reduced)
}
