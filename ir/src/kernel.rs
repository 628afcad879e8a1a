//! Kernel plans: what fusion hands to code generation.
//!
//! A [`Program`] is a list of [`Kernel`]s run in order over named [`Buffer`]s. Each
//! kernel is one launch: it reads whole buffers, computes its `body` (an ordinary
//! [`Graph`] of primitive ops whose inputs `in0, in1, ...` are the kernel's inputs in
//! order and whose outputs `out0, out1, ...` are its outputs in order), and writes each
//! output to a buffer or to a slice of one (concat as a view: producers write into
//! channel slices of one buffer). The body keeps its index maps (`broadcast`,
//! `resize_nearest`, `slice`, `concat`, `reshape`) as ops, so code generation sees how
//! every element is addressed; the [`Anchor`] says which loop nest the kernel is built
//! around, and `covers` lists the nodes of the original graph it replaces.
//!
//! ```text
//! program {
//!   $0 input input : f32[2,8,16,16]
//!   $1 param conv.weight : f32[8,8,3,3]
//!   $2 output y : f32[2,8,16,16]
//!   kernel k0 convolution "conv2d@conv" ($0, $1) -> ($2) covers [2,3]
//!     graph { ... }
//!   return y=$2
//! }
//! ```

use crate::{text, Graph, Layout, Op, Schedule, TensorType};
use serde::{Deserialize, Serialize};
use std::fmt::{self, Write};
use thiserror::Error;

/// A handle to a buffer of a [`Program`] (its index in [`Program::buffers`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct BufferId(pub usize);

impl fmt::Display for BufferId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "${}", self.0)
    }
}

/// Where a buffer's contents come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Bound at run time to the graph input of the same name.
    Input,
    /// Bound at run time to the parameter of the same `state_dict` name.
    Param,
    /// Written by kernels, read back as a program output.
    Output,
    /// Written and read by kernels only.
    Temp,
}

/// One tensor in memory.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Buffer {
    pub name: String,
    #[serde(rename = "type")]
    pub ty: TensorType,
    pub role: Role,
    /// How the elements lie in memory: row-major except for temporaries a layout
    /// choice stored otherwise.
    #[serde(default, skip_serializing_if = "Layout::is_row_major")]
    pub layout: Layout,
}

impl Buffer {
    /// A row-major buffer.
    pub fn new(name: impl Into<String>, ty: TensorType, role: Role) -> Buffer {
        Buffer {
            name: name.into(),
            ty,
            role,
            layout: Layout::RowMajor,
        }
    }
}

/// The loop nest a kernel is organized around; everything else in its body is a
/// prologue (applied to operands as they are loaded) or an epilogue (applied to results
/// before they are stored, including extra reduction outputs).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Anchor {
    /// `conv2d` or one of its adjoints.
    Convolution,
    MatMul,
    /// A reduction over some axes (sums, means, maxima).
    Reduction,
    /// A windowed op: pooling, its adjoints, and the adjoint of nearest resizing.
    Pool,
    /// A map over the output's elements (elementwise ops and index maps only).
    Pointwise,
    /// Communication between the replicas of a data-parallel group (never fused).
    Collective,
}

impl Anchor {
    /// The anchor a kernel built around `op` has.
    pub fn of(op: &Op) -> Anchor {
        use crate::OpClass;
        match op.class() {
            OpClass::Convolution => Anchor::Convolution,
            OpClass::MatMul => Anchor::MatMul,
            OpClass::Reduction => Anchor::Reduction,
            OpClass::Pool => Anchor::Pool,
            OpClass::Resize if matches!(op, Op::ResizeNearestBackward { .. }) => Anchor::Pool,
            OpClass::Collective => Anchor::Collective,
            _ => Anchor::Pointwise,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Anchor::Convolution => "convolution",
            Anchor::MatMul => "matmul",
            Anchor::Reduction => "reduction",
            Anchor::Pool => "pool",
            Anchor::Pointwise => "pointwise",
            Anchor::Collective => "collective",
        }
    }
}

/// Elements `start..end` of `axis` of a buffer: where a kernel output lands when
/// several producers fill one buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Slice {
    pub axis: usize,
    pub start: usize,
    pub end: usize,
}

/// Where one body output is stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KernelOutput {
    pub buffer: BufferId,
    /// `None`: the whole buffer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slice: Option<Slice>,
}

