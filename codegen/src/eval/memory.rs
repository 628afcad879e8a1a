//! Global memory as the emitter reaches it: every load and store of a kernel buffer,
//! at the offset its layout gives an element (row-major or channels-last), one element
//! at a time or in aligned runs of four, each counted for the census with the sectors
//! a warp's access touches ([`crate::ptx`]'s `global_access`).

use super::Emitter;
use crate::error::Result;
use crate::index::Index;
use crate::ptx::{ins, Address, Operand, Reg, Ty};
use calib_ir::{DType, Layout, Op, Value};

/// The elements a pointwise thread takes at once (four or eight), adjacent in memory:
/// their logical coordinates, and how many innermost memory axes the run walks (one,
/// or two taken as one where the run's length does not divide the innermost extent).
pub struct Run<'a> {
    pub elements: &'a [Vec<Operand>],
    pub walked: usize,
}

/// Where a value a run reads lies: body input `Input(v, slot)`, or `Stored(v, i)`, body
/// output `i` that an earlier launch of the kernel stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum RunSource {
    Input(Value, usize),
    Stored(Value, usize),
}

impl Emitter<'_> {
    /// Loads one element of `dtype` at global address `addr` into a register of the
    /// value's register type; `nc` for read-only inputs (the non-coherent path). A bf16
    /// element is a 16-bit load into the high half of an f32: that is its exact value.
    pub(super) fn load_global(&mut self, dtype: DType, addr: Address, nc: bool) -> Reg {
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

    /// Loads body input `v` (a whole kernel input buffer) at `at`. Where a run along a
    /// channels-last image's channels is evaluated and its first element reads an image
    /// stored the same way at its channel, the run's other channels at that pixel (a
    /// window's tap, a slice's corner) are adjacent: one vector load reads them all, and
    /// the other elements find theirs bound.
    pub(super) fn load(&mut self, v: Value, at: &Index) -> Result<Operand> {
        self.value_ty(v)?;
        let slot = self.input_of[&v];
        if let Some(loaded) = self.load_channels(RunSource::Input(v, slot), at)? {
            return Ok(loaded);
        }
        self.touched_inputs.insert(slot);
        let offset = self.offset(at, &self.ty(v).shape, self.input_layout(slot));
        let addr = self
            .b
            .address(self.inputs[slot], offset, self.element_bytes(v));
        Ok(self.load_global(self.ty(v).dtype, addr, true).into())
    }

    /// The vector load of [`Emitter::load`], where it applies: element `at` of `source`
    /// (a kernel input, or an output an earlier launch stored whole) is at the first
    /// channel of the run being evaluated, or a whole number of runs past it (a slice
    /// along the channels, as of the outputs of sibling convolutions computed as one).
    pub(super) fn load_channels(
        &mut self,
        source: RunSource,
        at: &Index,
    ) -> Result<Option<Operand>> {
        let Some(channels) = self.channel_run.clone() else {
            return Ok(None);
        };
        let Some(coords) = at.coordinates().map(<[Operand]>::to_vec) else {
            return Ok(None);
        };
        let (v, layout) = match source {
            RunSource::Input(v, slot) => (v, self.input_layout(slot)),
            RunSource::Stored(v, i) if self.kernel.outputs[i].slice.is_none() => {
                (v, self.output_layout(i))
            }
            RunSource::Stored(..) => return Ok(None),
        };
        let shape = self.ty(v).shape.clone();
        let len = channels.len();
        let Some(shift) = (coords.get(1))
            .and_then(|&c| self.b.offset_from(c, channels[0]))
            .filter(|&d| (d as usize).is_multiple_of(len))
        else {
            return Ok(None);
        };
        let fits = layout == Layout::ChannelsLast
            && shape.len() == 4
            && shape[1].is_multiple_of(len)
            && matches!(self.ty(v).dtype, DType::F32 | DType::BF16);
        if !fits {
            return Ok(None);
        }
        let (addr, nc) = match source {
            RunSource::Input(_, slot) => {
                self.touched_inputs.insert(slot);
                let offset = self.offset(at, &shape, Layout::ChannelsLast);
                let bytes = self.element_bytes(v);
                (self.b.address(self.inputs[slot], offset, bytes), true)
            }
            RunSource::Stored(_, i) => {
                self.touched_outputs.insert(i);
                (self.output_address(i, at)?, false)
            }
        };
        let mut elements = vec![];
        for &c in &channels {
            let mut e = coords.clone();
            e[1] = self.b.add_u32(c, Operand::Int(shift as i64));
            elements.push(Index::coords(e));
        }
        self.load_vector(v, addr, nc, elements)?;
        let key = (v, at.key(&shape));
        Ok(self.values.get(&key))
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

    /// The values `values` are computed from that lie in memory as a run over `shape`
    /// in `layout` walks it: body inputs of `shape` stored in `layout`, and values an
    /// earlier launch of this kernel stored whole in such a buffer.
    fn run_sources(&self, values: &[Value], shape: &[usize], layout: Layout) -> Vec<RunSource> {
        let read = self.reads(values);
        let fits = |v: Value| {
            read[v.0]
                && self.ty(v).shape == shape
                && matches!(self.ty(v).dtype, DType::F32 | DType::TF32 | DType::BF16)
        };
        let inputs = self.kernel.body.inputs().enumerate();
        let inputs = inputs
            .filter(|&(slot, (_, v))| fits(v) && self.input_layout(slot) == layout)
            .map(|(slot, (_, v))| RunSource::Input(v, slot));
        let mut stored: Vec<(Value, usize)> = self
            .stored
            .iter()
            .map(|(&v, &i)| (v, i))
            .filter(|&(v, i)| {
                fits(v) && self.output_layout(i) == layout && self.kernel.outputs[i].slice.is_none()
            })
            .collect();
        stored.sort();
        inputs
            .chain(stored.into_iter().map(|(v, i)| RunSource::Stored(v, i)))
            .collect()
    }

    /// Loads each of [`Emitter::run_sources`] a run at a time, and binds each element
    /// to its index, so that evaluating the value there reads the register.
    pub fn load_runs(
        &mut self,
        values: &[Value],
        shape: &[usize],
        layout: Layout,
        run: &Run,
    ) -> Result<()> {
        let first = Index::coords(run.elements[0].clone());
        for source in self.run_sources(values, shape, layout) {
            match source {
                RunSource::Input(v, slot) => {
                    self.touched_inputs.insert(slot);
                    let offset = self.offset(&first, shape, layout);
                    let bytes = self.element_bytes(v);
                    let addr = self.b.address(self.inputs[slot], offset, bytes);
                    let at = run.elements.iter().map(|e| Index::coords(e.clone()));
                    self.load_vector(v, addr, true, at.collect())?;
                }
                RunSource::Stored(v, i) => {
                    self.touched_outputs.insert(i);
                    let addr = self.output_address(i, &first)?;
                    let at = run.elements.iter().map(|e| Index::coords(e.clone()));
                    self.load_vector(v, addr, false, at.collect())?;
                }
            }
        }
        if layout == Layout::ChannelsLast && run.walked == 1 && shape.len() == 4 {
            self.load_channel_runs(values, shape[1], run)?;
        }
        Ok(())
    }

    /// For a run along a channels-last image's channels: the per-channel f32 inputs
    /// `values` read (`[1, C, 1, 1]`, or `[C]` through a reshape to it, as statistics
    /// and parameters are broadcast), one vector a run, each element bound where
    /// evaluating a broadcast at the run's element reads it. Element by element, each
    /// would be its own load, the lanes of a warp a run apart.
    pub(crate) fn load_channel_runs(
        &mut self,
        values: &[Value],
        channels: usize,
        run: &Run,
    ) -> Result<()> {
        let read = self.reads(values);
        let per_channel: Vec<(usize, Value, bool)> = self
            .kernel
            .body
            .inputs()
            .enumerate()
            .filter(|&(_, (_, v))| read[v.0] && self.ty(v).dtype == DType::F32)
            .filter_map(|(slot, (_, v))| match self.ty(v).shape[..] {
                [1, c, 1, 1] if c == channels => Some((slot, v, true)),
                [c] if c == channels => Some((slot, v, false)),
                _ => None,
            })
            .collect();
        let channel = |e: &Vec<Operand>| e[1];
        for (slot, v, image_shaped) in per_channel {
            // Where a broadcast of `[1, C, 1, 1]` reads channel `c`, and a reshape of
            // `[C]` to it (its flat index, the channel).
            let index = |c: Operand| match image_shaped {
                true => Index::coords(vec![Operand::Int(0), c, Operand::Int(0), Operand::Int(0)]),
                false => Index::flat(c),
            };
            let first = channel(&run.elements[0]);
            // Loaded once for a thread that keeps its channels (`stationary.rs`).
            if self
                .values
                .get(&(v, index(first).key(&self.ty(v).shape)))
                .is_some()
            {
                continue;
            }
            self.touched_inputs.insert(slot);
            let addr = self.b.address(self.inputs[slot], first, 4);
            let at = run.elements.iter().map(|e| index(channel(e)));
            self.load_vector(v, addr, true, at.collect())?;
        }
        Ok(())
    }

    /// Which body values `values` are computed from (themselves included), by node
    /// index: a value read back from memory is computed from nothing.
    pub(crate) fn reads(&self, values: &[Value]) -> Vec<bool> {
        let nodes = &self.kernel.body.nodes;
        let mut read = vec![false; nodes.len()];
        for v in values {
            read[v.0] = true;
        }
        for k in (0..nodes.len()).rev() {
            if read[k] && !self.is_stored(Value(k)) {
                for &x in &nodes[k].inputs {
                    read[x.0] = true;
                }
            }
        }
        read
    }

    /// The elements of value `v` at indices `at`, adjacent from `addr` on (aligned for
    /// them all), with 128-bit loads where they fill them (one per four f32 or eight
    /// bf16, [`vector_words`]), bound to their indices; `nc` for read-only inputs.
    fn load_vector(&mut self, v: Value, addr: Address, nc: bool, at: Vec<Index>) -> Result<()> {
        self.value_ty(v)?;
        let bytes = self.element_bytes(v);
        let len = at.len();
        // The whole run is one access for the census: a second vector of the same
        // thread reads the sectors the first one's warp left half used.
        self.b.global_access(addr, len * bytes);
        let bf16 = self.ty(v).dtype == DType::BF16;
        let ty = if bf16 { Ty::U32 } else { Ty::F32 };
        let space = if nc { "global.nc" } else { "global" };
        let words: Vec<Reg> = (0..len * bytes / 4).map(|_| self.b.reg(ty)).collect();
        for (k, vector) in words.chunks(vector_words(words.len())).enumerate() {
            let at = Address::new(addr.reg, addr.offset + 16 * k as i64);
            let list = register_list(vector);
            let (width, suffix) = (vector.len(), if bf16 { "b32" } else { "f32" });
            ins!(self.b, "ld.{space}.v{width}.{suffix} {list}, [{at}]");
        }
        let r: Vec<Reg> = if bf16 {
            // A bf16's value is its bits in the high half of an f32; the element at the
            // lower address is each word's low half.
            let halves = words.iter().flat_map(|&w| [(w, false), (w, true)]);
            halves
                .map(|(word, high)| {
                    let bits = self.b.reg(Ty::U32);
                    match high {
                        false => ins!(self.b, "shl.b32 {bits}, {word}, 16"),
                        true => ins!(self.b, "and.b32 {bits}, {word}, 0xFFFF0000"),
                    }
                    self.f32_bits(bits)
                })
                .collect()
        } else {
            words
        };
        for (reg, at) in r.iter().zip(&at) {
            self.bind(v, at, (*reg).into());
        }
        Ok(())
    }

    /// `bits` reinterpreted as an f32 register.
    fn f32_bits(&mut self, bits: Reg) -> Reg {
        let r = self.b.reg(Ty::F32);
        ins!(self.b, "mov.b32 {r}, {bits}");
        r
    }

    /// How kernel input `slot`'s buffer lies in memory.
    pub fn input_layout(&self, slot: usize) -> Layout {
        self.program.buffer(self.kernel.inputs[slot]).layout
    }

    /// How the kernel's inputs lie in memory, in body input order.
    pub fn input_layouts(&self) -> Vec<Layout> {
        self.program.input_layouts(self.kernel)
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

    /// What a store of body value `v` evaluates: for a cast of an f32 value to bf16, the
    /// f32 value, which the store rounds to nearest even as the cast would (rounding
    /// twice gives the same bits), so that the cast's own rounding is not computed.
    pub fn stored(&self, v: Value) -> Value {
        let node = self.node(v);
        match node.op {
            Op::Cast { to: DType::BF16 } if self.ty(node.inputs[0]).dtype == DType::F32 => {
                node.inputs[0]
            }
            _ => v,
        }
    }

    /// Stores `values`, body output `i` at the elements of `run` (as
    /// [`Emitter::load_runs`] reads them), with 128-bit stores where the run fills them:
    /// f32 words, or bf16 pairs. `false` (nothing stored) where the run is not known to
    /// be adjacent and aligned in the output's buffer: an output of another type, or a
    /// slice of the buffer along a walked axis that starts at other than a multiple of
    /// the run's length or (inside the outermost walked axis) splits the walk.
    pub fn store_run(&mut self, i: usize, run: &Run, values: &[Operand]) -> Result<bool> {
        let out = self.kernel.body.outputs[i].value;
        let dtype = self.ty(out).dtype;
        let len = run.elements.len();
        let rank = run.elements[0].len();
        let order = self.output_layout(i).order(rank);
        let aligned = match self.kernel.outputs[i].slice {
            Some(s) => {
                let position = order.iter().position(|&a| a == s.axis).expect("an axis");
                let full = &self.program.buffer(self.kernel.outputs[i].buffer).ty.shape;
                let below = |from: usize| order[from..].iter().map(|&a| full[a]).product::<usize>();
                match position + run.walked {
                    p if p < rank => true,
                    p if p == rank => {
                        (s.start * below(position + 1)).is_multiple_of(len)
                            && below(position).is_multiple_of(len)
                    }
                    _ => false,
                }
            }
            None => true,
        };
        if !aligned || !matches!(dtype, DType::F32 | DType::TF32 | DType::BF16) {
            return Ok(false);
        }
        self.touched_outputs.insert(i);
        let ty = self.value_ty(out)?;
        let addr = self.output_address(i, &Index::coords(run.elements[0].clone()))?;
        let v: Vec<Reg> = values.iter().map(|&x| self.b.materialize(x, ty)).collect();
        self.b.global_access(addr, len * dtype.size_bytes());
        let words: Vec<Reg> = if dtype == DType::BF16 {
            // Round each pair to nearest even, the element at the lower address into
            // the low half.
            v.chunks(2)
                .map(|pair| {
                    let word = self.b.reg(Ty::U32);
                    ins!(self.b, "cvt.rn.bf16x2.f32 {word}, {}, {}", pair[1], pair[0]);
                    word
                })
                .collect()
        } else {
            v
        };
        for (k, vector) in words.chunks(vector_words(words.len())).enumerate() {
            let at = Address::new(addr.reg, addr.offset + 16 * k as i64);
            let list = register_list(vector);
            let (width, ty) = (
                vector.len(),
                if dtype == DType::BF16 { "b32" } else { "f32" },
            );
            ins!(self.b, "st.global.v{width}.{ty} [{at}], {list}");
        }
        Ok(true)
    }

    /// The global address of element `at` of body output `i`.
    pub(super) fn output_address(&mut self, i: usize, at: &Index) -> Result<Address> {
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
}

/// 32-bit words per vector access of a run of `words` words: whole 128-bit vectors,
/// or the run itself where it is shorter (a run of four bf16 is one 64-bit access).
fn vector_words(words: usize) -> usize {
    words.min(4)
}

/// `{a, b, ...}`: a vector instruction's register list.
fn register_list(regs: &[Reg]) -> String {
    let names: Vec<String> = regs.iter().map(|r| r.to_string()).collect();
    format!("{{{}}}", names.join(", "))
}
