//! A pickle machine for the opcodes `torch.save` writes (protocol 2, and the protocol 3-5
//! forms of the same operations), executing no code.
//!
//! The stack holds arena ids; MARK pushes the stack's length on a mark stack, and the
//! opcodes that collect "items since the mark" split the stack there. The memo maps
//! indices to ids, so a memoized dict that is filled later is seen filled, as in
//! Python. Globals go through `torch::find_class` (an allow-list), REDUCE through
//! `torch::reduce`, persistent ids through `torch::persistent_load`; BUILD's state
//! (a state_dict's `_metadata`) is dropped. Every error names the byte offset of the
//! opcode at fault; a stream that ends early says so.

use super::object::{Arena, Id, Object};
use super::torch;
use std::collections::HashMap;

/// One pickle, unpickled.
#[derive(Debug)]
pub(super) struct Unpickled {
    pub arena: Arena,
    pub root: Id,
    /// The offset just past STOP: where the next pickle of a legacy file starts.
    pub end: usize,
}

/// Unpickles the pickle starting at `start` of `bytes`.
pub(super) fn load(bytes: &[u8], start: usize) -> Result<Unpickled, String> {
    let mut vm = Machine {
        bytes,
        pos: start,
        arena: Arena::default(),
        stack: vec![],
        marks: vec![],
        memo: HashMap::new(),
    };
    loop {
        let at = vm.pos;
        let Some(&code) = bytes.get(at) else {
            return Err(format!(
                "the pickle ends at byte {at} before its STOP opcode (truncated?)"
            ));
        };
        vm.pos += 1;
        match vm.step(code) {
            Ok(Some(root)) => {
                return Ok(Unpickled {
                    arena: vm.arena,
                    root,
                    end: vm.pos,
                })
            }
            Ok(None) => {}
            Err(e) => return Err(format!("pickle opcode {code:#04x} at byte {at}: {e}")),
        }
    }
}

struct Machine<'a> {
    bytes: &'a [u8],
    pos: usize,
    arena: Arena,
    stack: Vec<Id>,
    /// Stack lengths at each open MARK.
    marks: Vec<usize>,
    memo: HashMap<u32, Id>,
}