/// One fused launch.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Kernel {
    /// Unique within the program (`k12`).
    pub name: String,
    /// For people: the anchor op and the scope it came from.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub label: String,
    pub anchor: Anchor,
    /// Body input `in{i}` reads `inputs[i]` whole.
    pub inputs: Vec<BufferId>,
    /// Body output `out{i}` is stored to `outputs[i]`.
    pub outputs: Vec<KernelOutput>,
    pub body: Graph,
    /// Ids of the original graph's nodes this kernel computes.
    pub covers: Vec<usize>,
    /// How code generation lays out the loop nest (`None`: its own default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<Schedule>,
    /// Scratch memory the kernel's launches pass partial results through (a split-K
    /// GEMM's partial tiles): a temporary no other kernel touches.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workspace: Option<BufferId>,
    /// A counter the blocks of a split reduction's launch count themselves done on, so
    /// that the last one combines the partial results in place of a second launch: a
    /// temporary of its own, zero before the program first runs and zero again after
    /// each launch (the last block resets it), so it lives as long as the program.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub semaphore: Option<BufferId>,
}

impl Kernel {
    /// The name of body input `i`.
    pub fn input_name(i: usize) -> String {
        format!("in{i}")
    }

    /// The name of body output `i`.
    pub fn output_name(i: usize) -> String {
        format!("out{i}")
    }

    /// The body's index maps (broadcast, resize, slice, concat, reshape), in body order:
    /// what code generation turns into address arithmetic rather than loops.
    pub fn index_maps(&self) -> impl Iterator<Item = &crate::Node> {
        self.body.nodes.iter().filter(|n| {
            matches!(
                n.op,
                Op::Broadcast { .. }
                    | Op::ResizeNearest { .. }
                    | Op::Slice { .. }
                    | Op::Concat { .. }
                    | Op::Reshape { .. }
            )
        })
    }
}

/// A named program result.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProgramOutput {
    pub name: String,
    pub buffer: BufferId,
}

/// Kernels over buffers, in execution order.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Program {
    pub buffers: Vec<Buffer>,
    pub kernels: Vec<Kernel>,
    pub outputs: Vec<ProgramOutput>,
}

impl Program {
    pub fn buffer(&self, id: BufferId) -> &Buffer {
        &self.buffers[id.0]
    }

    /// The layouts of `kernel`'s inputs, in its body's input order
    /// ([`crate::InputLayouts`]).
    pub fn input_layouts(&self, kernel: &Kernel) -> Vec<crate::Layout> {
        kernel
            .inputs
            .iter()
            .map(|&b| self.buffer(b).layout)
            .collect()
    }

    pub fn kernel(&self, name: &str) -> Option<&Kernel> {
        self.kernels.iter().find(|k| k.name == name)
    }

    /// Gives kernel `k` a workspace of `bytes` (an `f32` temporary of its own), or none
    /// for zero bytes.
    pub fn add_workspace(&mut self, k: usize, bytes: usize) {
        self.kernels[k].workspace = (bytes > 0).then(|| {
            self.buffers.push(Buffer::new(
                format!("workspace{k}"),
                TensorType::new(crate::DType::F32, vec![bytes.div_ceil(4)]),
                Role::Temp,
            ));
            BufferId(self.buffers.len() - 1)
        });
    }

    /// Gives kernel `k` a semaphore (see [`Kernel::semaphore`]): one 32-bit counter.
    pub fn add_semaphore(&mut self, k: usize) {
        self.buffers.push(Buffer::new(
            format!("semaphore{k}"),
            TensorType::new(crate::DType::F32, vec![1]),
            Role::Temp,
        ));
        self.kernels[k].semaphore = Some(BufferId(self.buffers.len() - 1));
    }

