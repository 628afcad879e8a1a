//! What a checkpoint's pickle builds: plain Python values, and the few torch objects
//! calib lets it name (storage types, tensor rebuilders, `OrderedDict`, devices), held
//! in an arena.
//!
//! Containers refer to their items by index into the arena, so sharing (the pickle's
//! memo) costs nothing, a self-referencing list is harmless, and dropping a deeply
//! nested value never recurses: memory stays linear in the stream's length.

use calib_ir::DType;
use std::fmt;

/// An object's index in its [`Arena`].
pub(super) type Id = usize;

/// One value the pickle built.
#[derive(Debug)]
pub(super) enum Object {
    None,
    Bool(bool),
    Int(i64),
    /// An integer beyond 64 bits: little-endian two's complement, as LONG1/LONG4 carry it.
    BigInt(Vec<u8>),
    Float(f64),
    Str(String),
    Bytes(Vec<u8>),
    Tuple(Vec<Id>),
    List(Vec<Id>),
    /// Entries in insertion order; a repeated key is kept, and readers take the last.
    Dict(Vec<(Id, Id)>),
    /// A class or function from the allow-list, to be called by REDUCE.
    Global(Global),
    Storage(StorageRef),
    Tensor(TensorRef),
    Device(String),
}

impl Object {
    /// What the object is, for messages ("a dict", "a tensor").
    pub(super) fn kind(&self) -> &'static str {
        match self {
            Object::None => "None",
            Object::Bool(_) => "a bool",
            Object::Int(_) | Object::BigInt(_) => "an int",
            Object::Float(_) => "a float",
            Object::Str(_) => "a string",
            Object::Bytes(_) => "bytes",
            Object::Tuple(_) => "a tuple",
            Object::List(_) => "a list",
            Object::Dict(_) => "a dict",
            Object::Global(_) => "a class or function",
            Object::Storage(_) => "a storage",
            Object::Tensor(_) => "a tensor",
            Object::Device(_) => "a device",
        }
    }
}

/// Every object of one pickle.
#[derive(Debug, Default)]
pub(super) struct Arena {
    objects: Vec<Object>,
}

impl Arena {
    pub(super) fn add(&mut self, object: Object) -> Id {
        self.objects.push(object);
        self.objects.len() - 1
    }

    pub(super) fn get(&self, id: Id) -> &Object {
        &self.objects[id]
    }

    pub(super) fn get_mut(&mut self, id: Id) -> &mut Object {
        &mut self.objects[id]
    }

    pub(super) fn iter(&self) -> impl Iterator<Item = &Object> {
        self.objects.iter()
    }

    /// The string `id` holds, if it is one.
    pub(super) fn str(&self, id: Id) -> Option<&str> {
        match self.get(id) {
            Object::Str(s) => Some(s),
            _ => None,
        }
    }

    /// A dict key as text for messages: strings as they are, ints in decimal.
    pub(super) fn key_text(&self, id: Id) -> String {
        match self.get(id) {
            Object::Str(s) => s.clone(),
            Object::Int(i) => i.to_string(),
            other => format!("<{}>", other.kind()),
        }
    }

    /// A short account of a value for reports: scalars and strings as Python prints
    /// them, containers and tensors by kind and size.
    pub(super) fn summary(&self, id: Id) -> String {
        match self.get(id) {
            Object::None => "None".into(),
            Object::Bool(b) => if *b { "True" } else { "False" }.into(),
            Object::Int(i) => i.to_string(),
            Object::BigInt(b) => format!("an int of {} bytes", b.len()),
            Object::Float(x) => format!("{x:?}"),
            Object::Str(s) => format!("{s:?}"),
            Object::Bytes(b) => format!("{} bytes", b.len()),
            Object::Tuple(v) | Object::List(v) => format!("{} of {}", self.get(id).kind(), v.len()),
            Object::Dict(v) => format!("a dict of {}", v.len()),
            Object::Tensor(t) => format!(
                "a tensor {} of {}",
                calib_ir::fmt_shape(&t.shape),
                t.storage.element.storage_name()
            ),
            Object::Device(d) => format!("device {d:?}"),
            other => other.kind().into(),
        }
    }

