//! The instruction table: from an opcode with its modifiers and raw operands to a typed
//! [`Op`]. Every modifier is either understood, explicitly ignored (cache and memory-order
//! hints, which do not change a single launch's results), or an error that names it.

use super::ast::{Address, Alu, Op, Operand, PredSrc, Reg, Space, Special, SHARED_WINDOW};
use super::types::Ty;

mod arith;
mod async_copy;
mod collective;
mod literal;
mod memory;
mod mma;
mod packed;

pub(crate) use literal::Literal;

/// An instruction as written, before names and modifiers are understood.
#[derive(Clone, Debug)]
pub(crate) struct RawInstruction {
    pub line: usize,
    pub text: String,
    /// `@name` or `@!name`.
    pub guard: Option<(String, bool)>,
    pub opcode: String,
    pub operands: Vec<RawOperand>,
}

#[derive(Clone, Debug, PartialEq)]
pub(crate) enum RawOperand {
    /// A register, special register, symbol or label.
    Name(String),
    /// `symbol+offset`.
    SymbolOffset(String, i64),
    Literal(Literal),
    /// `!%p`.
    Not(String),
    /// `%r|%p` (a value and a predicate destination).
    Pair(String, String),
    /// `{%f1, %f2}`.
    Vector(Vec<String>),
    /// `[base+offset]`, `base` a register or symbol.
    Address {
        base: Option<String>,
        offset: i64,
    },
}

/// The address of a named variable.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Symbol {
    /// Offset in the block's shared memory.
    Shared(u64),
    /// Offset in the parameter buffer.
    Param(u64),
}

/// Name lookups the decoder needs from the enclosing scope.
pub(crate) trait Names {
    fn register(&self, name: &str) -> Option<(Reg, Ty)>;
    fn symbol(&mut self, name: &str) -> Option<Symbol>;
    /// An id for a branch target; the parser patches it to an instruction index.
    fn label(&mut self, name: &str) -> usize;
}

/// Decodes one instruction. Errors are messages; the parser adds line and text.
pub(crate) fn decode(raw: &RawInstruction, names: &mut dyn Names) -> Result<Op, String> {
    let mut parts = raw.opcode.split('.');
    let base = parts.next().unwrap_or_default();
    let mut m = Mods {
        opcode: &raw.opcode,
        list: parts.collect(),
    };
    let mut cx = Cx { raw, names };
    let op = match base {
        "mov" => mov(&mut cx, &mut m)?,
        "ld" | "st" => memory::load_store(&mut cx, &mut m, base == "ld")?,
        "cvta" => memory::cvta(&mut cx, &mut m)?,
        "cvt" if packed::is_packed_cvt(&m) => packed::cvt(&mut cx, &mut m)?,
        "cvt" => arith::cvt(&mut cx, &mut m)?,
        "mma" => mma::mma(&mut cx, &mut m)?,
        "ldmatrix" => mma::ldmatrix(&mut cx, &mut m)?,
        "cp" => async_copy::cp(&mut cx, &mut m)?,
        "add" | "sub" | "mul" | "mad" | "fma" | "div" | "rem" | "min" | "max" | "neg" | "abs"
        | "rcp" | "sqrt" | "rsqrt" | "ex2" | "lg2" | "sin" | "cos" | "tanh" => {
            arith::arithmetic(&mut cx, &mut m, base)?
        }
        "and" | "or" | "xor" | "not" | "shl" | "shr" | "popc" | "clz" | "brev" => {
            arith::bitwise(&mut cx, &mut m, base)?
        }
        "setp" => arith::setp(&mut cx, &mut m)?,
        "selp" => {
            let ty = m.ty()?;
            cx.arity(4)?;
            if matches!(cx.raw.operands[3], RawOperand::Not(_)) {
                return Err(
                    "selp takes a plain predicate; swap the operands instead of `!`".into(),
                );
            }
            Op::Alu {
                alu: Alu::Selp { bits: ty.bits() },
                dst: cx.dst(0, ty)?,
                src: vec![cx.src(1, ty)?, cx.src(2, ty)?, cx.src(3, Ty::Pred)?],
            }
        }
        "bra" => {
            m.ignore(&["uni"]);
            cx.arity(1)?;
            let RawOperand::Name(label) = &raw.operands[0] else {
                return Err("bra needs a label".into());
            };
            Op::Bra {
                target: cx.names.label(label),
            }
        }
        "ret" | "exit" => {
            m.ignore(&["uni"]);
            cx.arity(0)?;
            Op::Exit
        }
        "bar" | "barrier" => {
            m.ignore(&["cta", "aligned"]);
            if !m.has("sync") {
                return Err(format!("only {base}.sync is supported"));
            }
            if raw.operands.len() == 2 {
                return Err("barriers with a thread count are not supported".into());
            }
            cx.arity(1)?;
            Op::Bar {
                id: cx.src(0, Ty::U32)?,
            }
        }
        "shfl" => collective::shfl(&mut cx, &mut m)?,
        "vote" => collective::vote(&mut cx, &mut m)?,
        "atom" | "red" => memory::atomic(&mut cx, &mut m, base == "atom")?,
        "membar" | "fence" => {
            m.ignore(&["cta", "gl", "gpu", "sys", "sc", "acq_rel"]);
            Op::Fence
        }
        _ => return Err(format!("unsupported instruction `{base}`")),
    };
    m.done()?;
    Ok(op)
}

