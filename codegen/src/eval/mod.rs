//! The emitter core and body evaluator: PTX that computes any value of a kernel body
//! at any index.
//!
//! `value(v, at)` walks the body backwards from `v`: elementwise ops go through the
//! op table ([`crate::render`]), index maps rewrite the index ([`crate::index`]), inputs
//! become global loads, and windowed or contracting ops (pooling, reductions,
//! convolutions, matmul) become loops that their family emits ([`NestedLoop`]). Every
//! kernel family is built on it: a family emits its own loop nest around the anchor,
//! evaluates the anchor's operands here (the prologue), binds the anchor's result with
//! [`bind`], and evaluates the kernel outputs here again (the epilogue), which then
//! stops at the bound anchor.
//!
//! The core imports no family: the families call it, and the two things it needs from
//! them, a nested value's loop and a split value's slices, it is handed as a function
//! ([`NestedLoop`]) and a trait object ([`Slices`]). So the module graph has no cycle
//! (`tests/module_graph.rs` keeps it so).
//!
//! Results are memoized per (value, index) in scopes that follow the control flow
//! ([`crate::scope`]): a register computed inside a loop or a branch is forgotten when it
//! closes, so a cached register always dominates its uses.
//!
//! [`bind`]: Emitter::bind

use crate::error::{CodegenError, Result};
use crate::index::{Index, IndexKey, Indexer};
use crate::ptx::{ins, Builder, Operand, Reg, Ty};
use crate::render;
use crate::scope::ScopedMap;
use calib_ir::{DType, Kernel, Node, Op, OpClass, Program, TensorType, Value};
use std::collections::HashMap;
use std::rc::Rc;

mod memory;
pub use memory::Run;

/// Instructions one kernel may emit before code generation gives up on it: bodies whose
/// values are needed at many different indices can grow without bound.
const MAX_INSTRUCTIONS: usize = 400_000;

/// Values an earlier launch of the kernel left in its workspace as slices (a split-K
/// GEMM's anchor, a split reduction's results), and how a later launch combines them.
/// The families that split implement it, so the evaluator reads slices without knowing
/// whose they are.
pub(crate) trait Slices {
    /// Whether body value `v` is read from the slices.
    fn holds(&self, v: Value) -> bool;

    /// How many slices each value was cut into.
    fn count(&self) -> usize;

    /// `v` at `at`: its slices in the workspace at `workspace`, combined in slice order.
    fn combine(&self, cx: &mut Emitter, v: Value, workspace: Reg, at: &Index) -> Result<Operand>;
}

/// How the evaluator computes one element of a value that is neither elementwise nor
/// an index map (a window, a contraction or a reduction inside a body): a loop that
/// the value's kernel family emits. The families hand it in (`families.rs`), so that
/// the evaluator never names them.
pub(crate) type NestedLoop = fn(&mut Emitter, Value, &Index) -> Result<Operand>;

/// Code generation state for one kernel.
pub(crate) struct Emitter<'a> {
    pub b: Builder,
    pub kernel: &'a Kernel,
    pub program: &'a Program,
    /// Global address of each kernel input and output, loaded from the parameters.
    inputs: Vec<Reg>,
    outputs: Vec<Reg>,
    /// Kernel input position of each body input node.
    input_of: HashMap<Value, usize>,
    /// Body values an earlier launch of the same kernel stored, by output position:
    /// read back from memory instead of recomputed.
    stored: HashMap<Value, usize>,
    /// Kernel inputs this launch loads and outputs it stores or reads back: the
    /// buffers whose bytes cross device memory.
    touched_inputs: std::collections::BTreeSet<usize>,
    touched_outputs: std::collections::BTreeSet<usize>,
    /// The kernel's workspace address (parameter `ws`), when it has one.
    workspace: Option<Reg>,
    touched_workspace: bool,
    /// The kernel's semaphore address (parameter `sem`), when it has one.
    semaphore: Option<Reg>,
    /// Values whose slices an earlier launch left in the workspace.
    split: Option<Rc<dyn Slices>>,
    /// Windows, contractions and reductions inside the body, one element at a time.
    nested: NestedLoop,
    /// Whether no earlier launch of the kernel was built around a reduction (the plan's
    /// reduction schedule is for the first one).
    pub first_reduction: bool,
    tid: Reg,
    ctaid: Reg,
    values: ScopedMap<(Value, IndexKey), Operand>,
    /// Index conversions (flat to coordinates and back), scoped like values.
    indexer: Indexer,
    /// Per body node, the axes its value does not depend on
    /// ([`calib_ir::invariant_axes`]).
    invariant: Vec<u64>,
    /// While a run along a channels-last image's channels is evaluated: its elements'
    /// channels, the first a multiple of their count ([`Emitter::load`]).
    channel_run: Option<Vec<Operand>>,
    /// While a channels-last walk gives each warp pixels of one column residue modulo
    /// this stride ([`crate::stationary`]): branches on that residue do not diverge.
    pub uniform_column_residue: Option<usize>,
}

