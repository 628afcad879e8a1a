//! The statement-level PTX parser: module directives, entry signatures, declarations,
//! scopes and labels. Each instruction is handed to [`decode`](super::decode) while the
//! scope it appears in is still open, so register names resolve lexically.

mod body;

use super::ast::{Kernel, Module, Param};
use super::decode::{Literal, RawInstruction, RawOperand};
use super::error::ParseError;
use super::lex::{tokenize, Tok, Token};
use super::types::Ty;
use body::Body;

/// Nested `{ }` scopes a kernel may open; parsing recurses once per level.
const MAX_SCOPE_DEPTH: usize = 64;

/// Parses PTX source into a [`Module`]. Anything outside the supported subset is an
/// error naming the line and the construct.
pub fn parse(src: &str) -> Result<Module, ParseError> {
    let tokens = tokenize(src)?;
    let mut p = Parser {
        toks: tokens,
        pos: 0,
    };
    let mut module = Module {
        version: (0, 0),
        targets: Vec::new(),
        kernels: Vec::new(),
    };
    let mut module_shared: Vec<SharedDecl> = Vec::new();
    // `.visible`, `.weak` or `.extern` before the declaration that follows.
    let mut linkage: Option<String> = None;
    while let Some(tok) = p.peek().cloned() {
        let word = match &tok.kind {
            Tok::Word(w) => w.clone(),
            other => return Err(p.error_at(&tok, format!("unexpected {}", other.describe()))),
        };
        p.pos += 1;
        match word.as_str() {
            ".version" => module.version = p.version()?,
            ".target" => {
                module.targets.push(p.word()?);
                while p.eat(',') {
                    module.targets.push(p.word()?);
                }
            }
            ".address_size" => {
                let (line, n) = p.number()?;
                if n != "64" {
                    return Err(ParseError::new(
                        line,
                        &n,
                        "only .address_size 64 is supported",
                    ));
                }
            }
            ".visible" | ".weak" | ".extern" if linkage.is_none() => {
                linkage = Some(word);
                continue;
            }
            ".entry" => {
                let kernel = p.entry(tok.line, &module_shared)?;
                if module.kernel(&kernel.name).is_some() {
                    return Err(ParseError::new(
                        tok.line,
                        &kernel.name,
                        "kernel defined twice",
                    ));
                }
                module.kernels.push(kernel);
            }
            ".shared" => {
                let decl = p.shared_decl(tok.line, linkage.as_deref() == Some(".extern"))?;
                module_shared.push(decl);
            }
            ".func" => return Err(p.error_at(&tok, "device functions (.func) are not supported")),
            _ => return Err(p.error_at(&tok, "unsupported module-level directive")),
        }
        linkage = None;
    }
    if module.version == (0, 0) {
        return Err(ParseError::new(1, "", "missing .version directive"));
    }
    Ok(module)
}

/// A `.shared` declaration before layout.
#[derive(Clone, Debug)]
struct SharedDecl {
    name: String,
    align: usize,
    /// `None` for `.extern` dynamic arrays (`name[]`).
    bytes: Option<usize>,
    line: usize,
}

struct Parser {
    toks: Vec<Token>,
    pos: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Token> {
        self.toks.get(self.pos)
    }

    fn line(&self) -> usize {
        self.peek()
            .or_else(|| self.toks.last())
            .map_or(1, |t| t.line)
    }

    fn error_at(&self, tok: &Token, message: impl Into<String>) -> ParseError {
        let text = match &tok.kind {
            Tok::Word(w) | Tok::Number(w) => w.clone(),
            Tok::Punct(c) => c.to_string(),
            Tok::Str(s) => format!("\"{s}\""),
        };
        ParseError::new(tok.line, &text, message)
    }

    fn unexpected(&self, wanted: &str) -> ParseError {
        match self.peek() {
            Some(tok) => self.error_at(
                tok,
                format!("expected {wanted}, found {}", tok.kind.describe()),
            ),
            None => ParseError::new(
                self.line(),
                "",
                format!("expected {wanted}, found end of input"),
            ),
        }
    }

