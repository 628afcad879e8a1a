//! The work of evaluating a body's values at one element: issue slots, loads, load
//! rounds, as code generation spends them (op by op, windows as loops).

use calib_ir::{GemmDims, Graph, Op, OpClass, Value};
use std::ops::{Add, AddAssign, Mul, Sub};

/// Per-element work: what evaluating one element of a value costs a thread.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(super) struct Work {
    pub(super) issue: f64,
    pub(super) fp32: f64,
    pub(super) sfu: f64,
    pub(super) loads: f64,
    /// Loop iterations that wait for loads (windows evaluated in a prologue).
    pub(super) rounds: f64,
    /// Instructions that wait for none of their neighbours (a GEMM's products).
    pub(super) independent: f64,
    /// Tensor-core FLOPs (a thread's share), TF32 and f16/bf16.
    pub(super) tensor_tf32_flops: f64,
    pub(super) tensor_f16_flops: f64,
}

impl Add for Work {
    type Output = Work;
    fn add(self, o: Work) -> Work {
        Work {
            issue: self.issue + o.issue,
            fp32: self.fp32 + o.fp32,
            sfu: self.sfu + o.sfu,
            loads: self.loads + o.loads,
            rounds: self.rounds + o.rounds,
            independent: self.independent + o.independent,
            tensor_tf32_flops: self.tensor_tf32_flops + o.tensor_tf32_flops,
            tensor_f16_flops: self.tensor_f16_flops + o.tensor_f16_flops,
        }
    }
}

impl AddAssign for Work {
    fn add_assign(&mut self, o: Work) {
        *self = *self + o;
    }
}

impl Sub for Work {
    type Output = Work;
    fn sub(self, o: Work) -> Work {
        self + o * -1.0
    }
}

impl Mul<f64> for Work {
    type Output = Work;
    fn mul(self, k: f64) -> Work {
        Work {
            issue: self.issue * k,
            fp32: self.fp32 * k,
            sfu: self.sfu * k,
            loads: self.loads * k,
            rounds: self.rounds * k,
            independent: self.independent * k,
            tensor_tf32_flops: self.tensor_tf32_flops * k,
            tensor_f16_flops: self.tensor_f16_flops * k,
        }
    }
}

pub(super) fn issue(n: f64) -> Work {
    Work {
        issue: n,
        ..Work::default()
    }
}

/// The work of one op on one element, not counting its operands.
pub(super) fn op_work(op: &Op, body: &Graph, inputs: &[Value]) -> Work {
    let f = |issue: f64, fp32: f64, sfu: f64| Work {
        issue,
        fp32,
        sfu,
        ..Work::default()
    };
    match op {
        // A global load: the address from the coordinates, then the load.
        Op::Input { .. } => Work {
            issue: 5.0,
            loads: 1.0,
            ..Work::default()
        },
        Op::Constant { .. } | Op::Param { .. } => Work::default(),
        Op::Neg | Op::Relu | Op::Add | Op::Sub | Op::Mul | Op::Max => f(1.0, 1.0, 0.0),
        Op::Div => f(12.0, 8.0, 1.0),
        Op::Sqrt => f(9.0, 6.0, 1.0),
        Op::Exp | Op::Log => f(3.0, 1.0, 1.0),
        Op::Rsqrt => f(2.0, 0.0, 1.0),
        Op::Sigmoid => f(13.0, 8.0, 2.0),
        Op::CmpGt | Op::CmpGe | Op::CmpEq | Op::Select => f(2.0, 0.0, 0.0),
        Op::Cast { .. } => f(1.0, 0.0, 1.0),
        Op::Broadcast { .. } => issue(0.5),
        Op::Slice { .. } => issue(1.0),
        // A flat index and its coordinates again: a divide and a remainder per axis.
        Op::Reshape { .. } => issue(7.0 * body.ty(inputs[0]).rank().saturating_sub(1) as f64),
        Op::Concat { .. } => issue(4.0),
        Op::OneHot { .. } => issue(5.0),
        Op::ResizeNearest { .. } => f(10.0, 2.0, 4.0),
        _ => issue(2.0),
    }
}

