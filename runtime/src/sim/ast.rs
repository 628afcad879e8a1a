//! The decoded program: what the parser produces and the executor runs.
//!
//! Names are resolved at parse time: registers become indices into the kernel's
//! register table, labels become instruction indices, and shared variables and
//! parameters become byte offsets in their state space. Instructions keep their source
//! line and text so every fault can quote them.

use super::types::Ty;

/// A parsed PTX module.
#[derive(Clone, Debug)]
pub struct Module {
    /// `.version major.minor`.
    pub version: (u32, u32),
    /// `.target` entries (`sm_80`).
    pub targets: Vec<String>,
    pub kernels: Vec<Kernel>,
}

impl Kernel {
    /// Where dynamic shared memory starts: the `.extern .shared` array's offset, or the
    /// static variables' end rounded up to 16 bytes when the kernel declares none.
    pub fn dynamic_shared_offset(&self) -> usize {
        self.shared
            .iter()
            .find(|v| v.bytes.is_none())
            .map_or(self.static_shared_bytes.next_multiple_of(16), |v| v.offset)
    }
}

impl Module {
    pub fn kernel(&self, name: &str) -> Option<&Kernel> {
        self.kernels.iter().find(|k| k.name == name)
    }
}

/// One `.entry` function.
#[derive(Clone, Debug)]
pub struct Kernel {
    pub name: String,
    /// Line of the `.entry` directive.
    pub line: usize,
    pub params: Vec<Param>,
    /// Size of the parameter buffer, parameters laid out at their natural alignment.
    pub param_bytes: usize,
    /// Every register the body can name; nested `{ }` scopes get fresh entries.
    pub registers: Vec<Register>,
    /// Statically sized `.shared` variables this kernel can address.
    pub shared: Vec<SharedVar>,
    /// Bytes of static shared memory; dynamic shared memory starts after it.
    pub static_shared_bytes: usize,
    /// `.maxntid` (an upper bound on the block) and `.reqntid` (the exact block).
    pub max_ntid: Option<[u32; 3]>,
    pub req_ntid: Option<[u32; 3]>,
    pub body: Vec<Instruction>,
}

/// A kernel parameter at `offset` in the parameter buffer.
#[derive(Clone, Debug, PartialEq)]
pub struct Param {
    pub name: String,
    /// The scalar type, or `.b8` for a byte-array parameter.
    pub ty: Ty,
    pub bytes: usize,
    pub offset: usize,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Register {
    pub name: String,
    pub ty: Ty,
}

#[derive(Clone, Debug, PartialEq)]
pub struct SharedVar {
    pub name: String,
    pub offset: usize,
    /// `None` for the `.extern` dynamic array, sized at launch.
    pub bytes: Option<usize>,
}

/// One executable instruction.
#[derive(Clone, Debug)]
pub struct Instruction {
    pub line: usize,
    /// The source text, whitespace-normalized, for fault reports.
    pub text: String,
    /// `@%p` or `@!%p`.
    pub guard: Option<PredSrc>,
    pub op: Op,
}

/// A register index into [`Kernel::registers`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Reg(pub u32);

/// A source value.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Operand {
    Reg(Reg),
    /// An immediate, already encoded in the bits of the instruction's operand type.
    Imm(u64),
    Special(Special),
}

/// A predicate source with optional negation (`!%p`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PredSrc {
    pub operand: Operand,
    pub negated: bool,
}

/// Read-only special registers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Special {
    Tid(usize),
    Ntid(usize),
    Ctaid(usize),
    Nctaid(usize),
    LaneId,
    WarpId,
    NWarpId,
    /// `WARP_SZ`, the constant 32.
    WarpSize,
}

/// A memory operand `[base+offset]`; a symbol's address is folded into `offset`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Address {
    pub base: Option<Reg>,
    pub offset: i64,
}

/// Where a load, store or atomic goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Space {
    Global,
    Shared,
    Param,
    /// No state space given: the address is decoded at run time (shared window or
    /// global).
    Generic,
}

