//! The operand side of the GEMM template: each operand's tile in shared memory (two to
//! four stages, padded rows of f32 words, or of bf16 for bf16 products), the loader that
//! brings a step's elements into registers (every element of a thread at once, one
//! chain each, the step's `k` shared) and stores them, or for a tile of a plain buffer
//! ([`calib_ir::copy_source`]) copies them with `cp.async` (an f32 word, or a run of two
//! or eight bf16 adjacent along the width, or of two to eight along `k` into a tile that
//! keeps its `k` adjacent; a source size of 0 outside the operand), and the FMA
//! products of a step from the shared tiles.

use super::mma::{round_for_store, Warps};
use super::{load_v4, shared_address, wavefronts, Element, Layout, Operands, PATCH, THREADS};
use crate::error::Result;
use crate::eval::Emitter;
use crate::flow::Check;
use crate::index::Index;
use crate::ptx::{ins, Operand, Reg, Ty};
use calib_ir::{GemmDims, Value};

/// One operand's tile in shared memory: `depth` rows (k) of `width` elements (m or n) of
/// `bytes` each, each row padded, one per stage; or, for a tile copied in runs along `k`
/// ([`Tile::k_inner`]), `width` rows of `depth` elements.
#[derive(Clone, Copy, Debug)]
pub(super) struct Tile {
    pub(super) depth: usize,
    pub(super) width: usize,
    /// Byte offset of stage 0 in shared memory.
    pub(super) offset: usize,
    /// Whether the operand is contiguous along the tile's width (else along k): which
    /// way consecutive threads walk when loading it.
    pub(super) along_width: bool,
    /// Bytes of an element: 4 (f32 or TF32 words), or 2 (bf16).
    pub(super) bytes: usize,
    /// Elements of padding after each row, so that the accesses of the products spread
    /// over the banks.
    pub(super) pad: usize,
    /// Whether the elements arrive by `cp.async` rather than through registers: as the
    /// f32 bits of the buffer (rounded to TF32 in place or as fragments are read:
    /// [`Tile::rounded_in_place`]), or as its bf16 elements, a run at a time.
    pub(super) copied: bool,
    /// Whether a copied TF32 tile is rounded where it lies once its copies land (each
    /// thread its own runs, before the barrier that hands the stage to the products),
    /// rather than as each fragment word is read.
    pub(super) rounded_in_place: bool,
    /// Elements one slot of a thread's share covers: a copied bf16 tile's slots are
    /// runs adjacent along the width (2 or 8 elements: `calib_ir::CopySource::grain`),
    /// others single elements.
    pub(super) grain: usize,
    /// Whether each `m` (or `n`) keeps its `k` adjacent (`width` padded rows of `depth`):
    /// a bf16 tile copied in runs along `k` (`calib_ir::CopySource::along_k`), whose
    /// copies then land whole in one row, and whose fragments `ldmatrix` reads without
    /// transposing.
    pub(super) k_inner: bool,
}

impl Tile {
    /// Elements from one padded row to the next.
    pub(super) fn pitch(&self) -> usize {
        match self.k_inner {
            true => self.depth + self.pad,
            false => self.width + self.pad,
        }
    }

    pub(super) fn stage_bytes(&self) -> usize {
        let rows = if self.k_inner { self.width } else { self.depth };
        rows * self.pitch() * self.bytes
    }

    /// The element of a stage holding row `k`, column `w` of the tile.
    pub(super) fn element(&self, k: usize, w: usize) -> usize {
        match self.k_inner {
            true => w * self.pitch() + k,
            false => k * self.pitch() + w,
        }
    }

    /// [`Tile::element`] of positions held in registers.
    pub(super) fn element_at(&self, cx: &mut Emitter, k: Operand, w: Operand) -> Operand {
        let pitch = Operand::Int(self.pitch() as i64);
        match self.k_inner {
            true => cx.b.mad_u32(w, pitch, k),
            false => cx.b.mad_u32(k, pitch, w),
        }
    }

    /// The shared address of element `index` ([`Tile::element`]) of the stage at `base`.
    pub(super) fn address(&self, cx: &mut Emitter, base: Operand, index: Operand) -> Operand {
        let bytes = cx.b.mul_u32(index, Operand::Int(self.bytes as i64));
        cx.b.add_u32(base, bytes)
    }

    pub(super) fn grain(&self) -> usize {
        self.grain
    }

