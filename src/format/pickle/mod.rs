//! A restricted pickle interpreter: it reads protocol 2–5 pickles into an inert heap of values
//! and never runs anything. A `GLOBAL` records a name, `REDUCE` and `BUILD` record a call and
//! its arguments; what a call *means* is decided later, by whoever converts the heap into a
//! [`StateTree`](crate::tree::StateTree) (see [`convert`]).
//!
//! Values live in one arena ([`Heap`]) and refer to each other by [`Id`], so the memo shares
//! values instead of copying them, cycles cost nothing, and dropping a deeply nested value
//! never recurses.
//!
//! Globals are read as Python 3 loads them (Python 2 names mapped as CPython's `_compat_pickle`
//! maps them), and some are refused outright, whatever the mode, by what they would let a
//! pickle do: run code, start processes, import modules, reach files or the network, or reach
//! any object by name (see `deny`).

#[cfg(test)]
mod bounds;
mod compat;
pub mod convert;
mod deny;
pub mod emit;
mod opcode;
mod vm;

use std::fmt;

use bytes::Bytes;

pub use deny::Power;
pub use vm::parse;

/// Refers to a value in a [`Heap`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Id(u32);

impl Id {
    fn index(self) -> usize {
        self.0 as usize
    }
}

/// A `module.name` reference, as `GLOBAL` or `STACK_GLOBAL` recorded it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Global {
    /// The module (`torch._utils`).
    pub module: String,
    /// The attribute (`_rebuild_tensor_v2`).
    pub name: String,
}

impl Global {
    /// Whether this is `module.name`.
    pub fn is(&self, module: &str, name: &str) -> bool {
        self.module == module && self.name == name
    }
}

impl fmt::Display for Global {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.module, self.name)
    }
}

/// How many items a tuple holds without an allocation of its own.
const INLINE: usize = 4;

/// A tuple's items: up to [`INLINE`] of them in place (the `torch.Size`s, argument tuples and
/// `(dict, slots)` pairs a checkpoint's pickle is mostly made of), more on the heap. A DCP
/// `.metadata` makes sixteen tuples per tensor.
#[derive(Debug, Clone)]
pub enum Items {
    /// The first `len` of `ids`.
    Inline {
        /// How many of `ids` are items.
        len: u8,
        /// The items, then unused slots.
        ids: [Id; INLINE],
    },
    /// More than fit inline.
    Heap(Box<[Id]>),
}

impl Items {
    /// A tuple of `ids`.
    pub fn new(ids: &[Id]) -> Self {
        match u8::try_from(ids.len()) {
            Ok(len) if ids.len() <= INLINE => {
                let mut inline = [Id(0); INLINE];
                inline[..ids.len()].copy_from_slice(ids);
                Self::Inline { len, ids: inline }
            }
            _ => Self::Heap(ids.into()),
        }
    }
}

impl std::ops::Deref for Items {
    type Target = [Id];

    fn deref(&self) -> &[Id] {
        match self {
            Self::Inline { len, ids } => &ids[..usize::from(*len)],
            Self::Heap(ids) => ids,
        }
    }
}

/// One value of an unpickled stream. Nothing here was executed: a [`Value::Call`] is the
/// record of a call, not its result.
#[derive(Debug, Clone)]
pub enum Value {
    /// `None`.
    None,
    /// `True` / `False`.
    Bool(bool),
    /// An integer that fits in 64 bits.
    Int(i64),
    /// A larger integer, as little-endian two's-complement bytes (`LONG1`/`LONG4`).
    BigInt(Box<[u8]>),
    /// A float.
    Float(f64),
    /// A string.
    Str(String),
    /// Bytes (`BINBYTES*`, `SHORT_BINBYTES`, `BYTEARRAY8`), boxed: rare, and twice the
    /// size of every other value.
    Bytes(Box<Bytes>),
    /// A tuple.
    Tuple(Items),
    /// A list.
    List(Vec<Id>),
    /// A dict, in insertion order (keys need not be strings).
    Dict(Vec<(Id, Id)>),
    /// A set or frozenset.
    Set(Vec<Id>),
    /// A reference to `module.name`.
    Global(Box<Global>),
    /// A persistent id (`BINPERSID`): what the pickler replaced by a reference; torch uses it
    /// for storages.
    PersistentId(Id),
    /// `func(*args)` (`REDUCE`) or `cls.__new__(cls, *args)` (`NEWOBJ`), with whatever
    /// `BUILD`, `SETITEM(S)` and `APPEND(S)` later did to the result.
    Call(Box<Call>),
}

/// The record of a call, and of what happened to its result afterwards.
#[derive(Debug, Clone)]
pub struct Call {
    /// What was called (usually a [`Value::Global`]).
    pub func: Id,
    /// Its positional arguments (a tuple).
    pub args: Id,
    /// Keyword arguments (`NEWOBJ_EX`), a dict.
    pub kwargs: Option<Id>,
    /// The state passed to `__setstate__` by `BUILD`.
    pub state: Option<Id>,
    /// What `SETITEM(S)` and `APPEND(S)` did to the result: boxed, since few results are
    /// filled so (a `.metadata` makes nine calls per tensor, none of them filled).
    filled: Option<Box<Filled>>,
}

