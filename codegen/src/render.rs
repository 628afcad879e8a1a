//! The elementwise op table: each IR op as a short PTX sequence.
//!
//! A rule is a list of instruction templates per operand class (floating point, held
//! in `.f32`; integer, held in `.s64`). Placeholders: `{d}` the result, `{a} {b} {c}`
//! the operands, `{t}` the PTX type, `{one} {zero}` constants of that type, `{s}` a
//! scratch register of the result type and `{p}` a scratch predicate; a cast or an op
//! whose result is bf16 or tf32 also uses `{e}` (the f32 result before rounding) and
//! `{r}` (a 32-bit scratch for the rounded bits).
//!
//! Float arithmetic carries `.rn` so that ptxas does not contract `mul` and `add` into
//! `fma`, which would round differently from the reference interpreter. `exp` and
//! `log` scale by log2(e) and ln(2) around the hardware `ex2` and `lg2`.

use crate::ptx::{Builder, Operand, Ty};
use calib_ir::{DType, Op};

struct Rule {
    op: &'static str,
    float: &'static [&'static str],
    /// Empty where the op has no integer form.
    int: &'static [&'static str],
}

// 0f3FB8AA3B = log2(e), 0fBFB8AA3B = -log2(e), 0f3F317218 = ln(2).
const RULES: &[Rule] = &[
    Rule {
        op: "neg",
        float: &["neg.f32 {d}, {a}"],
        int: &["neg.s64 {d}, {a}"],
    },
    Rule {
        op: "exp",
        float: &["mul.rn.f32 {s}, {a}, 0f3FB8AA3B", "ex2.approx.f32 {d}, {s}"],
        int: &[],
    },
    Rule {
        op: "log",
        float: &["lg2.approx.f32 {s}, {a}", "mul.rn.f32 {d}, {s}, 0f3F317218"],
        int: &[],
    },
    Rule {
        op: "sqrt",
        float: &["sqrt.rn.f32 {d}, {a}"],
        int: &[],
    },
    Rule {
        op: "rsqrt",
        float: &["rsqrt.approx.f32 {d}, {a}"],
        int: &[],
    },
    Rule {
        op: "sigmoid",
        float: &[
            "mul.rn.f32 {s}, {a}, 0fBFB8AA3B",
            "ex2.approx.f32 {s}, {s}",
            "add.rn.f32 {s}, {s}, 0f3F800000",
            // Not `rcp.rn`: its IEEE slow path is a subroutine call whose stack frame
            // spills live registers in every kernel that evaluates a gate, and `ex2.approx`
            // already bounds the result's precision. (A denominator above 2^126 flushes
            // the gate to zero instead of to a subnormal.)
            "rcp.approx.ftz.f32 {d}, {s}",
        ],
        int: &[],
    },
    Rule {
        op: "relu",
        float: &["max.NaN.f32 {d}, {a}, {zero}"],
        int: &["max.s64 {d}, {a}, 0"],
    },
    Rule {
        op: "add",
        float: &["add.rn.f32 {d}, {a}, {b}"],
        int: &["add.s64 {d}, {a}, {b}"],
    },
    Rule {
        op: "sub",
        float: &["sub.rn.f32 {d}, {a}, {b}"],
        int: &["sub.s64 {d}, {a}, {b}"],
    },
    Rule {
        op: "mul",
        float: &["mul.rn.f32 {d}, {a}, {b}"],
        int: &["mul.lo.s64 {d}, {a}, {b}"],
    },
    Rule {
        op: "div",
        float: &["div.rn.f32 {d}, {a}, {b}"],
        int: &[],
    },
    Rule {
        op: "max",
        float: &["max.NaN.f32 {d}, {a}, {b}"],
        int: &["max.s64 {d}, {a}, {b}"],
    },
    Rule {
        op: "cmp_gt",
        float: CMP_GT,
        int: CMP_GT,
    },
    Rule {
        op: "cmp_ge",
        float: CMP_GE,
        int: CMP_GE,
    },
    Rule {
        op: "cmp_eq",
        float: CMP_EQ,
        int: CMP_EQ,
    },
    Rule {
        op: "select",
        float: SELECT,
        int: SELECT,
    },
];

const CMP_GT: &[&str] = &[
    "setp.gt.{t} {p}, {a}, {b}",
    "selp.{t} {d}, {one}, {zero}, {p}",
];
const CMP_GE: &[&str] = &[
    "setp.ge.{t} {p}, {a}, {b}",
    "selp.{t} {d}, {one}, {zero}, {p}",
];
const CMP_EQ: &[&str] = &[
    "setp.eq.{t} {p}, {a}, {b}",
    "selp.{t} {d}, {one}, {zero}, {p}",
];
const SELECT: &[&str] = &[
    "setp.ne.{t} {p}, {a}, {zero}",
    "selp.{t} {d}, {b}, {c}, {p}",
];

