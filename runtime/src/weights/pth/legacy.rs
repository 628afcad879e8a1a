//! The legacy container (what `torch.save` wrote before PyTorch 1.6, and still writes
//! with `_use_new_zipfile_serialization=False`): five pickles in a row, then the
//! storages.
//!
//! 1. the magic number 0x1950a86a20f9469cfc6c,
//! 2. the protocol version 1001,
//! 3. sys_info (`little_endian`, type sizes),
//! 4. the object pickle, whose persistent ids name storages by key,
//! 5. the list of storage keys;
//!
//! then, for each key in that order, the storage's element count (8 bytes,
//! little-endian) and its raw elements.

use super::object::{Element, Object, StorageRef};
use super::pickle::{self, Unpickled};
use super::tensor::Storages;
use std::borrow::Cow;
use std::collections::HashMap;
use std::ops::Range;

/// The magic number's LONG1 bytes (little-endian).
const MAGIC: [u8; 10] = [0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19];
const PROTOCOL_VERSION: i64 = 1001;

/// Each storage's byte range in the file.
pub(super) struct LegacyStorages<'a> {
    bytes: &'a [u8],
    ranges: HashMap<String, Range<usize>>,
}

/// Reads the five pickles and locates every storage.
pub(super) fn open(bytes: &[u8]) -> Result<(Unpickled, LegacyStorages<'_>), String> {
    let not_pth = |why: String| {
        format!(
            "not a PyTorch checkpoint: neither a zip archive (which starts with `PK`) nor a \
             legacy checkpoint (which starts with PyTorch's magic number): {why}"
        )
    };
    let magic = pickle::load(bytes, 0).map_err(not_pth)?;
    if !matches!(magic.arena.get(magic.root), Object::BigInt(b) if *b == MAGIC) {
        return Err(not_pth(format!(
            "its first pickle holds {}",
            magic.arena.get(magic.root).kind()
        )));
    }
    let version = pickle::load(bytes, magic.end).map_err(|e| format!("protocol version: {e}"))?;
    match version.arena.get(version.root) {
        Object::Int(PROTOCOL_VERSION) => {}
        Object::Int(v) => {
            return Err(format!(
                "legacy protocol version {v}; calib reads {PROTOCOL_VERSION}"
            ))
        }
        other => return Err(format!("the protocol version is {}", other.kind())),
    }
    let info = pickle::load(bytes, version.end).map_err(|e| format!("sys_info: {e}"))?;
    let little = info
        .arena
        .lookup(info.root, "little_endian")
        .map(|id| info.arena.get(id));
    if !matches!(little, Some(Object::Bool(true))) {
        return Err(
            "sys_info does not say `little_endian`: calib reads little-endian \
                    checkpoints"
                .into(),
        );
    }
    let main = pickle::load(bytes, info.end).map_err(|e| format!("object pickle: {e}"))?;
    let keys = pickle::load(bytes, main.end).map_err(|e| format!("storage key list: {e}"))?;
    let Object::List(key_ids) = keys.arena.get(keys.root) else {
        return Err(format!(
            "the storage key list is {}",
            keys.arena.get(keys.root).kind()
        ));
    };
    // What the object pickle says of each storage: element type and count.
    let storages: HashMap<&str, &StorageRef> = main
        .arena
        .iter()
        .filter_map(|o| match o {
            Object::Storage(s) => Some((s.key.as_str(), s)),
            _ => None,
        })
        .collect();
    let mut ranges = HashMap::new();
    let mut pos = keys.end;
    for &id in key_ids {
        let key = keys.arena.key_text(id);
        let storage = storages.get(key.as_str()).ok_or_else(|| {
            format!(
                "storage `{key}` is listed but no tensor names it (its element size is unknown)"
            )
        })?;
        let range = locate(bytes, pos, &key, storage.element, storage.numel)?;
        pos = range.end;
        ranges.insert(key, range);
    }
    if pos != bytes.len() {
        return Err(format!(
            "{} bytes follow the last storage (which ends at byte {pos})",
            bytes.len() - pos
        ));
    }
    Ok((main, LegacyStorages { bytes, ranges }))
}

/// The elements of storage `key` whose count starts at byte `pos`.
fn locate(
    bytes: &[u8],
    pos: usize,
    key: &str,
    element: Element,
    numel: usize,
) -> Result<Range<usize>, String> {
    let truncated = |need: String| {
        format!(
            "storage `{key}` needs {need} at byte {pos} but the file ends at byte {} (truncated?)",
            bytes.len()
        )
    };
    let count = bytes
        .get(pos..pos + 8)
        .ok_or_else(|| truncated("its 8-byte element count".into()))?;
    let count = u64::from_le_bytes(count.try_into().expect("8 bytes"));
    if count != numel as u64 {
        return Err(format!(
            "storage `{key}` holds {count} elements but the object pickle says {numel}"
        ));
    }
    let start = pos + 8;
    let len = numel
        .checked_mul(element.size_bytes())
        .filter(|len| *len <= bytes.len() - start)
        .ok_or_else(|| truncated(format!("{numel} {} elements", element.storage_name())))?;
    Ok(start..start + len)
}

impl Storages for LegacyStorages<'_> {
    fn bytes(&mut self, storage: &StorageRef) -> Result<Cow<'_, [u8]>, String> {
        let range = self.ranges.get(&storage.key).ok_or_else(|| {
            format!(
                "storage `{}` is not in the file's list of storages",
                storage.key
            )
        })?;
        Ok(Cow::Borrowed(&self.bytes[range.clone()]))
    }
}