impl<'a> Emitter<'a> {
    /// Starts a kernel: loads every buffer address from the parameters `in{i}` and
    /// `out{i}` (see [`Emitter::param_names`]). `nested` emits the loops of windows,
    /// contractions and reductions the body computes one element at a time.
    pub fn new(program: &'a Program, kernel: &'a Kernel, nested: NestedLoop) -> Self {
        let mut b = Builder::new();
        let mut load = |name: String| {
            let r = b.reg(Ty::U64);
            ins!(b, "ld.param.u64 {r}, [{name}]");
            ins!(b, "cvta.to.global.u64 {r}, {r}");
            r
        };
        let inputs = (0..kernel.inputs.len())
            .map(|i| load(format!("in{i}")))
            .collect();
        let outputs = (0..kernel.outputs.len())
            .map(|i| load(format!("out{i}")))
            .collect();
        let workspace = kernel.workspace.map(|_| load("ws".to_string()));
        let semaphore = kernel.semaphore.map(|_| load("sem".to_string()));
        let input_of = kernel
            .body
            .inputs()
            .enumerate()
            .map(|(i, (_, v))| (v, i))
            .collect();
        let (tid, ctaid) = (b.reg(Ty::U32), b.reg(Ty::U32));
        ins!(b, "mov.u32 {tid}, %tid.x");
        ins!(b, "mov.u32 {ctaid}, %ctaid.x");
        b.lane_index(tid);
        // Every family launches blocks of at most this many threads (checked where
        // the entry is written), so index arithmetic may rely on it.
        b.bound(tid, crate::kernel::MAX_THREADS as u64 - 1);
        Emitter {
            b,
            kernel,
            program,
            inputs,
            outputs,
            input_of,
            stored: HashMap::new(),
            touched_inputs: Default::default(),
            touched_outputs: Default::default(),
            workspace,
            touched_workspace: false,
            semaphore,
            split: None,
            nested,
            first_reduction: true,
            tid,
            ctaid,
            values: ScopedMap::new(),
            indexer: Indexer::new(),
            invariant: calib_ir::invariant_axes(&kernel.body),
            channel_run: None,
            uniform_column_residue: None,
        }
    }

    /// Evaluates `f` with the run whose elements have channels `channels` (adjacent, the
    /// first a multiple of their count) known to the loads ([`Emitter::load`]).
    pub fn with_channel_run<T>(
        &mut self,
        channels: Vec<Operand>,
        f: impl FnOnce(&mut Self) -> Result<T>,
    ) -> Result<T> {
        let outer = self.channel_run.replace(channels);
        let out = f(self);
        self.channel_run = outer;
        out
    }

    /// Reads body outputs `outputs` from their buffers, where an earlier launch of this
    /// kernel stored them, whenever their values are needed.
    pub fn read_back(&mut self, outputs: &[usize]) {
        for &i in outputs {
            self.stored.insert(self.kernel.body.outputs[i].value, i);
        }
    }

    /// Bytes of the buffers this launch reads or writes (each once): what it must move
    /// through device memory at least.
    pub fn unique_bytes(&self) -> f64 {
        let size = |b: calib_ir::BufferId| self.program.buffer(b).ty.size_bytes() as f64;
        let outputs = |i: &usize| {
            let o = &self.kernel.outputs[*i];
            let full = size(o.buffer);
            match o.slice {
                None => full,
                Some(s) => {
                    full * (s.end - s.start) as f64
                        / self.program.buffer(o.buffer).ty.shape[s.axis] as f64
                }
            }
        };
        let workspace = match (self.touched_workspace, self.kernel.workspace) {
            (true, Some(w)) => size(w),
            _ => 0.0,
        };
        self.touched_inputs
            .iter()
            .map(|&i| size(self.kernel.inputs[i]))
            .sum::<f64>()
            + self.touched_outputs.iter().map(outputs).sum::<f64>()
            + workspace
    }

    /// Reads the values an earlier launch left in the workspace as slices (a split-K
    /// GEMM's anchor, a split reduction's results) by combining them.
    pub fn read_split(&mut self, split: Rc<dyn Slices>) {
        self.split = Some(split);
    }

