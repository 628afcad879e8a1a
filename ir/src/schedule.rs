//! Schedules: how a kernel's loop nest is laid out on the GPU, as plain values that the
//! planner chooses, code generation obeys, and the cost model and reports read.
//!
//! A GEMM-shaped anchor (a convolution as an implicit GEMM, or a matmul) computes
//! `C[g; m, n] = sum_k A[g; m, k] * B[g; k, n]` ([`GemmDims`]). Its [`GemmSchedule`]
//! says which output tile a thread block computes, how deep each step through `k` is,
//! and into how many slices `k` is split: a split-K kernel writes each slice's partial
//! tile to a workspace, and a second pass adds the slices in a fixed order and runs the
//! epilogue, so that small outputs with long reductions (weight gradients) still fill
//! the GPU and give the same bits on every run.

use crate::{numel, Graph, Op, Phases, Value};
use serde::{Deserialize, Serialize};

/// The extents of a GEMM problem; `m`, `n` and `k` are row-major multi-indices (a
/// convolution's `m` is `(batch, row, column)`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GemmDims {
    pub groups: usize,
    pub m: Vec<usize>,
    pub n: Vec<usize>,
    pub k: Vec<usize>,
    /// For the data gradient of a strided 1x1 convolution: the strides of the lattice
    /// of input positions the GEMM computes (`m` runs over the gradient's positions);
    /// every other position's gradient is zero.
    pub lattice: Option<[usize; 2]>,
    /// For the data gradient of a strided convolution whose window spans its stride:
    /// one GEMM group per phase of the gradient's positions, `m` a phase's positions
    /// and `k` its taps ([`Phases`]); each phase steps through only the taps it meets.
    pub phases: Option<Phases>,
}

impl GemmDims {
    /// The GEMM that body node `v` computes, if it is a convolution (forward, data
    /// gradient or weight gradient) or a matmul.
    ///
    /// With `x [N,C,H,W]`, `w [O,C/G,KH,KW]`, `y [N,O,OH,OW]`:
    ///
    /// | op | m | n | k |
    /// |---|---|---|---|
    /// | forward | (n, oh, ow) | o | (kh, kw, c) |
    /// | data gradient | (n, h, w) | c | (kh, kw, o) |
    /// | weight gradient | o | (kh, kw, c) | (n, oh, ow) |
    ///
    /// A window's channels are its innermost `k` axis (`n` for a weight gradient,
    /// [`window_k`]), so that a step through `k` stays on one tap, and a weight
    /// gradient's tile columns share theirs.
    pub fn of(body: &Graph, v: Value) -> Option<GemmDims> {
        let node = &body.nodes[v.0];
        let shape = |u: Value| body.ty(u).shape.clone();
        let (a, b) = (*node.inputs.first()?, *node.inputs.get(1)?);
        let conv = |x: Vec<usize>, y: Vec<usize>, w: Vec<usize>, groups: usize| {
            (x.len() == 4 && y.len() == 4 && w.len() == 4 && groups > 0)
                .then(|| (x, y, [w[2], w[3]], groups))
        };
        let (m, n, k, groups) = match node.op {
            Op::Conv2d { groups, .. } => {
                let (x, y, [kh, kw], g) = conv(shape(a), node.ty.shape.clone(), shape(b), groups)?;
                (
                    vec![x[0], y[2], y[3]],
                    vec![y[1] / g],
                    window_k(x[1] / g, [kh, kw]),
                    g,
                )
            }
            Op::Conv2dBackwardData {
                groups,
                stride,
                padding,
                dilation,
                ..
            } => {
                let (x, y, [kh, kw], g) = conv(node.ty.shape.clone(), shape(a), shape(b), groups)?;
                // A strided 1x1 convolution reads only a lattice of its input: the
                // gradient is one dense GEMM over the lattice (zero elsewhere), not a
                // GEMM over every position whose products are mostly zero.
                if [kh, kw] == [1, 1] && padding == [0, 0] && stride != [1, 1] {
                    return Some(GemmDims {
                        groups: g,
                        m: vec![y[0], y[2], y[3]],
                        n: vec![x[1] / g],
                        k: vec![y[1] / g, 1, 1],
                        lattice: Some(stride),
                        phases: None,
                    });
                }
                let (og, input) = (y[1] / g, [x[2], x[3]]);
                if let Some(p) = Phases::of(stride, padding, dilation, [kh, kw], input, og) {
                    return Some(GemmDims {
                        groups: g * p.count(),
                        m: vec![x[0], x[2] / stride[0], x[3] / stride[1]],
                        n: vec![x[1] / g],
                        k: vec![p.most_taps(0), p.most_taps(1), og],
                        lattice: None,
                        phases: Some(p),
                    });
                }
                (
                    vec![x[0], x[2], x[3]],
                    vec![x[1] / g],
                    window_k(y[1] / g, [kh, kw]),
                    g,
                )
            }
            Op::Conv2dBackwardWeight { groups, .. } => {
                let (x, y, [kh, kw], g) = conv(shape(a), shape(b), node.ty.shape.clone(), groups)?;
                (
                    vec![y[1] / g],
                    window_k(x[1] / g, [kh, kw]),
                    vec![x[0], y[2], y[3]],
                    g,
                )
            }
            Op::MatMul { transpose_a, .. } => {
                let a = shape(a);
                let k = if transpose_a { a[0] } else { a[1] };
                (vec![node.ty.shape[0]], vec![node.ty.shape[1]], vec![k], 1)
            }
            _ => return None,
        };
        Some(GemmDims {
            groups,
            m,
            n,
            k,
            lattice: None,
            phases: None,
        })
    }

