//! Shared TF32 rounding: a kernel that stores a value and its TF32 round trip stores
//! the value alone, and the round trip's readers round as they load it.
//!
//! Under the tf32 policy (`passes::precision`) a GEMM reads `cast(cast(y, tf32), f32)`,
//! and TF32 storage is f32. A block's output `y` is read both ways: rounded by the
//! next block's convolutions and their weight gradients, as it is by the residual
//! addition and the adjoint of its ReLU. Fusion computes the two in one kernel, which
//! then writes two f32 images of the same size, one a rounding of the other. A TF32
//! GEMM rounds its tiles as they land anyway (the weights' round trips are free in
//! fusion for that reason, [`super::dag::Dag::rounds_leaf`]), so this pass drops the
//! rounded output and gives each of its readers `y`'s buffer with the round trip at
//! its load:
//!
//! ```text
//! writer:  out_i = y, out_j = cast(cast(y, tf32), f32)  =>  out_i = y
//! reader:  in    : (buffer j)                           =>  in : (buffer i),
//!                                                           cast(cast(in, tf32), f32)
//! ```
//!
//! Exact: every reader computes the rounding from the same f32 bits the writer rounded.
//! Only whole, single-writer temporaries qualify (not a program output, not a concat
//! view written in slices, not a collective's operand).

use super::horizontal::drop_unused_buffers;
use super::rebuild::Inputs;
use calib_ir::{Anchor, DType, Graph, Node, Op, Program, Role, Value};

/// Shares every eligible rounding of `program` (see the module documentation); returns
/// how many outputs it dropped.
pub fn share_roundings(program: &mut Program) -> usize {
    let mut count = 0;
    for w in 0..program.kernels.len() {
        while let Some((kept, dropped)) = twin(program, w) {
            let writer = &mut program.kernels[w];
            let from = writer.outputs[dropped].buffer;
            let to = writer.outputs[kept].buffer;
            writer.outputs.remove(dropped);
            let outputs: Vec<Value> = (writer.body.outputs.iter())
                .enumerate()
                .filter(|&(i, _)| i != dropped)
                .map(|(_, o)| o.value)
                .collect();
            writer.body = rebuild(&writer.body, &[], &outputs);
            for k in &mut program.kernels {
                let reads: Vec<usize> = (0..k.inputs.len())
                    .filter(|&i| k.inputs[i] == from)
                    .collect();
                if reads.is_empty() {
                    continue;
                }
                reads.iter().for_each(|&i| k.inputs[i] = to);
                let outputs: Vec<Value> = k.body.outputs.iter().map(|o| o.value).collect();
                k.body = rebuild(&k.body, &reads, &outputs);
            }
            count += 1;
        }
    }
    drop_unused_buffers(program);
    count
}

/// In kernel `w`: an output (`kept`, a value `y`) and another (`dropped`) that is its
/// TF32 round trip, whose buffer may be given up for `y`'s.
fn twin(p: &Program, w: usize) -> Option<(usize, usize)> {
    let kernel = &p.kernels[w];
    let body = &kernel.body;
    let whole_temp = |i: usize| {
        let o = &kernel.outputs[i];
        o.slice.is_none() && p.buffers[o.buffer.0].role == Role::Temp && writers(p, o.buffer.0) == 1
    };
    (0..body.outputs.len()).find_map(|dropped| {
        let y = round_trip_of(body, body.outputs[dropped].value)?;
        let kept = body.outputs.iter().position(|o| o.value == y)?;
        let buffer = kernel.outputs[dropped].buffer;
        let collective = (p.kernels.iter())
            .any(|k| k.anchor == Anchor::Collective && k.inputs.contains(&buffer));
        let same_type = p.buffers[buffer.0].ty == p.buffers[kernel.outputs[kept].buffer.0].ty;
        (whole_temp(dropped) && whole_temp(kept) && same_type && !collective)
            .then_some((kept, dropped))
    })
}

/// How many kernel outputs write buffer `b`.
fn writers(p: &Program, b: usize) -> usize {
    (p.kernels.iter())
        .flat_map(|k| &k.outputs)
        .filter(|o| o.buffer.0 == b)
        .count()
}

/// The f32 value `y` when body value `v` is `cast(cast(y, tf32), f32)`.
fn round_trip_of(body: &Graph, v: Value) -> Option<Value> {
    let node = body.node(v);
    let [t] = node.inputs[..] else { return None };
    let rounding = body.node(t);
    let [y] = rounding.inputs[..] else {
        return None;
    };
    (node.op == Op::Cast { to: DType::F32 }
        && rounding.op == Op::Cast { to: DType::TF32 }
        && body.ty(y).dtype == DType::F32)
        .then_some(y)
}

/// `body` with the inputs at positions `rounded` read through a TF32 round trip, and
/// with `outputs` (old values, in order) as its outputs ([`super::rebuild::rebuild`]).
fn rebuild(body: &Graph, rounded: &[usize], outputs: &[Value]) -> Graph {
    super::rebuild::rebuild(body, outputs, &mut Rounded(rounded))
}

/// Body inputs read through a TF32 round trip at these positions.
struct Rounded<'a>(&'a [usize]);