impl Machine<'_> {
    /// Runs one opcode; `Some(root)` at STOP.
    fn step(&mut self, code: u8) -> Result<Option<Id>, String> {
        match code {
            0x80 => {
                let protocol = self.take(1)?[0];
                if protocol > 5 {
                    return Err(format!("pickle protocol {protocol}; calib reads 2 to 5"));
                }
            }
            0x95 => drop(self.take(8)?), // FRAME: a length hint
            b'.' => return self.pop().map(Some),
            b'(' => self.marks.push(self.stack.len()),
            b'0' => drop(self.pop()?),
            b'1' => drop(self.pop_mark()?),
            b'2' => {
                let top = self.top()?;
                self.stack.push(top);
            }
            b'N' => self.push(Object::None),
            0x88 => self.push(Object::Bool(true)),
            0x89 => self.push(Object::Bool(false)),
            b'K' => {
                let v = self.take(1)?[0];
                self.push(Object::Int(v.into()));
            }
            b'M' => {
                let v = u16::from_le_bytes(self.array()?);
                self.push(Object::Int(v.into()));
            }
            b'J' => {
                let v = i32::from_le_bytes(self.array()?);
                self.push(Object::Int(v.into()));
            }
            0x8a => {
                let n = self.take(1)?[0] as usize;
                let object = long(self.take(n)?);
                self.push(object);
            }
            0x8b => {
                let n = self.len4()?;
                let object = long(self.take(n)?);
                self.push(object);
            }
            b'G' => {
                let v = f64::from_be_bytes(self.array()?);
                self.push(Object::Float(v));
            }
            b'X' => {
                let n = self.len4()?;
                self.string(n)?;
            }
            0x8c => {
                let n = self.take(1)?[0] as usize;
                self.string(n)?;
            }
            0x8d => {
                let n = self.len8()?;
                self.string(n)?;
            }
            b'C' => {
                let n = self.take(1)?[0] as usize;
                let b = self.take(n)?.to_vec();
                self.push(Object::Bytes(b));
            }
            b'B' => {
                let n = self.len4()?;
                let b = self.take(n)?.to_vec();
                self.push(Object::Bytes(b));
            }
            b')' => self.push(Object::Tuple(vec![])),
            b']' => self.push(Object::List(vec![])),
            b'}' => self.push(Object::Dict(vec![])),
            b't' => {
                let items = self.pop_mark()?;
                self.push(Object::Tuple(items));
            }
            0x85..=0x87 => {
                let n = (code - 0x84) as usize;
                if self.stack.len() < self.floor() + n {
                    return Err(format!("TUPLE{n} on a stack of fewer than {n} items"));
                }
                let items = self.stack.split_off(self.stack.len() - n);
                self.push(Object::Tuple(items));
            }
            b'l' => {
                let items = self.pop_mark()?;
                self.push(Object::List(items));
            }
            b'a' => {
                let item = self.pop()?;
                self.extend_list(vec![item])?;
            }
            b'e' => {
                let items = self.pop_mark()?;
                self.extend_list(items)?;
            }
            b'd' => {
                let items = self.pop_mark()?;
                let entries = pairs(items)?;
                self.push(Object::Dict(entries));
            }
            b's' => {
                let value = self.pop()?;
                let key = self.pop()?;
                self.extend_dict(vec![(key, value)])?;
            }
            b'u' => {
                let items = self.pop_mark()?;
                self.extend_dict(pairs(items)?)?;
            }
            b'q' => {
                let i = self.take(1)?[0];
                self.put(i.into())?;
            }
            b'r' => {
                let i = u32::from_le_bytes(self.array()?);
                self.put(i)?;
            }
            0x94 => {
                let i = u32::try_from(self.memo.len()).map_err(|_| "memo full")?;
                self.put(i)?;
            }
            b'h' => {
                let i = self.take(1)?[0];
                self.get(i.into())?;
            }
            b'j' => {
                let i = u32::from_le_bytes(self.array()?);
                self.get(i)?;
            }
            b'c' => {
                let module = self.line()?;
                let name = self.line()?;
                let global = torch::find_class(&module, &name)?;
                self.push(Object::Global(global));
            }
            0x93 => {
                let name = self.pop()?;
                let module = self.pop()?;
                let (Some(module), Some(name)) = (self.arena.str(module), self.arena.str(name))
                else {
                    return Err("STACK_GLOBAL needs a module and a name as strings".into());
                };
                let global = torch::find_class(module, name)?;
                self.push(Object::Global(global));
            }
            b'R' => {
                let args = self.pop()?;
                let callable = self.pop()?;
                let Object::Global(global) = *self.arena.get(callable) else {
                    return Err(format!(
                        "REDUCE calls {}, not an allowed global",
                        self.arena.get(callable).kind()
                    ));
                };
                let Object::Tuple(args) = self.arena.get(args) else {
                    return Err(format!(
                        "REDUCE arguments are {}, not a tuple",
                        self.arena.get(args).kind()
                    ));
                };
                let object = torch::reduce(&self.arena, global, args)?;
                self.push(object);
            }
            b'b' => {
                // The state is an object's attributes (a state_dict's `_metadata`, a
                // parameter's hooks): nothing calib reads, and setting it would run code.
                self.pop()?;
                self.top()?;
            }
            b'Q' => {
                let pid = self.pop()?;
                let object = torch::persistent_load(&self.arena, pid)?;
                self.push(object);
            }
            _ => {
                return Err(format!(
                    "unknown or unsupported opcode {code:#04x}{}",
                    name(code).map_or(String::new(), |n| format!(" ({n})"))
                ))
            }
        }
        Ok(None)
    }

    fn push(&mut self, object: Object) {
        let id = self.arena.add(object);
        self.stack.push(id);
    }

    /// The lowest stack index the current mark lets opcodes pop.
    fn floor(&self) -> usize {
        self.marks.last().copied().unwrap_or(0)
    }

    fn pop(&mut self) -> Result<Id, String> {
        if self.stack.len() <= self.floor() {
            return Err("the stack is empty (above the last MARK)".into());
        }
        Ok(self.stack.pop().expect("checked"))
    }

    fn top(&self) -> Result<Id, String> {
        match self.stack.len() > self.floor() {
            true => Ok(*self.stack.last().expect("checked")),
            false => Err("the stack is empty (above the last MARK)".into()),
        }
    }

    /// The items pushed since the last MARK, which it closes.
    fn pop_mark(&mut self) -> Result<Vec<Id>, String> {
        let mark = self.marks.pop().ok_or("no MARK to collect items from")?;
        Ok(self.stack.split_off(mark))
    }

    fn extend_list(&mut self, items: Vec<Id>) -> Result<(), String> {
        let target = self.top()?;
        match self.arena.get_mut(target) {
            Object::List(list) => {
                list.extend(items);
                Ok(())
            }
            other => Err(format!("APPEND to {}, not a list", other.kind())),
        }
    }

    fn extend_dict(&mut self, entries: Vec<(Id, Id)>) -> Result<(), String> {
        let target = self.top()?;
        match self.arena.get_mut(target) {
            Object::Dict(dict) => {
                dict.extend(entries);
                Ok(())
            }
            other => Err(format!("SETITEM on {}, not a dict", other.kind())),
        }
    }

    fn put(&mut self, index: u32) -> Result<(), String> {
        let top = self.top()?;
        self.memo.insert(index, top);
        Ok(())
    }

    fn get(&mut self, index: u32) -> Result<(), String> {
        let id = *self
            .memo
            .get(&index)
            .ok_or_else(|| format!("memo entry {index} was never stored"))?;
        self.stack.push(id);
        Ok(())
    }

    /// The next `n` bytes of the opcode's argument.
    fn take(&mut self, n: usize) -> Result<&[u8], String> {
        let left = self.bytes.len() - self.pos;
        if n > left {
            return Err(format!(
                "its argument needs {n} bytes but the stream has {left} left (truncated?)"
            ));
        }
        self.pos += n;
        Ok(&self.bytes[self.pos - n..self.pos])
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], String> {
        Ok(self.take(N)?.try_into().expect("N bytes"))
    }

    fn len4(&mut self) -> Result<usize, String> {
        Ok(u32::from_le_bytes(self.array()?) as usize)
    }

    fn len8(&mut self) -> Result<usize, String> {
        let n = u64::from_le_bytes(self.array()?);
        usize::try_from(n).map_err(|_| format!("a length of {n} bytes"))
    }

    fn string(&mut self, n: usize) -> Result<(), String> {
        let text = std::str::from_utf8(self.take(n)?)
            .map_err(|e| format!("a string that is not UTF-8: {e}"))?
            .to_string();
        self.push(Object::Str(text));
        Ok(())
    }

    /// A newline-terminated ASCII argument (GLOBAL's module and name).
    fn line(&mut self) -> Result<String, String> {
        let rest = &self.bytes[self.pos..];
        let n = rest
            .iter()
            .position(|&b| b == b'\n')
            .ok_or("a GLOBAL name runs to the end of the stream (truncated?)")?;
        let text = std::str::from_utf8(&rest[..n])
            .map_err(|_| "a GLOBAL name that is not UTF-8".to_string())?
            .to_string();
        self.pos += n + 1;
        Ok(text)
    }
}

