//! A kernel plan ready for a device: each kernel's PTX and launch geometry, the
//! all-reduces between replicas, and where every buffer sits in one arena. Code
//! generation and memory planning produce it; device executors (the PTX simulator,
//! CUDA) only load, launch and transfer, in the order [`DeviceProgram::schedule`] gives.

use crate::session::BufferCopy;
use crate::{Bindings, Collective, HostTensor, OpError, RuntimeError};
use calib_ir::{Anchor, BufferId, Op, Program, ProgramError, ReduceOp, Role, TensorType};
use std::ops::Range;

/// One launch: a PTX module with one `.entry`, and its configuration.
#[derive(Clone, Debug, PartialEq)]
pub struct DeviceKernel {
    /// The entry name.
    pub name: String,
    /// The plan kernel this launch implements (a plan kernel may take several).
    pub kernel: String,
    pub ptx: String,
    pub grid: [u32; 3],
    pub block: [u32; 3],
    pub shared_bytes: u32,
    /// The `.param .u64` arguments in order: the buffer whose address each one gets.
    pub params: Vec<BufferId>,
    /// What the launch does and what the cost model expects of it, for reports and
    /// per-kernel timing tables.
    pub info: LaunchInfo,
}

/// The figures a per-kernel timing table puts beside a launch's measured time.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LaunchInfo {
    /// The plan kernel's label: the anchor op and the layer scope (`conv2d@layer1.0.conv1`).
    pub label: String,
    /// Arithmetic of the plan kernel (counted once, on its first launch).
    pub flops: f64,
    /// Bytes the plan kernel reads and writes (counted once, on its first launch).
    pub bytes: f64,
    /// The cost model's prediction for this launch, in microseconds.
    pub estimated_us: f64,
}

/// An all-reduce across the replicas of a data-parallel group: a transfer the executor
/// performs (NCCL on GPUs, the bound [`Collective`] otherwise), never a PTX kernel.
#[derive(Clone, Debug, PartialEq)]
pub struct DeviceAllReduce {
    /// The plan kernel it implements.
    pub kernel: String,
    /// The graph node it implements (for error messages).
    pub node: usize,
    pub input: BufferId,
    pub output: BufferId,
    pub reduce: ReduceOp,
    /// The group size the graph was made for.
    pub replicas: usize,
    /// How many launches precede it in program order.
    pub after_launches: usize,
}

/// A whole program for a device.
#[derive(Clone, Debug, PartialEq)]
pub struct DeviceProgram {
    /// Buffers, kernels in order (their bodies are for reports), outputs.
    pub program: Program,
    /// Every launch, in program order.
    pub kernels: Vec<DeviceKernel>,
    /// Every all-reduce, in program order.
    pub all_reduces: Vec<DeviceAllReduce>,
    /// Byte offset of every buffer in the arena, indexed like `program.buffers`.
    pub offsets: Vec<usize>,
    pub arena_bytes: usize,
}

/// One thing an executor does, in order. An all-reduce is split in two so that an
/// executor with a communication stream can overlap it with the launches in between:
/// it may start at [`Action::StartAllReduce`] (its input is complete) and must have
/// finished at [`Action::JoinAllReduce`] (before the first launch that reads its
/// output, or at the end). An executor without overlap may run it at either point.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Launch `kernels[i]`.
    Launch(usize),
    /// `all_reduces[i]`'s input is complete.
    StartAllReduce(usize),
    /// `all_reduces[i]`'s output is needed from here on.
    JoinAllReduce(usize),
}

/// A copy of `len` bytes within the arena, from offset `from` to offset `to`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ArenaCopy {
    pub from: usize,
    pub to: usize,
    pub len: usize,
}

/// Whether two types hold the same elements in the same bytes (one reshapes the other).
fn same_elements(a: &TensorType, b: &TensorType) -> bool {
    a.dtype == b.dtype && a.numel() == b.numel()
}