    /// Checks what an executor relies on: every buffer id exists; each body's inputs and
    /// outputs match the kernel's buffers (slices included) in order and type; inputs
    /// and params are never written; every other buffer is written whole once, or slice
    /// by slice along one axis without overlap, before any kernel reads it; outputs name
    /// buffers that end up written.
    pub fn validate(&self) -> Result<(), ProgramError> {
        let mut written: Vec<Written> = vec![Written::Nothing; self.buffers.len()];
        let ready = |b: BufferId, written: &[Written]| {
            let buf = &self.buffers[b.0];
            matches!(buf.role, Role::Input | Role::Param) || written[b.0].is_complete(&buf.ty)
        };
        for (i, b) in self.buffers.iter().enumerate() {
            let fail =
                |detail: String| ProgramError::Invalid(format!("buffer {}: {detail}", BufferId(i)));
            b.ty.check_size().map_err(|e| fail(e.to_string()))?;
            if !b.layout.fits(b.ty.rank()) {
                return Err(fail(format!(
                    "a {} tensor cannot be stored {}",
                    b.ty, b.layout
                )));
            }
        }
        let mut workspaces: Vec<BufferId> = vec![];
        for k in &self.kernels {
            let fail = |detail: String| {
                Err(ProgramError::Invalid(format!(
                    "kernel {}: {detail}",
                    k.name
                )))
            };
            for (what, scratch) in [("workspace", k.workspace), ("semaphore", k.semaphore)] {
                let Some(w) = scratch else { continue };
                let usable = self.buffers.get(w.0).is_some_and(|b| b.role == Role::Temp);
                let shared = workspaces.contains(&w)
                    || self.kernels.iter().any(|other| {
                        other.inputs.contains(&w) || other.outputs.iter().any(|o| o.buffer == w)
                    });
                if !usable || shared {
                    return fail(format!(
                        "{what} {w} must be a temporary that no other kernel uses"
                    ));
                }
                workspaces.push(w);
            }
            if let Err(e) = k.body.validate() {
                return fail(format!("body: {e}"));
            }
            if let Some(b) = k
                .inputs
                .iter()
                .chain(k.outputs.iter().map(|o| &o.buffer))
                .find(|b| b.0 >= self.buffers.len())
            {
                return fail(format!("buffer {b} does not exist"));
            }
            let body_inputs: Vec<_> = k.body.inputs().collect();
            if body_inputs.len() != k.inputs.len() || k.body.params().next().is_some() {
                return fail(format!(
                    "body has {} inputs (and must have no params) for {} kernel inputs",
                    body_inputs.len(),
                    k.inputs.len()
                ));
            }
            for (i, ((name, v), b)) in body_inputs.iter().zip(&k.inputs).enumerate() {
                let buf = &self.buffers[b.0];
                if *name != Kernel::input_name(i) || k.body.ty(*v) != &buf.ty {
                    return fail(format!(
                        "body input `{name}` ({}) does not match input {i}, {b} ({})",
                        k.body.ty(*v),
                        buf.ty
                    ));
                }
                if !ready(*b, &written) {
                    return fail(format!("reads {b} before it is fully written"));
                }
            }
            if k.body.outputs.len() != k.outputs.len() {
                return fail(format!(
                    "body has {} outputs for {} kernel outputs",
                    k.body.outputs.len(),
                    k.outputs.len()
                ));
            }
            for (i, (o, out)) in k.body.outputs.iter().zip(&k.outputs).enumerate() {
                let buf = &self.buffers[out.buffer.0];
                if matches!(buf.role, Role::Input | Role::Param) {
                    return fail(format!("writes the bound buffer `{}`", buf.name));
                }
                let mut expected = buf.ty.clone();
                if let Some(s) = out.slice {
                    if s.axis >= expected.rank()
                        || s.start >= s.end
                        || s.end > expected.shape[s.axis]
                    {
                        return fail(format!(
                            "slice {}..{} of axis {} does not fit {}",
                            s.start, s.end, s.axis, buf.ty
                        ));
                    }
                    expected.shape[s.axis] = s.end - s.start;
                }
                if o.name != Kernel::output_name(i) || k.body.ty(o.value) != &expected {
                    return fail(format!(
                        "body output `{}` ({}) does not match output {i} ({expected})",
                        o.name,
                        k.body.ty(o.value)
                    ));
                }
                if !written[out.buffer.0].add(out.slice) {
                    return fail(format!("writes {} twice", out.buffer));
                }
            }
        }
        match self
            .outputs
            .iter()
            .find(|o| o.buffer.0 >= self.buffers.len() || !ready(o.buffer, &written))
        {
            Some(o) => Err(ProgramError::Invalid(format!(
                "output `{}` names {}, which is never fully written",
                o.name, o.buffer
            ))),
            None => Ok(()),
        }
    }

