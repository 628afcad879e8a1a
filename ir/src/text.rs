//! The text form of a graph: one node per line, SSA names, every value's type.
//!
//! ```text
//! graph {
//!   %0 = input name="x" : f32[2,8,16,16]
//!   %1 = param name="conv.weight" : f32[8,8,3,3]  @conv
//!   %2 = conv2d(%0, %1) stride=[1,1] padding=[1,1] dilation=[1,1] groups=1 : f32[2,8,16,16]  @conv
//!   %3 = relu(%2) : f32[2,8,16,16]
//!   return y=%3
//! }
//! ```
//!
//! Nothing here knows individual ops: a node's op is serialized with serde and every
//! field becomes `key=<compact JSON>` in declaration order, so a new [`Op`] variant needs
//! no text-form code. `%k` must be the k-th node. Output names and scopes are written
//! bare when they are plain dotted paths and as JSON strings otherwise. The parser also
//! accepts blank lines, `//` comment lines and free spacing.
//!
//! [`print()`] then [`parse()`] gives back an equal graph (up to NaN constants, which are
//! never equal to themselves) and printing that again gives identical text.

use crate::{DType, Graph, IrError, Node, Op, Result, TensorType, Value};
use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
use serde_json::Map;
use std::fmt::{self, Write};
use std::str::FromStr;

/// The text form of `graph`.
pub fn print(graph: &Graph) -> String {
    let mut out = String::from("graph {\n");
    for (id, node) in graph.nodes.iter().enumerate() {
        print_node(&mut out, id, node);
    }
    out.push_str("  return");
    for (i, o) in graph.outputs.iter().enumerate() {
        out.push_str(if i == 0 { " " } else { ", " });
        print_name(&mut out, &o.name);
        write!(out, "={}", o.value).unwrap();
    }
    out.push_str("\n}\n");
    out
}

/// Reads the text form and checks it like any graph from outside ([`Graph::validate`]).
/// Every error names the line it was found on.
///
/// ```
/// let src = "graph {\n  %0 = input name=\"x\" : f32[2]\n  %1 = relu(%0) : f32[2]\n  return y=%1\n}\n";
/// let g = calib_ir::text::parse(src).unwrap();
/// assert_eq!(calib_ir::text::print(&g), src);
///
/// let wrong = src.replace("relu(%0) : f32[2]", "relu(%0) : f32[3]");
/// let err = calib_ir::text::parse(&wrong).unwrap_err().to_string();
/// assert_eq!(err, "line 3: node %1 (relu): declared type f32[3] but the op produces f32[2]");
/// ```
pub fn parse(text: &str) -> Result<Graph> {
    let mut lines = text
        .lines()
        .enumerate()
        .map(|(i, line)| Cursor {
            line: i + 1,
            rest: line,
        })
        .filter(|c| !c.is_blank_or_comment());
    let eof_line = text.lines().count().max(1);
    let eof = |what: &str| IrError::Parse {
        line: eof_line,
        message: format!("unexpected end of input: {what}"),
    };

    let mut header = lines.next().ok_or_else(|| eof("expected `graph {`"))?;
    header.expect("graph", "to open the graph")?;
    header.expect("{", "after `graph`")?;
    header.end()?;

    let mut graph = Graph::new();
    let mut node_lines = Vec::new();
    let return_line = loop {
        let mut c = lines
            .next()
            .ok_or_else(|| eof("missing `return` and `}`"))?;
        if c.peek() == Some('%') {
            graph.nodes.push(parse_node(&mut c, &graph, &node_lines)?);
            node_lines.push(c.line);
        } else if c.eat_keyword("return") {
            parse_return(&mut c, &mut graph)?;
            break c.line;
        } else if c.peek() == Some('}') {
            return Err(c.error("missing `return` before the closing `}`"));
        } else {
            return Err(c.error(format!(
                "expected a node `%{} = ...` or `return`, found {}",
                graph.nodes.len(),
                c.found()
            )));
        }
    };

    let mut close = lines.next().ok_or_else(|| eof("missing the closing `}`"))?;
    close.expect("}", "to close the graph after `return`")?;
    close.end()?;
    if let Some(extra) = lines.next() {
        return Err(extra.error(format!(
            "unexpected {} after the closing `}}`",
            extra.found()
        )));
    }

    graph
        .validate()
        .map_err(|e| locate(e, &graph, &node_lines, return_line))?;
    Ok(graph)
}

