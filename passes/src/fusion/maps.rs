//! Sibling maps: two pointwise kernels over one shape that read the same tensors
//! become one kernel, which loads those tensors once and computes what the two
//! recompute alike once.
//!
//! Extraction forms kernels value by value, so the gradients of two BatchNorms that
//! share their input's recomputation (a bottleneck's last BatchNorm and its downsample's,
//! both behind the block's ReLU mask) come out as two launches reading the same
//! activations. Merged, the body is the union of the two, common subexpressions
//! computed once (`cse`), with one grid-stride pass over the shared shape (code
//! generation's pointwise family evaluates outputs of one size together). A pair merges
//! when the cost model prices the merged kernel below the two, and when one of them can
//! move to the other's place: nothing between them reads the first one's results, or
//! writes what the second one reads.

use super::estimate::kernel_seconds;
use super::horizontal::append;
use crate::cse::cse;
use calib_cost::Device;
use calib_ir::{Anchor, Kernel, Op, Precision, Program, Role};

/// How many kernels ahead a sibling is looked for: the maps of one module's gradient
/// are close together in a plan.
const WINDOW: usize = 16;
/// The fewest elements a map's outputs must have for merging to pay its bookkeeping.
const MIN_ELEMENTS: usize = 1 << 20;
/// The most per-element nodes a merged body may have, so that its live values stay
/// within what a pointwise thread's registers hold (ptxas spills beyond).
const MAX_NODES: usize = 120;

/// Merges sibling maps of `program`, priced on `device` under `precision`; returns how
/// many kernels were merged away.
pub fn merge_sibling_maps(program: &mut Program, device: &Device, precision: Precision) -> usize {
    let mut merged = 0;
    let mut i = 0;
    while i < program.kernels.len() {
        match sibling_of(program, i, device, precision) {
            Some((j, joined)) => {
                // The pair runs where the merged kernel may: at `j` when nothing
                // between reads `i`'s results, else at `i`.
                let at_j = can_move_down(program, i, j);
                program.kernels[j] = joined.clone();
                program.kernels[i] = joined;
                program.kernels.remove(if at_j { i } else { j });
                merged += 1;
            }
            None => i += 1,
        }
    }
    merged
}

/// A map after `i` to merge `i` with, and the merged kernel.
fn sibling_of(
    p: &Program,
    i: usize,
    device: &Device,
    precision: Precision,
) -> Option<(usize, Kernel)> {
    let a = &p.kernels[i];
    let shape = map_shape(a)?;
    let end = (i + 1 + WINDOW).min(p.kernels.len());
    (i + 1..end).find_map(|j| {
        let b = &p.kernels[j];
        let shares = b.inputs.iter().any(|x| {
            a.inputs.contains(x)
                && p.buffers[x.0].role != Role::Param
                && p.buffers[x.0].ty.numel() >= MIN_ELEMENTS
        });
        let independent = !b
            .inputs
            .iter()
            .any(|x| a.outputs.iter().any(|o| o.buffer == *x));
        let candidate = map_shape(b).as_ref() == Some(&shape)
            && shares
            && independent
            && (can_move_down(p, i, j) || can_move_up(p, i, j));
        if !candidate {
            return None;
        }
        let joined = join(a, b)?;
        let alone =
            kernel_seconds(&a.body, device, precision) + kernel_seconds(&b.body, device, precision);
        (kernel_seconds(&joined.body, device, precision) < alone).then_some((j, joined))
    })
}

/// The shape of a big pointwise kernel's largest outputs, when they all have it (side
/// outputs, a BatchNorm parameter's update, are smaller and run in a pass of their own).
fn map_shape(k: &Kernel) -> Option<Vec<usize>> {
    if k.anchor != Anchor::Pointwise || k.workspace.is_some() {
        return None;
    }
    // Code generation branches once a run for a concatenation only where it is the
    // kernel's one output; beside another output each element would branch.
    let concat = k
        .body
        .outputs
        .iter()
        .any(|o| matches!(k.body.node(o.value).op, Op::Concat { .. }));
    if concat {
        return None;
    }
    let types = || k.body.outputs.iter().map(|o| k.body.ty(o.value));
    let largest = types().map(|t| t.numel()).max()?;
    let shape = &types().find(|t| t.numel() == largest)?.shape;
    let same = types().all(|t| t.numel() < largest || &t.shape == shape);
    (same && largest >= MIN_ELEMENTS).then(|| shape.clone())
}

/// Whether kernel `i` may run at `j` instead: no kernel from `i + 1` to `j` reads what
/// it writes or writes what it reads (a channel slice of a buffer it reads).
fn can_move_down(p: &Program, i: usize, j: usize) -> bool {
    let (reads, writes) = (&p.kernels[i].inputs, &p.kernels[i].outputs);
    !p.kernels[i + 1..=j].iter().any(|k| {
        k.inputs
            .iter()
            .any(|x| writes.iter().any(|o| o.buffer == *x))
            || k.outputs.iter().any(|o| reads.contains(&o.buffer))
    })
}

/// Whether kernel `j` may run at `i` instead: no kernel from `i` to `j - 1` writes what
/// it reads.
fn can_move_up(p: &Program, i: usize, j: usize) -> bool {
    let reads = &p.kernels[j].inputs;
    !p.kernels[i..j]
        .iter()
        .any(|k| k.outputs.iter().any(|o| reads.contains(&o.buffer)))
}