    /// `(M, N, K)` flattened.
    pub fn mnk(&self) -> (usize, usize, usize) {
        (numel(&self.m), numel(&self.n), numel(&self.k))
    }

    /// Multiply-adds, twice: the GEMM's FLOPs (of a phased data gradient, only the
    /// taps each phase meets).
    pub fn flops(&self) -> f64 {
        let (m, n, k) = self.mnk();
        2.0 * (self.groups * m * n * k) as f64 * self.share_of_k()
    }

    /// The share of `k` a block steps through on average: 1, or for phases
    /// ([`Phases::share_of_k`]) the taps they meet over those laid out.
    pub fn share_of_k(&self) -> f64 {
        self.phases.map_or(1.0, |p| p.share_of_k())
    }
}

/// The `k` axes of a convolution window over `channels` channels: `(kh, kw, c)`,
/// taps outer and channels inner.
///
/// A step of 8 to 32 rows through `k` then stays on one tap: each row's channel is the
/// step's plus a constant, and the tap's window position and padding checks are
/// computed once a step rather than once a row (`(c, kh, kw)` divides every row's `k`
/// by the window). So does a pixel of four channels (an image padded to whole pixels,
/// `fusion::pad_channels`), whose runs then lie along `k` for a channels-last copy.
/// Other channel counts that are not a multiple of the shallowest step (8), and a 1x1
/// window (whose `k` is its channels either way), keep `(c, kh, kw)`, the weight's own
/// order ([`taps_outer`] says which).
pub fn window_k(channels: usize, kernel: [usize; 2]) -> Vec<usize> {
    let [kh, kw] = kernel;
    match taps_outer(channels, kernel) {
        true => vec![kh, kw, channels],
        false => vec![channels, kh, kw],
    }
}

/// Whether [`window_k`] puts the taps outside the channels.
pub fn taps_outer(channels: usize, [kh, kw]: [usize; 2]) -> bool {
    kh * kw > 1 && (channels.is_multiple_of(8) || channels == 4)
}

/// The node a GEMM kernel's loop nest is built around: the body's last convolution or
/// matmul (earlier ones, if any, are evaluated inside its prologue).
pub fn gemm_anchor(body: &Graph) -> Option<Value> {
    body.nodes.iter().rposition(|n| n.op.is_gemm()).map(Value)
}