impl fmt::Display for Graph {
    /// The text form ([`print()`]).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&print(self))
    }
}

impl FromStr for Graph {
    type Err = IrError;

    /// Parses the text form ([`parse()`]).
    fn from_str(s: &str) -> Result<Graph> {
        parse(s)
    }
}

/// An op's serde form split into its tag (the op name) and its attributes, in
/// declaration order, each rendered as compact JSON.
pub(crate) fn op_fields(op: &Op) -> (String, Vec<(String, String)>) {
    // serde_json's `Value` map sorts keys (unless the crate-wide `preserve_order`
    // feature is on), so read the serialized object back with its order kept.
    let json = serde_json::to_string(op).expect("ops always serialize");
    let OrderedObject(fields) =
        serde_json::from_str(&json).expect("an op serializes to a JSON object");
    let mut tag = String::new();
    let mut attrs = Vec::new();
    for (key, value) in fields {
        match (key.as_str(), value) {
            (TAG, serde_json::Value::String(name)) => tag = name,
            (_, value) => attrs.push((key, value.to_string())),
        }
    }
    (tag, attrs)
}

/// The field that carries the op name in `Op`'s internally tagged serde form.
const TAG: &str = "op";

fn print_node(out: &mut String, id: usize, node: &Node) {
    let (name, attrs) = op_fields(&node.op);
    write!(out, "  %{id} = {name}").unwrap();
    if !node.inputs.is_empty() {
        let operands: Vec<String> = node.inputs.iter().map(Value::to_string).collect();
        write!(out, "({})", operands.join(", ")).unwrap();
    }
    for (key, value) in attrs {
        write!(out, " {key}={value}").unwrap();
    }
    write!(out, " : {}", node.ty).unwrap();
    if !node.scope.is_empty() {
        out.push_str("  @");
        print_name(out, &node.scope);
    }
    out.push('\n');
}

/// Characters of a name that can be written without quotes: enough for `state_dict`
/// paths, and none that the grammar uses (`=`, `,`, `%`, `@`, `"`, spaces).
fn is_plain_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-' | '/')
}

fn print_name(out: &mut String, name: &str) {
    if !name.is_empty() && name.chars().all(is_plain_char) {
        out.push_str(name);
    } else {
        out.push_str(&serde_json::Value::from(name).to_string());
    }
}

/// `%k = op(%a, %b) key=value ... : dtype[dims]  @scope`, for `k` the next node id.
fn parse_node(c: &mut Cursor, graph: &Graph, node_lines: &[usize]) -> Result<Node> {
    let id = c.value_ref("a node id")?;
    let next = graph.nodes.len();
    if id < next {
        return Err(c.error(format!(
            "%{id} is already defined on line {}",
            node_lines[id]
        )));
    }
    if id > next {
        return Err(c.error(format!(
            "expected %{next} next, found %{id} (ids must be dense and in order)"
        )));
    }
    c.expect("=", &format!("after %{id}"))?;
    let name = c.word("an op name")?.to_string();

    let mut inputs = Vec::new();
    if c.eat("(") && !c.eat(")") {
        loop {
            let v = c.value_ref("an operand")?;
            if v >= id {
                return Err(c.error(format!("{name}: operand %{v} is not defined before %{id}")));
            }
            inputs.push(Value(v));
            if c.eat(")") {
                break;
            }
            c.expect(",", &format!("or `)` after operand %{v}"))?;
        }
    }

    let mut attrs = Map::new();
    loop {
        if c.at_end() {
            return Err(c.error(format!("{name}: missing the value's type `: dtype[dims]`")));
        }
        if c.eat(":") {
            break;
        }
        let key = c
            .word("an attribute name or `:` before the type")?
            .to_string();
        c.expect("=", &format!("after attribute `{key}`"))?;
        let value = c.json(&format!("value for attribute `{key}`"))?;
        if key == TAG {
            return Err(c.error(format!("{name}: `{TAG}` is not an attribute")));
        }
        if attrs.insert(key.clone(), value).is_some() {
            return Err(c.error(format!("{name}: attribute `{key}` given twice")));
        }
    }
    let ty = c.tensor_type()?;
    let scope = if c.eat("@") {
        c.name("a scope")?
    } else {
        String::new()
    };
    c.end()?;

    let op = op_from_fields(&name, attrs).map_err(|message| c.error(message))?;
    Ok(Node {
        op,
        inputs,
        ty,
        scope,
    })
}