    fn eat(&mut self, c: char) -> bool {
        if self.peek().map(|t| &t.kind) == Some(&Tok::Punct(c)) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn expect(&mut self, c: char) -> Result<(), ParseError> {
        if self.eat(c) {
            Ok(())
        } else {
            Err(self.unexpected(&format!("`{c}`")))
        }
    }

    fn word(&mut self) -> Result<String, ParseError> {
        match self.peek().map(|t| &t.kind) {
            Some(Tok::Word(w)) => {
                let w = w.clone();
                self.pos += 1;
                Ok(w)
            }
            _ => Err(self.unexpected("a name")),
        }
    }

    fn peek_word(&self) -> Option<&str> {
        match self.peek().map(|t| &t.kind) {
            Some(Tok::Word(w)) => Some(w),
            _ => None,
        }
    }

    fn number(&mut self) -> Result<(usize, String), ParseError> {
        match self.peek() {
            Some(Token {
                kind: Tok::Number(n),
                line,
            }) => {
                let out = (*line, n.clone());
                self.pos += 1;
                Ok(out)
            }
            _ => Err(self.unexpected("a number")),
        }
    }

    fn count(&mut self) -> Result<usize, ParseError> {
        let (line, n) = self.number()?;
        match Literal::parse(&n) {
            Some(Literal::Int(v)) if v >= 0 && v <= u32::MAX as i128 => Ok(v as usize),
            _ => Err(ParseError::new(line, &n, "expected a non-negative integer")),
        }
    }

    fn version(&mut self) -> Result<(u32, u32), ParseError> {
        let (line, n) = self.number()?;
        let parsed = n
            .split_once('.')
            .and_then(|(a, b)| Some((a.parse().ok()?, b.parse().ok()?)));
        parsed.ok_or_else(|| ParseError::new(line, &n, "expected a version such as 7.8"))
    }

    /// `.shared [.align A] .type name[N]...;` after the `.shared` word.
    fn shared_decl(&mut self, line: usize, is_extern: bool) -> Result<SharedDecl, ParseError> {
        let mut align = None;
        let mut ty = None;
        while let Some(w) = self.peek_word().filter(|w| w.starts_with('.')) {
            let w = w.to_string();
            self.pos += 1;
            if w == ".align" {
                align = Some(self.count()?);
            } else if let Some(t) = Ty::from_name(&w[1..]) {
                ty = Some(t);
            } else {
                return Err(ParseError::new(line, &w, "unsupported .shared attribute"));
            }
        }
        let ty = ty.ok_or_else(|| self.unexpected("a type for the .shared variable"))?;
        let name = self.word()?;
        let mut bytes = Some(ty.bytes());
        let mut dims = 0;
        while self.eat('[') {
            dims += 1;
            if self.eat(']') {
                if !is_extern || dims > 1 {
                    return Err(ParseError::new(
                        line,
                        &name,
                        "only an .extern .shared array may be unsized",
                    ));
                }
                bytes = None;
                continue;
            }
            let n = self.count()?;
            bytes = match bytes.map(|b| b.checked_mul(n)) {
                Some(None) => return Err(ParseError::new(line, &name, "shared array too large")),
                b => b.flatten(),
            };
            self.expect(']')?;
        }
        self.expect(';')?;
        let align = align.unwrap_or(ty.bytes());
        if !align.is_power_of_two() {
            return Err(ParseError::new(
                line,
                &name,
                "alignment must be a power of two",
            ));
        }
        Ok(SharedDecl {
            name,
            align,
            bytes,
            line,
        })
    }

    /// `.entry name ( params ) directives { body }` after the `.entry` word.
    fn entry(&mut self, line: usize, module_shared: &[SharedDecl]) -> Result<Kernel, ParseError> {
        let name = self.word()?;
        let params = self.params()?;
        let param_bytes = params.last().map_or(0, |p| p.offset + p.bytes);
        let mut kernel = Kernel {
            name,
            line,
            params,
            param_bytes,
            registers: Vec::new(),
            shared: Vec::new(),
            static_shared_bytes: 0,
            max_ntid: None,
            req_ntid: None,
            body: Vec::new(),
        };
        while let Some(w) = self.peek_word().map(str::to_string) {
            self.pos += 1;
            match w.as_str() {
                ".maxntid" => kernel.max_ntid = Some(self.dims()?),
                ".reqntid" => kernel.req_ntid = Some(self.dims()?),
                // Occupancy hints that do not change what a launch computes.
                ".minnctapersm" | ".maxnreg" | ".maxnctapersm" => {
                    self.count()?;
                }
                _ => {
                    return Err(ParseError::new(
                        self.line(),
                        &w,
                        "unsupported performance directive",
                    ))
                }
            }
        }
        let mut body = Body::new(&mut kernel);
        for decl in module_shared {
            body.declare_shared(decl)?;
        }
        self.expect('{')?;
        self.body(&mut body)?;
        body.finish()?;
        Ok(kernel)
    }

    fn dims(&mut self) -> Result<[u32; 3], ParseError> {
        let mut d = [1u32; 3];
        d[0] = self.count()? as u32;
        for slot in d.iter_mut().skip(1) {
            if !self.eat(',') {
                break;
            }
            *slot = self.count()? as u32;
        }
        Ok(d)
    }

    fn params(&mut self) -> Result<Vec<Param>, ParseError> {
        let mut params: Vec<Param> = Vec::new();
        self.expect('(')?;
        if self.eat(')') {
            return Ok(params);
        }
        loop {
            let line = self.line();
            if self.word()? != ".param" {
                return Err(ParseError::new(line, "", "expected .param"));
            }
            let mut ty = None;
            let mut align = None;
            while let Some(w) = self.peek_word().filter(|w| w.starts_with('.')) {
                let w = w.to_string();
                self.pos += 1;
                // `.ptr.global.align 16` arrives as one word: read it part by part.
                for part in w[1..].split('.') {
                    match part {
                        "ptr" | "global" | "shared" | "const" | "local" => {}
                        "align" => align = Some(self.count()?),
                        _ => match Ty::from_name(part) {
                            Some(t) if t != Ty::Pred => ty = Some(t),
                            _ => {
                                return Err(ParseError::new(
                                    line,
                                    &w,
                                    "unsupported .param attribute",
                                ))
                            }
                        },
                    }
                }
            }
            let ty = ty.ok_or_else(|| self.unexpected("a parameter type"))?;
            let name = self.word()?;
            let mut bytes = ty.bytes();
            if self.eat('[') {
                bytes = bytes
                    .checked_mul(self.count()?)
                    .ok_or_else(|| ParseError::new(line, &name, "parameter array too large"))?;
                self.expect(']')?;
            }
            let align = align.unwrap_or(ty.bytes());
            let end = params.last().map_or(0, |p| p.offset + p.bytes);
            params.push(Param {
                name,
                ty,
                bytes,
                offset: end.next_multiple_of(align.max(1)),
            });
            if self.eat(')') {
                return Ok(params);
            }
            self.expect(',')?;
        }
    }

    /// Statements up to the `}` closing the current scope.
    fn body(&mut self, body: &mut Body) -> Result<(), ParseError> {
        loop {
            let Some(tok) = self.peek().cloned() else {
                return Err(self.unexpected("`}` closing the kernel body"));
            };
            match &tok.kind {
                Tok::Punct('}') => {
                    self.pos += 1;
                    return Ok(());
                }
                Tok::Punct('{') => {
                    self.pos += 1;
                    if body.depth() >= MAX_SCOPE_DEPTH {
                        return Err(self.error_at(&tok, "scopes nested too deeply"));
                    }
                    body.open_scope();
                    self.body(body)?;
                    body.close_scope();
                }
                Tok::Word(w) if w == ".reg" => {
                    self.pos += 1;
                    self.reg_decl(body, tok.line)?;
                }
                Tok::Word(w) if w == ".shared" || w == ".extern" => {
                    self.pos += 1;
                    let is_extern = w == ".extern";
                    if is_extern && self.word()? != ".shared" {
                        return Err(
                            self.error_at(&tok, "only .extern .shared is supported in a kernel")
                        );
                    }
                    let decl = self.shared_decl(tok.line, is_extern)?;
                    body.declare_shared(&decl)?;
                }
                // An optimization hint for ptxas (`.pragma "nounroll";`): nothing to
                // execute.
                Tok::Word(w) if w == ".pragma" => {
                    self.pos += 1;
                    match self.peek().map(|t| &t.kind) {
                        Some(Tok::Str(_)) => self.pos += 1,
                        _ => return Err(self.error_at(&tok, "`.pragma` takes a string")),
                    }
                    self.expect(';')?;
                }
                Tok::Word(w) if w.starts_with('.') => {
                    return Err(self.error_at(&tok, "unsupported directive in a kernel body"));
                }
                Tok::Word(w)
                    if self.toks.get(self.pos + 1).map(|t| &t.kind) == Some(&Tok::Punct(':')) =>
                {
                    self.pos += 2;
                    body.define_label(w, tok.line)?;
                }
                _ => {
                    let raw = self.instruction()?;
                    body.push(raw)?;
                }
            }
        }
    }

    /// `.reg .ty a, b<N>, ...;` after the `.reg` word.
    fn reg_decl(&mut self, body: &mut Body, line: usize) -> Result<(), ParseError> {
        let ty_word = self.word()?;
        let ty = ty_word
            .strip_prefix('.')
            .and_then(Ty::from_name)
            .ok_or_else(|| ParseError::new(line, &ty_word, "unsupported register type"))?;
        loop {
            let name = self.word()?;
            if self.eat('<') {
                let n = self.count()?;
                self.expect('>')?;
                for i in 0..n {
                    body.declare_register(&format!("{name}{i}"), ty, line)?;
                }
            } else {
                body.declare_register(&name, ty, line)?;
            }
            if self.eat(';') {
                return Ok(());
            }
            self.expect(',')?;
        }
    }

    /// `[@[!]pred] opcode operands ;`
    fn instruction(&mut self) -> Result<RawInstruction, ParseError> {
        let start = self.pos;
        let line = self.line();
        let end = (start..self.toks.len())
            .find(|&i| self.toks[i].kind == Tok::Punct(';'))
            .ok_or_else(|| ParseError::new(line, "", "instruction without a terminating `;`"))?;
        let text = render(&self.toks[start..=end]);
        let err = |message: String| ParseError::new(line, &text, message);
        let mut guard = None;
        if self.eat('@') {
            let negated = self.eat('!');
            guard = Some((self.word().map_err(|e| err(e.message))?, negated));
        }
        let opcode = self.word().map_err(|e| err(e.message))?;
        let mut operands = Vec::new();
        while self.pos < end {
            operands.push(self.operand().map_err(|e| err(e.message))?);
            if self.pos < end {
                self.expect(',').map_err(|e| err(e.message))?;
            }
        }
        self.pos = end + 1;
        Ok(RawInstruction {
            line,
            text,
            guard,
            opcode,
            operands,
        })
    }

    fn operand(&mut self) -> Result<RawOperand, ParseError> {
        if self.eat('!') {
            return Ok(RawOperand::Not(self.word()?));
        }
        if self.eat('{') {
            let mut regs = vec![self.word()?];
            while self.eat(',') {
                regs.push(self.word()?);
            }
            self.expect('}')?;
            return Ok(RawOperand::Vector(regs));
        }
        if self.eat('[') {
            let mut base = None;
            let mut offset = 0;
            if self.peek_word().is_some() {
                base = Some(self.word()?);
                // `[%rd+8]`, `[%rd+-8]` or `[%rd-8]`: the sign belongs to the offset.
                let minus = self.peek().map(|t| &t.kind) == Some(&Tok::Punct('-'));
                if self.eat('+') || minus {
                    offset = self.signed_int()?;
                }
            } else {
                offset = self.signed_int()?;
            }
            self.expect(']')?;
            return Ok(RawOperand::Address { base, offset });
        }
        if matches!(
            self.peek().map(|t| &t.kind),
            Some(Tok::Number(_)) | Some(Tok::Punct('-'))
        ) {
            let negative = self.eat('-');
            let (line, n) = self.number()?;
            let lit = Literal::parse(&n)
                .ok_or_else(|| ParseError::new(line, &n, "malformed numeric literal"))?;
            return Ok(RawOperand::Literal(if negative {
                lit.negate()
            } else {
                lit
            }));
        }
        let name = self.word()?;
        if self.eat('|') {
            return Ok(RawOperand::Pair(name, self.word()?));
        }
        if self.eat('+') {
            return Ok(RawOperand::SymbolOffset(name, self.signed_int()?));
        }
        Ok(RawOperand::Name(name))
    }

    fn signed_int(&mut self) -> Result<i64, ParseError> {
        let negative = self.eat('-');
        let (line, n) = self.number()?;
        match Literal::parse(&n) {
            Some(Literal::Int(v)) => {
                let v = if negative { -v } else { v };
                i64::try_from(v).map_err(|_| ParseError::new(line, &n, "offset out of range"))
            }
            _ => Err(ParseError::new(line, &n, "expected an integer offset")),
        }
    }
}

/// Re-spells tokens the way PTX is usually written, for fault reports.
fn render(toks: &[Token]) -> String {
    let mut out = String::new();
    let mut prev: Option<&Tok> = None;
    for tok in toks {
        let tight_before = matches!(
            tok.kind,
            Tok::Punct(',' | ';' | ']' | '}' | ')' | '+' | '|')
        );
        let tight_after = matches!(
            prev,
            Some(Tok::Punct('[' | '{' | '(' | '!' | '@' | '+' | '-' | '|'))
        );
        if prev.is_some() && !tight_before && !tight_after {
            out.push(' ');
        }
        match &tok.kind {
            Tok::Word(w) | Tok::Number(w) => out.push_str(w),
            Tok::Punct(c) => out.push(*c),
            Tok::Str(s) => {
                out.push('"');
                out.push_str(s);
                out.push('"');
            }
        }
        prev = Some(&tok.kind);
    }
    out
}