/// How many elements of its operands one element of a windowed op reads, and the loop
/// overhead of each.
pub(super) fn window(op: &Op, body: &Graph, inputs: &[Value], out: Value) -> Option<f64> {
    let area = |k: &[usize; 2]| (k[0] * k[1]) as f64;
    Some(match op {
        Op::AvgPool2d { kernel, .. } | Op::MaxPool2d { kernel, .. } => area(kernel),
        Op::AvgPool2dBackward { kernel, stride, .. }
        | Op::MaxPool2dBackward { kernel, stride, .. } => {
            (kernel[0].div_ceil(stride[0]) * kernel[1].div_ceil(stride[1])) as f64
        }
        Op::ResizeNearestBackward { .. } => {
            let (dy, x) = (&body.ty(inputs[0]).shape, &body.ty(out).shape);
            ((dy[2].div_ceil(x[2]) + 2) * (dy[3].div_ceil(x[3]) + 2)) as f64
        }
        Op::ReduceSum { .. } | Op::ReduceMean { .. } | Op::ReduceMax { .. } => {
            (body.ty(inputs[0]).numel() / body.ty(out).numel().max(1)) as f64
        }
        Op::Conv2d { .. } | Op::Conv2dBackwardData { .. } | Op::Conv2dBackwardWeight { .. } => {
            // Evaluated one element at a time, a data gradient walks every tap of its
            // window (its phases are a GEMM anchor's).
            let dims = GemmDims::of(body, out)?;
            match dims.phases {
                Some(p) => (dims.k[2] * p.kernel[0] * p.kernel[1]) as f64,
                None => dims.mnk().2 as f64,
            }
        }
        Op::MatMul { .. } => GemmDims::of(body, out)?.mnk().2 as f64,
        _ => return None,
    })
}

/// The work of evaluating `roots` at one element each, every node once (code generation
/// memoizes shared subexpressions), not looking past `stop`. A windowed op evaluates its
/// operands once per window position, in a loop that waits for its loads each time.
pub(super) fn work_of(body: &Graph, roots: &[Value], stop: &[Value]) -> Work {
    let mut seen = vec![false; body.nodes.len()];
    let mut total = Work::default();
    for &r in roots {
        total += walk(body, r, stop, &mut seen);
    }
    total
}

/// The part of [`work_of`] that is the same at every element of a run along the
/// innermost axis of the roots, outside any window: values of fewer than `below`
/// elements (per-channel vectors under a broadcast), and values of the roots' rank that
/// do not depend on that axis (`calib_ir::invariant_axes`: per-channel terms computed
/// after their broadcast). Code generation computes them once per run.
pub(super) fn run_invariant_work(
    body: &Graph,
    roots: &[Value],
    stop: &[Value],
    below: usize,
) -> Work {
    let invariant = calib_ir::invariant_axes(body);
    let rank = roots.first().map_or(0, |&r| body.ty(r).rank());
    let mut seen = vec![false; body.nodes.len()];
    let mut stack: Vec<Value> = roots.to_vec();
    let mut total = Work::default();
    while let Some(v) = stack.pop() {
        if std::mem::replace(&mut seen[v.0], true) || stop.contains(&v) {
            continue;
        }
        let node = &body.nodes[v.0];
        if window(&node.op, body, &node.inputs, v).is_some() {
            continue;
        }
        let ty = body.ty(v);
        let along_run = rank > 0 && ty.rank() == rank && invariant[v.0] >> (rank - 1) & 1 == 1;
        if ty.numel() < below || along_run {
            total += op_work(&node.op, body, &node.inputs);
        }
        stack.extend(&node.inputs);
    }
    total
}

pub(super) fn walk(body: &Graph, v: Value, stop: &[Value], seen: &mut [bool]) -> Work {
    if std::mem::replace(&mut seen[v.0], true) || stop.contains(&v) {
        return Work::default();
    }
    let node = &body.nodes[v.0];
    let own = op_work(&node.op, body, &node.inputs);
    match window(&node.op, body, &node.inputs, v) {
        Some(n) => {
            // Operands are evaluated afresh at every window position.
            let mut fresh = vec![false; body.nodes.len()];
            let mut inner = issue(6.0);
            for &x in &node.inputs {
                inner += walk(body, x, stop, &mut fresh);
            }
            if let Op::MaxPool2dBackward { kernel, .. } = &node.op {
                // Each window containing the position finds its first maximum again.
                let mut fresh = vec![false; body.nodes.len()];
                let mut tap = walk(body, node.inputs[0], stop, &mut fresh) + issue(10.0);
                tap.rounds += 1.0;
                inner += tap * (kernel[0] * kernel[1]) as f64;
            }
            let rounds = if inner.loads > 0.0 { 1.0 } else { 0.0 };
            inner.rounds += rounds;
            let mut total = inner * n + own;
            // Small pooling windows are written out in full: their loads go together.
            let pooling = matches!(node.op.class(), OpClass::Pool);
            if pooling && n <= 16.0 {
                total.rounds = total.rounds.min(rounds);
            }
            total
        }
        None => match node.op {
            // Code generation branches on the coordinate along the axis: an element
            // evaluates one part (each for its share of the axis), and the branch
            // waits for that part's loads on its own.
            Op::Concat { axis } => node.inputs.iter().fold(own, |acc, &x| {
                let share = body.ty(x).shape[axis] as f64 / node.ty.shape[axis].max(1) as f64;
                let mut part = walk(body, x, stop, seen);
                if part.loads > 0.0 {
                    part.rounds = part.rounds.max(1.0);
                }
                acc + part * share
            }),
            _ => node
                .inputs
                .iter()
                .fold(own, |acc, &x| acc + walk(body, x, stop, seen)),
        },
    }
}