impl Inputs for Rounded<'_> {
    fn input(&mut self, g: &mut Graph, position: usize, node: &Node) -> Value {
        let v = (g.push_source(node.op.clone(), node.ty.clone(), &node.scope))
            .expect("an input of a valid body");
        if !self.0.contains(&position) {
            return v;
        }
        let mut cast = |to, x| {
            (g.push(Op::Cast { to }, vec![x], &node.scope))
                .expect("an f32 value rounds to tf32 and back")
        };
        let t = cast(DType::TF32, v);
        cast(DType::F32, t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use calib_ir::{Buffer, BufferId, Kernel, KernelOutput, ProgramOutput, TensorType};
    use calib_runtime::{reference, Bindings, HostTensor};

    fn ty() -> TensorType {
        TensorType::new(DType::F32, vec![2, 3])
    }

    fn kernel(name: &str, inputs: Vec<usize>, outputs: Vec<usize>, body: Graph) -> Kernel {
        Kernel {
            name: name.into(),
            label: String::new(),
            anchor: Anchor::Pointwise,
            inputs: inputs.into_iter().map(BufferId).collect(),
            outputs: (outputs.into_iter())
                .map(|b| KernelOutput {
                    buffer: BufferId(b),
                    slice: None,
                })
                .collect(),
            body,
            covers: vec![],
            schedule: None,
            workspace: None,
            semaphore: None,
        }
    }

    fn inputs(g: &mut Graph, n: usize) -> Vec<Value> {
        (0..n)
            .map(|i| {
                let name = Kernel::input_name(i);
                g.push_source(Op::Input { name }, ty(), "").unwrap()
            })
            .collect()
    }

    /// `k0` stores `y = x * x` and its TF32 round trip (`stored_rounding`: into a
    /// temporary, else as the program's output `r`); `k1` adds the two; `k2` copies
    /// the round trip to the program's output `c`.
    fn program(stored_rounding: Role) -> Program {
        let mut square = Graph::new();
        let [x] = inputs(&mut square, 1)[..] else {
            unreachable!()
        };
        let y = square.push(Op::Mul, vec![x, x], "").unwrap();
        let t = square
            .push(Op::Cast { to: DType::TF32 }, vec![y], "")
            .unwrap();
        let r = square
            .push(Op::Cast { to: DType::F32 }, vec![t], "")
            .unwrap();
        square.add_output("out0", y).unwrap();
        square.add_output("out1", r).unwrap();
        let mut add = Graph::new();
        let [r, y] = inputs(&mut add, 2)[..] else {
            unreachable!()
        };
        let s = add.push(Op::Add, vec![r, y], "").unwrap();
        add.add_output("out0", s).unwrap();
        let mut copy = Graph::new();
        let [r] = inputs(&mut copy, 1)[..] else {
            unreachable!()
        };
        copy.add_output("out0", r).unwrap();
        let buffer = |name: &str, role| Buffer::new(name, ty(), role);
        let output = |name: &str, b| ProgramOutput {
            name: name.into(),
            buffer: BufferId(b),
        };
        let mut outputs = vec![output("s", 3), output("c", 4)];
        if stored_rounding == Role::Output {
            outputs.push(output("r", 2));
        }
        Program {
            buffers: vec![
                buffer("x", Role::Input),
                buffer("y", Role::Temp),
                buffer("r", stored_rounding),
                buffer("s", Role::Output),
                buffer("c", Role::Output),
            ],
            kernels: vec![
                kernel("k0", vec![0], vec![1, 2], square),
                kernel("k1", vec![2, 1], vec![3], add),
                kernel("k2", vec![2], vec![4], copy),
            ],
            outputs,
        }
    }

    fn bits(t: &HostTensor) -> Vec<u32> {
        t.to_f32_vec().iter().map(|v| v.to_bits()).collect()
    }

    #[test]
    fn a_stored_rounding_is_left_to_its_readers() {
        let stored = program(Role::Temp);
        let mut shared = stored.clone();
        assert_eq!(share_roundings(&mut shared), 1);
        shared.validate().unwrap();
        // The rounded temporary is gone; `k0` stores `y` alone, and both readers take
        // `y`'s buffer and round it.
        let names: Vec<&str> = shared.buffers.iter().map(|b| b.name.as_str()).collect();
        assert_eq!(names, ["x", "y", "s", "c"]);
        assert_eq!(shared.kernels[0].outputs.len(), 1);
        assert_eq!(shared.kernels[1].inputs, [BufferId(1), BufferId(1)]);
        assert_eq!(shared.kernels[2].inputs, [BufferId(1)]);
        let copy = &shared.kernels[2].body;
        let out = copy.node(copy.outputs[0].value);
        assert_eq!(out.op, Op::Cast { to: DType::F32 });
        assert_eq!(copy.node(out.inputs[0]).op, Op::Cast { to: DType::TF32 });
        // Values that TF32 rounds (1.01^2 needs more than ten bits) come out the same.
        let x = HostTensor::from_f32(vec![2, 3], vec![1.01, -3.3, 0.5, 7.77, 1e-3, -0.0]).unwrap();
        let b = Bindings::new().input("x", &x);
        let want = reference::run_program(&stored, &b).unwrap();
        let got = reference::run_program(&shared, &b).unwrap();
        let squares: Vec<u32> = x.to_f32_vec().iter().map(|v| (v * v).to_bits()).collect();
        assert_ne!(bits(&want["c"]), squares, "the test rounds something");
        for name in ["s", "c"] {
            assert_eq!(bits(&got[name]), bits(&want[name]), "{name}");
        }
    }

    #[test]
    fn a_rounding_the_program_returns_is_stored() {
        let mut p = program(Role::Output);
        assert_eq!(share_roundings(&mut p), 0);
        assert_eq!(p, program(Role::Output));
    }
}