    /// The elements of a slot along the tile's width (a copied run), else 1.
    fn width_grain(&self) -> usize {
        if self.along_width {
            self.grain
        } else {
            1
        }
    }

    /// The tile's sides, in slots, as `(fast, slow)`: consecutive threads walk the fast
    /// one (a copied tile along its width, a tile loaded in runs along `k` along `k`).
    pub(super) fn sides(&self) -> (usize, usize) {
        if self.along_width {
            (self.width / self.grain(), self.depth)
        } else {
            (self.depth / self.grain(), self.width)
        }
    }

    /// Slots each thread loads (or copies) per step.
    pub(super) fn per_thread(&self) -> usize {
        (self.depth * self.width / self.grain()).div_ceil(THREADS)
    }

    /// Shared-memory wavefronts of one warp's stores (or copies) of a slot each (of one
    /// element each, for a run along `k` loaded through registers, whose elements lie
    /// in different rows).
    pub(super) fn store_ways(&self) -> usize {
        let adjacent = if self.k_inner {
            self.grain
        } else {
            self.width_grain()
        };
        wavefronts(self.bytes * adjacent, |lane| {
            let (kk, ww) = self.position(lane, 0);
            self.bytes * self.element(kk, ww)
        })
    }

    /// The `(k, width)` position of (the first element of) slot `e` of thread `tid`'s
    /// share.
    pub(super) fn position(&self, tid: usize, e: usize) -> (usize, usize) {
        let idx = e * THREADS + tid;
        let (fast, _) = self.sides();
        if self.along_width {
            (idx / fast, idx % fast * self.grain())
        } else {
            (idx % fast * self.grain(), idx / fast)
        }
    }
}

/// Loads a step's operand tiles into registers and stores them to shared memory.
pub(super) struct Loader<'a> {
    pub(super) ops: &'a dyn Operands,
    pub(super) dims: &'a GemmDims,
    pub(super) a: Tile,
    pub(super) b: Tile,
    pub(super) m0: Operand,
    pub(super) n0: Operand,
    pub(super) k0: Operand,
    /// For a phase of a strided data gradient: where its steps start in `k`.
    pub(super) walk: Option<&'a super::phases::Walk>,
    pub(super) g: Operand,
    pub(super) tid: Operand,
    pub(super) bk: usize,
    /// Set when tensor cores multiply the tiles (TF32 elements are rounded as stored).
    pub(super) warps: Option<Warps>,
    /// For `A` and `B`: the kernel input a tile that arrives by `cp.async` copies.
    pub(super) sources: [Option<Value>; 2],
    /// For `A` and `B` under bf16 products: the bf16 input a tile loaded through
    /// registers reads as it is, whose 16 bits go to shared memory unconverted (not
    /// widened on loading and rounded again on storing).
    pub(super) raw: [Option<Value>; 2],
}

/// For a tile loaded along `k` whose width walks `dims` with channels innermost (a weight
/// gradient's `(kh, kw, c)`): the channel count, where a thread's columns, `step`
/// apart, can be told apart from its first without dividing: the step divides the
/// channels, and the tile's width divides them or they divide its width. Its columns
/// then share their outer coordinates (the tap) with every column the same number of
/// channel blocks along: one window position and padding check per tap and step serve
/// them all.
fn by_channel(tile: &Tile, dims: &[usize], step: usize) -> Option<usize> {
    let &channels = dims.last()?;
    let fits = channels.is_multiple_of(tile.width) || tile.width.is_multiple_of(channels);
    (!tile.along_width && dims.len() > 1 && channels.is_multiple_of(step) && fits)
        .then_some(channels)
}

/// The width coordinates of a thread's column `first + step` of a tile whose width
/// starts at `origin` (see [`by_channel`]): the outer coordinates of the channel block
/// `origin / channels + step / channels` (clamped into range, past the operand), and the
/// channel `origin % channels + first + step % channels`, which stays inside its block.
fn slot_by_channel(
    cx: &mut Emitter,
    origin: Operand,
    first: Operand,
    step: usize,
    dims: &[usize],
    channels: usize,
) -> Vec<Operand> {
    let outer = &dims[..dims.len() - 1];
    let block = cx.b.div_u32(origin, channels);
    let block = cx.b.add_u32(block, Operand::Int((step / channels) as i64));
    let block = cx.clamp_index(block, outer.iter().product());
    let mut coords = cx.coords(&Index::flat(block), outer);
    let channel = cx.b.rem_u32(origin, channels);
    let channel = cx.b.add_u32(channel, first);
    coords.push(cx.b.add_u32(channel, Operand::Int((step % channels) as i64)));
    coords
}

