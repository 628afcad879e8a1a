//! Narrow stores: a kernel that writes a bf16 round trip writes the bf16 value instead.
//!
//! Under the bf16 policy (`passes::precision`) activations and activation gradients are
//! `cast(cast(y, bf16), f32)`, and so are the GEMMs' weights. A kernel whose output is
//! such a round trip computed in its body stores the f32 widening of a bf16 value:
//! twice the bytes the value needs. This pass makes it store the bf16 value itself (a
//! bf16 buffer, two bytes per element) and gives every reader of the buffer the
//! widening `cast(_, f32)` at its load:
//!
//! ```text
//! writer:  out = cast(cast(y, bf16), f32)   =>  out = cast(y, bf16)     (bf16 buffer)
//! reader:  in  : f32                        =>  in : bf16, cast(in, f32)
//! ```
//!
//! A kernel that stores an f32 value `y` every reader rounds as it loads it (each use of
//! the buffer is `cast(in, bf16)`: a convolution's result, which the policy rounds where
//! the next layer reads it) stores the rounding instead:
//!
//! ```text
//! writer:  out = y                          =>  out = cast(y, bf16)     (bf16 buffer)
//! reader:  cast(in, bf16), in : f32         =>  cast(cast(in, f32), bf16), in : bf16
//! ```
//!
//! A concatenation or slice of round trips is one too, and is stored as the same view of
//! the bf16 values (the gradient of merged sibling convolutions concatenates the
//! branches' rounded gradients):
//!
//! ```text
//! writer:  out = concat(cast(cast(a, bf16), f32), cast(cast(b, bf16), f32))
//!                                           =>  out = concat(cast(a, bf16), cast(b, bf16))
//! ```
//!
//! Exact: widening a bf16 to f32 is exact, so every reader computes the same f32 values
//! from the same bits; a reader that rounds what it loads gets `round(y)` either way
//! (rounding a bf16 value to bf16 is the identity). The writer must not need `y` itself
//! for anything else, or a later launch of it would read back the rounding. Kept wide: the program's outputs and inputs (their types are the
//! graph's), buffers written in channel slices by several kernels (concat views, whose
//! other writers store f32), and buffers a collective reads (it transfers f32).

use super::rebuild::Inputs;
use calib_ir::{Anchor, DType, Graph, Node, Op, Program, Role, Value};

/// Narrows every eligible buffer of `program` (see the module documentation); returns
/// how many.
pub fn narrow_stores(program: &mut Program) -> usize {
    let mut count = 0;
    for b in 0..program.buffers.len() {
        let Some((writer, out, narrow)) = narrowable(program, b) else {
            continue;
        };
        let kernel = &mut program.kernels[writer];
        let mut outputs: Vec<Value> = kernel.body.outputs.iter().map(|o| o.value).collect();
        let mut body = kernel.body.clone();
        outputs[out] = match narrow {
            Narrow::Widening(v) => narrowed(&mut body, v),
            Narrow::Rounded(y) => {
                let scope = body.node(y).scope.clone();
                body.push(Op::Cast { to: DType::BF16 }, vec![y], &scope)
                    .expect("an f32 value rounds to bf16")
            }
        };
        kernel.body = rebuild(&body, &[], &outputs);
        for k in &mut program.kernels {
            let reads: Vec<usize> = (0..k.inputs.len())
                .filter(|&i| k.inputs[i].0 == b)
                .collect();
            if !reads.is_empty() {
                let outputs: Vec<Value> = k.body.outputs.iter().map(|o| o.value).collect();
                k.body = rebuild(&k.body, &reads, &outputs);
            }
        }
        program.buffers[b].ty.dtype = DType::BF16;
        count += 1;
    }
    count
}

/// What a narrowed buffer's writer stores instead of its f32 output.
enum Narrow {
    /// The output, this value, widens bf16 values: store them.
    Widening(Value),
    /// Every reader rounds the output, this f32 value, to bf16: store the rounding.
    Rounded(Value),
}