/// The modifiers of an opcode, consumed as they are understood.
struct Mods<'a> {
    opcode: &'a str,
    list: Vec<&'a str>,
}

impl<'a> Mods<'a> {
    fn has(&mut self, name: &'a str) -> bool {
        self.one_of(&[name]).is_some()
    }

    fn one_of(&mut self, names: &[&'a str]) -> Option<&'a str> {
        let i = self.list.iter().position(|m| names.contains(m))?;
        Some(self.list.remove(i))
    }

    fn ignore(&mut self, names: &[&str]) {
        self.list.retain(|m| !names.contains(m));
    }

    /// Removes and returns every type modifier, in order.
    fn types(&mut self) -> Vec<Ty> {
        let mut out = Vec::new();
        self.list.retain(|m| match Ty::from_name(m) {
            Some(t) => {
                out.push(t);
                false
            }
            None => true,
        });
        out
    }

    fn ty(&mut self) -> Result<Ty, String> {
        match self.types().as_slice() {
            [t] => Ok(*t),
            [] => Err(format!("`{}` needs a type modifier", self.opcode)),
            _ => Err(format!("`{}` has more than one type modifier", self.opcode)),
        }
    }

    fn done(&self) -> Result<(), String> {
        match self.list.first() {
            None => Ok(()),
            Some(m) => Err(format!("unsupported modifier `.{m}` in `{}`", self.opcode)),
        }
    }
}

/// Operand decoding for one instruction.
struct Cx<'a> {
    raw: &'a RawInstruction,
    names: &'a mut dyn Names,
}

impl Cx<'_> {
    fn arity(&self, n: usize) -> Result<(), String> {
        if self.raw.operands.len() == n {
            Ok(())
        } else {
            Err(format!(
                "`{}` takes {n} operands, found {}",
                self.raw.opcode,
                self.raw.operands.len()
            ))
        }
    }

    /// A declared register at least as wide as `ty` (`.pred` exactly for predicates).
    fn reg(&self, name: &str, ty: Ty) -> Result<Reg, String> {
        let (reg, declared) = self
            .names
            .register(name)
            .ok_or_else(|| format!("undeclared register {name}"))?;
        let fits = if ty == Ty::Pred || declared == Ty::Pred {
            ty == declared
        } else {
            declared.bits() >= ty.bits()
        };
        if !fits {
            return Err(format!(
                "register {name} is {declared}, the instruction needs {ty}"
            ));
        }
        Ok(reg)
    }

    /// Operand `i` as a vector `{...}` of exactly `n` names.
    fn vector(&self, i: usize, n: usize) -> Result<Vec<String>, String> {
        match &self.raw.operands[i] {
            RawOperand::Vector(v) if v.len() == n => Ok(v.clone()),
            RawOperand::Vector(v) => Err(format!(
                "operand {} needs {n} registers, found {}",
                i + 1,
                v.len()
            )),
            _ => Err(format!(
                "operand {} must be a vector of {n} registers `{{...}}`",
                i + 1
            )),
        }
    }

    fn dst(&self, i: usize, ty: Ty) -> Result<Reg, String> {
        match &self.raw.operands[i] {
            RawOperand::Name(name) => self.reg(name, ty),
            other => Err(format!(
                "operand {} must be a register, found {other:?}",
                i + 1
            )),
        }
    }

    fn src(&mut self, i: usize, ty: Ty) -> Result<Operand, String> {
        match &self.raw.operands[i] {
            RawOperand::Literal(lit) => Ok(Operand::Imm(lit.bits(ty)?)),
            RawOperand::Name(name) => {
                if let Some(special) = special(name)? {
                    return Ok(Operand::Special(special));
                }
                if self.names.register(name).is_some() {
                    return Ok(Operand::Reg(self.reg(name, ty)?));
                }
                self.symbol_address(name, 0)
            }
            RawOperand::SymbolOffset(name, offset) => self.symbol_address(name, *offset),
            other => Err(format!("operand {} cannot be {other:?}", i + 1)),
        }
    }

