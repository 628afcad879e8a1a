//! `mma.sync.aligned` and `ldmatrix.sync.aligned`: the warp-wide tensor-core instructions.
//! Their operands are register vectors whose lengths the shape fixes.

use super::{Cx, Mods, RawOperand};
use crate::sim::ast::{Mma, MmaInput, Op, Reg, Space};
use crate::sim::types::Ty;

/// Input types with the one `k` the simulator executes for each (m16n8 shapes).
const INPUTS: [(&str, MmaInput, usize); 3] = [
    ("tf32", MmaInput::Tf32, 8),
    ("bf16", MmaInput::Bf16, 16),
    ("f16", MmaInput::F16, 16),
];

pub(super) fn mma(cx: &mut Cx, m: &mut Mods) -> Result<Op, String> {
    if !(m.has("sync") && m.has("aligned")) {
        return Err("only mma.sync.aligned is supported".into());
    }
    let shape = m.one_of(&["m16n8k8", "m16n8k16"]).ok_or_else(|| {
        format!(
            "unsupported mma shape in `{}`: the simulator executes m16n8k8 (tf32) and \
             m16n8k16 (bf16, f16)",
            m.opcode
        )
    })?;
    if !(m.has("row") && m.has("col")) {
        return Err("mma needs the .row.col layouts (A row-major, B column-major)".into());
    }
    // What remains are the four types, in the order D, A, B, C.
    let types = std::mem::take(&mut m.list);
    let input = match types[..] {
        ["f32", a, b, "f32"] if a == b => INPUTS.iter().find(|i| i.0 == a),
        _ => None,
    }
    .ok_or_else(|| {
        format!(
            "unsupported mma types `.{}`: the simulator executes .f32.tf32.tf32.f32, \
             .f32.bf16.bf16.f32 and .f32.f16.f16.f32",
            types.join(".")
        )
    })?;
    let k: usize = shape["m16n8k".len()..].parse().expect("listed shapes");
    if k != input.2 {
        return Err(format!(
            "mma with .{} inputs is executed for m16n8k{}, not {shape}",
            input.0, input.2
        ));
    }
    cx.arity(4)?;
    Ok(Op::Mma(Box::new(Mma {
        k,
        input: input.1,
        d: regs(cx, 0, "D", Ty::F32)?,
        a: regs(cx, 1, "A", Ty::B32)?,
        b: regs(cx, 2, "B", Ty::B32)?,
        c: regs(cx, 3, "C", Ty::F32)?,
    })))
}

/// Operand `i`, a vector of exactly `N` registers of at least `ty`'s width.
fn regs<const N: usize>(cx: &Cx, i: usize, what: &str, ty: Ty) -> Result<[Reg; N], String> {
    let names = cx
        .vector(i, N)
        .map_err(|e| format!("mma's {what} operand: {e}"))?;
    let mut out = [Reg(0); N];
    for (slot, name) in out.iter_mut().zip(&names) {
        *slot = cx
            .reg(name, ty)
            .map_err(|e| format!("mma's {what} operand: {e}"))?;
    }
    Ok(out)
}

pub(super) fn ldmatrix(cx: &mut Cx, m: &mut Mods) -> Result<Op, String> {
    if !(m.has("sync") && m.has("aligned")) {
        return Err("only ldmatrix.sync.aligned is supported".into());
    }
    if !m.has("m8n8") {
        return Err("ldmatrix is executed for the .m8n8 shape only".into());
    }
    let count = match m.one_of(&["x1", "x2", "x4"]) {
        Some("x1") => 1,
        Some("x2") => 2,
        Some(_) => 4,
        None => return Err("ldmatrix needs .x1, .x2 or .x4".into()),
    };
    let trans = m.has("trans");
    if m.one_of(&["shared", "shared::cta"]).is_none() {
        return Err("ldmatrix reads the .shared state space".into());
    }
    if m.ty()? != Ty::B16 {
        return Err("ldmatrix is executed for .b16 elements".into());
    }
    cx.arity(2)?;
    let names = cx.vector(0, count)?;
    let dst = names
        .iter()
        .map(|n| cx.reg(n, Ty::B32))
        .collect::<Result<_, _>>()?;
    if !matches!(cx.raw.operands[1], RawOperand::Address { .. }) {
        return Err("ldmatrix's second operand must be an address `[...]`".into());
    }
    Ok(Op::Ldmatrix {
        trans,
        dst,
        addr: cx.addr(1, Space::Shared)?,
    })
}