/// For buffer `b`: its one writer, the writer's output index and what it stores
/// instead, when `b` may be stored narrow.
fn narrowable(p: &Program, b: usize) -> Option<(usize, usize, Narrow)> {
    let buffer = &p.buffers[b];
    (buffer.role == Role::Temp && buffer.ty.dtype == DType::F32).then_some(())?;
    let mut writers = p.kernels.iter().enumerate().flat_map(|(k, kernel)| {
        kernel
            .outputs
            .iter()
            .enumerate()
            .filter(|(_, o)| o.buffer.0 == b)
            .map(move |(i, o)| (k, i, o.slice.is_none()))
    });
    let (writer, out, whole) = writers.next()?;
    (whole && writers.next().is_none()).then_some(())?;
    let touched = |k: &calib_ir::Kernel| {
        k.inputs.iter().any(|i| i.0 == b) || k.workspace.is_some_and(|w| w.0 == b)
    };
    let collective = p
        .kernels
        .iter()
        .any(|k| k.anchor == Anchor::Collective && touched(k));
    let body = &p.kernels[writer].body;
    let y = body.outputs[out].value;
    let narrow = if widens(body, y) {
        Narrow::Widening(y)
    } else if only_stored(body, y) && read_rounded(p, b) {
        Narrow::Rounded(y)
    } else {
        return None;
    };
    (!collective && p.kernels[writer].workspace.is_none_or(|w| w.0 != b))
        .then_some((writer, out, narrow))
}

/// Whether body value `v` is an f32 value the body computes and only stores, once:
/// nothing else in the kernel reads it, so storing its rounding loses nothing the
/// kernel's later launches would read back.
fn only_stored(body: &Graph, v: Value) -> bool {
    body.ty(v).dtype == DType::F32
        && !matches!(body.node(v).op, Op::Input { .. })
        && !body.nodes.iter().any(|n| n.inputs.contains(&v))
        && body.outputs.iter().filter(|o| o.value == v).count() == 1
}

/// Whether every kernel reading buffer `b` uses it only rounded to bf16, and at least
/// one reads it.
fn read_rounded(p: &Program, b: usize) -> bool {
    let mut readers = 0;
    for k in &p.kernels {
        for (position, (_, v)) in k.body.inputs().enumerate() {
            if k.inputs.get(position).is_none_or(|i| i.0 != b) {
                continue;
            }
            readers += 1;
            let mut uses = k.body.nodes.iter().filter(|n| n.inputs.contains(&v));
            let rounds = uses.all(|n| n.op == Op::Cast { to: DType::BF16 });
            let stored = k.body.outputs.iter().any(|o| o.value == v);
            if !rounds || stored {
                return false;
            }
        }
    }
    readers > 0
}

/// Whether body value `v` is the widening of bf16 values the body computes:
/// `cast(u, f32)` of a bf16 `u`, or a concatenation or slice of such widenings. (A body
/// input widened and stored again would be a copy: nothing to narrow. Inside a view it
/// is a piece of a new buffer, merged siblings' concatenated weight copies, which its
/// readers then take as one bf16 input.)
fn widens(body: &Graph, v: Value) -> bool {
    widening(body, v, false)
}

fn widening(body: &Graph, v: Value, in_view: bool) -> bool {
    let node = body.node(v);
    match node.op {
        Op::Cast { to: DType::F32 } => {
            let u = node.inputs[0];
            body.ty(u).dtype == DType::BF16
                && (in_view || !matches!(body.node(u).op, Op::Input { .. }))
        }
        Op::Concat { .. } => node.inputs.iter().all(|&x| widening(body, x, true)),
        Op::Slice { .. } => widening(body, node.inputs[0], true),
        _ => false,
    }
}

/// The bf16 value that `v`, a widening ([`widens`]), widens; views of bf16 values are
/// added to `body`.
fn narrowed(body: &mut Graph, v: Value) -> Value {
    let node = body.node(v).clone();
    if node.op == (Op::Cast { to: DType::F32 }) {
        return node.inputs[0];
    }
    let inputs = node.inputs.iter().map(|&x| narrowed(body, x)).collect();
    body.push(node.op, inputs, &node.scope)
        .expect("a view of bf16 values as of their widenings")
}

/// `body` as [`narrow_stores`] will leave it, for pricing before the plan exists: each
/// output that widens bf16 values ([`widens`]) stores them, and the inputs at positions
/// `narrow_inputs` (round trips another kernel stores) are read as bf16.
pub fn as_stored(body: &Graph, narrow_inputs: &[usize]) -> Graph {
    if narrow_inputs.is_empty() && !body.outputs.iter().any(|o| widens(body, o.value)) {
        return body.clone();
    }
    let mut stored = body.clone();
    let outputs: Vec<Value> = body
        .outputs
        .iter()
        .map(|o| {
            if widens(body, o.value) {
                narrowed(&mut stored, o.value)
            } else {
                o.value
            }
        })
        .collect();
    rebuild(&stored, narrow_inputs, &outputs)
}

