//! The torch side of unpickling: which globals a checkpoint may name, what calling them
//! builds, and what a persistent id means.
//!
//! Nothing is executed. A global is looked up in a fixed allow-list and becomes a tag;
//! REDUCE of a tag builds plain data (a [`TensorRef`] records storage, offset, shape and
//! strides; `OrderedDict()` is an empty dict). Anything else a pickle names, `os.system`
//! or `torch.load` alike, is refused by name before the stream goes on.

use super::object::{Arena, Element, Global, Id, Object, StorageRef, TensorRef};

/// What a checkpoint may name, as the error lists it.
const ALLOWED: &str = "torch._utils._rebuild_tensor_v2, torch._utils._rebuild_tensor, \
     torch._utils._rebuild_parameter, torch._utils._rebuild_parameter_with_state, \
     torch.<Type>Storage, collections.OrderedDict, torch.device";

/// The allowed global `module.name`, or an error naming it.
pub(super) fn find_class(module: &str, name: &str) -> Result<Global, String> {
    let global = match (module, name) {
        ("torch._utils", "_rebuild_tensor_v2") => Global::RebuildTensor { v2: true },
        ("torch._utils", "_rebuild_tensor") => Global::RebuildTensor { v2: false },
        ("torch._utils", "_rebuild_parameter") => Global::RebuildParameter { with_state: false },
        ("torch._utils", "_rebuild_parameter_with_state") => {
            Global::RebuildParameter { with_state: true }
        }
        ("collections", "OrderedDict") => Global::OrderedDict,
        ("torch", "device") => Global::Device,
        ("torch", storage) if Element::of_storage(storage).is_some() => {
            Global::Storage(Element::of_storage(storage).expect("checked"))
        }
        _ => {
            return Err(format!(
                "the pickle names the global `{module}.{name}`, which calib refuses: its \
                 reader executes no code and allows only {ALLOWED}"
            ))
        }
    };
    Ok(global)
}

/// What calling `global` on the tuple `args` builds.
pub(super) fn reduce(arena: &Arena, global: Global, args: &[Id]) -> Result<Object, String> {
    let arity = |range: std::ops::RangeInclusive<usize>| {
        if range.contains(&args.len()) {
            Ok(())
        } else {
            Err(format!(
                "`{global}` called with {} arguments, expected {} to {}",
                args.len(),
                range.start(),
                range.end()
            ))
        }
    };
    match global {
        Global::RebuildTensor { v2 } => {
            arity(if v2 { 6..=7 } else { 4..=4 })?;
            rebuild_tensor(arena, args).map(Object::Tensor)
        }
        Global::RebuildParameter { with_state } => {
            arity(if with_state { 4..=4 } else { 3..=3 })?;
            match arena.get(args[0]) {
                Object::Tensor(t) => Ok(Object::Tensor(t.clone())),
                other => Err(format!("`{global}` needs a tensor, found {}", other.kind())),
            }
        }
        Global::OrderedDict => ordered_dict(arena, args),
        Global::Device => {
            arity(1..=2)?;
            let kind = arena
                .str(args[0])
                .ok_or("`torch.device` needs a device name")?;
            Ok(Object::Device(match args.get(1).map(|&i| arena.get(i)) {
                Some(Object::Int(index)) => format!("{kind}:{index}"),
                _ => kind.to_string(),
            }))
        }
        Global::Storage(_) => Err(format!(
            "`{global}` is called directly; checkpoints name storage types only in \
             persistent ids"
        )),
    }
}

/// `OrderedDict()` or `OrderedDict([(key, value), ...])`.
fn ordered_dict(arena: &Arena, args: &[Id]) -> Result<Object, String> {
    let items: &[Id] = match args {
        [] => &[],
        [list] => match arena.get(*list) {
            Object::List(items) | Object::Tuple(items) => items,
            other => return Err(format!("`OrderedDict` of {}", other.kind())),
        },
        _ => return Err(format!("`OrderedDict` with {} arguments", args.len())),
    };
    let entries = items
        .iter()
        .map(|&pair| match arena.get(pair) {
            Object::Tuple(kv) if kv.len() == 2 => Ok((kv[0], kv[1])),
            other => Err(format!(
                "`OrderedDict` item is {}, not a (key, value) pair",
                other.kind()
            )),
        })
        .collect::<Result<_, String>>()?;
    Ok(Object::Dict(entries))
}

/// `_rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad,
/// backward_hooks[, metadata])`; the old `_rebuild_tensor` stops after `stride`.
fn rebuild_tensor(arena: &Arena, args: &[Id]) -> Result<TensorRef, String> {
    let storage = match arena.get(args[0]) {
        Object::Storage(s) => s.clone(),
        other => return Err(format!("a tensor's storage is {}", other.kind())),
    };
    let offset = count(arena, args[1], "storage offset")?;
    let shape = counts(arena, args[2], "size")?;
    let strides = counts(arena, args[3], "stride")?;
    if shape.len() != strides.len() {
        return Err(format!(
            "a tensor has {} sizes but {} strides",
            shape.len(),
            strides.len()
        ));
    }
    Ok(TensorRef {
        storage,
        offset,
        shape,
        strides,
    })
}

/// A non-negative int.
fn count(arena: &Arena, id: Id, what: &str) -> Result<usize, String> {
    match arena.get(id) {
        Object::Int(i) => usize::try_from(*i).map_err(|_| format!("a tensor's {what} is {i}")),
        other => Err(format!("a tensor's {what} is {}, not an int", other.kind())),
    }
}

/// A tuple of non-negative ints.
fn counts(arena: &Arena, id: Id, what: &str) -> Result<Vec<usize>, String> {
    match arena.get(id) {
        Object::Tuple(items) => items.iter().map(|&i| count(arena, i, what)).collect(),
        other => Err(format!(
            "a tensor's {what} is {}, not a tuple",
            other.kind()
        )),
    }
}

/// The storage a persistent id names: `('storage', <Type>Storage, key, location,
/// numel)` in zip files, with a sixth entry (`view_metadata`, `None`) in legacy ones.
pub(super) fn persistent_load(arena: &Arena, pid: Id) -> Result<Object, String> {
    let items = match arena.get(pid) {
        Object::Tuple(items) => items,
        other => return Err(format!("a persistent id is {}, not a tuple", other.kind())),
    };
    if arena.str(items.first().copied().unwrap_or(pid)) != Some("storage") {
        return Err("a persistent id is not a `storage` record".into());
    }
    if !(5..=6).contains(&items.len()) {
        return Err(format!(
            "a storage record has {} fields, expected 5 or 6",
            items.len()
        ));
    }
    let element = match arena.get(items[1]) {
        Object::Global(Global::Storage(e)) => *e,
        other => {
            return Err(format!(
                "a storage record's type is {}, not a torch storage class",
                other.kind()
            ))
        }
    };
    let key = match arena.get(items[2]) {
        Object::Str(k) => k.clone(),
        Object::Int(k) => k.to_string(),
        other => return Err(format!("a storage key is {}", other.kind())),
    };
    let numel = match arena.get(items[4]) {
        Object::Int(n) => {
            usize::try_from(*n).map_err(|_| format!("storage `{key}` has {n} elements"))?
        }
        other => return Err(format!("storage `{key}`'s size is {}", other.kind())),
    };
    if let Some(view) = items.get(5) {
        if !matches!(arena.get(*view), Object::None) {
            return Err(format!(
                "storage `{key}` is a view of another storage (legacy view_metadata), which \
                 calib does not read"
            ));
        }
    }
    Ok(Object::Storage(StorageRef {
        element,
        key,
        numel,
    }))
}