/// Items set on, and appended to, the result of a call.
#[derive(Debug, Clone, Default)]
struct Filled {
    items: Vec<(Id, Id)>,
    appended: Vec<Id>,
}

impl Call {
    /// Items set on the result (an `OrderedDict`'s entries, say).
    pub fn items(&self) -> &[(Id, Id)] {
        self.filled.as_ref().map_or(&[], |f| &f.items)
    }

    /// Items appended to the result.
    pub fn appended(&self) -> &[Id] {
        self.filled.as_ref().map_or(&[], |f| &f.appended)
    }

    fn filled(&mut self) -> &mut Filled {
        self.filled.get_or_insert_default()
    }
}

/// The values of one pickle; [`root`](Heap::root) is what `pickle.load` would return.
#[derive(Debug, Clone)]
pub struct Heap {
    values: Vec<Value>,
    root: Id,
    input_len: usize,
}

impl Heap {
    /// The value `id` refers to.
    pub fn get(&self, id: Id) -> &Value {
        &self.values[id.index()]
    }

    /// The top-level value.
    pub fn root(&self) -> Id {
        self.root
    }

    /// The global a call's function refers to, if it is one.
    pub fn global(&self, id: Id) -> Option<&Global> {
        match self.get(id) {
            Value::Global(g) => Some(g),
            _ => None,
        }
    }

    /// The items of a tuple (or list) value.
    pub fn items(&self, id: Id) -> Option<&[Id]> {
        match self.get(id) {
            Value::Tuple(items) => Some(items),
            Value::List(items) => Some(items),
            _ => None,
        }
    }

    /// How many values the pickle made.
    pub fn len(&self) -> usize {
        self.values.len()
    }

    /// The length in bytes of the pickle the heap was read from, through its `STOP`: where
    /// the next pickle of a stream starts.
    pub fn input_len(&self) -> usize {
        self.input_len
    }

    /// Every global the pickle names.
    pub fn globals(&self) -> impl Iterator<Item = &Global> + '_ {
        self.values.iter().filter_map(|v| match v {
            Value::Global(g) => Some(&**g),
            _ => None,
        })
    }

    /// What every persistent id of the pickle refers to, in the order they were made.
    pub fn persistent_ids(&self) -> impl Iterator<Item = Id> + '_ {
        self.values.iter().filter_map(|v| match v {
            Value::PersistentId(id) => Some(*id),
            _ => None,
        })
    }
}

/// What to do with globals that are not refused outright.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    /// Refuse any global `known` does not accept.
    pub strict: bool,
    /// The globals the caller knows how to interpret.
    pub known: fn(&Global) -> bool,
}

impl Policy {
    /// Every global that is not refused outright is recorded.
    pub fn permissive() -> Self {
        Self {
            strict: false,
            known: |_| true,
        }
    }
}

/// Limits that keep a hostile pickle from exhausting memory or the stack. The interpreter's
/// memory is proportional to its input (every opcode makes at most one 32-byte value); what a
/// conversion builds is bounded by the values and bytes it was given, so that a value shared
/// a million times runs out of budget, not memory (see `convert::Budget`).
pub mod limits {
    /// Bytes of one pickle.
    pub const MAX_PICKLE_BYTES: u64 = 256 << 20;
    /// Values on the stack at once.
    pub const MAX_STACK: usize = 1 << 20;
    /// Open `MARK`s at once.
    pub const MAX_MARKS: usize = 1 << 16;
    /// Memo entries (a DCP `.metadata` memoizes about 16 per chunk: 32 million is two
    /// million chunks).
    pub const MAX_MEMO: usize = 1 << 25;
    /// Values in one pickle (every opcode makes at most one; a DCP `.metadata` makes about
    /// 30 per chunk).
    pub const MAX_VALUES: usize = 1 << 26;
    /// Bytes of one `LONG1`/`LONG4` integer.
    pub const MAX_LONG_BYTES: usize = 4096;
    /// Nesting depth when a heap is converted into a tree.
    pub const MAX_DEPTH: usize = 128;
    /// Tree nodes one pickle may expand into, at most (shared values count each time they
    /// appear).
    pub const MAX_NODES: usize = 1 << 22;
    /// Tree nodes a pickle may expand into beyond [`NODES_PER_VALUE`] per value it holds.
    pub const BASE_NODES: usize = 1 << 16;
    /// Tree nodes a pickle may expand into per value it holds.
    pub const NODES_PER_VALUE: usize = 4;
    /// Bytes of text (strings, keys, decimals) a conversion may build, at most.
    pub const MAX_BUILT_BYTES: usize = 1 << 30;
    /// Bytes of text a conversion may build beyond [`BYTES_PER_INPUT_BYTE`] per pickle byte.
    pub const BASE_BYTES: usize = 64 << 20;
    /// Bytes of text a conversion may build per pickle byte.
    pub const BYTES_PER_INPUT_BYTE: usize = 8;
}