/// `body` with body inputs at positions `narrowed` read as bf16 and widened where they
/// are loaded, and with `outputs` (old values, in order) as its outputs
/// ([`super::rebuild::rebuild`]).
fn rebuild(body: &Graph, narrowed: &[usize], outputs: &[Value]) -> Graph {
    let mut inputs = Narrowed {
        narrowed,
        widening: vec![],
    };
    super::rebuild::rebuild(body, outputs, &mut inputs)
}

/// Body inputs read as bf16 at positions `narrowed`.
struct Narrowed<'a> {
    narrowed: &'a [usize],
    /// The widening of each narrowed input, by the input.
    widening: Vec<(Value, Value)>,
}

impl Inputs for Narrowed<'_> {
    fn input(&mut self, g: &mut Graph, position: usize, node: &Node) -> Value {
        let narrow = self.narrowed.contains(&position);
        let mut ty = node.ty.clone();
        if narrow {
            ty.dtype = DType::BF16;
        }
        let v =
            (g.push_source(node.op.clone(), ty, &node.scope)).expect("an input of a valid body");
        if !narrow {
            return v;
        }
        let wide = (g.push(Op::Cast { to: DType::F32 }, vec![v], &node.scope))
            .expect("bf16 widens to f32");
        self.widening.push((v, wide));
        wide
    }

    /// A cast of the old body that the narrowed inputs make a no-op: `cast(_, bf16)` of
    /// a narrowed input's widening is the input (exact, so a reader that rounded the
    /// f32 buffer reads the bf16 one as it is), and `cast(_, f32)` of the input is its
    /// widening.
    fn fold(&self, node: &Node, operands: &[Value]) -> Option<Value> {
        let &operand = operands.first()?;
        let &(narrow, wide) =
            (self.widening.iter()).find(|(narrow, wide)| operand == *narrow || operand == *wide)?;
        match node.op {
            Op::Cast { to: DType::BF16 } if operand == wide => Some(narrow),
            Op::Cast { to: DType::F32 } if operand == narrow => Some(wide),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use calib_ir::{Buffer, BufferId, Kernel, KernelOutput, ProgramOutput, TensorType};
    use calib_runtime::{reference, Bindings, HostTensor};

    fn ty(dtype: DType) -> TensorType {
        TensorType::new(dtype, vec![2, 3])
    }

    fn kernel(name: &str, inputs: Vec<usize>, output: usize, body: Graph) -> Kernel {
        Kernel {
            name: name.into(),
            label: String::new(),
            anchor: Anchor::Pointwise,
            inputs: inputs.into_iter().map(BufferId).collect(),
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

    /// `k0` rounds `x * x` to bf16 and back into a temporary; `k1` adds it to `x`;
    /// `k2` stores the round trip of `x` as the program's output.
    fn program() -> Program {
        let mut round = Graph::new();
        let x = round
            .push_source(Op::Input { name: "in0".into() }, ty(DType::F32), "")
            .unwrap();
        let sq = round.push(Op::Mul, vec![x, x], "").unwrap();
        let low = round
            .push(Op::Cast { to: DType::BF16 }, vec![sq], "")
            .unwrap();
        let wide = round
            .push(Op::Cast { to: DType::F32 }, vec![low], "")
            .unwrap();
        round.add_output("out0", wide).unwrap();
        let mut add = Graph::new();
        let r = add
            .push_source(Op::Input { name: "in0".into() }, ty(DType::F32), "")
            .unwrap();
        let x = add
            .push_source(Op::Input { name: "in1".into() }, ty(DType::F32), "")
            .unwrap();
        let s = add.push(Op::Add, vec![r, x], "").unwrap();
        add.add_output("out0", s).unwrap();
        let keep = round.clone();
        let buffer = |name: &str, role| Buffer::new(name, ty(DType::F32), role);
        Program {
            buffers: vec![
                buffer("x", Role::Input),
                buffer("t", Role::Temp),
                buffer("y", Role::Output),
                buffer("z", Role::Output),
            ],
            kernels: vec![
                kernel("k0", vec![0], 1, round),
                kernel("k1", vec![1, 0], 2, add),
                kernel("k2", vec![0], 3, keep),
            ],
            outputs: vec![
                ProgramOutput {
                    name: "y".into(),
                    buffer: BufferId(2),
                },
                ProgramOutput {
                    name: "z".into(),
                    buffer: BufferId(3),
                },
            ],
        }
    }

    #[test]
    fn a_stored_round_trip_becomes_a_bf16_buffer_its_reader_widens() {
        let wide = program();
        let mut narrow = wide.clone();
        assert_eq!(narrow_stores(&mut narrow), 1);
        narrow.validate().unwrap();
        let dtypes: Vec<DType> = narrow.buffers.iter().map(|b| b.ty.dtype).collect();
        // The program's output stays f32 though it holds a round trip too.
        assert_eq!(dtypes, [DType::F32, DType::BF16, DType::F32, DType::F32]);
        let k0 = &narrow.kernels[0].body;
        assert_eq!(k0.ty(k0.outputs[0].value).dtype, DType::BF16);
        let k1 = &narrow.kernels[1].body;
        let (_, t) = k1.inputs().next().unwrap();
        assert_eq!(k1.ty(t).dtype, DType::BF16);
        assert!(k1
            .nodes
            .iter()
            .any(|n| n.op == Op::Cast { to: DType::F32 } && n.inputs == [t]));
        // Values that round in bf16 (1.01^2 does not fit 8 bits) come out the same.
        let x = HostTensor::from_f32(vec![2, 3], vec![1.01, -3.3, 0.5, 7.77, 1e-3, -0.0]).unwrap();
        let b = Bindings::new().input("x", &x);
        let want = reference::run_program(&wide, &b).unwrap();
        let got = reference::run_program(&narrow, &b).unwrap();
        for name in ["y", "z"] {
            let bits = |t: &HostTensor| -> Vec<u32> {
                t.to_f32_vec().iter().map(|v| v.to_bits()).collect()
            };
            assert_eq!(bits(&got[name]), bits(&want[name]), "{name}");
        }
        // Applying it again finds nothing more.
        assert_eq!(narrow_stores(&mut narrow), 0);
    }

    /// `wide` after [`narrow_stores`], which narrows exactly its buffer 1.
    fn narrowed_once(wide: &Program) -> Program {
        let mut narrow = wide.clone();
        assert_eq!(narrow_stores(&mut narrow), 1);
        narrow.validate().unwrap();
        assert_eq!(narrow.buffers[1].ty.dtype, DType::BF16);
        narrow
    }

    #[test]
    fn a_concatenation_of_round_trips_is_stored_as_one_of_bf16_values() {
        // k0: t = concat(round(x * x), round(x + x)) along axis 1; k1: y = t + t.
        let wide_ty = TensorType::new(DType::F32, vec![2, 6]);
        let mut cat = Graph::new();
        let x = cat
            .push_source(Op::Input { name: "in0".into() }, ty(DType::F32), "")
            .unwrap();
        let round_trip = |g: &mut Graph, op: Op| {
            let v = g.push(op, vec![x, x], "").unwrap();
            let low = g.push(Op::Cast { to: DType::BF16 }, vec![v], "").unwrap();
            g.push(Op::Cast { to: DType::F32 }, vec![low], "").unwrap()
        };
        let (a, b) = (round_trip(&mut cat, Op::Mul), round_trip(&mut cat, Op::Add));
        let t = cat.push(Op::Concat { axis: 1 }, vec![a, b], "").unwrap();
        cat.add_output("out0", t).unwrap();
        let mut twice = Graph::new();
        let t = twice
            .push_source(Op::Input { name: "in0".into() }, wide_ty.clone(), "")
            .unwrap();
        let y = twice.push(Op::Add, vec![t, t], "").unwrap();
        twice.add_output("out0", y).unwrap();
        let wide = Program {
            buffers: vec![
                Buffer::new("x", ty(DType::F32), Role::Input),
                Buffer::new("t", wide_ty.clone(), Role::Temp),
                Buffer::new("y", wide_ty, Role::Output),
            ],
            kernels: vec![
                kernel("k0", vec![0], 1, cat),
                kernel("k1", vec![1], 2, twice),
            ],
            outputs: vec![ProgramOutput {
                name: "y".into(),
                buffer: BufferId(2),
            }],
        };
        let narrow = narrowed_once(&wide);
        let k0 = &narrow.kernels[0].body;
        let stored = k0.node(k0.outputs[0].value);
        assert!(matches!(stored.op, Op::Concat { .. }), "{k0:?}");
        assert!(stored.inputs.iter().all(|&v| k0.ty(v).dtype == DType::BF16));
        let x = HostTensor::from_f32(vec![2, 3], vec![1.01, -3.3, 0.5, 7.77, 1e-3, -0.0]).unwrap();
        let b = Bindings::new().input("x", &x);
        let bits =
            |t: &HostTensor| -> Vec<u32> { t.to_f32_vec().iter().map(|v| v.to_bits()).collect() };
        let want = reference::run_program(&wide, &b).unwrap();
        let got = reference::run_program(&narrow, &b).unwrap();
        assert_eq!(bits(&got["y"]), bits(&want["y"]));
        // The planner prices the body as it is now stored.
        let priced = as_stored(&wide.kernels[0].body, &[]);
        assert_eq!(priced.ty(priced.outputs[0].value).dtype, DType::BF16);
    }

    /// `k0` stores `x * x` in f32; `k1` rounds it to bf16 as it loads it and adds `x`;
    /// `k2`, when `plain_reader`, adds it to `x` unrounded.
    fn rounded_on_read(plain_reader: bool) -> Program {
        let input = |g: &mut Graph, name: &str| {
            g.push_source(Op::Input { name: name.into() }, ty(DType::F32), "")
                .unwrap()
        };
        let mut square = Graph::new();
        let x = input(&mut square, "in0");
        let sq = square.push(Op::Mul, vec![x, x], "").unwrap();
        square.add_output("out0", sq).unwrap();
        let mut rounds = Graph::new();
        let t = input(&mut rounds, "in0");
        let x = input(&mut rounds, "in1");
        let low = rounds
            .push(Op::Cast { to: DType::BF16 }, vec![t], "")
            .unwrap();
        let wide = rounds
            .push(Op::Cast { to: DType::F32 }, vec![low], "")
            .unwrap();
        let s = rounds.push(Op::Add, vec![wide, x], "").unwrap();
        rounds.add_output("out0", s).unwrap();
        let mut plain = Graph::new();
        let t = input(&mut plain, "in0");
        let x = input(&mut plain, "in1");
        let s = plain.push(Op::Add, vec![t, x], "").unwrap();
        plain.add_output("out0", s).unwrap();
        let buffer = |name: &str, role| Buffer::new(name, ty(DType::F32), role);
        let mut kernels = vec![
            kernel("k0", vec![0], 1, square),
            kernel("k1", vec![1, 0], 2, rounds),
        ];
        let mut outputs = vec![ProgramOutput {
            name: "y".into(),
            buffer: BufferId(2),
        }];
        if plain_reader {
            kernels.push(kernel("k2", vec![1, 0], 3, plain));
            outputs.push(ProgramOutput {
                name: "z".into(),
                buffer: BufferId(3),
            });
        }
        Program {
            buffers: vec![
                buffer("x", Role::Input),
                buffer("t", Role::Temp),
                buffer("y", Role::Output),
                buffer("z", Role::Output),
            ],
            kernels,
            outputs,
        }
    }

    #[test]
    fn a_value_every_reader_rounds_is_stored_rounded() {
        let wide = rounded_on_read(false);
        let mut narrow = narrowed_once(&wide);
        let k0 = &narrow.kernels[0].body;
        let stored = k0.node(k0.outputs[0].value);
        assert_eq!(stored.op, Op::Cast { to: DType::BF16 });
        // The reader loads the bf16 value and widens it once, rounding nothing.
        let k1 = &narrow.kernels[1].body;
        let casts: Vec<&Op> = k1
            .nodes
            .iter()
            .map(|n| &n.op)
            .filter(|op| matches!(op, Op::Cast { .. }))
            .collect();
        assert_eq!(casts, [&Op::Cast { to: DType::F32 }]);
        let x = HostTensor::from_f32(vec![2, 3], vec![1.01, -3.3, 0.5, 7.77, 1e-3, -0.0]).unwrap();
        let b = Bindings::new().input("x", &x);
        let want = reference::run_program(&wide, &b).unwrap();
        let got = reference::run_program(&narrow, &b).unwrap();
        let bits =
            |t: &HostTensor| -> Vec<u32> { t.to_f32_vec().iter().map(|v| v.to_bits()).collect() };
        assert_eq!(bits(&got["y"]), bits(&want["y"]));
        assert_eq!(narrow_stores(&mut narrow), 0);
    }

    #[test]
    fn a_value_one_reader_needs_unrounded_stays_f32() {
        let mut p = rounded_on_read(true);
        assert_eq!(narrow_stores(&mut p), 0);
        assert_eq!(p.buffers[1].ty.dtype, DType::F32);
    }
}