/// One element (or copied bf16 pair) of a thread's share of a tile, with everything
/// about it that stays the same from step to step (computed once, before the k loop).
pub(super) struct Slot {
    /// Whether it is an element of `A` (else of `B`).
    pub(super) is_a: bool,
    /// Its row (`k` within the step).
    pub(super) kk: Operand,
    /// The coordinates of its `m` (or `n`), clamped into range, and whether the
    /// unclamped position is in range.
    pub(super) width_coords: Vec<Operand>,
    pub(super) width_inside: crate::flow::Check,
    /// Its shared-memory element ([`Tile::element`]) within a stage: the element of
    /// its tile's first slot, and a constant more (slots of a thread lie a constant
    /// apart along the slow side, so their stores address `[first+offset]`).
    pub(super) shared_first: Operand,
    pub(super) shared_offset: usize,
}

impl Loader<'_> {
    /// The slots of `A`'s share, then `B`'s.
    pub(super) fn slots(&self, cx: &mut Emitter) -> Vec<Slot> {
        let (m, n, _) = self.dims.mnk();
        let mut slots = vec![];
        for (tile, is_a) in [(self.a, true), (self.b, false)] {
            let (origin, extent, dims) = if is_a {
                (self.m0, m, &self.dims.m)
            } else {
                (self.n0, n, &self.dims.n)
            };
            // Tile sides divide the block, so element `e` is element 0 moved along the
            // slow side by a constant: the fast coordinate is one register for all of
            // a thread's elements.
            let (fast, _) = tile.sides();
            let at_fast = cx.b.rem_u32(self.tid, fast);
            let first_slow = cx.b.div_u32(self.tid, fast);
            let mut shared_first = None;
            for e in 0..tile.per_thread() {
                let at_slow =
                    cx.b.add_u32(first_slow, Operand::Int((e * THREADS / fast) as i64));
                let first = match tile.grain() {
                    1 => at_fast,
                    grain => cx.b.mul_u32(at_fast, Operand::Int(grain as i64)),
                };
                let (kk, ww) = if tile.along_width {
                    (at_slow, first)
                } else {
                    (first, at_slow)
                };
                let gw = cx.b.add_u32(origin, ww);
                let width_inside = cx.b.lt_u32(gw, Operand::Int(extent as i64));
                let step = e * THREADS / fast;
                let width_coords = match by_channel(&tile, dims, THREADS / fast) {
                    Some(channels) => slot_by_channel(cx, origin, first_slow, step, dims, channels),
                    None => {
                        // A run outside the operand is still copied (zero bytes) from an
                        // aligned address: clamped to the last run, not the last element.
                        let clamped = cx.clamp_index(gw, extent + 1 - tile.width_grain());
                        cx.coords(&Index::flat(clamped), dims)
                    }
                };
                let shared_first = *shared_first.get_or_insert_with(|| tile.element_at(cx, kk, ww));
                let shared_offset = match tile.along_width {
                    true => tile.element(step, 0),
                    false => tile.element(0, step),
                };
                slots.push(Slot {
                    is_a,
                    kk,
                    width_coords,
                    width_inside,
                    shared_first,
                    shared_offset,
                });
            }
        }
        slots
    }

    fn tile(&self, slot: &Slot) -> Tile {
        if slot.is_a {
            self.a
        } else {
            self.b
        }
    }

    /// Where each of `slots` finds its element of step `kt` (the step's `k`, its bounds
    /// check and coordinates shared by slots of the same row).
    fn elements<'s>(
        &self,
        cx: &mut Emitter,
        slots: impl Iterator<Item = &'s Slot>,
        kt: Operand,
    ) -> Vec<Element> {
        let (_, _, k) = self.dims.mnk();
        let kbase = match self.walk {
            Some(walk) => walk.k_origin(cx, kt),
            None => {
                let step = cx.b.mul_u32(kt, Operand::Int(self.bk as i64));
                cx.b.add_u32(self.k0, step)
            }
        };
        // Slots at the same `k` (a tile loaded along `k` gives a thread one row) share
        // its position, bounds check and coordinates.
        let mut rows: Vec<(Operand, usize, Check, Vec<Operand>)> = vec![];
        let mut out = vec![];
        for slot in slots {
            let tile = self.tile(slot);
            let run = if tile.along_width { 1 } else { tile.grain() };
            let (in_k, ki) = match rows.iter().find(|r| (r.0, r.1) == (slot.kk, run)) {
                Some((_, _, in_k, ki)) => (*in_k, ki.clone()),
                None => {
                    let gk = cx.b.add_u32(kbase, slot.kk);
                    let in_k = cx.b.lt_u32(gk, Operand::Int(k as i64));
                    // Past the end only the outermost coordinate leaves its extent (the
                    // others are remainders): clamping it keeps the address inside the
                    // operand, and `gk` itself stays a step plus a row, which divides
                    // without division instructions. A run along `k` that reaches into
                    // that coordinate is clamped whole, to the last run (aligned as
                    // every run: runs divide `k`).
                    let inner: usize = self.dims.k[1..].iter().product();
                    let whole = in_k.is_ok() && !inner.is_multiple_of(run);
                    let at = match whole {
                        true => cx.clamp_index(gk, k + 1 - run),
                        false => gk,
                    };
                    let mut ki = cx.coords(&Index::flat(at), &self.dims.k);
                    if in_k.is_ok() && !whole {
                        ki[0] = cx.clamp_index(ki[0], self.dims.k[0]);
                    }
                    rows.push((slot.kk, run, in_k, ki.clone()));
                    (in_k, ki)
                }
            };
            let w = &slot.width_coords;
            let mut element = if slot.is_a {
                self.ops.a_element(cx, self.g, w, &ki)
            } else {
                self.ops.b_element(cx, self.g, &ki, w)
            };
            element.inside.extend([slot.width_inside, in_k]);
            out.push(element);
        }
        out
    }

    /// This thread's elements of step `kt` of the tiles that load through registers
    /// (`A`'s, then `B`'s), all loaded before any is used.
    pub(super) fn load(
        &self,
        cx: &mut Emitter,
        slots: &[Slot],
        kt: Operand,
    ) -> Result<Vec<Operand>> {
        let mine: Vec<&Slot> = slots.iter().filter(|s| !self.tile(s).copied).collect();
        // Each element is a chain of its own (its position as much as its load),
        // written one after the other.
        cx.b.parallel_chains(mine.len());
        let elements = self.elements(cx, mine.iter().copied(), kt);
        let mut values = vec![];
        for (slot, element) in mine.iter().zip(elements) {
            match self.raw(slot) {
                Some(input) => values.extend(raw_bits(cx, element, input, self.tile(slot).grain())),
                None => {
                    let value = element.read(cx)?;
                    values.push(cx.b.materialize(value, Ty::F32).into());
                }
            }
        }
        cx.b.parallel_chains(1);
        Ok(values)
    }

    /// The shared address of `slot` in the stage whose tiles start at `bases`, as a
    /// register (its tile's first slot's, the same for all of them) and a byte offset.
    fn shared_address(&self, cx: &mut Emitter, slot: &Slot, bases: [Operand; 2]) -> (Reg, usize) {
        let tile = self.tile(slot);
        let first = tile.address(cx, bases[usize::from(!slot.is_a)], slot.shared_first);
        (
            cx.b.materialize(first, Ty::U32),
            tile.bytes * slot.shared_offset,
        )
    }

    /// The bf16 input `slot`'s tile reads unconverted, if any.
    fn raw(&self, slot: &Slot) -> Option<Value> {
        self.raw[usize::from(!slot.is_a)]
    }

    /// Stores `values` (from [`Loader::load`]) into the stage whose tiles start at
    /// shared addresses `bases`.
    pub(super) fn store(
        &self,
        cx: &mut Emitter,
        slots: &[Slot],
        values: &[Operand],
        bases: [Operand; 2],
    ) -> Result<()> {
        let mine = slots.iter().filter(|s| !self.tile(s).copied);
        let mut values = values.iter();
        for slot in mine {
            let tile = self.tile(slot);
            let ways = tile.store_ways();
            let (addr, offset) = self.shared_address(cx, slot, bases);
            if self.raw(slot).is_none() {
                let v = *values.next().expect("a value per slot");
                let (v, ty) = round_for_store(cx, self.warps.as_ref(), v);
                cx.b.shared_ways(ways);
                ins!(cx.b, "st.shared.{ty} [{addr}+{offset}], {v}");
                continue;
            }
            // A run along `k` is a word per two elements, the lower one in the low half:
            // each element goes to its own row of the tile, a row's pitch apart.
            let row = tile.pitch() * tile.bytes;
            for pair in 0..tile.grain().div_ceil(2) {
                let word = *values.next().expect("a word per two elements");
                cx.b.shared_ways(ways);
                let at = offset + 2 * pair * row;
                ins!(cx.b, "st.shared.u16 [{addr}+{at}], {word}");
                if tile.grain() > 1 {
                    let high = cx.b.reg(Ty::U32);
                    ins!(cx.b, "shr.u32 {high}, {word}, 16");
                    cx.b.shared_ways(ways);
                    ins!(cx.b, "st.shared.u16 [{addr}+{}], {high}", at + row);
                }
            }
        }
        Ok(())
    }

    /// Starts copying this thread's elements of step `kt` of the tiles that arrive by
    /// `cp.async` into the stage at shared addresses `bases`: the buffer's f32 bits (or
    /// a run of bf16, whose later elements are inside the operand where the first is:
    /// [`calib_ir::copy_source`] finds runs only in extents they divide), or zeros (a
    /// source size of 0) outside the operand.
    pub(super) fn copy(&self, cx: &mut Emitter, slots: &[Slot], kt: Operand, bases: [Operand; 2]) {
        let input = |s: &Slot| self.sources[usize::from(!s.is_a)];
        let mine: Vec<(&Slot, Value)> = slots.iter().filter_map(|s| Some((s, input(s)?))).collect();
        // Each copy's address is a chain of its own, as each loaded element is.
        cx.b.parallel_chains(mine.len());
        let elements = self.elements(cx, mine.iter().map(|m| m.0), kt);
        for ((slot, input), element) in mine.into_iter().zip(elements) {
            let source = element.source(cx, input);
            let tile = self.tile(slot);
            let (dst, offset) = self.shared_address(cx, slot, bases);
            let dst = format!("{dst}+{offset}");
            let src = source.address;
            // A copy writes shared memory as a store of the element would.
            cx.b.shared_ways(tile.store_ways());
            let bytes = tile.bytes * tile.grain();
            cx.b.global_access(src, bytes);
            // 16-byte copies skip L1 (`.cg`); smaller ones must go through it (`.ca`).
            let cache = if bytes == 16 { "cg" } else { "ca" };
            match source.inside {
                Err(true) => ins!(
                    cx.b,
                    "cp.async.{cache}.shared.global [{dst}], [{src}], {bytes}"
                ),
                Err(false) => ins!(
                    cx.b,
                    "cp.async.{cache}.shared.global [{dst}], [{src}], {bytes}, 0"
                ),
                Ok(p) => {
                    let size = cx.b.reg(Ty::U32);
                    ins!(cx.b, "selp.u32 {size}, {bytes}, 0, {p}");
                    ins!(
                        cx.b,
                        "cp.async.{cache}.shared.global [{dst}], [{src}], {bytes}, {size}"
                    );
                }
            }
        }
        cx.b.parallel_chains(1);
    }

    /// Rounds this thread's runs of the TF32 tiles rounded in place
    /// ([`Tile::rounded_in_place`]) in the stage at `bases` to TF32 (ties away, as the
    /// IR's cast): once its copies have landed, and before the barrier after which
    /// other threads read them.
    pub(super) fn round_in_place(&self, cx: &mut Emitter, slots: &[Slot], bases: [Operand; 2]) {
        for slot in slots.iter().filter(|s| self.tile(s).rounded_in_place) {
            let tile = self.tile(slot);
            let (addr, offset) = self.shared_address(cx, slot, bases);
            let words: Vec<Reg> = (0..tile.grain()).map(|_| cx.b.reg(Ty::F32)).collect();
            let list = |regs: &[Reg]| {
                let names: Vec<String> = regs.iter().map(Reg::to_string).collect();
                names.join(", ")
            };
            let v = tile.grain();
            cx.b.shared_ways(tile.store_ways());
            ins!(
                cx.b,
                "ld.shared.v{v}.f32 {{{}}}, [{addr}+{offset}]",
                list(&words)
            );
            let rounded: Vec<Reg> = words
                .iter()
                .map(|w| {
                    let r = cx.b.reg(Ty::U32);
                    ins!(cx.b, "cvt.rna.tf32.f32 {r}, {w}");
                    r
                })
                .collect();
            cx.b.shared_ways(tile.store_ways());
            ins!(
                cx.b,
                "st.shared.v{v}.b32 [{addr}+{offset}], {{{}}}",
                list(&rounded)
            );
        }
    }
}

