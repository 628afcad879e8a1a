//! A kernel body under construction: lexical register scopes, labels and their branch
//! fix-ups, and the layout of shared memory.

use super::SharedDecl;
use crate::sim::ast::{Instruction, Kernel, Op, Operand, PredSrc, Reg, Register, SharedVar};
use crate::sim::decode::{self, Names, RawInstruction, Symbol};
use crate::sim::error::ParseError;
use crate::sim::types::Ty;
use std::collections::HashMap;

/// Registers one kernel may declare: each costs 256 bytes per simulated warp.
const MAX_REGISTERS: usize = 16384;

/// A kernel body under construction: scopes, labels and shared layout.
pub(super) struct Body<'k> {
    kernel: &'k mut Kernel,
    scopes: Vec<HashMap<String, Reg>>,
    shared: HashMap<String, usize>,
    /// The offset of the dynamic shared array once something has used it.
    dynamic_base: Option<usize>,
    dynamic_align: usize,
    dynamic_names: Vec<String>,
    labels: HashMap<String, usize>,
    label_ids: HashMap<String, usize>,
    /// Branches waiting for their label: (instruction index, label id, line).
    fixups: Vec<(usize, usize, usize)>,
}

impl<'k> Body<'k> {
    pub(super) fn new(kernel: &'k mut Kernel) -> Self {
        Body {
            kernel,
            scopes: vec![HashMap::new()],
            shared: HashMap::new(),
            dynamic_base: None,
            dynamic_align: 1,
            dynamic_names: Vec::new(),
            labels: HashMap::new(),
            label_ids: HashMap::new(),
            fixups: Vec::new(),
        }
    }

    pub(super) fn declare_register(
        &mut self,
        name: &str,
        ty: Ty,
        line: usize,
    ) -> Result<(), ParseError> {
        if self.kernel.registers.len() >= MAX_REGISTERS {
            return Err(ParseError::new(
                line,
                name,
                format!("more than {MAX_REGISTERS} registers declared"),
            ));
        }
        let scope = self.scopes.last_mut().expect("a scope is always open");
        if scope.contains_key(name) {
            return Err(ParseError::new(
                line,
                name,
                "register declared twice in one scope",
            ));
        }
        let reg = Reg(self.kernel.registers.len() as u32);
        self.kernel.registers.push(Register {
            name: name.to_string(),
            ty,
        });
        scope.insert(name.to_string(), reg);
        Ok(())
    }

    pub(super) fn declare_shared(&mut self, decl: &SharedDecl) -> Result<(), ParseError> {
        if self.shared.contains_key(&decl.name) {
            return Err(ParseError::new(
                decl.line,
                &decl.name,
                "shared variable declared twice",
            ));
        }
        let Some(bytes) = decl.bytes else {
            self.dynamic_align = self.dynamic_align.max(decl.align);
            self.dynamic_names.push(decl.name.clone());
            self.shared.insert(decl.name.clone(), usize::MAX);
            return Ok(());
        };
        if self.dynamic_base.is_some() {
            return Err(ParseError::new(
                decl.line,
                &decl.name,
                "static .shared variable declared after the dynamic .extern array was used",
            ));
        }
        let offset = self.kernel.static_shared_bytes.next_multiple_of(decl.align);
        self.kernel.static_shared_bytes = offset + bytes;
        self.kernel.shared.push(SharedVar {
            name: decl.name.clone(),
            offset,
            bytes: Some(bytes),
        });
        self.shared.insert(decl.name.clone(), offset);
        Ok(())
    }

    pub(super) fn define_label(&mut self, name: &str, line: usize) -> Result<(), ParseError> {
        let here = self.kernel.body.len();
        if self.labels.insert(name.to_string(), here).is_some() {
            return Err(ParseError::new(line, name, "label defined twice"));
        }
        Ok(())
    }

    pub(super) fn push(&mut self, raw: RawInstruction) -> Result<(), ParseError> {
        let err = |message: String| ParseError::new(raw.line, &raw.text, message);
        let guard = match &raw.guard {
            None => None,
            Some((name, negated)) => match self.register(name) {
                Some((reg, Ty::Pred)) => Some(PredSrc {
                    operand: Operand::Reg(reg),
                    negated: *negated,
                }),
                Some(_) => return Err(err(format!("guard {name} is not a .pred register"))),
                None => return Err(err(format!("undeclared guard register {name}"))),
            },
        };
        let mut names = BodyNames {
            body: self,
            label: None,
        };
        let op = decode::decode(&raw, &mut names).map_err(err)?;
        if let Some(label) = names.label {
            self.fixups.push((self.kernel.body.len(), label, raw.line));
        }
        self.kernel.body.push(Instruction {
            line: raw.line,
            text: raw.text,
            guard,
            op,
        });
        Ok(())
    }

    pub(super) fn open_scope(&mut self) {
        self.scopes.push(HashMap::new());
    }

    pub(super) fn depth(&self) -> usize {
        self.scopes.len()
    }

    pub(super) fn close_scope(&mut self) {
        self.scopes.pop();
    }

    fn register(&self, name: &str) -> Option<(Reg, Ty)> {
        self.scopes
            .iter()
            .rev()
            .find_map(|s| s.get(name))
            .map(|&reg| {
                let ty = self.kernel.registers[reg.0 as usize].ty;
                (reg, ty)
            })
    }

    /// Resolves branch targets and records the dynamic shared array.
    pub(super) fn finish(self) -> Result<(), ParseError> {
        let names_by_id: HashMap<usize, &String> = self
            .label_ids
            .iter()
            .map(|(name, &id)| (id, name))
            .collect();
        for (index, id, line) in self.fixups {
            let name = names_by_id[&id];
            let target = *self
                .labels
                .get(name)
                .ok_or_else(|| ParseError::new(line, name, "branch to an undefined label"))?;
            if let Op::Bra { target: t } = &mut self.kernel.body[index].op {
                *t = target;
            }
        }
        // Only a kernel that addresses the dynamic array lays it out, as ptxas does.
        let Some(base) = self.dynamic_base else {
            return Ok(());
        };
        for name in self.dynamic_names {
            self.kernel.shared.push(SharedVar {
                name,
                offset: base,
                bytes: None,
            });
        }
        Ok(())
    }
}

/// Name resolution for the decoder, seen from the current scope.
struct BodyNames<'a, 'k> {
    body: &'a mut Body<'k>,
    label: Option<usize>,
}

impl Names for BodyNames<'_, '_> {
    fn register(&self, name: &str) -> Option<(Reg, Ty)> {
        self.body.register(name)
    }

    fn symbol(&mut self, name: &str) -> Option<Symbol> {
        if let Some(&offset) = self.body.shared.get(name) {
            if offset != usize::MAX {
                return Some(Symbol::Shared(offset as u64));
            }
            let kernel = &self.body.kernel;
            let align = self.body.dynamic_align;
            let base = *self
                .body
                .dynamic_base
                .get_or_insert_with(|| kernel.static_shared_bytes.next_multiple_of(align));
            return Some(Symbol::Shared(base as u64));
        }
        self.body
            .kernel
            .params
            .iter()
            .find(|p| p.name == name)
            .map(|p| Symbol::Param(p.offset as u64))
    }

    fn label(&mut self, name: &str) -> usize {
        let next = self.body.label_ids.len();
        let id = *self.body.label_ids.entry(name.to_string()).or_insert(next);
        self.label = Some(id);
        id
    }
}