impl DeviceAllReduce {
    /// Reduces this replica's input bytes through the bound group, on the host: what
    /// the simulator does, and the GPU executor when no NCCL communicator is at hand.
    pub fn reduce_on_host(
        &self,
        program: &Program,
        input: &[u8],
        group: Option<&dyn Collective>,
    ) -> Result<Vec<u8>, RuntimeError> {
        let device = |e: crate::TensorError| {
            RuntimeError::Device(format!("all-reduce {}: {e}", self.kernel))
        };
        let x = HostTensor::from_le_bytes(&program.buffer(self.input).ty, input).map_err(device)?;
        let reduced = crate::collective::all_reduce_bound(&x, self.reduce, self.replicas, group)
            .map_err(|source: OpError| RuntimeError::Op {
                node: self.node,
                op: "all_reduce",
                scope: format!(" in kernel {}", self.kernel),
                source,
            })?;
        let ty = &program.buffer(self.output).ty;
        let out = HostTensor::new(ty.dtype, ty.shape.clone(), reduced).map_err(device)?;
        Ok(out.to_le_bytes())
    }
}

impl DeviceProgram {
    /// A program from its plan, the launches compiled for its non-collective kernels (in
    /// program order, each naming its plan kernel), and its arena layout. Collective
    /// kernels become [`DeviceAllReduce`]s; a collective kernel whose body is anything
    /// but one whole-buffer `all_reduce` is refused, since no executor can run it.
    pub fn new(
        program: Program,
        kernels: Vec<DeviceKernel>,
        offsets: Vec<usize>,
        arena_bytes: usize,
    ) -> Result<Self, RuntimeError> {
        let mut all_reduces = vec![];
        let mut launches = 0;
        for k in &program.kernels {
            if k.anchor != Anchor::Collective {
                while kernels.get(launches).is_some_and(|l| l.kernel == k.name) {
                    launches += 1;
                }
                continue;
            }
            let refuse = |detail: &str| {
                RuntimeError::Program(ProgramError::Invalid(format!(
                    "kernel {}: {detail}",
                    k.name
                )))
            };
            let body = &k.body;
            let reduces: Vec<_> = body
                .nodes
                .iter()
                .enumerate()
                .filter_map(|(i, n)| match n.op {
                    Op::AllReduce { reduce, replicas } => Some((i, reduce, replicas)),
                    _ => None,
                })
                .collect();
            let [(node, reduce, replicas)] = reduces[..] else {
                return Err(refuse(
                    "a collective kernel must hold exactly one all_reduce",
                ));
            };
            // Reshapes are views (the same bytes), so the all-reduce can work on bytes.
            let only_views = body.nodes.iter().all(|n| {
                matches!(
                    n.op,
                    Op::Input { .. } | Op::Reshape { .. } | Op::AllReduce { .. }
                )
            });
            let whole = only_views
                && k.inputs.len() == 1
                && k.outputs.len() == 1
                && k.outputs[0].slice.is_none()
                && same_elements(
                    &program.buffer(k.inputs[0]).ty,
                    &program.buffer(k.outputs[0].buffer).ty,
                );
            if !whole {
                return Err(refuse(
                    "a collective kernel must all-reduce one whole buffer into another \
                     (through reshapes at most), with nothing else in its body",
                ));
            }
            all_reduces.push(DeviceAllReduce {
                kernel: k.name.clone(),
                node: k.covers.first().copied().unwrap_or(node),
                input: k.inputs[0],
                output: k.outputs[0].buffer,
                reduce,
                replicas,
                after_launches: launches,
            });
        }
        if let Some(stray) = kernels.get(launches) {
            return Err(RuntimeError::Codegen(format!(
                "launch {} (of plan kernel {}) is out of the plan's kernel order",
                stray.name, stray.kernel
            )));
        }
        Ok(DeviceProgram {
            program,
            kernels,
            all_reduces,
            offsets,
            arena_bytes,
        })
    }