    /// The workspace's address, or why there is none.
    pub fn workspace(&mut self) -> Result<Reg> {
        self.touched_workspace = true;
        self.workspace.ok_or_else(|| CodegenError::Kernel {
            kernel: self.kernel.name.clone(),
            detail: "a split-K schedule needs a workspace buffer".into(),
        })
    }

    /// The semaphore's address, or why there is none.
    pub fn semaphore(&self) -> Result<Reg> {
        self.semaphore.ok_or_else(|| CodegenError::Kernel {
            kernel: self.kernel.name.clone(),
            detail: "combining in the last block needs a semaphore buffer".into(),
        })
    }

    /// Forgets every value and index computed so far: code that follows computes
    /// elements of another launch's shape, where a value the launch's own loop nest bound
    /// (an anchor's partial result) must not be taken for the whole.
    pub fn forget_values(&mut self) {
        self.values = ScopedMap::new();
        self.indexer = Indexer::new();
    }

    /// The layout of the buffer an earlier launch stored `v` in whole, if it did.
    pub fn stored_layout(&self, v: Value) -> Option<calib_ir::Layout> {
        let &i = self.stored.get(&v)?;
        self.kernel.outputs[i]
            .slice
            .is_none()
            .then(|| self.output_layout(i))
    }

    /// Whether `v` is read back from an earlier launch (an output it stored, or a split
    /// anchor's slices) rather than computed.
    pub fn is_stored(&self, v: Value) -> bool {
        self.stored.contains_key(&v) || self.split.as_ref().is_some_and(|s| s.holds(v))
    }

    /// The thread's index in its block (blocks are one-dimensional).
    pub fn tid(&self) -> Operand {
        self.tid.into()
    }

    /// The block's index in the grid (grids are one-dimensional).
    pub fn ctaid(&self) -> Operand {
        self.ctaid.into()
    }

    /// Declares that the launch has at most `blocks` blocks, for a family that knows its
    /// grid before it computes from the block index.
    pub fn grid_at_most(&mut self, blocks: usize) {
        self.b.bound(self.ctaid, blocks.max(1) as u64 - 1);
    }

    /// The entry's parameter names, inputs then outputs.
    pub fn param_names(&self) -> Vec<String> {
        let ins = (0..self.inputs.len()).map(|i| format!("in{i}"));
        let workspace = self.workspace.map(|_| "ws".to_string());
        let semaphore = self.semaphore.map(|_| "sem".to_string());
        ins.chain((0..self.outputs.len()).map(|i| format!("out{i}")))
            .chain(workspace)
            .chain(semaphore)
            .collect()
    }