/// Items `k0, v0, k1, v1, ...` as entries.
fn pairs(items: Vec<Id>) -> Result<Vec<(Id, Id)>, String> {
    let chunks = items.chunks_exact(2);
    if !chunks.remainder().is_empty() {
        return Err(format!("{} items for key-value pairs", items.len()));
    }
    Ok(chunks.map(|kv| (kv[0], kv[1])).collect())
}

/// LONG1/LONG4's little-endian two's complement integer.
fn long(bytes: &[u8]) -> Object {
    let negative = bytes.last().is_some_and(|b| b & 0x80 != 0);
    let fill = if negative { 0xff } else { 0 };
    let (low, high) = bytes.split_at(bytes.len().min(8));
    let fits = high.iter().all(|&b| b == fill)
        && (high.is_empty() || (low[low.len() - 1] & 0x80 != 0) == negative);
    if !fits {
        return Object::BigInt(bytes.to_vec());
    }
    let mut word = [fill; 8];
    word[..low.len()].copy_from_slice(low);
    Object::Int(i64::from_le_bytes(word))
}

/// Names of the opcodes calib does not run, for the error.
fn name(code: u8) -> Option<&'static str> {
    Some(match code {
        b'I' => "INT",
        b'L' => "LONG",
        b'F' => "FLOAT",
        b'S' => "STRING",
        b'T' => "BINSTRING",
        b'U' => "SHORT_BINSTRING",
        b'V' => "UNICODE",
        b'P' => "PERSID",
        b'p' => "PUT",
        b'g' => "GET",
        b'i' => "INST",
        b'o' => "OBJ",
        0x81 => "NEWOBJ",
        0x92 => "NEWOBJ_EX",
        0x82..=0x84 => "EXT",
        0x8f => "EMPTY_SET",
        0x90 => "ADDITEMS",
        0x91 => "FROZENSET",
        0x96 => "BYTEARRAY8",
        0x97 => "NEXT_BUFFER",
        0x98 => "READONLY_BUFFER",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::weights::pth::object::Global;

    fn run(body: &[u8]) -> Result<Unpickled, String> {
        let mut bytes = vec![0x80, 2];
        bytes.extend(body);
        load(&bytes, 0)
    }

    fn unicode(s: &str) -> Vec<u8> {
        let mut b = vec![b'X'];
        b.extend((s.len() as u32).to_le_bytes());
        b.extend(s.as_bytes());
        b
    }

    #[test]
    fn a_memoized_dict_filled_later_is_seen_filled() {
        // d = {}; memo[0] = d; l = [d, memo[0]]; d['a'] = 7 (after both references).
        let mut body = vec![
            b'}', b'q', 0, b']', b'r', 5, 0, 0, 0, b'(', b'h', 0, b'j', 0, 0, 0, 0,
        ];
        body.extend([b'e', b'h', 0]);
        body.extend(unicode("a"));
        body.extend([b'K', 7, b's', b'0', b'.']);
        let u = run(&body).unwrap();
        let Object::List(items) = u.arena.get(u.root) else {
            panic!("{:?}", u.arena.get(u.root))
        };
        assert_eq!(items.len(), 2);
        assert_eq!(items[0], items[1], "one dict, shared");
        let value = u.arena.lookup(items[0], "a").unwrap();
        assert!(matches!(u.arena.get(value), Object::Int(7)));
        assert_eq!(u.end, body.len() + 2);
    }

    #[test]
    fn memoize_numbers_entries_in_order_and_a_missing_entry_is_an_error() {
        // MEMOIZE stores at memo.len(): 0, then 1.
        let body = [b'K', 1, 0x94, b'K', 2, 0x94, b'h', 1, 0x86, b'.'];
        let u = run(&body).unwrap();
        let Object::Tuple(items) = u.arena.get(u.root) else {
            panic!()
        };
        assert!(matches!(u.arena.get(items[1]), Object::Int(2)));
        let e = run(&[b'h', 9, b'.']).unwrap_err();
        assert!(e.contains("memo entry 9 was never stored"), "{e}");
    }

    #[test]
    fn globals_off_the_allow_list_are_refused_by_name() {
        let e = run(b"cos\nsystem\n(X\x02\x00\x00\x00lstR.").unwrap_err();
        assert!(e.contains("`os.system`") && e.contains("refuses"), "{e}");
        assert!(e.contains("byte 2"), "{e}");
        let mut stack_global = unicode("builtins");
        stack_global.extend(unicode("eval"));
        stack_global.extend([0x93, b'.']);
        let e = run(&stack_global).unwrap_err();
        assert!(e.contains("`builtins.eval`"), "{e}");
        let u = run(b"ctorch\nHalfStorage\n.").unwrap();
        assert!(matches!(
            u.arena.get(u.root),
            Object::Global(Global::Storage(_))
        ));
    }

    #[test]
    fn truncated_streams_and_unknown_opcodes_are_errors() {
        let e = run(&[b'X', 10, 0, 0, 0, b'a']).unwrap_err();
        assert!(
            e.contains("needs 10 bytes") && e.contains("truncated"),
            "{e}"
        );
        let e = run(&[b'K', 1]).unwrap_err();
        assert!(e.contains("before its STOP") && e.contains("byte 4"), "{e}");
        let e = run(b"cos").unwrap_err();
        assert!(e.contains("truncated"), "{e}");
        let e = run(&[0x81]).unwrap_err();
        assert!(e.contains("0x81") && e.contains("NEWOBJ"), "{e}");
        let e = run(&[0xff]).unwrap_err();
        assert!(e.contains("unknown or unsupported opcode 0xff"), "{e}");
        let e = run(b"(a").unwrap_err();
        assert!(e.contains("stack is empty"), "{e}");
        let e = run(&[b'K', 0, b'K', 1, b'K', 2, b's', b'.']).unwrap_err();
        assert!(e.contains("SETITEM on an int"), "{e}");
    }

    #[test]
    fn integers_of_every_width_decode() {
        let int = |body: &[u8]| {
            let u = run(body).unwrap();
            match u.arena.get(u.root) {
                Object::Int(i) => Some(*i),
                _ => None,
            }
        };
        assert_eq!(int(&[b'J', 0xfe, 0xff, 0xff, 0xff, b'.']), Some(-2));
        assert_eq!(int(&[b'M', 0xe9, 0x03, b'.']), Some(1001));
        assert_eq!(int(&[0x8a, 0, b'.']), Some(0));
        assert_eq!(int(&[0x8a, 2, 0x00, 0x80, b'.']), Some(-32768));
        assert_eq!(
            int(&[0x8a, 9, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f, 0x00, b'.']),
            Some(i64::MAX)
        );
        assert_eq!(
            int(&[0x8a, 9, 0, 0, 0, 0, 0, 0, 0, 0x80, 0x00, b'.']),
            None,
            "2^63 is beyond i64"
        );
        let f = run(&[b'G', 0x40, 0x29, 0, 0, 0, 0, 0, 0, b'.']).unwrap();
        assert!(matches!(f.arena.get(f.root), Object::Float(x) if *x == 12.5));
    }
}