impl Space {
    pub fn name(self) -> &'static str {
        match self {
            Space::Global => "global",
            Space::Shared => "shared",
            Space::Param => "param",
            Space::Generic => "generic",
        }
    }
}

/// Generic addresses in `[SHARED_WINDOW, SHARED_WINDOW + 2^32)` name shared memory;
/// `cvta.shared` adds this base and `cvta.to.shared` removes it. Global allocations
/// never reach it.
pub const SHARED_WINDOW: u64 = 0x0000_7e00_0000_0000;

/// What an instruction does.
#[derive(Clone, Debug)]
pub enum Op {
    /// An elementwise computation on each active thread's registers.
    Alu {
        alu: Alu,
        dst: Reg,
        src: Vec<Operand>,
    },
    /// `setp.cmp[.bool].ty p[|q], a, b[, c]`: `p = cmp(a, b) bool c`, `q = !cmp(a, b) bool c`.
    Setp {
        cmp: Cmp,
        ty: Ty,
        ftz: bool,
        p: Reg,
        q: Option<Reg>,
        a: Operand,
        b: Operand,
        combine: Option<(BoolOp, PredSrc)>,
    },
    Ld {
        space: Space,
        ty: Ty,
        dst: Vec<Reg>,
        addr: Address,
    },
    St {
        space: Space,
        ty: Ty,
        src: Vec<Operand>,
        addr: Address,
    },
    /// `atom` (with `dst`) and `red` (without).
    Atom {
        space: Space,
        op: AtomOp,
        ty: Ty,
        dst: Option<Reg>,
        addr: Address,
        b: Operand,
        /// The swap value of `cas`.
        c: Option<Operand>,
    },
    /// A branch to instruction index `target`.
    Bra { target: usize },
    /// `ret` or `exit` from the entry function.
    Exit,
    /// `bar.sync id` / `barrier.sync id` over the whole block.
    Bar { id: Operand },
    Shfl {
        mode: ShflMode,
        dst: Reg,
        pred: Option<Reg>,
        a: Operand,
        b: Operand,
        c: Operand,
        membermask: Operand,
    },
    Vote {
        mode: VoteMode,
        dst: Reg,
        a: PredSrc,
        membermask: Operand,
    },
    /// `membar` / `fence`: the simulator's memory is sequentially consistent, so ordering
    /// instructions have nothing to do.
    Fence,
    /// `mov.bN {a, b}, src`: the low half of `src` to `a`, the high half to `b`.
    Unpack {
        parts: [Reg; 2],
        src: Operand,
        bits: u32,
    },
    /// `mma.sync.aligned`: one warp-wide matrix multiply-accumulate (`exec/mma.rs`).
    Mma(Box<Mma>),
    /// `ldmatrix.sync.aligned.m8n8.xN[.trans].shared.b16`: one register per 8x8 matrix.
    Ldmatrix {
        trans: bool,
        dst: Vec<Reg>,
        addr: Address,
    },
    /// `cp.async.{ca,cg}.shared.global [dst], [src], bytes[, src_size]`: an asynchronous
    /// copy that lands when a `cp.async.wait_group` retires it (`exec/async_copy.rs`).
    CpAsync {
        dst: Address,
        src: Address,
        bytes: u32,
        /// Bytes read from `src`; the rest of the destination is zero-filled.
        src_size: Option<Operand>,
    },
    /// `cp.async.commit_group`: the thread's uncommitted copies become one group.
    CpAsyncCommit,
    /// `cp.async.wait_group n`: retire all but the `n` newest groups. `wait_all` is a
    /// commit followed by `wait_group 0`.
    CpAsyncWait { newest_pending: u32, commit: bool },
}

/// The element type of an `mma`'s A and B fragments.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MmaInput {
    Tf32,
    Bf16,
    F16,
}

/// `mma.sync.aligned.m16n8k{k}.row.col.f32.{input}.{input}.f32 {d}, {a}, {b}, {c}`.
#[derive(Clone, Debug, PartialEq)]
pub struct Mma {
    pub k: usize,
    pub input: MmaInput,
    pub d: [Reg; 4],
    pub a: [Reg; 4],
    pub b: [Reg; 2],
    pub c: [Reg; 4],
}