/// The bits of bf16 `element` of kernel input `input`, and of the `run - 1` elements
/// after it along `k` (adjacent and aligned in memory: `calib_ir::bf16_run_along_k`),
/// zero outside the operand (the bits of +0.0): what [`round_for_store`] would make of
/// the widened values, without the widening and the rounding. One element is a 16-bit
/// load; a run, one vector load whose words each hold two elements, the lower address
/// in the low half.
fn raw_bits(cx: &mut Emitter, element: super::Element, input: Value, run: usize) -> Vec<Operand> {
    let source = element.source(cx, input);
    let words = run.div_ceil(2);
    if source.inside == Err(false) {
        return vec![Operand::Int(0); words];
    }
    cx.b.global_access(source.address, 2 * run);
    let bits: Vec<Reg> = (0..words).map(|_| cx.b.reg(Ty::U32)).collect();
    let addr = source.address;
    match run {
        1 => ins!(cx.b, "ld.global.nc.u16 {}, [{addr}]", bits[0]),
        2 => ins!(cx.b, "ld.global.nc.u32 {}, [{addr}]", bits[0]),
        4 => ins!(
            cx.b,
            "ld.global.nc.v2.u32 {{{}, {}}}, [{addr}]",
            bits[0],
            bits[1]
        ),
        _ => ins!(
            cx.b,
            "ld.global.nc.v4.u32 {{{}, {}, {}, {}}}, [{addr}]",
            bits[0],
            bits[1],
            bits[2],
            bits[3]
        ),
    }
    match source.inside {
        Ok(p) => bits
            .iter()
            .map(|&b| {
                let r = cx.b.reg(Ty::U32);
                ins!(cx.b, "selp.b32 {r}, {b}, 0, {p}");
                r.into()
            })
            .collect(),
        _ => bits.into_iter().map(Operand::from).collect(),
    }
}