/// How a kernel's launches are laid out: its GEMM anchor's, and its first reduction's
/// (a reduction kernel's own, or a GEMM kernel's statistics over its result).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Schedule {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gemm: Option<GemmSchedule>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reduction: Option<ReductionSchedule>,
}

impl Schedule {
    pub fn gemm(s: GemmSchedule) -> Schedule {
        Schedule {
            gemm: Some(s),
            reduction: None,
        }
    }

    pub fn reduction(s: ReductionSchedule) -> Schedule {
        Schedule {
            gemm: None,
            reduction: Some(s),
        }
    }

    /// Where in the workspace the reduction's partial results start: after the GEMM's
    /// partial tiles (of a GEMM with `dims`), if it splits too.
    pub fn reduction_offset_bytes(&self, dims: Option<&GemmDims>) -> usize {
        match (self.gemm, dims) {
            (Some(g), Some(d)) => g.workspace_bytes(d),
            _ => 0,
        }
    }
}

/// A reduction kernel: each reduced element's inputs are cut into `split` slices, each
/// reduced by a team of its own into a workspace; the next launch combines the slices
/// in slice order (so that few, long reductions, such as per-channel batch statistics,
/// fill the GPU and still give the same bits on every run). Where that launch would be
/// at most [`SERIAL_COMBINE_BLOCKS`] blocks and the kernel has a semaphore
/// ([`crate::Kernel::semaphore`]), the split launch's last block to finish combines
/// them instead.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReductionSchedule {
    pub split: usize,
}

/// The largest combining launch, in blocks, that a split reduction's last block takes
/// over: it then runs that many blocks' passes in turn, where a launch of its own would
/// cost a launch and the gap before the next (~6 us on an H200).
pub const SERIAL_COMBINE_BLOCKS: usize = 4;

/// The most elements a split reduction kernel may store for its last block to combine
/// them: [`SERIAL_COMBINE_BLOCKS`] blocks of 256 threads taking runs of four.
pub const SERIAL_COMBINE_ELEMENTS: usize = SERIAL_COMBINE_BLOCKS * 256 * 4;

impl ReductionSchedule {
    /// Bytes of the workspace for `reductions` sibling reductions of `outputs` elements
    /// each (`f32` partial results, `reductions x split x outputs`).
    pub fn workspace_bytes(&self, reductions: usize, outputs: usize) -> usize {
        match self.split {
            1 => 0,
            s => 4 * s * reductions * outputs,
        }
    }
}

/// A tiled GEMM: 256 threads compute a `block_m x block_n` tile of `C`, stepping through
/// their slice of `k` `block_k` at a time; with `split_k > 1`, `k` is cut into that many
/// slices, each a block of its own, added up by a second pass.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GemmSchedule {
    pub block_m: usize,
    pub block_n: usize,
    pub block_k: usize,
    pub split_k: usize,
    /// What the products run on (FMA units unless the precision policy allows tensor
    /// cores).
    #[serde(default, skip_serializing_if = "GemmInstruction::is_fma")]
    pub instruction: GemmInstruction,
    /// Shared-memory stages of the operand tiles: 2 double-buffers through registers
    /// (each step's elements are loaded while the previous step's products run, then
    /// stored); 3 or 4 (tensor cores only) make a ring whose stages are filled `stages -
    /// 1` steps ahead, by `cp.async` for operands read straight from a buffer. Plans and
    /// tuning files written before stages existed read as 2.
    #[serde(
        default = "GemmSchedule::double_buffered",
        skip_serializing_if = "GemmSchedule::is_double_buffered"
    )]
    pub stages: usize,
}

/// The instruction a GEMM's products run on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GemmInstruction {
    /// `fma.rn.f32` per product on each thread's patch of accumulators.
    #[default]
    Fma,
    /// `mma.sync.m16n8k8` with TF32 operands, f32 accumulation.
    MmaTf32,
    /// `mma.sync.m16n8k16` with bf16 operands, f32 accumulation.
    MmaBf16,
}