/// Conversions by (from, to) dtype; float to integer truncates toward zero and
/// saturates, as Rust's `as` does in the reference interpreter. bf16 and tf32 values
/// are held in f32 registers already rounded, so widening them is a move, and rounding
/// to them is [`ROUND_BF16`] or [`ROUND_TF32`] (from either of them too: a bf16 is a
/// tf32 and back exactly, and a tf32 rounds to bf16 in one step, as the reference does).
const CASTS: &[(DType, DType, &[&str])] = &[
    (DType::F32, DType::I64, &["cvt.rzi.s64.f32 {d}, {a}"]),
    (DType::I64, DType::F32, &["cvt.rn.f32.s64 {d}, {a}"]),
    (DType::F32, DType::BF16, ROUND_BF16),
    (DType::TF32, DType::BF16, ROUND_BF16),
    (DType::F32, DType::TF32, ROUND_TF32),
    (DType::BF16, DType::TF32, ROUND_TF32),
];

/// An f32 register rounded to bf16 (to nearest even) and widened back: `cvt` packs the
/// rounded value into the high half of a 32-bit word whose low half is bf16(0.0) = 0,
/// which is exactly the f32 bit pattern of the bf16 value. (`cvt.rn.bf16x2.f32` is
/// sm_80 PTX 7.0, like the tensor-core path; it needs no 16-bit registers.)
const ROUND_BF16: &[&str] = &[
    "mov.f32 {s}, 0f00000000",
    "cvt.rn.bf16x2.f32 {r}, {a}, {s}",
    "mov.b32 {d}, {r}",
];

/// An f32 register rounded to TF32 (to nearest, ties away from zero): the result's bits
/// are an f32 with the low 13 mantissa bits zero.
const ROUND_TF32: &[&str] = &["cvt.rna.tf32.f32 {r}, {a}", "mov.b32 {d}, {r}"];

/// How a value of `dtype` computed in f32 is rounded to it, if it needs to be.
fn rounding(dtype: DType) -> Option<&'static [&'static str]> {
    match dtype {
        DType::BF16 => Some(ROUND_BF16),
        DType::TF32 => Some(ROUND_TF32),
        _ => None,
    }
}

/// The constants 1 and 0 in registers of type `ty`.
pub(crate) fn one_zero(ty: Ty) -> (Operand, Operand) {
    match ty {
        Ty::F32 => (Operand::f32(1.0), Operand::f32(0.0)),
        _ => (Operand::Int(1), Operand::Int(0)),
    }
}

/// A value's element type and the register type holding it.
pub(crate) type Typed = (DType, Ty);

/// Emits elementwise `op` producing `result` from `args` (its operands at one index, of
/// type `operand`), or says why the table has no rule for it.
pub(crate) fn elementwise(
    b: &mut Builder,
    op: &Op,
    (dtype, ty): Typed,
    (from, arg_ty): Typed,
    args: &[Operand],
) -> std::result::Result<Operand, String> {
    let templates: Vec<String> = match op {
        Op::Cast { to } => {
            // A bf16 or TF32 value is held as the f32 it is exactly: widening it is no
            // instruction (a `mov` would only be counted, then coalesced by ptxas).
            if from == *to || (*to == DType::F32 && matches!(from, DType::BF16 | DType::TF32)) {
                return Ok(args[0]);
            }
            match CASTS.iter().find(|c| c.0 == from && c.1 == *to) {
                Some(c) => c.2.iter().map(|l| l.to_string()).collect(),
                None => return Err(format!("no cast from {from} to {to}")),
            }
        }
        op => {
            let rule = RULES.iter().find(|r| r.op == op.name());
            let lines = rule.map(|r| if ty.is_float() { r.float } else { r.int });
            match lines {
                // An op computing in bf16 or tf32 computes in f32, then rounds, as the
                // reference interpreter does: the result goes through a scratch `{e}`.
                Some(lines) if !lines.is_empty() => match rounding(dtype) {
                    Some(round) => lines
                        .iter()
                        .map(|l| l.replace("{d}", "{e}"))
                        .chain(round.iter().map(|l| l.replace("{a}", "{e}")))
                        .collect(),
                    None => lines.iter().map(|l| l.to_string()).collect(),
                },
                _ => return Err(format!("no {ty} rule in the op table")),
            }
        }
    };
    // Immediates go through registers: not every instruction takes them everywhere, and
    // ptxas folds the moves.
    let args: Vec<Operand> = args
        .iter()
        .map(|&a| b.materialize(a, arg_ty).into())
        .collect();
    let d = b.reg(ty);
    let uses = |name: &str| templates.iter().any(|l| l.contains(name));
    let s = if uses("{s}") {
        b.reg(ty).to_string()
    } else {
        String::new()
    };
    let p = if uses("{p}") {
        b.reg(Ty::Pred).to_string()
    } else {
        String::new()
    };
    // The unrounded result of an op computing in bf16/tf32, and a rounding's bits.
    let e = if uses("{e}") {
        b.reg(Ty::F32).to_string()
    } else {
        String::new()
    };
    let r = if uses("{r}") {
        b.reg(Ty::U32).to_string()
    } else {
        String::new()
    };
    let (one, zero) = one_zero(ty);
    for line in &templates {
        let mut text = line
            .replace("{d}", &d.to_string())
            .replace("{s}", &s)
            .replace("{p}", &p)
            .replace("{e}", &e)
            .replace("{r}", &r)
            .replace("{t}", ty.name())
            .replace("{one}", &one.to_string())
            .replace("{zero}", &zero.to_string());
        for (name, a) in ["{a}", "{b}", "{c}"].iter().zip(&args) {
            text = text.replace(name, &a.to_string());
        }
        b.emit(text);
    }
    Ok(d.into())
}