    /// The value of the last entry of dict `dict` whose key is the string `key`.
    pub(super) fn lookup(&self, dict: Id, key: &str) -> Option<Id> {
        match self.get(dict) {
            Object::Dict(entries) => entries
                .iter()
                .rev()
                .find(|(k, _)| self.str(*k) == Some(key))
                .map(|(_, v)| *v),
            _ => None,
        }
    }
}

/// The element types of PyTorch's typed storages (`torch.FloatStorage`, ...).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Element {
    F32,
    F64,
    F16,
    BF16,
    I64,
    I32,
    I16,
    I8,
    U8,
    Bool,
    Complex64,
    Complex128,
}

/// Storage class names and their element types.
const STORAGES: [(&str, Element); 12] = [
    ("FloatStorage", Element::F32),
    ("DoubleStorage", Element::F64),
    ("HalfStorage", Element::F16),
    ("BFloat16Storage", Element::BF16),
    ("LongStorage", Element::I64),
    ("IntStorage", Element::I32),
    ("ShortStorage", Element::I16),
    ("CharStorage", Element::I8),
    ("ByteStorage", Element::U8),
    ("BoolStorage", Element::Bool),
    ("ComplexFloatStorage", Element::Complex64),
    ("ComplexDoubleStorage", Element::Complex128),
];

impl Element {
    /// The element type of storage class `torch.<name>`.
    pub(super) fn of_storage(name: &str) -> Option<Element> {
        STORAGES.iter().find(|(n, _)| *n == name).map(|(_, e)| *e)
    }

    pub(super) fn storage_name(self) -> &'static str {
        STORAGES
            .iter()
            .find(|(_, e)| *e == self)
            .map(|(n, _)| *n)
            .expect("every element type has a storage class")
    }

    pub(super) fn size_bytes(self) -> usize {
        match self {
            Element::I8 | Element::U8 | Element::Bool => 1,
            Element::F16 | Element::BF16 | Element::I16 => 2,
            Element::F32 | Element::I32 => 4,
            Element::F64 | Element::I64 | Element::Complex64 => 8,
            Element::Complex128 => 16,
        }
    }

    /// The calib dtype that holds these elements exactly, if any.
    pub(super) fn dtype(self) -> Option<DType> {
        match self {
            Element::F32 => Some(DType::F32),
            Element::F16 => Some(DType::F16),
            Element::BF16 => Some(DType::BF16),
            Element::I64 => Some(DType::I64),
            _ => None,
        }
    }
}

/// A storage named by a persistent id: its bytes live outside the pickle, in the
/// container (`<archive>/data/<key>`, or after the pickles of a legacy file).
#[derive(Clone, Debug, PartialEq)]
pub(super) struct StorageRef {
    pub element: Element,
    pub key: String,
    /// Elements in the storage.
    pub numel: usize,
}

/// A tensor: a strided view of a storage.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct TensorRef {
    pub storage: StorageRef,
    /// In elements.
    pub offset: usize,
    pub shape: Vec<usize>,
    /// In elements, one per dimension.
    pub strides: Vec<usize>,
}

/// The classes and functions a checkpoint may name (see `torch.rs` for the list).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Global {
    /// `torch._utils._rebuild_tensor_v2` (and its older form `_rebuild_tensor`).
    RebuildTensor { v2: bool },
    /// `torch._utils._rebuild_parameter` (and `_rebuild_parameter_with_state`).
    RebuildParameter { with_state: bool },
    /// `collections.OrderedDict`.
    OrderedDict,
    /// `torch.device`.
    Device,
    /// `torch.<Type>Storage`: named in persistent ids, never called.
    Storage(Element),
}

impl fmt::Display for Global {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Global::RebuildTensor { v2: true } => f.write_str("torch._utils._rebuild_tensor_v2"),
            Global::RebuildTensor { v2: false } => f.write_str("torch._utils._rebuild_tensor"),
            Global::RebuildParameter { with_state: false } => {
                f.write_str("torch._utils._rebuild_parameter")
            }
            Global::RebuildParameter { with_state: true } => {
                f.write_str("torch._utils._rebuild_parameter_with_state")
            }
            Global::OrderedDict => f.write_str("collections.OrderedDict"),
            Global::Device => f.write_str("torch.device"),
            Global::Storage(e) => write!(f, "torch.{}", e.storage_name()),
        }
    }
}