impl GemmInstruction {
    pub fn is_fma(&self) -> bool {
        *self == GemmInstruction::Fma
    }

    /// The `k` extent of one instruction: the schedule's `k` step is a multiple of it.
    pub fn k_per_instruction(self) -> usize {
        match self {
            GemmInstruction::Fma => 1,
            GemmInstruction::MmaTf32 => 8,
            GemmInstruction::MmaBf16 => 16,
        }
    }

    /// Bytes of one element of the GEMM template's shared operand tiles: bf16 products
    /// read 16-bit tiles (`ldmatrix`), the others f32 words.
    pub fn tile_bytes(self) -> usize {
        match self {
            GemmInstruction::MmaBf16 => 2,
            _ => 4,
        }
    }

    /// Elements of padding after each row of a shared operand tile, so that the
    /// products' shared loads hit distinct banks: 4 words for the FMA template's 16-byte
    /// loads, 8 words for TF32 fragment words (lanes `t` rows apart), and 8 bf16 (16
    /// bytes) for `ldmatrix`, whose eight 16-byte rows then lie an odd number of 16-byte
    /// chunks apart (the codegen's `mma` module says why).
    pub fn tile_pad(self) -> usize {
        match self {
            GemmInstruction::Fma => 4,
            GemmInstruction::MmaTf32 | GemmInstruction::MmaBf16 => 8,
        }
    }

    /// Elements of padding after each row of a tile that keeps its `k` adjacent
    /// (`CopySource::along_k`): 16 bytes, so that rows of a multiple of 32 bytes lie an
    /// odd number of 16-byte chunks apart. Eight rows' `ldmatrix` phase, or TF32
    /// fragment words of lanes `g` rows apart, then fall on distinct banks.
    pub fn k_inner_pad(self) -> usize {
        16 / self.tile_bytes()
    }

    pub fn name(self) -> &'static str {
        match self {
            GemmInstruction::Fma => "fma",
            GemmInstruction::MmaTf32 => "mma.tf32",
            GemmInstruction::MmaBf16 => "mma.bf16",
        }
    }
}

impl GemmSchedule {
    /// Threads per block.
    pub const THREADS: usize = 256;
    /// Tile shapes code generation supports, `(block_m, block_n)`: the 256 threads form
    /// a grid over the tile, each holding a patch of 4x4 to 8x8 accumulators
    /// ([`GemmSchedule::layout`]); narrow tiles serve narrow problems (32 output
    /// channels).
    pub const TILES: [(usize, usize); 10] = [
        (64, 64),
        (64, 128),
        (128, 64),
        (128, 128),
        (32, 128),
        (128, 32),
        (32, 256),
        (256, 32),
        (64, 256),
        (256, 64),
    ];

    /// The schedule for `dims` without a planner: the tile that wastes the least work,
    /// no split.
    pub fn default_for(dims: &GemmDims) -> GemmSchedule {
        let (m, n, _) = dims.mnk();
        let padded = |(bm, bn): (usize, usize)| m.div_ceil(bm) * bm * n.div_ceil(bn) * bn;
        // The least padded work, then the larger tile (more reuse per load).
        let (block_m, block_n) = Self::TILES
            .into_iter()
            .min_by_key(|&t| (padded(t), usize::MAX - t.0 * t.1))
            .expect("tiles");
        GemmSchedule {
            block_m,
            block_n,
            block_k: Self::depth(block_m, block_n),
            split_k: 1,
            instruction: GemmInstruction::Fma,
            stages: 2,
        }
    }

    /// The stages of a schedule that does not name them.
    pub fn double_buffered() -> usize {
        2
    }

    fn is_double_buffered(stages: &usize) -> bool {
        *stages == 2
    }

    /// The stage counts code generation supports.
    pub const STAGES: [usize; 3] = [2, 3, 4];