    /// The order of launches and all-reduces; see [`Action`].
    pub fn schedule(&self) -> Vec<Action> {
        let mut actions = vec![];
        let mut pending: Vec<usize> = vec![];
        // Joins every pending all-reduce whose output is among `reads`.
        let join = |actions: &mut Vec<Action>, pending: &mut Vec<usize>, reads: &[BufferId]| {
            pending.retain(|&c| {
                let needed = reads.contains(&self.all_reduces[c].output);
                if needed {
                    actions.push(Action::JoinAllReduce(c));
                }
                !needed
            });
        };
        let mut next = 0;
        for i in 0..=self.kernels.len() {
            while self
                .all_reduces
                .get(next)
                .is_some_and(|c| c.after_launches == i || i == self.kernels.len())
            {
                join(&mut actions, &mut pending, &[self.all_reduces[next].input]);
                actions.push(Action::StartAllReduce(next));
                pending.push(next);
                next += 1;
            }
            if let Some(kernel) = self.kernels.get(i) {
                join(&mut actions, &mut pending, &kernel.params);
                actions.push(Action::Launch(i));
            }
        }
        actions.extend(pending.into_iter().map(Action::JoinAllReduce));
        actions
    }

    /// `copies` as byte ranges of the arena, neighbours merged: copies whose sources
    /// and destinations both follow on from the previous one's become one (fewer
    /// driver calls per step when the planner placed state side by side).
    pub fn arena_copies(&self, copies: &[BufferCopy]) -> Vec<ArenaCopy> {
        let mut ranges: Vec<ArenaCopy> = copies
            .iter()
            .map(|c| ArenaCopy {
                from: self.offsets[c.from.0],
                to: self.offsets[c.to.0],
                len: self.program.buffer(c.from).ty.size_bytes(),
            })
            .filter(|c| c.len > 0 && c.from != c.to)
            .collect();
        ranges.sort_by_key(|c| c.from);
        let mut merged: Vec<ArenaCopy> = Vec::with_capacity(ranges.len());
        for c in ranges {
            match merged.last_mut() {
                Some(last) if last.from + last.len == c.from && last.to + last.len == c.to => {
                    last.len += c.len
                }
                _ => merged.push(c),
            }
        }
        merged
    }

    /// Bytes of the arena that buffer `b` occupies.
    fn bytes_of(&self, b: BufferId) -> Range<usize> {
        let start = self.offsets[b.0];
        start..start + self.program.buffers[b.0].ty.size_bytes()
    }