    fn symbol_address(&mut self, name: &str, offset: i64) -> Result<Operand, String> {
        match self.names.symbol(name) {
            Some(Symbol::Shared(base)) => Ok(Operand::Imm(base.wrapping_add(offset as u64))),
            Some(Symbol::Param(_)) => {
                Err(format!("the address of parameter {name} cannot be taken"))
            }
            None => Err(format!("undeclared name {name}")),
        }
    }

    fn pred(&mut self, i: usize) -> Result<PredSrc, String> {
        if let RawOperand::Not(name) = &self.raw.operands[i] {
            return Ok(PredSrc {
                operand: Operand::Reg(self.reg(name, Ty::Pred)?),
                negated: true,
            });
        }
        Ok(PredSrc {
            operand: self.src(i, Ty::Pred)?,
            negated: false,
        })
    }

    fn addr(&mut self, i: usize, space: Space) -> Result<Address, String> {
        let RawOperand::Address { base, offset } = &self.raw.operands[i] else {
            return Err(format!("operand {} must be an address `[...]`", i + 1));
        };
        let Some(base) = base else {
            return Ok(Address {
                base: None,
                offset: *offset,
            });
        };
        if self.names.register(base).is_some() {
            if space == Space::Param {
                return Err("parameters are addressed by name, not through a register".into());
            }
            let (_, ty) = self.names.register(base).expect("checked above");
            if !matches!(ty.bits(), 32 | 64) || ty.is_float() {
                return Err(format!("address register {base} is {ty}"));
            }
            return Ok(Address {
                base: Some(self.reg(base, ty)?),
                offset: *offset,
            });
        }
        let symbol_base = match (self.names.symbol(base), space) {
            (Some(Symbol::Shared(a)), Space::Shared) => a,
            (Some(Symbol::Shared(a)), Space::Generic) => a + SHARED_WINDOW,
            (Some(Symbol::Param(a)), Space::Param) => a,
            (Some(_), _) => {
                return Err(format!(
                    "{base} is not in the .{} state space",
                    space.name()
                ))
            }
            (None, _) => return Err(format!("undeclared name {base}")),
        };
        Ok(Address {
            base: None,
            offset: (symbol_base as i64).wrapping_add(*offset),
        })
    }
}

/// Special registers by name; `None` for names that are not special registers.
fn special(name: &str) -> Result<Option<Special>, String> {
    if !name.starts_with('%') && name != "WARP_SZ" {
        return Ok(None);
    }
    let dim = |d: &str| match d {
        "x" => Ok(0),
        "y" => Ok(1),
        "z" => Ok(2),
        _ => Err(format!("unsupported special register {name}")),
    };
    let s = match name.split_once('.') {
        Some(("%tid", d)) => Special::Tid(dim(d)?),
        Some(("%ntid", d)) => Special::Ntid(dim(d)?),
        Some(("%ctaid", d)) => Special::Ctaid(dim(d)?),
        Some(("%nctaid", d)) => Special::Nctaid(dim(d)?),
        None if name == "%laneid" => Special::LaneId,
        None if name == "%warpid" => Special::WarpId,
        None if name == "%nwarpid" => Special::NWarpId,
        None if name == "WARP_SZ" => Special::WarpSize,
        _ => {
            const KNOWN: [&str; 8] = [
                "%clock",
                "%clock64",
                "%smid",
                "%nsmid",
                "%gridid",
                "%lanemask_eq",
                "%globaltimer",
                "%pm0",
            ];
            if KNOWN.iter().any(|k| name.starts_with(k)) {
                return Err(format!("unsupported special register {name}"));
            }
            return Ok(None);
        }
    };
    Ok(Some(s))
}

fn mov(cx: &mut Cx, m: &mut Mods) -> Result<Op, String> {
    let ty = m.ty()?;
    cx.arity(2)?;
    if matches!(cx.raw.operands[0], RawOperand::Vector(_))
        || matches!(cx.raw.operands[1], RawOperand::Vector(_))
    {
        return packed::mov_vector(cx, ty);
    }
    Ok(Op::Alu {
        alu: Alu::Mov { bits: ty.bits() },
        dst: cx.dst(0, ty)?,
        src: vec![cx.src(1, ty)?],
    })
}