/// Rebuilds an op from its name and attributes through serde, so that missing,
/// misspelt and ill-typed attributes get serde's precise messages.
fn op_from_fields(name: &str, attrs: Map<String, serde_json::Value>) -> Result<Op, String> {
    let given: Vec<String> = attrs.keys().cloned().collect();
    let mut object = attrs;
    object.insert(TAG.into(), name.into());
    let op: Op = serde_json::from_value(serde_json::Value::Object(object))
        .map_err(|e| format!("op `{name}`: {e}"))?;
    // serde ignores extra fields of a unit variant in an internally tagged enum, even
    // with `deny_unknown_fields`, so check that every attribute was used.
    let (_, known) = op_fields(&op);
    if let Some(extra) = given
        .iter()
        .find(|k| !known.iter().any(|(known, _)| known == *k))
    {
        return Err(format!("op `{name}` has no attribute `{extra}`"));
    }
    Ok(op)
}

/// `return name=%k, name=%k` (possibly no outputs).
fn parse_return(c: &mut Cursor, graph: &mut Graph) -> Result<()> {
    if c.at_end() {
        return Ok(());
    }
    loop {
        let name = c.name("an output name")?;
        c.expect("=", &format!("after output `{name}`"))?;
        let v = c.value_ref("the output's value")?;
        if v >= graph.nodes.len() {
            return Err(c.error(format!("output `{name}` refers to undefined %{v}")));
        }
        graph
            .add_output(name, Value(v))
            .map_err(|e| c.error(e.to_string()))?;
        if c.at_end() {
            return Ok(());
        }
        c.expect(",", "between outputs")?;
    }
}

/// Moves an error from [`Graph::validate`] onto the line of the node it concerns.
fn locate(err: IrError, graph: &Graph, node_lines: &[usize], return_line: usize) -> IrError {
    let node = match &err {
        IrError::Type { node, .. }
        | IrError::UndefinedValue { node, .. }
        | IrError::TypeMismatch { node, .. } => Some(*node),
        // The line of the second definition.
        IrError::DuplicateName { kind, name } => {
            let named: Vec<(&str, Value)> = match *kind {
                "input" => graph.inputs().collect(),
                "param" => graph.params().collect(),
                _ => Vec::new(),
            };
            named
                .iter()
                .filter(|(n, _)| n == name)
                .nth(1)
                .map(|(_, v)| v.0)
        }
        _ => None,
    };
    let line = node
        .and_then(|n| node_lines.get(n))
        .copied()
        .unwrap_or(return_line);
    IrError::Parse {
        line,
        message: err.to_string(),
    }
}

/// The unread rest of one line, with the line number for errors.
struct Cursor<'a> {
    line: usize,
    rest: &'a str,
}

impl<'a> Cursor<'a> {
    fn error(&self, message: impl Into<String>) -> IrError {
        IrError::Parse {
            line: self.line,
            message: message.into(),
        }
    }

    fn is_blank_or_comment(&self) -> bool {
        let t = self.rest.trim();
        t.is_empty() || t.starts_with("//")
    }

    fn peek(&mut self) -> Option<char> {
        self.rest = self.rest.trim_start();
        self.rest.chars().next()
    }

    fn at_end(&mut self) -> bool {
        self.peek().is_none()
    }

    /// The next token, quoted, for "found ..." in messages.
    fn found(&self) -> String {
        match self.rest.split_whitespace().next() {
            None => "end of line".into(),
            Some(token) => format!("`{}`", token.chars().take(24).collect::<String>()),
        }
    }

    fn eat(&mut self, token: &str) -> bool {
        self.peek();
        match self.rest.strip_prefix(token) {
            Some(rest) => {
                self.rest = rest;
                true
            }
            None => false,
        }
    }

    /// Eats `word` only as a whole word (`return`, not the start of `returned`).
    fn eat_keyword(&mut self, word: &str) -> bool {
        self.peek();
        let whole = self.rest.strip_prefix(word).is_some_and(|after| {
            !after.starts_with(|ch: char| ch.is_ascii_alphanumeric() || ch == '_')
        });
        whole && self.eat(word)
    }

