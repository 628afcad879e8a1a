//! PyTorch checkpoints (`.pth`, `.pt`): a `state_dict` read into a [`TensorMap`] without
//! running Python or any code the file names.
//!
//! * `zip.rs` and `legacy.rs`: the two containers `torch.save` writes (PyTorch >= 1.6
//!   and before), each giving the object pickle and its storages' bytes;
//! * `pickle.rs`: the pickle machine, `object.rs` the values it builds, `torch.rs` the
//!   allow-list of globals and what they build (tensor records, not tensors);
//! * `tensor.rs`: a tensor record plus its storage's bytes, gathered into a tensor.
//!
//! The state_dict is the pickled dict itself when it holds only tensors, else its
//! `state_dict` entry (PyTorch's ImageNet example saves `epoch`, `arch`, `best_acc1`
//! and `optimizer` beside it). A `module.` prefix on every name (what DataParallel and
//! DistributedDataParallel add) is stripped. Only the state_dict's tensors are read:
//! an optimizer's state is unpickled (it must be well-formed) but never materialized.

mod legacy;
mod object;
mod pickle;
mod tensor;
mod torch;
mod zip;

use super::TensorMap;
use object::{Arena, Id, Object};
use std::fmt;
use std::path::Path;
use tensor::Storages;
use thiserror::Error;

/// The prefix `torch.nn.DataParallel` puts on every name.
pub const DATA_PARALLEL_PREFIX: &str = "module.";

/// A checkpoint that could not be imported.
#[derive(Debug, Error)]
pub enum PthError {
    #[error("{file}: {source}")]
    Io {
        file: String,
        source: std::io::Error,
    },
    #[error("{file}: {detail}")]
    Invalid { file: String, detail: String },
}

/// Which container a checkpoint came in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// PyTorch >= 1.6: a zip archive.
    Zip,
    /// Before 1.6 (or `_use_new_zipfile_serialization=False`): pickles in a row.
    Legacy,
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Format::Zip => "zip",
            Format::Legacy => "legacy",
        })
    }
}

/// An imported state_dict and where it was found.
#[derive(Debug)]
pub struct Imported {
    /// Tensors by state_dict name, the prefix stripped.
    pub tensors: TensorMap,
    pub format: Format,
    /// `Some("state_dict")` when the state_dict was that entry of a larger dict.
    pub entry: Option<String>,
    /// The prefix stripped from every name, if any.
    pub stripped: Option<&'static str>,
    /// The other entries of a checkpoint dict, not imported, as `name = summary`
    /// (`epoch = 3`, `optimizer = a dict of 2`).
    pub skipped: Vec<String>,
}

/// Reads the state_dict of the checkpoint at `path`.
pub fn load(path: impl AsRef<Path>) -> Result<Imported, PthError> {
    let path = path.as_ref();
    let bytes = std::fs::read(path).map_err(|source| PthError::Io {
        file: path.display().to_string(),
        source,
    })?;
    parse(&bytes, &path.display().to_string())
}

/// Reads the state_dict of checkpoint `bytes`; `file` names it in errors.
pub fn parse(bytes: &[u8], file: &str) -> Result<Imported, PthError> {
    let invalid = |detail: String| PthError::Invalid {
        file: file.to_string(),
        detail,
    };
    let (format, unpickled, mut storages): (_, _, Box<dyn Storages>) = if zip::is_zip(bytes) {
        let (u, s) = zip::open(bytes).map_err(invalid)?;
        (Format::Zip, u, Box::new(s))
    } else {
        let (u, s) = legacy::open(bytes).map_err(invalid)?;
        (Format::Legacy, u, Box::new(s))
    };
    let arena = &unpickled.arena;
    let found = find_state_dict(arena, unpickled.root).map_err(invalid)?;
    let Object::Dict(entries) = arena.get(found.dict) else {
        unreachable!("find_state_dict returns a dict")
    };
    let mut names = Vec::with_capacity(entries.len());
    for &(key, value) in entries {
        let name = arena.str(key).ok_or_else(|| {
            invalid(format!(
                "a state_dict key is {}, not a name",
                arena.get(key).kind()
            ))
        })?;
        let Object::Tensor(t) = arena.get(value) else {
            return Err(invalid(format!(
                "state_dict entry `{name}` is {}, not a tensor",
                arena.get(value).kind()
            )));
        };
        names.push((name, t));
    }
    let stripped = (!names.is_empty()
        && names
            .iter()
            .all(|(n, _)| n.starts_with(DATA_PARALLEL_PREFIX)))
    .then_some(DATA_PARALLEL_PREFIX);
    let mut tensors = TensorMap::new();
    for (name, t) in names {
        let tensor = tensor::materialize(t, storages.as_mut())
            .map_err(|e| invalid(format!("tensor `{name}`: {e}")))?;
        let name = name.strip_prefix(stripped.unwrap_or("")).unwrap_or(name);
        // A repeated key keeps its last value, as Python's dict does.
        tensors.insert(name.to_string(), tensor);
    }
    Ok(Imported {
        tensors,
        format,
        entry: found.entry,
        stripped,
        skipped: found.skipped,
    })
}

/// Where the state_dict sits in the unpickled object.
struct Found {
    dict: Id,
    entry: Option<String>,
    skipped: Vec<String>,
}

fn find_state_dict(arena: &Arena, root: Id) -> Result<Found, String> {
    let Object::Dict(entries) = arena.get(root) else {
        return Err(format!(
            "the checkpoint holds {}, not a state_dict (a dict of tensors)",
            arena.get(root).kind()
        ));
    };
    let is_tensor = |id: Id| matches!(arena.get(id), Object::Tensor(_));
    if entries.iter().all(|&(_, v)| is_tensor(v)) {
        return Ok(Found {
            dict: root,
            entry: None,
            skipped: vec![],
        });
    }
    let keys = || entries.iter().map(|&(k, _)| arena.key_text(k));
    let Some(dict) = arena.lookup(root, "state_dict") else {
        return Err(format!(
            "the checkpoint is a dict of {} with no `state_dict` entry, and not all its \
             values are tensors",
            keys()
                .map(|k| format!("`{k}`"))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    };
    if !matches!(arena.get(dict), Object::Dict(_)) {
        return Err(format!(
            "the checkpoint's `state_dict` entry is {}, not a dict",
            arena.get(dict).kind()
        ));
    }
    Ok(Found {
        dict,
        entry: Some("state_dict".into()),
        skipped: entries
            .iter()
            .filter(|&&(k, _)| arena.str(k) != Some("state_dict"))
            .map(|&(k, v)| format!("{} = {}", arena.key_text(k), arena.summary(v)))
            .collect(),
    })
}
