//! Consumers as epilogues: a GEMM whose stored result one pointwise kernel alone reads
//! takes that kernel's body as its epilogue, and the result is never stored.
//!
//! Regions are modules, so extraction never sees a GEMM and a consumer of another
//! module together. The gradient of a bottleneck's input is the sum of the gradients
//! that reach it: the identity's (behind the block's ReLU mask), and the data gradients
//! of the convolutions that read the input (SCNet's `conv1_a` and `conv1_b`). Each data
//! gradient is a GEMM of its own module; the sum is one pointwise kernel, stitched
//! together after extraction, which reads the last GEMM's image back:
//!
//! ```text
//! g:  x = gemm(..)                  g': y = p(gemm(..), a, b, ..)
//! p:  y = p(x, a, b, ..)     =>
//! ```
//!
//! Exact: the epilogue computes `p` from the very value `g` stored (its rounding
//! included). The fold is kept where the estimate prices `g'` below `g` and `p`
//! apart: one image written and read back less, against an epilogue that reads `p`'s
//! other operands per output tile.

use super::estimate::kernel_seconds;
use super::horizontal::{append_reading, drop_unused_buffers};
use super::rebuild::{rebuild, Inputs};
use calib_cost::Device;
use calib_ir::{
    gemm_anchor, Anchor, BufferId, Graph, Kernel, Node, OpClass, Precision, Program, Role, Value,
};
use std::collections::HashMap;

/// Folds every pointwise kernel that is the one reader of a GEMM's result into that
/// GEMM where the estimate prices it faster (see the module documentation); returns
/// how many it folded.
pub fn fold_consumers(program: &mut Program, device: &Device, precision: Precision) -> usize {
    let mut folded = 0;
    let mut g = 0;
    while g < program.kernels.len() {
        match consumer_of(program, g, device, precision) {
            Some((p, joined)) => {
                // The pair runs where `p` ran when nothing between them reads `g`'s
                // other results or writes what `g` reads, else where `g` ran.
                let at_p = can_move_down(program, g, p);
                program.kernels[if at_p { p } else { g }] = joined;
                program.kernels.remove(if at_p { g } else { p });
                folded += 1;
            }
            None => g += 1,
        }
    }
    if folded > 0 {
        drop_unused_buffers(program);
    }
    folded
}

/// The pointwise kernel that alone reads one of GEMM kernel `g`'s results, and `g` with
/// it as epilogue, where the estimate prefers the fold.
fn consumer_of(
    program: &Program,
    g: usize,
    device: &Device,
    precision: Precision,
) -> Option<(usize, Kernel)> {
    let gemm = &program.kernels[g];
    let anchor = gemm_anchor(&gemm.body)?;
    if gemm.workspace.is_some() || gemm.semaphore.is_some() {
        return None;
    }
    let shape = &gemm.body.ty(anchor).shape;
    (0..gemm.outputs.len()).find_map(|o| {
        let out = &gemm.outputs[o];
        let x = out.buffer;
        let whole_temp = out.slice.is_none() && program.buffers[x.0].role == Role::Temp;
        let image = &gemm.body.ty(gemm.body.outputs[o].value).shape == shape;
        if !(whole_temp && image) || program.outputs.iter().any(|po| po.buffer == x) {
            return None;
        }
        let mut readers =
            (program.kernels.iter().enumerate()).filter(|(_, k)| k.inputs.contains(&x));
        let (p, consumer) = readers.next()?;
        let alone = readers.next().is_none() && p > g;
        if !alone || !is_elementwise_over(consumer, shape) || !reads_in_place(consumer, x) {
            return None;
        }
        if !(can_move_down(program, g, p) || can_move_up(program, g, p)) {
            return None;
        }
        let joined = fold(gemm, o, consumer);
        let apart = kernel_seconds(&gemm.body, device, precision)
            + kernel_seconds(&consumer.body, device, precision);
        (kernel_seconds(&joined.body, device, precision) < apart).then_some((p, joined))
    })
}

/// Whether `k` is a plain pointwise kernel whose every output has `shape`: an epilogue
/// then computes each at the GEMM's output elements.
fn is_elementwise_over(k: &Kernel, shape: &[usize]) -> bool {
    k.anchor == Anchor::Pointwise
        && k.workspace.is_none()
        && k.outputs.iter().all(|o| o.slice.is_none())
        && (k.body.outputs.iter()).all(|o| k.body.ty(o.value).shape == shape)
        && !(k.body.nodes.iter()).any(|n| matches!(n.op, calib_ir::Op::Concat { .. }))
}

/// Whether `k` reads buffer `x` only at the element it computes: every value that
/// depends on `x` is elementwise and of `x`'s shape. An epilogue holds the GEMM's
/// result at its own output element only (a slice or a broadcast of it would read
/// another).
fn reads_in_place(k: &Kernel, x: BufferId) -> bool {
    let body = &k.body;
    let reads_x = |name: &str| {
        let position: Option<usize> = name.strip_prefix("in").and_then(|n| n.parse().ok());
        position.is_some_and(|p| k.inputs.get(p) == Some(&x))
    };
    let mut depends = vec![false; body.nodes.len()];
    let mut shape = None;
    for (name, v) in body.inputs() {
        if reads_x(name) {
            depends[v.0] = true;
            shape = Some(body.ty(v).shape.clone());
        }
    }
    let Some(shape) = shape else {
        return false;
    };
    for (i, node) in body.nodes.iter().enumerate() {
        if !depends[i] && node.inputs.iter().any(|v| depends[v.0]) {
            if node.op.class() != OpClass::Elementwise || node.ty.shape != shape {
                return false;
            }
            depends[i] = true;
        }
    }
    true
}