    pub fn node(&self, v: Value) -> &'a Node {
        &self.kernel.body.nodes[v.0]
    }

    pub fn ty(&self, v: Value) -> &'a TensorType {
        &self.kernel.body.nodes[v.0].ty
    }

    /// An error naming this kernel and body node `v`.
    pub fn unsupported(&self, v: Value, detail: impl Into<String>) -> CodegenError {
        CodegenError::Unsupported {
            kernel: self.kernel.name.clone(),
            node: v.0,
            op: self.node(v).op.name(),
            detail: detail.into(),
        }
    }

    /// The register type holding values of `dtype` (the dtype parameter of every
    /// template). bf16 and tf32 values are held widened in f32 registers, always already
    /// rounded to their precision: a bf16 load widens exactly, and every op producing
    /// either type rounds its result (`render.rs`), so arithmetic on them is f32
    /// arithmetic on the exact values the reference interpreter holds. f16 is not
    /// generated (no precision policy stores it).
    pub fn value_ty(&self, v: Value) -> Result<Ty> {
        match self.ty(v).dtype {
            DType::F32 | DType::TF32 | DType::BF16 => Ok(Ty::F32),
            DType::I64 => Ok(Ty::S64),
            d => Err(self.unsupported(v, format!("{d} kernels are not generated"))),
        }
    }

    /// Bytes per element of body value `v` in memory (a bf16 buffer holds 2).
    fn element_bytes(&self, v: Value) -> usize {
        self.ty(v).dtype.size_bytes()
    }

    /// Runs `f` in a new memo scope: what it computes is forgotten afterwards, because
    /// its code may not run on every path (a loop body, a branch arm).
    pub fn scoped<T>(&mut self, f: impl FnOnce(&mut Self) -> Result<T>) -> Result<T> {
        self.values.push();
        self.indexer.open();
        self.b.open_scope();
        let out = f(self);
        self.values.pop();
        self.indexer.close();
        self.b.close_scope();
        out
    }

    /// Records that `v` at `at` is already in `value`: the anchor's result, computed by
    /// a family's own loop nest.
    pub fn bind(&mut self, v: Value, at: &Index, value: Operand) {
        let key = at.key(&self.ty(v).shape);
        self.values.insert((v, key), value);
    }

    /// The value of body node `v` at index `at` (an index into `v`'s shape).
    pub fn value(&mut self, v: Value, at: &Index) -> Result<Operand> {
        let canonical = self.canonical(v, at);
        let at = canonical.as_ref().unwrap_or(at);
        let key = (v, at.key(&self.ty(v).shape));
        if let Some(r) = self.values.get(&key) {
            return Ok(r);
        }
        if self.b.instructions() > MAX_INSTRUCTIONS {
            return Err(CodegenError::Kernel {
                kernel: self.kernel.name.clone(),
                detail: format!("the body needs more than {MAX_INSTRUCTIONS} instructions"),
            });
        }
        let r = self.compute(v, at)?;
        self.values.insert(key, r);
        Ok(r)
    }

    /// The axes body value `v` does not depend on, one bit each
    /// ([`calib_ir::invariant_axes`]).
    pub(crate) fn invariant_axes(&self, v: Value) -> u64 {
        self.invariant[v.0]
    }

    /// `at` with the coordinates `v` does not depend on set to 0, where `at` has
    /// coordinates and one of them changes: every element that differs only there then
    /// finds `v` under one memo key (a per-channel term along a run of pixels).
    fn canonical(&self, v: Value, at: &Index) -> Option<Index> {
        let mask = self.invariant[v.0];
        let coords = at.coordinates()?;
        let moves = |j: usize| mask >> j & 1 == 1 && coords[j] != Operand::Int(0);
        if mask == 0 || !(0..coords.len()).any(moves) {
            return None;
        }
        let zeroed = (0..coords.len())
            .map(|j| if moves(j) { Operand::Int(0) } else { coords[j] })
            .collect();
        Some(Index::coords(zeroed))
    }

    fn compute(&mut self, v: Value, at: &Index) -> Result<Operand> {
        // A value an earlier launch stored whole is one load; its slices are many.
        let whole = self.stored.contains_key(&v);
        if let Some(split) = self.split.clone().filter(|s| s.holds(v) && !whole) {
            let workspace = self.workspace()?;
            return split.combine(self, v, workspace, at);
        }
        if let Some(&i) = self.stored.get(&v) {
            self.value_ty(v)?;
            if let Some(loaded) = self.load_channels(memory::RunSource::Stored(v, i), at)? {
                return Ok(loaded);
            }
            self.touched_outputs.insert(i);
            let addr = self.output_address(i, at)?;
            return Ok(self.load_global(self.ty(v).dtype, addr, false).into());
        }
        let node = self.node(v);
        match &node.op {
            Op::Input { .. } => self.load(v, at),
            Op::Constant { value } => match self.value_ty(v)? {
                // A constant of a narrow type holds the value rounded to it.
                Ty::F32 => Ok(Operand::f32(match self.ty(v).dtype {
                    DType::BF16 => half::bf16::from_f32(*value as f32).to_f32(),
                    DType::TF32 => calib_ir::round_tf32(*value as f32),
                    _ => *value as f32,
                })),
                _ => Ok(Operand::Int(*value as i64)),
            },
            Op::Param { .. } => Err(self.unsupported(v, "kernel bodies read inputs, not params")),
            Op::Concat { axis } => self.concat(v, *axis, at),
            Op::OneHot { .. } => self.one_hot(v, at),
            Op::Broadcast { .. }
            | Op::Reshape { .. }
            | Op::Slice { .. }
            | Op::ResizeNearest { .. } => {
                let inner = self.operand_index(v, at)?;
                self.value(node.inputs[0], &inner)
            }
            op => match op.class() {
                OpClass::Elementwise => {
                    let args = node
                        .inputs
                        .iter()
                        .map(|&x| self.value(x, at))
                        .collect::<Result<Vec<_>>>()?;
                    let result = (self.ty(v).dtype, self.value_ty(v)?);
                    let x = node.inputs[0];
                    let operand = (self.ty(x).dtype, self.value_ty(x)?);
                    render::elementwise(&mut self.b, op, result, operand, &args)
                        .map_err(|why| self.unsupported(v, why))
                }
                OpClass::Reduction
                | OpClass::Convolution
                | OpClass::Pool
                | OpClass::Resize
                | OpClass::MatMul => (self.nested)(self, v, at),
                _ => Err(self.unsupported(
                    v,
                    "a collective runs between replicas, not inside a PTX kernel",
                )),
            },
        }
    }

    /// The flat index of `at` in a tensor of `shape`.
    pub fn flat(&mut self, at: &Index, shape: &[usize]) -> Operand {
        self.indexer.flat(&mut self.b, at, shape)
    }

    /// The row-major flat index of `coords` in `shape`.
    pub fn linearize(&mut self, coords: &[Operand], shape: &[usize]) -> Operand {
        self.indexer.linearize(&mut self.b, coords, shape)
    }

    /// The coordinates of `at` in a tensor of `shape`.
    pub fn coords(&mut self, at: &Index, shape: &[usize]) -> Vec<Operand> {
        self.indexer.coords(&mut self.b, at, shape)
    }

    /// For an index map `v` (broadcast, reshape, slice, resize_nearest): the index of
    /// its operand that element `at` of `v` reads.
    fn operand_index(&mut self, v: Value, at: &Index) -> Result<Index> {
        let node = self.node(v);
        let from = &self.ty(node.inputs[0]).shape;
        self.indexer
            .operand_index(&mut self.b, node, from, at)
            .ok_or_else(|| self.unsupported(v, "not an index map"))
    }

    /// `concat` at `at`: a branch per operand, each loading only inside its range.
    fn concat(&mut self, v: Value, axis: usize, at: &Index) -> Result<Operand> {
        let ty = self.value_ty(v)?;
        let coords = self.coords(at, &self.node(v).ty.shape);
        let result = self.b.reg(ty);
        self.concat_branches(v, axis, coords[axis], |cx, x, start| {
            let mut inner = coords.clone();
            inner[axis] = cx.b.sub_u32(coords[axis], Operand::Int(start as i64));
            let value = cx.value(x, &Index::coords(inner))?;
            ins!(cx.b, "mov.{ty} {result}, {value}");
            Ok(())
        })?;
        Ok(result.into())
    }

    /// A branch per operand of `concat` `v` along `axis`, taken by `coordinate` (along
    /// that axis): in operand `x`'s, starting at `start` along the axis, `inside(cx, x,
    /// start)` runs in a scope of its own. The branches join after the last.
    pub fn concat_branches(
        &mut self,
        v: Value,
        axis: usize,
        coordinate: Operand,
        mut inside: impl FnMut(&mut Self, Value, usize) -> Result<()>,
    ) -> Result<()> {
        let node = self.node(v);
        let end = self.b.label();
        let mut start = 0usize;
        for (k, &x) in node.inputs.iter().enumerate() {
            let extent = self.ty(x).shape[axis];
            let next = self.b.label();
            if k + 1 < node.inputs.len() {
                match self
                    .b
                    .lt_u32(coordinate, Operand::Int((start + extent) as i64))
                {
                    Ok(p) => self.b.bra_if(p, false, next),
                    Err(false) => {
                        start += extent;
                        continue;
                    }
                    Err(true) => {}
                }
            }
            // Each operand's branch runs for its share of the concatenated axis.
            self.b
                .enter_loop(extent as f64 / node.ty.shape[axis].max(1) as f64);
            self.scoped(|cx| inside(cx, x, start))?;
            self.b.exit_loop();
            self.b.bra(end);
            self.b.place(next);
            start += extent;
        }
        self.b.place(end);
        Ok(())
    }

    /// `one_hot(labels)[n, k]`: 1 where `labels[n] == k`.
    fn one_hot(&mut self, v: Value, at: &Index) -> Result<Operand> {
        let node = self.node(v);
        let ty = self.value_ty(v)?;
        let coords = self.coords(at, &node.ty.shape);
        let label = self.value(node.inputs[0], &Index::coords(vec![coords[0]]))?;
        let k = self.b.materialize(coords[1], Ty::U32);
        let k64 = self.b.reg(Ty::S64);
        ins!(self.b, "cvt.s64.u32 {k64}, {k}");
        let hit = self.b.setp("eq", Ty::S64, label, k64.into());
        let r = self.b.reg(ty);
        let (one, zero) = render::one_zero(ty);
        ins!(self.b, "selp.{ty} {r}, {one}, {zero}, {hit}");
        Ok(r.into())
    }

    /// Evaluates and stores each body output in `outputs` at the element `at` of the
    /// anchor's output (of `shape`): outputs of the anchor's shape at the same
    /// coordinates, others at the same flat index.
    pub fn store_aligned(&mut self, outputs: &[usize], shape: &[usize], at: &Index) -> Result<()> {
        for &i in outputs {
            let out = self.kernel.body.outputs[i].value;
            let index = if self.ty(out).shape == shape {
                at.clone()
            } else {
                Index::flat(self.flat(at, shape))
            };
            let value = self.value(self.stored(out), &index)?;
            self.store(i, &index, value)?;
        }
        Ok(())
    }
}