/// Elementwise operations: the result is a function of the sources alone.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Alu {
    /// Copy the low `bits` of the source (`mov`, `cvta` between global and generic).
    Mov {
        bits: u32,
    },
    Int {
        op: IntOp,
        ty: Ty,
    },
    Float {
        op: FloatOp,
        ty: Ty,
        ftz: bool,
        sat: bool,
    },
    Cvt(Cvt),
    /// `selp`: `src[2] ? src[0] : src[1]`, keeping `bits`.
    Selp {
        bits: u32,
    },
    /// `mov.bN d, {a, b}`: `a` in the low half, `b` in the high half, `bits` each.
    Pack {
        bits: u32,
    },
    /// `cvt.rna.tf32.f32`: round to 10 mantissa bits, ties away from zero.
    Tf32Rna,
    /// `cvt.rn.bf16x2.f32 d, a, b`: `a` rounded to the high half, `b` to the low half.
    Bf16x2Rn,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IntOp {
    Add,
    /// `add.sat.s32`: clamp instead of wrapping.
    AddSat,
    Sub,
    MulLo,
    MulHi,
    /// `mul.wide`: the full double-width product.
    MulWide,
    MadLo,
    MadHi,
    MadWide,
    Div,
    Rem,
    Min,
    Max,
    And,
    Or,
    Xor,
    Not,
    Shl,
    Shr,
    Neg,
    Abs,
    Popc,
    Clz,
    Brev,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FloatOp {
    Add,
    Sub,
    Mul,
    Fma,
    Div,
    Min,
    Max,
    /// `min.NaN` / `max.NaN` (sm_80): NaN if either operand is.
    MinNan,
    MaxNan,
    Neg,
    Abs,
    Rcp,
    Sqrt,
    Rsqrt,
    Ex2,
    Lg2,
    Sin,
    Cos,
    Tanh,
}

/// `cvt` between any two of the integer and floating-point types.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Cvt {
    pub dst: Ty,
    pub src: Ty,
    pub rounding: Option<Rounding>,
    pub ftz: bool,
    pub sat: bool,
}

/// Rounding modifiers: to a float (`.rn .rz .rm .rp`) or to an integral value
/// (`.rni .rzi .rmi .rpi`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rounding {
    Rn,
    Rz,
    Rm,
    Rp,
    Rni,
    Rzi,
    Rmi,
    Rpi,
}

impl Rounding {
    pub fn from_name(name: &str) -> Option<Rounding> {
        Some(match name {
            "rn" => Rounding::Rn,
            "rz" => Rounding::Rz,
            "rm" => Rounding::Rm,
            "rp" => Rounding::Rp,
            "rni" => Rounding::Rni,
            "rzi" => Rounding::Rzi,
            "rmi" => Rounding::Rmi,
            "rpi" => Rounding::Rpi,
            _ => return None,
        })
    }

    /// True for the round-to-integral forms.
    pub fn is_integral(self) -> bool {
        matches!(
            self,
            Rounding::Rni | Rounding::Rzi | Rounding::Rmi | Rounding::Rpi
        )
    }
}

/// `setp` comparisons. The `u` forms are also true when either operand is NaN.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cmp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    /// Unsigned comparisons of integers.
    Lo,
    Ls,
    Hi,
    Hs,
    Equ,
    Neu,
    Ltu,
    Leu,
    Gtu,
    Geu,
    /// Both operands are numbers / either is NaN.
    Num,
    Nan,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BoolOp {
    And,
    Or,
    Xor,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AtomOp {
    Add,
    Min,
    Max,
    Inc,
    Dec,
    And,
    Or,
    Xor,
    Exch,
    Cas,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ShflMode {
    Up,
    Down,
    Bfly,
    Idx,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VoteMode {
    All,
    Any,
    Uni,
    Ballot,
}
