//! The safetensors header, checked by calib before the safetensors crate reads it.
//!
//! The crate keeps the last of two tensors that share a name, reports a shape too large
//! to count ("ValidationOverflow") and a byte range that disagrees with the shape
//! without naming the tensor, and checks offsets in an order that blames the tensor
//! after a bad one. Here every entry is checked on its own first (so a wrong length is
//! its own tensor's fault), then the entries in offset order (so a gap or an overlap
//! names both neighbours), then the data section's length.

use serde::de::{Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use serde_json::Value as Json;
use std::fmt;

/// The header's entries in file order, duplicates kept so that they can be reported.
struct Entries(Vec<(String, Json)>);

impl<'de> Deserialize<'de> for Entries {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Ordered;
        impl<'de> Visitor<'de> for Ordered {
            type Value = Entries;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object of tensors")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Entries, A::Error> {
                let mut entries = vec![];
                while let Some(entry) = map.next_entry()? {
                    entries.push(entry);
                }
                Ok(Entries(entries))
            }
        }
        d.deserialize_map(Ordered)
    }
}

/// One tensor's entry, as the format defines it.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Info {
    dtype: String,
    shape: Vec<usize>,
    data_offsets: [usize; 2],
}

/// A checked entry: its name and byte range in the data section.
struct Range<'a> {
    name: &'a str,
    begin: usize,
    end: usize,
}

/// Bytes per element of a safetensors dtype, `None` for a name the format lacks.
fn element_bytes(dtype: &str) -> Option<usize> {
    Some(match dtype {
        "BOOL" | "U8" | "I8" | "F8_E4M3" | "F8_E5M2" => 1,
        "U16" | "I16" | "F16" | "BF16" => 2,
        "U32" | "I32" | "F32" => 4,
        "U64" | "I64" | "F64" => 8,
        _ => return None,
    })
}

/// Checks the header (the JSON after the 8-byte length) against a data section of
/// `data_len` bytes; the error names the tensor at fault.
pub(super) fn check(header: &[u8], data_len: usize) -> Result<(), String> {
    let text = std::str::from_utf8(header).map_err(|_| "the header is not UTF-8".to_string())?;
    let Entries(entries) = serde_json::from_str(text)
        .map_err(|e| format!("the header is not valid safetensors JSON: {e}"))?;
    let mut ranges: Vec<Range> = Vec::with_capacity(entries.len());
    let mut seen = std::collections::HashSet::new();
    for (name, value) in &entries {
        if !seen.insert(name.as_str()) {
            return Err(format!(
                "tensor `{name}` appears twice in the header (which one is meant?)"
            ));
        }
        if name == "__metadata__" {
            continue;
        }
        ranges.push(entry(name, value)?);
    }
    ranges.sort_by_key(|r| (r.begin, r.end));
    let mut end = 0;
    for (i, r) in ranges.iter().enumerate() {
        let before = i.checked_sub(1).map(|p| &ranges[p]);
        match before {
            None if r.begin > 0 => {
                return Err(format!(
                    "the data section starts with {} unused bytes: its first tensor `{}` \
                     begins at byte {}",
                    r.begin, r.name, r.begin
                ))
            }
            Some(p) if r.begin > end => {
                return Err(format!(
                    "{} unused bytes between tensor `{}` (ending at byte {}) and tensor `{}` \
                     (beginning at byte {})",
                    r.begin - end,
                    p.name,
                    p.end,
                    r.name,
                    r.begin
                ))
            }
            Some(p) if r.begin < end => {
                return Err(format!(
                    "tensors `{}` (bytes {}..{}) and `{}` (bytes {}..{}) overlap",
                    p.name, p.begin, p.end, r.name, r.begin, r.end
                ))
            }
            _ => end = r.end,
        }
    }
    if end != data_len {
        let last = ranges
            .last()
            .map_or(String::new(), |r| format!(" (`{}`)", r.name));
        return Err(if end > data_len {
            format!(
                "the tensors need {end} bytes of data but the file has {data_len} after the \
                 header (truncated?); the last tensor{last} ends past the file"
            )
        } else {
            format!(
                "the file has {data_len} bytes of data but the tensors end at byte {end}{last}: \
                 {} bytes follow that no tensor owns",
                data_len - end
            )
        });
    }
    Ok(())
}

/// One entry checked on its own: a known dtype, a shape whose bytes can be counted, and
/// a byte range of exactly that length.
fn entry<'a>(name: &'a str, value: &Json) -> Result<Range<'a>, String> {
    let info = Info::deserialize(value).map_err(|e| format!("tensor `{name}`: {e}"))?;
    let size = element_bytes(&info.dtype)
        .ok_or_else(|| format!("tensor `{name}` has unknown dtype `{}`", info.dtype))?;
    let shape = calib_ir::fmt_shape(&info.shape);
    let bytes = calib_ir::checked_numel(&info.shape)
        .and_then(|n| n.checked_mul(size))
        .ok_or_else(|| {
            format!(
                "tensor `{name}` has shape {shape}, too many {} elements to count in 64 bits",
                info.dtype
            )
        })?;
    let [begin, end] = info.data_offsets;
    if end < begin {
        return Err(format!(
            "tensor `{name}` has data offsets [{begin}, {end}], which end before they begin"
        ));
    }
    if end - begin != bytes {
        return Err(format!(
            "tensor `{name}` has {} bytes (data offsets [{begin}, {end}]) but its shape {shape} \
             of {} needs {bytes}",
            end - begin,
            info.dtype
        ));
    }
    Ok(Range { name, begin, end })
}