    /// Bytes of shared memory the operand tiles take: every stage of both tiles, each
    /// `block_k` rows of `block_m` (or `block_n`) elements of
    /// [`GemmInstruction::tile_bytes`], padded as the GEMM template pads them
    /// ([`GemmInstruction::tile_pad`]) so that its accesses spread over the banks.
    pub fn operand_bytes(&self) -> usize {
        self.operand_bytes_with([false, false])
    }

    /// [`GemmSchedule::operand_bytes`] where the `A` and `B` tiles that `k_inner` marks
    /// keep each row's `k` adjacent instead (`block_m` or `block_n` rows of `block_k`
    /// elements, each padded: what a tile copied in runs along `k` takes,
    /// `CopySource::along_k`).
    pub fn operand_bytes_with(&self, k_inner: [bool; 2]) -> usize {
        let i = self.instruction;
        let tile = |width: usize, k_inner: bool| match k_inner {
            true => width * (self.block_k + i.k_inner_pad()),
            false => self.block_k * (width + i.tile_pad()),
        };
        let stage = tile(self.block_m, k_inner[0]) + tile(self.block_n, k_inner[1]);
        self.stages * i.tile_bytes() * stage
    }

    /// The most [`GemmSchedule::operand_bytes_with`] gives, whichever tiles keep their
    /// `k` adjacent: what a schedule must fit before its operands are known.
    pub fn largest_operand_bytes(&self) -> usize {
        [[false, false], [true, false], [false, true], [true, true]]
            .into_iter()
            .map(|k_inner| self.operand_bytes_with(k_inner))
            .max()
            .unwrap_or(0)
    }

    /// The `k` step that gives each thread four elements per step of the tile with the
    /// larger side, and at least one of the other.
    pub fn depth(block_m: usize, block_n: usize) -> usize {
        (4 * Self::THREADS / block_m.max(block_n)).max(Self::THREADS / block_m.min(block_n))
    }

    /// How the 256 threads cover the tile: `(threads along m, threads along n)`, each
    /// thread holding `block_m / threads along m` by `block_n / threads along n`
    /// accumulators in patches of four rows or columns; `None` for a shape no layout
    /// fits.
    pub fn layout(&self) -> Option<(usize, usize)> {
        let fits = |qm: usize, qn: usize| {
            let (ty, tx) = (self.block_m / (4 * qm), self.block_n / (4 * qn));
            (self.block_m.is_multiple_of(4 * qm)
                && self.block_n.is_multiple_of(4 * qn)
                && ty * tx == Self::THREADS)
                .then_some((ty, tx))
        };
        [(1, 1), (2, 1), (1, 2), (2, 2)]
            .into_iter()
            .filter_map(|(qm, qn)| fits(qm, qn))
            .min_by_key(|&(ty, tx)| ty.abs_diff(tx))
    }

    /// For tensor-core products: how the block's eight warps cover the tile, `(warps
    /// along m, warps along n)`. Each warp holds `block_m / (16 warps_m)` by `block_n /
    /// (8 warps_n)` mma fragments of 16x8, a warp-grid apart (as the FMA layout's patches
    /// are a thread-grid apart), chosen to load the fewest fragment words per `mma`.
    pub fn warps(&self) -> Option<(usize, usize)> {
        let warps = Self::THREADS / 32;
        [1, 2, 4, 8]
            .into_iter()
            .map(|wm| (wm, warps / wm))
            .filter(|&(wm, wn)| {
                self.block_m.is_multiple_of(16 * wm) && self.block_n.is_multiple_of(8 * wn)
            })
            .min_by_key(|&(wm, wn)| {
                let (fm, fn_) = (self.block_m / (16 * wm), self.block_n / (8 * wn));
                // Words loaded per mma, scaled to stay an integer: (4 fm + 2 fn) / (fm fn).
                (1000 * (4 * fm + 2 * fn_) / (fm * fn_), wm.abs_diff(wn))
            })
    }