    /// The text form (see the module docs).
    pub fn to_text(&self) -> String {
        let mut out = String::from("program {\n");
        for (i, b) in self.buffers.iter().enumerate() {
            let role = match b.role {
                Role::Input => "input",
                Role::Param => "param",
                Role::Output => "output",
                Role::Temp => "temp",
            };
            let layout = match b.layout {
                Layout::RowMajor => String::new(),
                other => format!(" {other}"),
            };
            writeln!(out, "  ${i} {role} {} : {}{layout}", b.name, b.ty).unwrap();
        }
        for k in &self.kernels {
            let ins: Vec<String> = k.inputs.iter().map(|b| b.to_string()).collect();
            let outs: Vec<String> = k
                .outputs
                .iter()
                .map(|o| match o.slice {
                    None => o.buffer.to_string(),
                    Some(s) => format!("{}[axis {}: {}..{}]", o.buffer, s.axis, s.start, s.end),
                })
                .collect();
            let covers: Vec<String> = k.covers.iter().map(|c| c.to_string()).collect();
            writeln!(
                out,
                "  kernel {} {} {:?} ({}) -> ({}) covers [{}]",
                k.name,
                k.anchor.name(),
                k.label,
                ins.join(", "),
                outs.join(", "),
                covers.join(",")
            )
            .unwrap();
            if let Some(s) = &k.schedule {
                let workspace = k
                    .workspace
                    .map_or(String::new(), |w| format!(" workspace {w}"));
                let semaphore = k
                    .semaphore
                    .map_or(String::new(), |w| format!(" semaphore {w}"));
                writeln!(out, "    schedule {s}{workspace}{semaphore}").unwrap();
            }
            for line in text::print(&k.body).lines() {
                writeln!(out, "    {line}").unwrap();
            }
        }
        let outs: Vec<String> = self
            .outputs
            .iter()
            .map(|o| format!("{}={}", o.name, o.buffer))
            .collect();
        writeln!(out, "  return {}\n}}", outs.join(", ")).unwrap();
        out
    }

    /// Graphviz DOT: buffers as ellipses (bound ones shaded, outputs doubled), kernels
    /// as boxes naming their anchor and op count, edges for every read and write.
    pub fn to_dot(&self) -> String {
        let mut out = String::from(
            "digraph program {\n  rankdir=TB;\n  node [fontname=\"monospace\", fontsize=10];\n",
        );
        let quote = |s: &str| s.replace('\\', "\\\\").replace('"', "\\\"");
        for (i, b) in self.buffers.iter().enumerate() {
            let style = match b.role {
                Role::Input | Role::Param => "shape=ellipse, style=filled, fillcolor=lightgrey",
                Role::Output => "shape=doubleoctagon",
                Role::Temp => "shape=ellipse",
            };
            writeln!(
                out,
                "  b{i} [label=\"{}\\n{}\", {style}];",
                quote(&b.name),
                b.ty
            )
            .unwrap();
        }
        for (k, kernel) in self.kernels.iter().enumerate() {
            let ops = kernel
                .body
                .nodes
                .iter()
                .filter(|n| n.op.arity() != Some(0))
                .count();
            writeln!(out, "  k{k} [label=\"{} {}\\n{}\\n{ops} ops\", shape=box, style=filled, fillcolor=lightblue];", kernel.name, kernel.anchor.name(), quote(&kernel.label)).unwrap();
            for b in &kernel.inputs {
                writeln!(out, "  b{} -> k{k};", b.0).unwrap();
            }
            for o in &kernel.outputs {
                writeln!(out, "  k{k} -> b{};", o.buffer.0).unwrap();
            }
        }
        out.push_str("}\n");
        out
    }

    /// Pretty JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a program always serializes")
    }

    /// Reads a program from JSON and validates it.
    pub fn from_json(s: &str) -> Result<Program, ProgramError> {
        let p: Program = serde_json::from_str(s).map_err(|e| ProgramError::Json(e.to_string()))?;
        p.validate()?;
        Ok(p)
    }
}

/// A program that cannot be run as it stands.
#[derive(Debug, Error, Clone, PartialEq)]
pub enum ProgramError {
    #[error("invalid program: {0}")]
    Invalid(String),
    #[error("invalid program JSON: {0}")]
    Json(String),
    /// No program could be made for a graph (fusion failed).
    #[error("fusion failed: {0}")]
    Fusion(String),
}

/// How much of a buffer the kernels so far have written.
#[derive(Clone, Debug)]
enum Written {
    Nothing,
    Whole,
    Slices(Vec<Slice>),
}

impl Written {
    /// Records a write; false if it overlaps an earlier one.
    fn add(&mut self, slice: Option<Slice>) -> bool {
        match (&mut *self, slice) {
            (Written::Nothing, None) => *self = Written::Whole,
            (Written::Nothing, Some(s)) => *self = Written::Slices(vec![s]),
            (Written::Slices(parts), Some(s)) => {
                let clash = parts
                    .iter()
                    .any(|p| p.axis != s.axis || (p.start < s.end && s.start < p.end));
                if clash {
                    return false;
                }
                parts.push(s);
            }
            _ => return false,
        }
        true
    }

    fn is_complete(&self, ty: &TensorType) -> bool {
        match self {
            Written::Nothing => false,
            Written::Whole => true,
            Written::Slices(parts) => {
                parts.iter().map(|p| p.end - p.start).sum::<usize>() == ty.shape[parts[0].axis]
            }
        }
    }
}