    /// Checks that overlapping each all-reduce with the launches up to its join is
    /// safe in this arena layout: no launch in that window touches the bytes of its
    /// output, nor the bytes of its input through another buffer (the arena planner
    /// keeps both alive until the join), and no all-reduce started in the window
    /// writes them.
    pub fn check_overlap(&self) -> Result<(), String> {
        let clash = |a: Range<usize>, b: Range<usize>| a.start < b.end && b.start < a.end;
        let mut open: Vec<usize> = vec![];
        for action in self.schedule() {
            match action {
                Action::StartAllReduce(c) => {
                    let written = self.bytes_of(self.all_reduces[c].output);
                    for &o in &open {
                        let other = &self.all_reduces[o];
                        if [other.input, other.output]
                            .iter()
                            .any(|&b| clash(self.bytes_of(b), written.clone()))
                        {
                            return Err(format!(
                                "all-reduce {} writes bytes of all-reduce {} before its join",
                                self.all_reduces[c].kernel, other.kernel
                            ));
                        }
                    }
                    open.push(c);
                }
                Action::JoinAllReduce(c) => open.retain(|&o| o != c),
                Action::Launch(i) => {
                    let kernel = &self.kernels[i];
                    for c in open.iter().map(|&o| &self.all_reduces[o]) {
                        for &p in &kernel.params {
                            let touches = clash(self.bytes_of(p), self.bytes_of(c.output))
                                || (p != c.input
                                    && clash(self.bytes_of(p), self.bytes_of(c.input)));
                            if touches {
                                return Err(format!(
                                    "launch {} touches buffer {p}, which shares bytes with \
                                     all-reduce {} ({} -> {}) before its join",
                                    kernel.name, c.kernel, c.input, c.output
                                ));
                            }
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// `tensor`'s bytes as buffer `b` holds them (in the buffer's layout).
    pub fn stored_bytes(&self, b: BufferId, tensor: &HostTensor) -> Vec<u8> {
        tensor.to_stored_bytes(self.program.buffer(b).layout)
    }

    /// The row-major tensor whose bytes buffer `b` holds as `bytes`.
    pub fn stored_tensor(&self, b: BufferId, bytes: &[u8]) -> Result<HostTensor, RuntimeError> {
        let buf = self.program.buffer(b);
        HostTensor::from_stored_bytes(&buf.ty, buf.layout, bytes)
            .map_err(|e| RuntimeError::Device(format!("reading back buffer `{}`: {e}", buf.name)))
    }

    /// The bound tensor of every input and param buffer, checked against its type.
    pub fn bound_tensors<'a>(
        &self,
        bindings: &Bindings<'a>,
    ) -> Result<Vec<(BufferId, &'a HostTensor)>, RuntimeError> {
        let mut out = vec![];
        for (i, buf) in self.program.buffers.iter().enumerate() {
            let (kind, tensor) = match buf.role {
                Role::Input => ("input", bindings.get_input(&buf.name)),
                Role::Param => ("param", bindings.get_param(&buf.name)),
                Role::Output | Role::Temp => continue,
            };
            let tensor = tensor.ok_or_else(|| RuntimeError::Unbound {
                kind,
                name: buf.name.clone(),
                expected: buf.ty.clone(),
            })?;
            if tensor.ty() != buf.ty {
                return Err(RuntimeError::BindingType {
                    kind,
                    name: buf.name.clone(),
                    expected: buf.ty.clone(),
                    found: tensor.ty(),
                });
            }
            out.push((BufferId(i), tensor));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use calib_ir::{Buffer, DType};

    /// Six f32[4] buffers (16 bytes each) at the given arena offsets.
    fn plan(offsets: Vec<usize>) -> DeviceProgram {
        let buffers = (0..offsets.len())
            .map(|i| {
                Buffer::new(
                    format!("b{i}"),
                    TensorType::new(DType::F32, vec![4]),
                    Role::Temp,
                )
            })
            .collect();
        let program = Program {
            buffers,
            ..Program::default()
        };
        DeviceProgram::new(program, vec![], offsets, 256).unwrap()
    }

    fn copy(from: usize, to: usize) -> BufferCopy {
        BufferCopy {
            from: BufferId(from),
            to: BufferId(to),
        }
    }

    #[test]
    fn copies_between_neighbours_merge_into_one() {
        // Outputs b0, b1 side by side at 0 and 16, their inputs b2, b3 at 64 and 80; b4
        // at 128 goes to b5 at 32 (not after b3), and a copy onto itself is none.
        let p = plan(vec![0, 16, 64, 80, 128, 32]);
        let copies = p.arena_copies(&[copy(1, 3), copy(0, 2), copy(4, 5), copy(2, 2)]);
        assert_eq!(
            copies,
            vec![
                ArenaCopy {
                    from: 0,
                    to: 64,
                    len: 32
                },
                ArenaCopy {
                    from: 128,
                    to: 32,
                    len: 16
                },
            ]
        );
    }

    #[test]
    fn a_source_that_follows_on_with_a_destination_that_does_not_stays_apart() {
        let p = plan(vec![0, 16, 64, 96, 200, 220]);
        assert_eq!(p.arena_copies(&[copy(0, 2), copy(1, 3)]).len(), 2);
    }
}