/// Accumulates one step's products from the shared tiles at `bases`: for every `k` of
/// the step, the thread's `A` and `B` fragments as 16-byte loads, then every product of
/// the two.
pub(super) fn products(
    cx: &mut Emitter,
    acc: &[Reg],
    [a, b]: [Tile; 2],
    layout: Layout,
    bases: [Operand; 2],
    [tx, ty]: [Operand; 2],
) -> Result<()> {
    let depth = a.depth;
    let (tm, tn) = (layout.tm, layout.tn);
    // Each thread's fragments sit at fixed offsets from one address per tile: loads
    // name them as `[address+offset]`, with no arithmetic per load.
    let thread_base = |cx: &mut Emitter, base: Operand, lane: Operand| {
        let words = cx.b.mul_u32(lane, Operand::Int(PATCH as i64));
        let at = shared_address(cx, base, words);
        cx.b.materialize(at, Ty::U32)
    };
    let a_base = thread_base(cx, bases[0], ty);
    let b_base = thread_base(cx, bases[1], tx);
    let n_threads = layout.threads_n;
    let a_ways = wavefronts(16, |lane| 16 * (lane / n_threads));
    let b_ways = wavefronts(16, |lane| 16 * (lane % n_threads));
    for kk in 0..depth {
        let frag = |cx: &mut Emitter, tile: Tile, base: Reg, quarters, span, ways| {
            let mut regs = vec![];
            for q in 0..quarters {
                let word = kk * tile.pitch() + q * span;
                cx.b.shared_ways(ways);
                regs.extend(load_v4(cx, base, 4 * word));
            }
            regs
        };
        let af = frag(cx, a, a_base, tm / PATCH, layout.span_m(), a_ways);
        let bf = frag(cx, b, b_base, tn / PATCH, layout.span_n(), b_ways);
        // Every product goes to its own accumulator: a warp issues them back to back.
        cx.b.independent(true);
        for (i, ai) in af.iter().enumerate() {
            for (j, bj) in bf.iter().enumerate() {
                let c = acc[i * tn + j];
                ins!(cx.b, "fma.rn.f32 {c}, {ai}, {bj}, {c}");
            }
        }
        cx.b.independent(false);
    }
    Ok(())
}