/// `gemm` with `consumer` appended, `consumer`'s reads of `gemm`'s output `o` taking
/// the value stored there, and that output dropped.
fn fold(gemm: &Kernel, o: usize, consumer: &Kernel) -> Kernel {
    let x = gemm.outputs[o].buffer;
    let mut joined = gemm.clone();
    let produced = HashMap::from([(x, gemm.body.outputs[o].value)]);
    append_reading(&mut joined, consumer.clone(), &produced);
    joined.outputs.remove(o);
    let outputs: Vec<Value> = (joined.body.outputs.iter().enumerate())
        .filter(|&(i, _)| i != o)
        .map(|(_, out)| out.value)
        .collect();
    joined.body = rebuild(&joined.body, &outputs, &mut Unchanged);
    joined
}

/// Rebuilds a body with its inputs as they were.
struct Unchanged;

impl Inputs for Unchanged {
    fn input(&mut self, g: &mut Graph, _position: usize, node: &Node) -> Value {
        g.push_source(node.op.clone(), node.ty.clone(), &node.scope)
            .expect("input names stay distinct")
    }
}

/// Whether kernel `g` may run at `p` instead (its result `p` reads aside): no kernel in
/// between reads what it writes or writes what it reads.
fn can_move_down(program: &Program, g: usize, p: usize) -> bool {
    let (reads, writes) = (&program.kernels[g].inputs, &program.kernels[g].outputs);
    !program.kernels[g + 1..p].iter().any(|k| {
        k.inputs
            .iter()
            .any(|x| writes.iter().any(|o| o.buffer == *x))
            || k.outputs.iter().any(|o| reads.contains(&o.buffer))
    })
}

/// Whether kernel `p` may run at `g` instead: no kernel in between writes what it reads
/// or reads what it writes.
fn can_move_up(program: &Program, g: usize, p: usize) -> bool {
    let reads: &[BufferId] = &program.kernels[p].inputs;
    let writes = &program.kernels[p].outputs;
    !program.kernels[g + 1..p].iter().any(|k| {
        k.outputs.iter().any(|o| reads.contains(&o.buffer))
            || k.inputs
                .iter()
                .any(|x| writes.iter().any(|o| o.buffer == *x))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use calib_ir::{text, KernelOutput};

    /// A pointwise kernel of `body` reading buffers 0 (`in0`) and 1 (`in1`).
    fn consumer(body: &str) -> Kernel {
        Kernel {
            name: "k1".into(),
            label: "add@m".into(),
            anchor: Anchor::Pointwise,
            inputs: vec![BufferId(0), BufferId(1)],
            outputs: vec![KernelOutput {
                buffer: BufferId(2),
                slice: None,
            }],
            body: text::parse(body).unwrap(),
            covers: vec![],
            schedule: None,
            workspace: None,
            semaphore: None,
        }
    }

    #[test]
    fn a_consumer_reading_the_result_elementwise_reads_it_in_place() {
        let k = consumer(
            r#"graph {
  %0 = input name="in0" : f32[2,4,8,8]
  %1 = input name="in1" : f32[2,4,8,8]
  %2 = cast(%0) to="bf16" : bf16[2,4,8,8]
  %3 = cast(%2) to="f32" : f32[2,4,8,8]
  %4 = add(%3, %1) : f32[2,4,8,8]
  return out0=%4
}
"#,
        );
        assert!(reads_in_place(&k, BufferId(0)));
        assert!(reads_in_place(&k, BufferId(1)));
        assert!(!reads_in_place(&k, BufferId(2)), "buffer 2 is not read");
    }

    /// BatchNorm's shift under bf16 samples each channel's first element: an epilogue
    /// does not hold it at the other elements.
    #[test]
    fn a_consumer_sampling_the_result_elsewhere_does_not() {
        let k = consumer(
            r#"graph {
  %0 = input name="in0" : f32[2,4,8,8]
  %1 = input name="in1" : f32[2,4,8,8]
  %2 = slice(%0) axis=0 start=0 end=1 : f32[1,4,8,8]
  %3 = slice(%2) axis=2 start=0 end=1 : f32[1,4,1,8]
  %4 = slice(%3) axis=3 start=0 end=1 : f32[1,4,1,1]
  %5 = broadcast(%4) shape=[2,4,8,8] : f32[2,4,8,8]
  %6 = sub(%1, %5) : f32[2,4,8,8]
  return out0=%6
}
"#,
        );
        assert!(!reads_in_place(&k, BufferId(0)));
        assert!(reads_in_place(&k, BufferId(1)));
    }
}