    fn expect(&mut self, token: &str, context: &str) -> Result<()> {
        if self.eat(token) {
            Ok(())
        } else {
            Err(self.error(format!(
                "expected `{token}` {context}, found {}",
                self.found()
            )))
        }
    }

    fn end(&mut self) -> Result<()> {
        if self.at_end() {
            Ok(())
        } else {
            Err(self.error(format!(
                "unexpected {} at the end of the line",
                self.found()
            )))
        }
    }

    fn take_while(&mut self, keep: impl Fn(char) -> bool) -> &'a str {
        self.peek();
        let len = self.rest.find(|ch| !keep(ch)).unwrap_or(self.rest.len());
        let (taken, rest) = self.rest.split_at(len);
        self.rest = rest;
        taken
    }

    /// An identifier: an op, attribute or dtype name.
    fn word(&mut self, what: &str) -> Result<&'a str> {
        let word = self.take_while(|ch| ch.is_ascii_alphanumeric() || ch == '_');
        if word.is_empty() {
            return Err(self.error(format!("expected {what}, found {}", self.found())));
        }
        Ok(word)
    }

    fn number(&mut self, what: &str) -> Result<usize> {
        let digits = self.take_while(|ch| ch.is_ascii_digit());
        if digits.is_empty() {
            return Err(self.error(format!("expected {what}, found {}", self.found())));
        }
        digits
            .parse()
            .map_err(|_| self.error(format!("{what} {digits} is too large")))
    }

    /// `%k`.
    fn value_ref(&mut self, what: &str) -> Result<usize> {
        if !self.eat("%") {
            return Err(self.error(format!("expected {what} `%N`, found {}", self.found())));
        }
        // `%` must be followed directly by the id.
        if self.rest.starts_with(char::is_whitespace) {
            return Err(self.error(format!("expected a number right after `%` in {what}")));
        }
        self.number(&format!("a number after `%` in {what}"))
    }

    /// One compact JSON value; serde_json finds where it ends.
    fn json(&mut self, what: &str) -> Result<serde_json::Value> {
        self.peek();
        let mut values = serde_json::Deserializer::from_str(self.rest).into_iter();
        match values.next() {
            Some(Ok(value)) => {
                self.rest = &self.rest[values.byte_offset()..];
                Ok(value)
            }
            Some(Err(e)) => Err(self.error(format!("bad {what}: {}", json_message(&e)))),
            None => Err(self.error(format!("missing {what}"))),
        }
    }

    /// A plain name, or any name as a JSON string.
    fn name(&mut self, what: &str) -> Result<String> {
        if self.peek() == Some('"') {
            return match self.json(what)? {
                serde_json::Value::String(s) => Ok(s),
                other => Err(self.error(format!("expected {what}, found {other}"))),
            };
        }
        let name = self.take_while(is_plain_char);
        if name.is_empty() {
            return Err(self.error(format!("expected {what}, found {}", self.found())));
        }
        Ok(name.to_string())
    }

    /// `dtype[d0,d1,...]`; `f32[]` is a scalar.
    fn tensor_type(&mut self) -> Result<TensorType> {
        let name = self.word("a dtype (f32, f16, bf16 or i64)")?;
        let dtype = DType::from_str(name).map_err(|e| self.error(e))?;
        self.expect("[", &format!("after dtype {dtype}"))?;
        let mut shape = Vec::new();
        if !self.eat("]") {
            loop {
                shape.push(self.number("a dimension")?);
                if self.eat("]") {
                    break;
                }
                self.expect(",", "or `]` in the shape")?;
            }
        }
        Ok(TensorType::new(dtype, shape))
    }
}

/// serde_json's message without its "at line 1 column N" suffix, which would count
/// from the attribute rather than from the start of the line.
fn json_message(e: &serde_json::Error) -> String {
    let full = e.to_string();
    match full.rfind(" at line ") {
        Some(at) if e.line() > 0 => full[..at].to_string(),
        _ => full,
    }
}

/// A JSON object's entries in document order.
struct OrderedObject(Vec<(String, serde_json::Value)>);

impl<'de> Deserialize<'de> for OrderedObject {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Entries;
        impl<'de> Visitor<'de> for Entries {
            type Value = OrderedObject;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<OrderedObject, A::Error> {
                let mut entries = Vec::new();
                while let Some(entry) = map.next_entry()? {
                    entries.push(entry);
                }
                Ok(OrderedObject(entries))
            }
        }
        d.deserialize_map(Entries)
    }
}