    /// Thread blocks of one slice: output tiles times groups.
    pub fn tiles(&self, dims: &GemmDims) -> usize {
        let (m, n, _) = dims.mnk();
        m.div_ceil(self.block_m) * n.div_ceil(self.block_n) * dims.groups
    }

    /// Steps through `k` in all, and in the longest slice.
    pub fn k_steps(&self, dims: &GemmDims) -> (usize, usize) {
        let steps = dims.mnk().2.div_ceil(self.block_k);
        (steps, steps.div_ceil(self.split_k))
    }

    /// Registers per thread ptxas gives such a kernel, about: the accumulators, their
    /// fragments, the prefetched tile elements and some 45 for addresses and indices
    /// (fitted to ptxas's counts for the SCNet-50 training step's GEMMs).
    pub fn estimated_registers(&self) -> u32 {
        let prefetched = self.block_k * (self.block_m + self.block_n) / Self::THREADS;
        let r = match (self.instruction, self.warps()) {
            (GemmInstruction::Fma, _) | (_, None) => {
                let (tm, tn) = self.patch();
                tm * tn + (3 * (tm + tn)).div_ceil(2) + 2 * prefetched + 45
            }
            (_, Some((wm, wn))) => {
                let (fm, fn_) = (self.block_m / (16 * wm), self.block_n / (8 * wn));
                4 * fm * fn_ + 4 * fm + 2 * fn_ + 2 * prefetched + 45
            }
        };
        (r as u32).min(self.register_cap().unwrap_or(255))
    }

    /// The register cap code generation sets (`.maxnreg`): a large tile, or a long
    /// prologue, would take some 140-180 registers and so one block of 256 threads per
    /// SM; capped at 128, two fit (ptxas spills a few words where it must).
    pub fn register_cap(&self) -> Option<u32> {
        Some(128)
    }

    /// A thread's accumulators along `m` and along `n`.
    pub fn patch(&self) -> (usize, usize) {
        let (ty, tx) = self.layout().unwrap_or((16, 16));
        (self.block_m / ty, self.block_n / tx)
    }

    /// Bytes of the workspace a split-K kernel writes its partial tiles to (`f32`,
    /// `split_k x groups x M x N`); none without a split.
    pub fn workspace_bytes(&self, dims: &GemmDims) -> usize {
        let (m, n, _) = dims.mnk();
        match self.split_k {
            1 => 0,
            s => 4 * s * dims.groups * m * n,
        }
    }

    /// Whether code generation supports this schedule for `dims`, or why not.
    pub fn check(&self, dims: &GemmDims) -> Result<(), String> {
        if !Self::TILES.contains(&(self.block_m, self.block_n)) || self.layout().is_none() {
            return Err(format!(
                "tile {}x{}: must be one of {:?}",
                self.block_m,
                self.block_n,
                Self::TILES
            ));
        }
        if self.block_k * self.block_m.min(self.block_n) < Self::THREADS {
            return Err(format!(
                "k step {} leaves threads without a tile element to load",
                self.block_k
            ));
        }
        if ![4, 8, 16, 32].contains(&self.block_k) {
            return Err(format!("k step {}: must be 4, 8, 16 or 32", self.block_k));
        }
        if !self.instruction.is_fma() {
            let per = self.instruction.k_per_instruction();
            if !self.block_k.is_multiple_of(per) {
                return Err(format!(
                    "k step {}: {} needs a multiple of {per}",
                    self.block_k,
                    self.instruction.name()
                ));
            }
            if self.warps().is_none() {
                return Err(format!(
                    "tile {}x{}: eight warps cannot cover it with 16x8 fragments",
                    self.block_m, self.block_n
                ));
            }
        }
        if !Self::STAGES.contains(&self.stages) {
            return Err(format!("{} stages: must be 2, 3 or 4", self.stages));
        }
        if self.stages > 2 && self.instruction.is_fma() {
            return Err(format!(
                "{} stages: only tensor-core schedules pipeline more than two",
                self.stages
            ));
        }
        let (steps, _) = self.k_steps(dims);
        if self.split_k == 0 || self.split_k > steps.max(1) {
            return Err(format!(
                "split {} of {steps} k steps: each slice needs at least one",
                self.split_k
            ));
        }
        Ok(())
    }
}

