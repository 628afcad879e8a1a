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
use crate::ptx::{ins, Address, Builder, Operand, Reg, Ty};
use crate::render;
use crate::scope::ScopedMap;
use calib_ir::{DType, Kernel, Layout, Node, Op, OpClass, Program, TensorType, Value};
use std::collections::HashMap;
use std::rc::Rc;

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
            split: None,
            nested,
            first_reduction: true,
            tid,
            ctaid,
            values: ScopedMap::new(),
            indexer: Indexer::new(),
        }
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
        ins.chain((0..self.outputs.len()).map(|i| format!("out{i}")))
            .chain(workspace)
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

    /// Loads one element of `dtype` at global address `addr` into a register of the
    /// value's register type; `nc` for read-only inputs (the non-coherent path). A bf16
    /// element is a 16-bit load into the high half of an f32: that is its exact value.
    fn load_global(&mut self, dtype: DType, addr: Address, nc: bool) -> Reg {
        let space = if nc { "global.nc" } else { "global" };
        self.b.global_access(addr, dtype.size_bytes());
        if dtype == DType::BF16 {
            let half = self.b.reg(Ty::U32);
            ins!(self.b, "ld.{space}.u16 {half}, [{addr}]");
            let bits = self.b.reg(Ty::U32);
            ins!(self.b, "shl.b32 {bits}, {half}, 16");
            let r = self.b.reg(Ty::F32);
            ins!(self.b, "mov.b32 {r}, {bits}");
            return r;
        }
        let ty = if dtype == DType::I64 {
            Ty::S64
        } else {
            Ty::F32
        };
        let r = self.b.reg(ty);
        ins!(self.b, "ld.{space}.{ty} {r}, [{addr}]");
        r
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

    fn compute(&mut self, v: Value, at: &Index) -> Result<Operand> {
        // A value an earlier launch stored whole is one load; its slices are many.
        let whole = self.stored.contains_key(&v);
        if let Some(split) = self.split.clone().filter(|s| s.holds(v) && !whole) {
            let workspace = self.workspace()?;
            return split.combine(self, v, workspace, at);
        }
        if let Some(&i) = self.stored.get(&v) {
            self.touched_outputs.insert(i);
            self.value_ty(v)?;
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

    /// Loads body input `v` (a whole kernel input buffer) at `at`.
    fn load(&mut self, v: Value, at: &Index) -> Result<Operand> {
        self.value_ty(v)?;
        let slot = self.input_of[&v];
        self.touched_inputs.insert(slot);
        let offset = self.offset(at, &self.ty(v).shape, self.input_layout(slot));
        let addr = self
            .b
            .address(self.inputs[slot], offset, self.element_bytes(v));
        Ok(self.load_global(self.ty(v).dtype, addr, true).into())
    }

    /// Whether body value `v` is read straight from a kernel input buffer of f32, tf32
    /// or bf16 elements, with no arithmetic between: what `cp.async` can copy.
    pub fn is_plain_input(&self, v: Value) -> bool {
        matches!(self.node(v).op, Op::Input { .. })
            && !self.is_stored(v)
            && matches!(self.ty(v).dtype, DType::F32 | DType::TF32 | DType::BF16)
    }

    /// The global address of element `at` of a plain input ([`Emitter::is_plain_input`]).
    pub fn input_address(&mut self, v: Value, at: &Index) -> Address {
        let slot = self.input_of[&v];
        self.touched_inputs.insert(slot);
        let offset = self.offset(at, &self.ty(v).shape, self.input_layout(slot));
        self.b
            .address(self.inputs[slot], offset, self.element_bytes(v))
    }

    /// Loads four elements of body input `v` (f32, tf32 or bf16) adjacent in its memory,
    /// the first at `coords` (whose coordinate along the input's innermost axis four
    /// divides, in a shape whose innermost extent four divides: the address is aligned
    /// for the whole run), with one vector load, and binds each to its index (`coords`
    /// with that coordinate from `lasts`) so that evaluating `v` there reads the
    /// register.
    pub fn load_run(&mut self, v: Value, coords: &[Operand], lasts: &[Operand]) -> Result<()> {
        let slot = self.input_of[&v];
        self.touched_inputs.insert(slot);
        let layout = self.input_layout(slot);
        let shape = self.ty(v).shape.clone();
        let bytes = self.element_bytes(v);
        let offset = self.offset(&Index::coords(coords.to_vec()), &shape, layout);
        let addr = self.b.address(self.inputs[slot], offset, bytes);
        self.b.global_access(addr, 4 * bytes);
        let r = if self.ty(v).dtype == DType::BF16 {
            self.load_bf16_run(addr)
        } else {
            let r = [(); 4].map(|_| self.b.reg(Ty::F32));
            ins!(
                self.b,
                "ld.global.nc.v4.f32 {{{}, {}, {}, {}}}, [{addr}]",
                r[0],
                r[1],
                r[2],
                r[3]
            );
            r
        };
        let innermost = layout.innermost(coords.len());
        for (reg, &l) in r.iter().zip(lasts) {
            let mut at = coords.to_vec();
            at[innermost] = l;
            self.bind(v, &Index::coords(at), (*reg).into());
        }
        Ok(())
    }

    /// Four bf16 elements at `addr` (8-byte aligned) as f32 registers: two 32-bit
    /// words, the element at the lower address in each word's low half, and a bf16's
    /// value is its bits in the high half of an f32.
    fn load_bf16_run(&mut self, addr: Address) -> [Reg; 4] {
        let words = [(); 2].map(|_| self.b.reg(Ty::U32));
        ins!(
            self.b,
            "ld.global.nc.v2.b32 {{{}, {}}}, [{addr}]",
            words[0],
            words[1]
        );
        let [w0, w1] = words;
        [(w0, false), (w0, true), (w1, false), (w1, true)].map(|(word, high)| {
            let bits = self.b.reg(Ty::U32);
            match high {
                false => ins!(self.b, "shl.b32 {bits}, {word}, 16"),
                true => ins!(self.b, "and.b32 {bits}, {word}, 0xFFFF0000"),
            }
            let r = self.b.reg(Ty::F32);
            ins!(self.b, "mov.b32 {r}, {bits}");
            r
        })
    }

    /// How kernel input `slot`'s buffer lies in memory.
    pub fn input_layout(&self, slot: usize) -> Layout {
        self.program.buffer(self.kernel.inputs[slot]).layout
    }

    /// How the buffer of body input `v` lies in memory.
    pub fn input_layout_of(&self, v: Value) -> Layout {
        self.input_layout(self.input_of[&v])
    }

    /// How body output `i`'s buffer lies in memory.
    pub fn output_layout(&self, i: usize) -> Layout {
        self.program.buffer(self.kernel.outputs[i].buffer).layout
    }

    /// The element offset of `at` in a buffer of (logical) `shape` stored in `layout`.
    fn offset(&mut self, at: &Index, shape: &[usize], layout: Layout) -> Operand {
        if layout.is_row_major() {
            return self.flat(at, shape);
        }
        let coords = self.coords(at, shape);
        self.linearize(&layout.to_memory(&coords), &layout.to_memory(shape))
    }

    /// Stores `value` as element `at` of body output `i` (into its slice of the
    /// buffer, for concat views).
    pub fn store(&mut self, i: usize, at: &Index, value: Operand) -> Result<()> {
        self.touched_outputs.insert(i);
        let out = self.kernel.body.outputs[i].value;
        let ty = self.value_ty(out)?;
        let addr = self.output_address(i, at)?;
        let value = self.b.materialize(value, ty);
        self.b.global_access(addr, self.ty(out).dtype.size_bytes());
        if self.ty(out).dtype == DType::BF16 {
            // Round to nearest even into the low half (the high half from 0.0 is zero)
            // and store those 16 bits: a 16-bit store of a 32-bit register keeps its
            // low half.
            let zero = self.b.materialize(Operand::f32(0.0), Ty::F32);
            let packed = self.b.reg(Ty::U32);
            ins!(self.b, "cvt.rn.bf16x2.f32 {packed}, {zero}, {value}");
            ins!(self.b, "st.global.u16 [{addr}], {packed}");
        } else {
            ins!(self.b, "st.global.{ty} [{addr}], {value}");
        }
        Ok(())
    }

    /// Stores `values`, four elements of body output `i` adjacent in its memory from
    /// `coords` on (as [`Emitter::load_run`] reads them), with one vector store: 16
    /// bytes of f32, or two words of bf16 pairs. `false` (nothing stored) where the run
    /// is not known to be aligned: an output of another type, or a slice that starts
    /// within the run's axis at other than a multiple of four.
    pub fn store_run(&mut self, i: usize, coords: &[Operand], values: &[Operand]) -> Result<bool> {
        let out = self.kernel.body.outputs[i].value;
        let dtype = self.ty(out).dtype;
        let innermost = self.output_layout(i).innermost(coords.len());
        let aligned = match self.kernel.outputs[i].slice {
            Some(s) if s.axis == innermost => {
                let full = self.program.buffer(self.kernel.outputs[i].buffer).ty.shape[s.axis];
                s.start.is_multiple_of(4) && full.is_multiple_of(4)
            }
            _ => true,
        };
        if !aligned || !matches!(dtype, DType::F32 | DType::TF32 | DType::BF16) {
            return Ok(false);
        }
        self.touched_outputs.insert(i);
        let ty = self.value_ty(out)?;
        let addr = self.output_address(i, &Index::coords(coords.to_vec()))?;
        let v: Vec<Reg> = values.iter().map(|&x| self.b.materialize(x, ty)).collect();
        self.b.global_access(addr, 4 * dtype.size_bytes());
        if dtype == DType::BF16 {
            // Round each pair to nearest even, the element at the lower address into
            // the low half.
            let words = [(); 2].map(|_| self.b.reg(Ty::U32));
            for (word, pair) in words.iter().zip(v.chunks(2)) {
                ins!(self.b, "cvt.rn.bf16x2.f32 {word}, {}, {}", pair[1], pair[0]);
            }
            ins!(
                self.b,
                "st.global.v2.b32 [{addr}], {{{}, {}}}",
                words[0],
                words[1]
            );
        } else {
            ins!(
                self.b,
                "st.global.v4.f32 [{addr}], {{{}, {}, {}, {}}}",
                v[0],
                v[1],
                v[2],
                v[3]
            );
        }
        Ok(true)
    }

    /// The global address of element `at` of body output `i`.
    fn output_address(&mut self, i: usize, at: &Index) -> Result<Address> {
        let out = &self.kernel.outputs[i];
        let body_out = self.kernel.body.outputs[i].value;
        self.value_ty(body_out)?;
        let bytes = self.element_bytes(body_out);
        let shape = &self.ty(body_out).shape;
        let layout = self.output_layout(i);
        let offset = match out.slice {
            None => self.offset(at, shape, layout),
            Some(s) => {
                let mut coords = self.coords(at, shape);
                coords[s.axis] = self.b.add_u32(coords[s.axis], Operand::Int(s.start as i64));
                let full = &self.program.buffer(out.buffer).ty.shape;
                self.offset(&Index::coords(coords), full, layout)
            }
        };
        Ok(self.b.address(self.outputs[i], offset, bytes))
    }

    /// `concat` at `at`: a branch per operand, each loading only inside its range.
    fn concat(&mut self, v: Value, axis: usize, at: &Index) -> Result<Operand> {
        let node = self.node(v);
        let ty = self.value_ty(v)?;
        let coords = self.coords(at, &node.ty.shape);
        let result = self.b.reg(ty);
        let end = self.b.label();
        let mut start = 0usize;
        for (k, &x) in node.inputs.iter().enumerate() {
            let extent = self.ty(x).shape[axis];
            let last = k + 1 == node.inputs.len();
            let next = self.b.label();
            if !last {
                match self
                    .b
                    .lt_u32(coords[axis], Operand::Int((start + extent) as i64))
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
            self.scoped(|cx| {
                let mut inner = coords.clone();
                inner[axis] = cx.b.sub_u32(coords[axis], Operand::Int(start as i64));
                let value = cx.value(x, &Index::coords(inner))?;
                ins!(cx.b, "mov.{ty} {result}, {value}");
                Ok(())
            })?;
            self.b.exit_loop();
            self.b.bra(end);
            self.b.place(next);
            start += extent;
        }
        self.b.place(end);
        Ok(result.into())
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
            let value = self.value(out, &index)?;
            self.store(i, &index, value)?;
        }
        Ok(())
    }
}