/// `a` and `b` as one kernel (`a`'s label), common subexpressions merged; `None` when
/// the merged body would be too large.
fn join(a: &Kernel, b: &Kernel) -> Option<Kernel> {
    let mut joined = a.clone();
    append(&mut joined, b.clone());
    let (body, _) = cse(&joined.body).ok()?;
    let largest = body.nodes.iter().map(|n| n.ty.numel()).max().unwrap_or(0);
    let per_element = body
        .nodes
        .iter()
        .filter(|n| n.op.arity() != Some(0) && n.ty.numel() == largest)
        .count();
    (per_element <= MAX_NODES).then_some(Kernel { body, ..joined })
}

#[cfg(test)]
mod tests {
    use super::*;
    use calib_ir::{Buffer, BufferId, DType, Graph, KernelOutput, ProgramOutput, TensorType};
    use calib_runtime::{reference, Bindings, HostTensor};

    const SHAPE: [usize; 4] = [1, 1, 1024, 1024];

    fn ty() -> TensorType {
        TensorType::new(DType::F32, SHAPE.to_vec())
    }

    /// A map of buffers `inputs` writing buffer `output`: `exp(in0) op in_last`.
    fn map(name: &str, inputs: &[usize], output: usize, op: Op) -> Kernel {
        let mut body = Graph::new();
        let ins: Vec<_> = (0..inputs.len())
            .map(|k| {
                body.push_source(
                    Op::Input {
                        name: Kernel::input_name(k),
                    },
                    ty(),
                    "",
                )
                .unwrap()
            })
            .collect();
        let e = body.push(Op::Exp, vec![ins[0]], "").unwrap();
        let y = body.push(op, vec![e, ins[inputs.len() - 1]], "").unwrap();
        body.add_output("out0", y).unwrap();
        Kernel {
            name: name.into(),
            label: format!("{name}@m"),
            anchor: Anchor::Pointwise,
            inputs: inputs.iter().map(|&b| BufferId(b)).collect(),
            outputs: vec![KernelOutput {
                buffer: BufferId(output),
                slice: None,
            }],
            body,
            covers: vec![],
            schedule: None,
            workspace: None,
            semaphore: None,
        }
    }

    /// Buffers `x`, `w` (inputs), `t` (a temporary) and `y`, `z`, `u` (outputs), and
    /// `kernels` over them.
    fn program(kernels: Vec<Kernel>) -> Program {
        let written = |b: usize| {
            kernels
                .iter()
                .any(|k| k.outputs.iter().any(|o| o.buffer == BufferId(b)))
        };
        let roles = [
            ("x", Role::Input),
            ("w", Role::Input),
            ("t", Role::Temp),
            ("y", Role::Output),
            ("z", Role::Output),
            ("u", Role::Output),
        ];
        let outputs = (3..roles.len())
            .filter(|&b| written(b))
            .map(|b| ProgramOutput {
                name: roles[b].0.to_string(),
                buffer: BufferId(b),
            })
            .collect();
        Program {
            buffers: roles
                .iter()
                .map(|(n, r)| Buffer::new(*n, ty(), *r))
                .collect(),
            kernels,
            outputs,
        }
    }

    fn merged(wide: &Program) -> (Program, usize) {
        let mut p = wide.clone();
        let device = crate::fusion::FusionOptions::default().device;
        let n = merge_sibling_maps(&mut p, &device, Precision::F32);
        p.validate().unwrap();
        (p, n)
    }

    fn same_results(a: &Program, b: &Program) {
        let x: Vec<f32> = (0..SHAPE.iter().product::<usize>())
            .map(|i| (i % 97) as f32 / 50.0 - 1.0)
            .collect();
        let x = HostTensor::from_f32(SHAPE.to_vec(), x).unwrap();
        let bind = Bindings::new().input("x", &x).input("w", &x);
        let (ra, rb) = (
            reference::run_program(a, &bind).unwrap(),
            reference::run_program(b, &bind).unwrap(),
        );
        assert_eq!(ra.len(), rb.len());
        for (name, t) in &ra {
            assert_eq!(t.to_f32_vec(), rb[name].to_f32_vec(), "{name}");
        }
    }

    #[test]
    fn two_maps_of_one_tensor_become_one_kernel_computing_the_shared_part_once() {
        // y = exp(x) * w, then u = exp(w) + w (another tensor), then z = exp(x) + w.
        let wide = program(vec![
            map("a", &[0, 1], 3, Op::Mul),
            map("b", &[1], 5, Op::Add),
            map("c", &[0, 1], 4, Op::Add),
        ]);
        let (p, n) = merged(&wide);
        assert!(n >= 1, "{}", p.to_text());
        // One kernel writes y and z, and computes exp(x) once for both.
        let writes = |k: &Kernel, b: usize| k.outputs.iter().any(|o| o.buffer == BufferId(b));
        let k = p.kernels.iter().find(|k| writes(k, 3)).unwrap();
        assert!(writes(k, 4), "{}", p.to_text());
        let x = k.inputs.iter().position(|&b| b == BufferId(0)).unwrap();
        let x = k.body.inputs().nth(x).unwrap().1;
        let exps = k
            .body
            .nodes
            .iter()
            .filter(|n| n.op == Op::Exp && n.inputs == [x]);
        assert_eq!(exps.count(), 1, "{}", p.to_text());
        same_results(&wide, &p);
    }

    #[test]
    fn a_map_reading_its_sibling_stays_apart() {
        // t = exp(x) * w; y = exp(x) + t reads t: no merge.
        let wide = program(vec![
            map("a", &[0, 1], 2, Op::Mul),
            map("b", &[0, 2], 3, Op::Add),
        ]);
        let (p, n) = merged(&wide);
        assert_eq!((n, p.kernels.len()), (0, 2));
    }
}