/// Why a pickle was refused, with the byte offset of the opcode at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("pickle byte {offset}: {kind}")]
pub struct PickleError {
    /// Offset of the opcode in the pickle stream.
    pub offset: usize,
    /// What was wrong.
    pub kind: PickleErrorKind,
}

/// What was wrong with a pickle.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PickleErrorKind {
    /// The stream ended inside an opcode or before `STOP`.
    #[error("the pickle ends before its STOP opcode (truncated)")]
    Truncated,
    /// An opcode this interpreter does not know.
    #[error("unknown opcode 0x{0:02x}")]
    UnknownOpcode(u8),
    /// An opcode it knows but does not support (out-of-band buffers, extensions, text opcodes).
    #[error("unsupported opcode {0}")]
    UnsupportedOpcode(&'static str),
    /// A protocol outside 2–5.
    #[error("pickle protocol {0} is not supported (2 to 5 are)")]
    Protocol(u8),
    /// A length that runs past the end of the input.
    #[error("a length of {len} bytes runs past the end of the pickle ({remaining} left)")]
    LyingLength {
        /// The length read.
        len: u64,
        /// Bytes left in the input.
        remaining: usize,
    },
    /// An opcode found the stack emptier than it needs.
    #[error("{0} found the stack empty")]
    StackUnderflow(&'static str),
    /// An opcode needed a mark and there was none.
    #[error("{0} needs a MARK and there is none")]
    NoMark(&'static str),
    /// A value of the wrong kind for an opcode.
    #[error("{op} expects {expected}")]
    WrongType {
        /// The opcode.
        op: &'static str,
        /// What it expects.
        expected: &'static str,
    },
    /// A memo index that was never set.
    #[error("memo entry {0} is read before it is set")]
    MissingMemo(u64),
    /// Invalid UTF-8 in a string opcode.
    #[error("a string is not valid UTF-8")]
    InvalidUtf8,
    /// A limit was exceeded.
    #[error("{what} exceeds the limit of {limit}")]
    Limit {
        /// What grew too large.
        what: &'static str,
        /// The limit.
        limit: usize,
    },
    /// A global that is never allowed.
    #[error("refused to load global `{global}`{}: it can {power}", spelled.as_ref().map(|s| format!(" (pickled as `{s}`)")).unwrap_or_default())]
    Refused {
        /// The global, as Python 3 loads it.
        global: Global,
        /// What it would let the pickle do.
        power: Power,
        /// How the pickle spelled it, when that was a Python 2 name.
        spelled: Option<Global>,
    },
    /// A global the strict policy does not know.
    #[error("global `{0}` is not allowed in strict mode")]
    NotAllowed(Global),
    /// `STOP` with not exactly one value on the stack, or data after `STOP`.
    #[error("{0}")]
    Malformed(&'static str),
}

/// A pickle problem in a named record of a file: the source of an
/// [`Error::Unsafe`](crate::Error::Unsafe) (a refused global) or an
/// [`Error::Corrupt`](crate::Error::Corrupt) (anything else).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{record}`: {problem}")]
pub struct InRecord {
    /// The pickle's name inside the checkpoint (`archive/data.pkl`).
    pub record: String,
    /// What is wrong, and where.
    pub problem: PickleError,
}

/// The error for `problem` in the pickle `record` of `uri`.
pub(crate) fn error(uri: &str, record: &str, problem: PickleError) -> crate::error::Error {
    let refused = matches!(
        problem.kind,
        PickleErrorKind::Refused { .. } | PickleErrorKind::NotAllowed(_)
    );
    let source = InRecord {
        record: record.to_owned(),
        problem,
    };
    if refused {
        crate::error::Error::Unsafe {
            uri: uri.to_owned(),
            source: Box::new(source),
        }
    } else {
        crate::error::Error::corrupt(uri, source)
    }
}

/// A hostile pickle for tests: `x0 = []`, then `x(i+1) = [x(i), x(i)]` for `levels` levels,
/// each a memo reference — `levels + 1` lists in the heap, 2^levels nodes once expanded.
#[cfg(test)]
pub(crate) fn memo_bomb(levels: u32) -> Vec<u8> {
    let mut data = b"\x80\x02]\x940".to_vec();
    for i in 0..levels {
        // MARK, LONG_BINGET i, LONG_BINGET i, LIST, MEMOIZE, POP
        data.extend(b"(j");
        data.extend(i.to_le_bytes());
        data.push(b'j');
        data.extend(i.to_le_bytes());
        data.extend(b"l\x940");
    }
    data.push(b'j');
    data.extend(levels.to_le_bytes());
    data.push(b'.');
    data
}