impl std::fmt::Display for Schedule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut parts = vec![];
        if let Some(s) = self.gemm {
            parts.push(format!(
                "gemm tile={}x{}x{} split_k={}",
                s.block_m, s.block_n, s.block_k, s.split_k
            ));
            if !s.instruction.is_fma() {
                parts.push(format!("instruction={}", s.instruction.name()));
            }
            if s.stages != 2 {
                parts.push(format!("stages={}", s.stages));
            }
        }
        if let Some(s) = self.reduction {
            parts.push(format!("reduction split={}", s.split));
        }
        write!(f, "{}", parts.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dims() -> GemmDims {
        GemmDims {
            groups: 1,
            m: vec![128],
            n: vec![128],
            k: vec![256],
            lattice: None,
            phases: None,
        }
    }

    #[test]
    fn schedules_written_before_stages_read_as_double_buffered() {
        let old =
            r#"{"block_m":64,"block_n":64,"block_k":16,"split_k":1,"instruction":"mma_tf32"}"#;
        let s: GemmSchedule = serde_json::from_str(old).unwrap();
        assert_eq!(s.stages, 2);
        // Two stages are not written, so such files stay as they were; others are.
        assert_eq!(serde_json::to_string(&s).unwrap(), old);
        let three = GemmSchedule { stages: 3, ..s };
        let text = serde_json::to_string(&three).unwrap();
        assert!(text.contains(r#""stages":3"#), "{text}");
        assert_eq!(serde_json::from_str::<GemmSchedule>(&text).unwrap(), three);
        assert_eq!(
            Schedule::gemm(three).to_string(),
            "gemm tile=64x64x16 split_k=1, instruction=mma.tf32, stages=3"
        );
    }

    #[test]
    fn stages_beyond_double_buffering_need_tensor_cores() {
        let mma = GemmSchedule {
            block_m: 64,
            block_n: 64,
            block_k: 16,
            split_k: 1,
            instruction: GemmInstruction::MmaBf16,
            stages: 4,
        };
        assert_eq!(mma.check(&dims()), Ok(()));
        let e = GemmSchedule { stages: 5, ..mma }
            .check(&dims())
            .unwrap_err();
        assert!(e.contains("5 stages"), "{e}");
        let fma = GemmSchedule {
            instruction: GemmInstruction::Fma,
            ..mma
        };
        assert!(fma.check(&dims()).unwrap_err().contains("tensor-core"));
        assert_eq!(GemmSchedule { stages: 2, ..fma }.check(&dims()), Ok(()));
    }

    #[test]
    fn bf16_tiles_take_two_bytes_an_element() {
        let bf16 = GemmSchedule {
            block_m: 128,
            block_n: 64,
            block_k: 32,
            split_k: 1,
            instruction: GemmInstruction::MmaBf16,
            stages: 3,
        };
        // Rows of 128 + 8 and 64 + 8 bf16, 32 of them, three stages.
        assert_eq!(bf16.operand_bytes(), 3 * 32 * 2 * (136 + 72));
        // An A tile copied along k: 128 rows of 32 + 8.
        assert_eq!(
            bf16.operand_bytes_with([true, false]),
            3 * 2 * (128 * 40 + 32 * 72)
        );
        assert_eq!(bf16.largest_operand_bytes(), 3 * 2 * (128 * 40 + 64 * 40));
        let tf32 = GemmSchedule {
            instruction: GemmInstruction::MmaTf32,
            ..bf16
        };
        assert_eq!(tf32.operand_bytes(), 3 * 32 * 4 * (136 + 72));
        let fma = GemmSchedule {
            instruction: GemmInstruction::Fma,
            stages: 2,
            ..bf16
        };
        assert_eq!(fma.operand_bytes(), 2 * 32 * 4 * (132 + 68));
    }
}
