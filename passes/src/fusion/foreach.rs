//! Multi-tensor optimizer updates, as PyTorch's `foreach` SGD does them.
//!
//! Each parameter's SGD update is a pointwise kernel over that parameter. In one
//! process most of them fuse into their weight-gradient kernel; in a data-parallel step
//! they cannot (they must wait for their bucket's all-reduce), and a ResNet-sized model
//! would pay hundreds of small launches. So an update kernel joins the previous update
//! kernel whenever everything it reads is already complete there: the merged kernel is
//! one launch with one grid-stride pass per distinct parameter size (see codegen's
//! pointwise family), doing the same arithmetic on the same elements.

use super::horizontal::append;
use calib_ir::{Anchor, BufferId, Kernel, Program};

/// The most buffers one merged launch takes (8 bytes of kernel parameters each, well
/// inside the 4 KiB every CUDA version allows).
pub const MAX_BUFFERS: usize = 256;

/// Merges update kernels into earlier ones; returns how many were merged away.
pub fn merge_updates(program: &mut Program) -> usize {
    let mut merged = 0;
    let mut k = 0;
    while k < program.kernels.len() {
        if !is_update(&program.kernels[k]) {
            k += 1;
            continue;
        }
        match host_for(program, k) {
            Some(h) => {
                let update = program.kernels.remove(k);
                append(&mut program.kernels[h], update);
                merged += 1;
            }
            None => k += 1,
        }
    }
    merged
}

fn is_update(k: &Kernel) -> bool {
    k.anchor == Anchor::Pointwise && k.label.ends_with("@sgd")
}

/// The first update kernel before `t` that runs after everything `t` reads is written,
/// no earlier than the first reader of any all-reduce result `t` reads, and has room
/// for `t`'s buffers (see [`MAX_BUFFERS`]).
fn host_for(p: &Program, t: usize) -> Option<usize> {
    let update = &p.kernels[t];
    let ready = (0..t)
        .rev()
        .find(|&j| {
            p.kernels[j]
                .outputs
                .iter()
                .any(|o| update.inputs.contains(&o.buffer))
        })
        .map_or(0, |j| j + 1);
    // Reading an all-reduce's result earlier than its first reader does would shorten
    // the time it overlaps the backward pass.
    let collective_output = |b: &BufferId| {
        p.kernels[..t]
            .iter()
            .any(|k| k.anchor == Anchor::Collective && k.outputs.iter().any(|o| o.buffer == *b))
    };
    let joined = update
        .inputs
        .iter()
        .filter(|b| collective_output(b))
        .filter_map(|b| (0..=t).find(|&j| p.kernels[j].inputs.contains(b)))
        .max()
        .unwrap_or(0);
    (ready.max(joined)..t).find(|&h| {
        let host = &p.kernels[h];
        let new_inputs = update
            .inputs
            .iter()
            .filter(|b| !host.inputs.contains(b))
            .count();
        is_update(host)
            && host.inputs.len() + host.outputs.len() + new_inputs + update.outputs.len()
                <= MAX_BUFFERS
    })
}
