//! From a [`Heap`] to tree nodes. Containers become dicts and lists; the globals ckptio
//! understands (`OrderedDict`, sets, `_codecs.encode`, numpy scalars and arrays, paths,
//! `argparse.Namespace`, datetimes, ...) become plain data; a format adds its own through
//! [`Hooks`] (torch's tensors); any other object becomes an inert [`Opaque`] node.
//!
//! Conversion is bounded by what it builds, not only by what the pickle says: a value that
//! refers to itself is an error, nesting deeper than [`MAX_DEPTH`] is an error, and every node
//! and every byte of text made (strings, keys, decimals) is taken from a [`Budget`] sized by
//! the pickle, so a string shared a million times runs out of budget instead of memory.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;

use super::limits::{
    BASE_BYTES, BASE_NODES, BYTES_PER_INPUT_BYTE, MAX_BUILT_BYTES, MAX_DEPTH, MAX_NODES,
    NODES_PER_VALUE,
};
use super::{Call, Global, Heap, Id, Value};
use crate::dtype::DType;
use crate::tree::{
    Dict, Inline, Int, KeyKind, LazyTensor, Leaf, List, MAX_DIMS, Node, Opaque, TensorData,
};

/// What a format adds to the generic conversion.
pub trait Hooks {
    /// The node for a call of `func`, or `None` to let the generic rules convert it; text it
    /// builds is taken from `budget`.
    ///
    /// # Errors
    ///
    /// A message saying what is wrong with the call's arguments.
    fn call(
        &mut self,
        heap: &Heap,
        func: &Global,
        call: &Call,
        budget: &mut Budget,
    ) -> Option<Result<Node, String>>;
}

/// No format-specific rules.
pub struct NoHooks;

impl Hooks for NoHooks {
    fn call(
        &mut self,
        _: &Heap,
        _: &Global,
        _: &Call,
        _: &mut Budget,
    ) -> Option<Result<Node, String>> {
        None
    }
}

/// What one conversion may still build: nodes, and bytes of text. Both are sized by the
/// pickle (a base, plus so much per value and per input byte, under a fixed ceiling), so the
/// memory a conversion uses is proportional to its input whatever the input's references
/// expand to. Big integers are rendered in decimal once per value, however often they are
/// referred to.
#[derive(Debug)]
pub struct Budget {
    nodes: usize,
    bytes: usize,
    limits: (usize, usize),
    decimals: HashMap<Id, String>,
}

impl Budget {
    /// The budget for converting `heap`.
    pub fn for_heap(heap: &Heap) -> Self {
        let per_value = NODES_PER_VALUE.saturating_mul(heap.len());
        let nodes = MAX_NODES.min(BASE_NODES.saturating_add(per_value));
        let per_byte = BYTES_PER_INPUT_BYTE.saturating_mul(heap.input_len());
        let bytes = MAX_BUILT_BYTES.min(BASE_BYTES.saturating_add(per_byte));
        Self {
            nodes,
            bytes,
            limits: (nodes, bytes),
            decimals: HashMap::new(),
        }
    }

    /// Takes one node.
    ///
    /// # Errors
    ///
    /// When the budget is spent: the pickle's shared references expand too far.
    pub fn node(&mut self) -> Result<(), String> {
        self.nodes = self.nodes.checked_sub(1).ok_or_else(|| {
            format!(
                "the pickle expands to more than {} values (shared references repeated)",
                self.limits.0
            )
        })?;
        Ok(())
    }

    /// Takes `n` bytes of text, before it is built.
    ///
    /// # Errors
    ///
    /// When the budget is spent: the pickle's shared strings expand too far.
    pub fn bytes(&mut self, n: usize) -> Result<(), String> {
        self.bytes = self.bytes.checked_sub(n).ok_or_else(|| {
            format!(
                "the pickle expands to more than {} bytes of text (shared strings repeated)",
                self.limits.1
            )
        })?;
        Ok(())
    }

    /// The decimal digits of the big integer `id`, whose bytes are `raw`, paid for.
    ///
    /// # Errors
    ///
    /// As [`bytes`](Self::bytes).
    pub fn decimal(&mut self, id: Id, raw: &[u8]) -> Result<String, String> {
        if !self.decimals.contains_key(&id) {
            // A byte makes at most 2.41 digits; one more for the sign.
            self.bytes(raw.len().saturating_mul(5) / 2 + 2)?;
            self.decimals.insert(id, decimal(raw));
        }
        let len = self.decimals[&id].len();
        self.bytes(len)?;
        Ok(self.decimals[&id].clone())
    }

    /// A copy of `s`, paid for.
    ///
    /// # Errors
    ///
    /// As [`bytes`](Self::bytes).
    pub fn string(&mut self, s: &str) -> Result<String, String> {
        self.bytes(s.len())?;
        Ok(s.to_owned())
    }
}

/// Whether the generic conversion understands `global` (for strict mode).
pub fn is_known(global: &Global) -> bool {
    let (m, n) = (global.module.as_str(), global.name.as_str());
    matches!(
        (m, n),
        ("collections", "OrderedDict" | "defaultdict" | "Counter")
            | (
                "builtins",
                "set"
                    | "frozenset"
                    | "complex"
                    | "bytearray"
                    | "slice"
                    | "dict"
                    | "list"
                    | "tuple"
                    | "object"
                    | "int"
                    | "float"
                    | "str"
                    | "bool"
            )
            | ("_codecs", "encode")
            | ("copyreg", "_reconstructor")
            | ("argparse", "Namespace")
            | (
                "datetime",
                "datetime" | "date" | "time" | "timedelta" | "timezone"
            )
            | ("numpy", "dtype" | "ndarray")
            | (
                "numpy.core.multiarray" | "numpy._core.multiarray",
                "scalar" | "_reconstruct"
            )
    ) || (matches!(m, "pathlib" | "pathlib._local") && n.ends_with("Path"))
        || (m.starts_with("numpy.dtypes") && n.ends_with("DType"))
}

/// Converts `heap`'s root into a node; `name` names the pickle in messages about the arrays
/// it holds (numpy arrays become tensors over the pickle's own bytes).
///
/// # Errors
///
/// A message naming the path at fault: a value that contains itself, a limit exceeded, or a
/// call the hooks refused.
pub fn to_node(heap: &Heap, hooks: &mut dyn Hooks, name: &str) -> Result<Node, String> {
    let mut cx = Converter {
        heap,
        name,
        path: Vec::new(),
        budget: Budget::for_heap(heap),
        arrays: 0,
    };
    cx.node(hooks, heap.root())
}

struct Converter<'a> {
    heap: &'a Heap,
    name: &'a str,
    /// The containers being converted, outermost first: a value met again on its own path
    /// contains itself.
    path: Vec<Id>,
    budget: Budget,
    arrays: usize,
}

impl Converter<'_> {
    fn node(&mut self, hooks: &mut dyn Hooks, id: Id) -> Result<Node, String> {
        self.budget.node()?;
        let container = matches!(
            self.heap.get(id),
            Value::Tuple(_)
                | Value::List(_)
                | Value::Dict(_)
                | Value::Set(_)
                | Value::Call(_)
                | Value::PersistentId(_)
        );
        if !container {
            return self.value(hooks, id);
        }
        if self.path.contains(&id) {
            return Err("a value contains itself (a cycle of references)".into());
        }
        if self.path.len() >= MAX_DEPTH {
            return Err(format!("values nest deeper than {MAX_DEPTH} levels"));
        }
        self.path.push(id);
        let node = self.value(hooks, id);
        self.path.pop();
        node
    }

    fn list<'i>(
        &mut self,
        hooks: &mut dyn Hooks,
        items: impl IntoIterator<Item = &'i Id>,
        tuple: bool,
    ) -> Result<Node, String> {
        let items: Vec<Node> = items
            .into_iter()
            .map(|&i| self.node(hooks, i))
            .collect::<Result<_, _>>()?;
        Ok(Node::List(if tuple {
            List::tuple(items)
        } else {
            items.into()
        }))
    }

    fn dict<'i>(
        &mut self,
        hooks: &mut dyn Hooks,
        pairs: impl IntoIterator<Item = &'i (Id, Id)>,
    ) -> Result<Dict, String> {
        let mut dict = Dict::new();
        let mut int_keys = true;
        for &(k, v) in pairs {
            int_keys &= matches!(self.heap.get(k), Value::Int(_));
            let key = key_string(self.heap, k, &mut self.budget)?;
            let value = self
                .node(hooks, v)
                .map_err(|e| format!("at `{key}`: {e}"))?;
            dict.insert(key, value);
        }
        if int_keys && !dict.is_empty() {
            dict = dict.with_key_kind(KeyKind::Int);
        }
        Ok(dict)
    }

    fn value(&mut self, hooks: &mut dyn Hooks, id: Id) -> Result<Node, String> {
        let heap = self.heap;
        let leaf = |l| Ok(Node::Leaf(l));
        match heap.get(id) {
            Value::None => leaf(Leaf::None),
            Value::Bool(b) => leaf(Leaf::Bool(*b)),
            Value::Int(v) => leaf(Leaf::Int(Int::Small(*v))),
            Value::BigInt(raw) => leaf(Leaf::Int(Int::Big(self.budget.decimal(id, raw)?))),
            Value::Float(v) => leaf(Leaf::Float(*v)),
            Value::Str(s) => leaf(Leaf::Str(self.budget.string(s)?)),
            Value::Bytes(b) => leaf(Leaf::Bytes((**b).clone())),
            Value::Tuple(items) => self.list(hooks, items.iter(), true),
            Value::List(items) | Value::Set(items) => self.list(hooks, items, false),
            Value::Dict(pairs) => Ok(Node::Dict(self.dict(hooks, pairs)?)),
            Value::Global(g) => {
                self.budget.bytes(g.module.len() + g.name.len() + 1)?;
                leaf(Leaf::Str(g.to_string()))
            }
            Value::PersistentId(pid) => Ok(Node::from(Opaque {
                module: "pickle".into(),
                name: "persistent_id".into(),
                args: vec![self.node(hooks, *pid)?],
                kwargs: None,
                state: None,
            })),
            Value::Call(call) => {
                let Some(func) = heap.global(call.func) else {
                    return self.opaque(hooks, "pickle", "call", call, true);
                };
                if let Some(node) = hooks.call(heap, func, call, &mut self.budget) {
                    return node;
                }
                self.call(hooks, func, call)
            }
        }
    }

    fn call(&mut self, hooks: &mut dyn Hooks, func: &Global, call: &Call) -> Result<Node, String> {
        let heap = self.heap;
        let args = heap.items(call.args).unwrap_or_default();
        let (m, n) = (func.module.as_str(), func.name.as_str());
        let leaf = |l| Ok(Node::Leaf(l));
        match (m, n) {
            ("collections", "OrderedDict" | "defaultdict" | "Counter") | ("builtins", "dict") => {
                let mut dict = Dict::new();
                // Counter(dict) and OrderedDict([(k, v), ...]) carry items in their arguments.
                if n != "defaultdict"
                    && let Some(&first) = args.first()
                {
                    match (heap.get(first), heap.items(first)) {
                        (Value::Dict(pairs), _) => dict.extend(self.dict(hooks, pairs)?),
                        (_, Some(items)) => {
                            let pairs: Vec<(Id, Id)> = items
                                .iter()
                                .filter_map(|&p| match heap.items(p) {
                                    Some(&[k, v]) => Some((k, v)),
                                    _ => None,
                                })
                                .collect();
                            dict.extend(self.dict(hooks, &pairs)?);
                        }
                        _ => {}
                    }
                }
                dict.extend(self.dict(hooks, call.items())?);
                Ok(Node::Dict(dict))
            }
            ("builtins", kind @ ("set" | "frozenset" | "list" | "tuple")) => {
                let first: &[Id] = match args.first().map(|&a| heap.get(a)) {
                    Some(Value::List(i) | Value::Set(i)) => i,
                    Some(Value::Tuple(i)) => i,
                    _ => &[],
                };
                self.list(hooks, first.iter().chain(call.appended()), kind == "tuple")
            }
            ("builtins", "slice") => self.list(hooks, args, false),
            ("builtins", "complex") => {
                let part = |i: usize| args.get(i).and_then(|&a| number(heap, a)).unwrap_or(0.0);
                let mut dict = Dict::new();
                dict.insert("real".into(), Node::Leaf(Leaf::Float(part(0))));
                dict.insert("imag".into(), Node::Leaf(Leaf::Float(part(1))));
                Ok(Node::Dict(dict))
            }
            ("_codecs", "encode") | ("builtins", "bytearray") => match bytes_of(heap, call, 0) {
                Some(b) => {
                    self.budget.bytes(b.len())?;
                    leaf(Leaf::Bytes(b))
                }
                None => self.opaque(hooks, m, n, call, true),
            },
            ("copyreg", "_reconstructor") => {
                // _reconstructor(cls, object, None) then BUILD: an instance of `cls`.
                match args.first().and_then(|&c| heap.global(c)) {
                    Some(cls) => self.opaque(hooks, &cls.module, &cls.name, call, false),
                    None => self.opaque(hooks, m, n, call, true),
                }
            }
            ("argparse", "Namespace") => match call.state.map(|s| heap.get(s)) {
                Some(Value::Dict(pairs)) => Ok(Node::Dict(self.dict(hooks, pairs)?)),
                _ => Ok(Node::Dict(Dict::new())),
            },
            ("datetime", _) => match datetime(heap, n, args) {
                Some(l) => leaf(l),
                None => self.opaque(hooks, m, n, call, true),
            },
            ("numpy.core.multiarray" | "numpy._core.multiarray", "scalar") => {
                let scalar = args
                    .first()
                    .and_then(|&d| numpy_dtype(heap, d))
                    .zip(args.get(1).and_then(|&b| bytes_value(heap, b)));
                match scalar.and_then(|((dtype, big), raw)| scalar_leaf(dtype, big, &raw)) {
                    Some(l) => leaf(l),
                    None => self.opaque(hooks, m, n, call, true),
                }
            }
            ("numpy.core.multiarray" | "numpy._core.multiarray", "_reconstruct") => {
                match self.array(call)? {
                    Some(t) => Ok(t.into()),
                    None => self.opaque(hooks, "numpy", "ndarray", call, true),
                }
            }
            ("numpy", "dtype") => match args.first().map(|&a| heap.get(a)) {
                Some(Value::Str(s)) => {
                    self.budget.bytes(s.len() + "numpy.".len())?;
                    leaf(Leaf::Str(format!("numpy.{s}")))
                }
                _ => self.opaque(hooks, m, n, call, true),
            },
            _ if matches!(m, "pathlib" | "pathlib._local") && n.ends_with("Path") => {
                let parts: Vec<&str> = args
                    .iter()
                    .filter_map(|&a| match heap.get(a) {
                        Value::Str(s) => Some(s.as_str()),
                        _ => None,
                    })
                    .collect();
                self.budget.bytes(parts.iter().map(|p| p.len() + 1).sum())?;
                leaf(Leaf::Str(parts.join("/").replace("//", "/")))
            }
            _ => self.opaque(hooks, m, n, call, true),
        }
    }

    /// An object of class `module.name`, inert: its arguments (unless `with_args` is false:
    /// `copyreg._reconstructor`'s are not the object's), keyword arguments and state.
    fn opaque(
        &mut self,
        hooks: &mut dyn Hooks,
        module: &str,
        name: &str,
        call: &Call,
        with_args: bool,
    ) -> Result<Node, String> {
        self.budget.bytes(module.len() + name.len())?;
        let args = match self.heap.items(call.args) {
            Some(items) if with_args => items
                .iter()
                .map(|&a| self.node(hooks, a))
                .collect::<Result<_, _>>()?,
            _ => Vec::new(),
        };
        let mut state = match call.state {
            Some(s) => Some(Box::new(self.node(hooks, s)?)),
            None => None,
        };
        if state.is_none() && !call.items().is_empty() {
            state = Some(Box::new(Node::Dict(self.dict(hooks, call.items())?)));
        }
        if state.is_none() && !call.appended().is_empty() {
            state = Some(Box::new(self.list(hooks, call.appended(), false)?));
        }
        let kwargs = match call.kwargs {
            Some(k) => Some(Box::new(self.node(hooks, k)?)),
            None => None,
        };
        Ok(Node::from(Opaque {
            module: module.into(),
            name: name.into(),
            args,
            kwargs,
            state,
        }))
    }

    /// A numpy array: `_reconstruct(ndarray, (0,), b'b')` then `BUILD` with
    /// `(version, shape, dtype, is_fortran, raw data)`.
    fn array(&mut self, call: &Call) -> Result<Option<LazyTensor>, String> {
        let heap = self.heap;
        let Some(state) = call.state.and_then(|s| heap.items(s)) else {
            return Ok(None);
        };
        let [_, shape, dtype, fortran, data] = state else {
            return Ok(None);
        };
        let Some(shape) = shape_of(heap, *shape)? else {
            return Ok(None);
        };
        let (Some((dtype, big_endian)), Some(data)) =
            (numpy_dtype(heap, *dtype), bytes_value(heap, *data))
        else {
            return Ok(None);
        };
        let fits = crate::dtype::numel(&shape).and_then(|n| dtype.byte_len(n));
        if fits != Some(data.len() as u64) {
            return Ok(None);
        }
        let strides = if matches!(heap.get(*fortran), Value::Bool(true)) && shape.len() > 1 {
            let mut strides = vec![1u64; shape.len()];
            for i in 1..shape.len() {
                strides[i] = strides[i - 1].saturating_mul(shape[i - 1]);
            }
            strides
        } else {
            Vec::new()
        };
        self.arrays += 1;
        let origin = format!("{}: array {}", self.name, self.arrays);
        self.budget.bytes(origin.len())?;
        Ok(Some(LazyTensor {
            dtype,
            shape,
            strides,
            data: TensorData::Inline(Inline {
                bytes: data,
                big_endian,
                origin: Arc::from(origin),
                checked: false,
            }),
            view: Default::default(),
            quantized: None,
        }))
    }
}

/// A tuple of non-negative integers as a shape: `None` if it is not one, an error if it has
/// more than [`MAX_DIMS`] dimensions.
fn shape_of(heap: &Heap, id: Id) -> Result<Option<Vec<u64>>, String> {
    let Some(items) = heap.items(id) else {
        return Ok(None);
    };
    if items.len() > MAX_DIMS {
        return Err(format!(
            "an array of {} dimensions (more than {MAX_DIMS})",
            items.len()
        ));
    }
    Ok(items
        .iter()
        .map(|&d| match heap.get(d) {
            Value::Int(v) => u64::try_from(*v).ok(),
            _ => None,
        })
        .collect())
}

/// How deep `bytearray(bytearray(...))` may nest.
const MAX_BYTES_DEPTH: usize = 4;

/// The bytes a value stands for: `bytes`, or `_codecs.encode(str, "latin1")` (how protocol 2
/// pickles bytes), or `bytearray(...)`.
pub fn bytes_value(heap: &Heap, id: Id) -> Option<Bytes> {
    bytes_at(heap, id, 0)
}

fn bytes_at(heap: &Heap, id: Id, depth: usize) -> Option<Bytes> {
    match heap.get(id) {
        Value::Bytes(b) => Some((**b).clone()),
        Value::Str(s) => latin1(s),
        Value::Call(call) => bytes_of(heap, call, depth),
        _ => None,
    }
}

fn bytes_of(heap: &Heap, call: &Call, depth: usize) -> Option<Bytes> {
    let func = heap.global(call.func)?;
    let args = heap.items(call.args)?;
    if func.is("_codecs", "encode") {
        let Value::Str(text) = heap.get(*args.first()?) else {
            return None;
        };
        let encoding = match args.get(1).map(|&e| heap.get(e)) {
            Some(Value::Str(e)) if e.len() <= 16 => e.to_ascii_lowercase().replace(['-', '_'], ""),
            Some(Value::Str(_)) => return None,
            _ => "utf8".into(),
        };
        return match encoding.as_str() {
            "latin1" | "iso88591" => latin1(text),
            "utf8" => Some(Bytes::copy_from_slice(text.as_bytes())),
            _ => None,
        };
    }
    if func.name == "bytearray" && depth < MAX_BYTES_DEPTH {
        return match args.first() {
            None => Some(Bytes::new()),
            Some(&a) => bytes_at(heap, a, depth + 1),
        };
    }
    None
}

fn latin1(text: &str) -> Option<Bytes> {
    text.chars()
        .map(|c| u8::try_from(u32::from(c)).ok())
        .collect::<Option<Vec<u8>>>()
        .map(Bytes::from)
}

fn number(heap: &Heap, id: Id) -> Option<f64> {
    match heap.get(id) {
        Value::Int(v) => Some(*v as f64),
        Value::Float(v) => Some(*v),
        _ => None,
    }
}

/// numpy's type codes (`numpy.dtype("f4")`) and ckptio's dtypes.
const NUMPY: &[(&str, DType)] = &[
    ("b1", DType::BOOL),
    ("i1", DType::I8),
    ("i2", DType::I16),
    ("i4", DType::I32),
    ("i8", DType::I64),
    ("u1", DType::U8),
    ("u2", DType::U16),
    ("u4", DType::U32),
    ("u8", DType::U64),
    ("f2", DType::F16),
    ("f4", DType::F32),
    ("f8", DType::F64),
    ("c8", DType::C64),
    ("c16", DType::C128),
];

/// A numpy type code as a [`DType`].
fn numpy_code(code: &str) -> Option<DType> {
    NUMPY.iter().find(|(c, _)| *c == code).map(|&(_, d)| d)
}

/// A numpy dtype: `numpy.dtype("f8", False, True)` with `BUILD` state
/// `(3, "<", ...)`, or a `numpy.dtypes.Float64DType` instance wrapping one.
fn numpy_dtype(heap: &Heap, id: Id) -> Option<(DType, bool)> {
    let Value::Call(call) = heap.get(id) else {
        return None;
    };
    let func = heap.global(call.func)?;
    if !(func.is("numpy", "dtype") || func.module.starts_with("numpy")) {
        return None;
    }
    let args = heap.items(call.args)?;
    let Value::Str(code) = heap.get(*args.first()?) else {
        return None;
    };
    let order = call
        .state
        .and_then(|s| heap.items(s))
        .and_then(|s| s.get(1))
        .and_then(|&o| match heap.get(o) {
            Value::Str(o) => Some(o.as_str()),
            _ => None,
        })
        .unwrap_or("<");
    let dtype = numpy_code(code)?;
    Some((dtype, order == ">"))
}

fn scalar_leaf(dtype: DType, big_endian: bool, raw: &[u8]) -> Option<Leaf> {
    let mut b = raw.to_vec();
    if big_endian {
        b.reverse();
    }
    let b = b.as_slice();
    Some(match dtype {
        DType::BOOL => Leaf::Bool(*b.first()? != 0),
        DType::I8 => Leaf::Int(Int::Small(i8::from_le_bytes(b.try_into().ok()?).into())),
        DType::I16 => Leaf::Int(Int::Small(i16::from_le_bytes(b.try_into().ok()?).into())),
        DType::I32 => Leaf::Int(Int::Small(i32::from_le_bytes(b.try_into().ok()?).into())),
        DType::I64 => Leaf::Int(Int::Small(i64::from_le_bytes(b.try_into().ok()?))),
        DType::U8 => Leaf::Int(Int::Small(u8::from_le_bytes(b.try_into().ok()?).into())),
        DType::U16 => Leaf::Int(Int::Small(u16::from_le_bytes(b.try_into().ok()?).into())),
        DType::U32 => Leaf::Int(Int::Small(u32::from_le_bytes(b.try_into().ok()?).into())),
        DType::U64 => {
            let v = u64::from_le_bytes(b.try_into().ok()?);
            Leaf::Int(i64::try_from(v).map_or_else(|_| Int::Big(v.to_string()), Int::Small))
        }
        DType::F16 => Leaf::Float(half::f16::from_le_bytes(b.try_into().ok()?).to_f64()),
        DType::F32 => Leaf::Float(f32::from_le_bytes(b.try_into().ok()?).into()),
        DType::F64 => Leaf::Float(f64::from_le_bytes(b.try_into().ok()?)),
        _ => return None,
    })
}

/// `datetime.datetime(b"...")` and friends: the packed state, as an ISO 8601 string; a
/// `timedelta(days, seconds, microseconds)` as seconds.
fn datetime(heap: &Heap, name: &str, args: &[Id]) -> Option<Leaf> {
    let int = |i: usize| match args.get(i).map(|&a| heap.get(a)) {
        Some(Value::Int(v)) => Some(*v),
        None => Some(0),
        _ => None,
    };
    if name == "timedelta" {
        let (d, s, us) = (int(0)?, int(1)?, int(2)?);
        return Some(Leaf::Float(d as f64 * 86400.0 + s as f64 + us as f64 / 1e6));
    }
    let raw = bytes_value(heap, *args.first()?)?;
    let b = raw.as_ref();
    match (name, b.len()) {
        ("datetime", 10) => {
            let year = u16::from_be_bytes([b[0], b[1]]);
            let us = u32::from_be_bytes([0, b[7], b[8], b[9]]);
            Some(Leaf::Str(format!(
                "{year:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{us:06}",
                b[2], b[3], b[4], b[5], b[6]
            )))
        }
        ("date", 4) => {
            let year = u16::from_be_bytes([b[0], b[1]]);
            Some(Leaf::Str(format!("{year:04}-{:02}-{:02}", b[2], b[3])))
        }
        ("time", 6) => {
            let us = u32::from_be_bytes([0, b[3], b[4], b[5]]);
            Some(Leaf::Str(format!(
                "{:02}:{:02}:{:02}.{us:06}",
                b[0], b[1], b[2]
            )))
        }
        _ => None,
    }
}

/// How deep a tuple used as a dict key is rendered; deeper parts print as `(...)`.
const MAX_KEY_DEPTH: usize = 8;

/// A dict key as a path segment: strings as they are, other scalars as Python prints them,
/// paid for from `budget` before it is built.
///
/// # Errors
///
/// When the budget is spent (a tuple key whose parts are shared many times, say).
pub fn key_string(heap: &Heap, id: Id, budget: &mut Budget) -> Result<String, String> {
    key_at(heap, id, budget, 0)
}

fn key_at(heap: &Heap, id: Id, budget: &mut Budget, depth: usize) -> Result<String, String> {
    Ok(match heap.get(id) {
        Value::Str(s) => budget.string(s)?,
        Value::BigInt(raw) => budget.decimal(id, raw)?,
        Value::Bytes(b) => {
            // Debug escapes take at most 6 characters a byte.
            budget.bytes(b.len().saturating_mul(6).saturating_add(3))?;
            format!("b{:?}", String::from_utf8_lossy(b))
        }
        Value::Global(g) => {
            budget.bytes(g.module.len() + g.name.len() + 1)?;
            g.to_string()
        }
        Value::Tuple(items) if depth < MAX_KEY_DEPTH => {
            let mut out = String::from("(");
            for (i, &item) in items.iter().enumerate() {
                budget.node()?;
                if i > 0 {
                    out.push_str(", ");
                }
                out.push_str(&key_at(heap, item, budget, depth + 1)?);
            }
            out.push(')');
            out
        }
        Value::Tuple(_) => "(...)".into(),
        scalar => {
            let text = match scalar {
                Value::Int(v) => v.to_string(),
                Value::Bool(true) => "True".into(),
                Value::Bool(false) => "False".into(),
                Value::None => "None".into(),
                Value::Float(v) => format!("{v:?}"),
                _ => "<object>".into(),
            };
            budget.bytes(text.len())?;
            text
        }
    })
}

/// Little-endian two's complement → decimal digits.
pub(crate) fn decimal(raw: &[u8]) -> String {
    let negative = raw.last().is_some_and(|&b| b & 0x80 != 0);
    let mut magnitude: Vec<u8> = raw.to_vec();
    if negative {
        // Two's complement: invert and add one.
        let mut carry = true;
        for b in &mut magnitude {
            *b = !*b;
            if carry {
                let (v, c) = b.overflowing_add(1);
                *b = v;
                carry = c;
            }
        }
    }
    // Base 2^32 limbs, most significant first; repeatedly divide by 10^9.
    let mut limbs: Vec<u32> = magnitude
        .chunks(4)
        .rev()
        .map(|c| {
            let mut w = [0u8; 4];
            w[..c.len()].copy_from_slice(c);
            u32::from_le_bytes(w)
        })
        .collect();
    let mut groups = Vec::new();
    while limbs.iter().any(|&l| l != 0) {
        let mut rem = 0u64;
        for l in &mut limbs {
            let cur = (rem << 32) | u64::from(*l);
            *l = (cur / 1_000_000_000) as u32;
            rem = cur % 1_000_000_000;
        }
        groups.push(rem as u32);
    }
    let mut out = String::from(if negative { "-" } else { "" });
    match groups.split_last() {
        None => out.push('0'),
        Some((first, rest)) => {
            out.push_str(&first.to_string());
            for g in rest.iter().rev() {
                out.push_str(&format!("{g:09}"));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::pickle::{Policy, parse};

    fn convert(data: &[u8]) -> Result<Node, String> {
        let heap = parse(data, &Policy::permissive()).unwrap();
        to_node(&heap, &mut NoHooks, "test")
    }

    #[test]
    fn every_numpy_code_round_trips() {
        let mut dtypes = std::collections::BTreeSet::new();
        for &(code, dtype) in NUMPY {
            assert_eq!(numpy_code(code), Some(dtype), "{code}");
            assert!(dtypes.insert(dtype), "{dtype} listed twice");
            // The code's digits are the element's width in bytes.
            let width: u64 = code[1..].parse().unwrap();
            assert_eq!(dtype.bits(), width * 8, "{code}");
        }
        assert_eq!(numpy_code("f16"), None, "no ckptio dtype for long double");
    }

    #[test]
    fn big_integers_are_exact_decimals() {
        assert_eq!(
            decimal(&[0, 0, 0, 0, 0, 0, 0, 0, 1]),
            "18446744073709551616"
        );
        assert_eq!(decimal(&[0xff]), "-1");
        assert_eq!(decimal(&[0x00, 0x80]), "-32768");
        assert_eq!(decimal(&[0x00]), "0");
        // 10**30
        let raw = [
            0x00, 0x00, 0x00, 0x40, 0xea, 0xed, 0x74, 0x46, 0xd0, 0x9c, 0x2c, 0x9f, 0x0c,
        ];
        assert_eq!(decimal(&raw), "1000000000000000000000000000000");
    }

    #[test]
    fn ordered_dicts_sets_and_protocol_2_bytes_become_plain_data() {
        // pickle.dumps({"o": collections.OrderedDict(a=1), "s": {3}, "b": b"\x00\xff",
        //               "p": pathlib.PurePosixPath("/x/y"), "c": collections.Counter(k=2)}, 2)
        let data = b"\x80\x02}q\x00(X\x01\x00\x00\x00oq\x01ccollections\nOrderedDict\nq\x02)Rq\x03X\x01\x00\x00\x00aq\x04K\x01sX\x01\x00\x00\x00sq\x05c__builtin__\nset\nq\x06]q\x07K\x03a\x85q\x08Rq\tX\x01\x00\x00\x00bq\nc_codecs\nencode\nq\x0bX\x03\x00\x00\x00\x00\xc3\xbfq\x0cX\x06\x00\x00\x00latin1q\r\x86q\x0eRq\x0fX\x01\x00\x00\x00pq\x10cpathlib\nPurePosixPath\nq\x11X\x01\x00\x00\x00/q\x12X\x01\x00\x00\x00xq\x13X\x01\x00\x00\x00yq\x14\x87q\x15Rq\x16X\x01\x00\x00\x00cq\x17ccollections\nCounter\nq\x18}q\x19X\x01\x00\x00\x00kq\x1aK\x02s\x85q\x1bRq\x1cu.";
        let Node::Dict(d) = convert(data).unwrap() else {
            panic!()
        };
        assert!(
            matches!(&d["o"], Node::Dict(o) if matches!(o["a"], Node::Leaf(Leaf::Int(Int::Small(1)))))
        );
        assert!(matches!(&d["s"], Node::List(s) if s.len() == 1));
        assert!(matches!(&d["b"], Node::Leaf(Leaf::Bytes(b)) if b[..] == [0, 255]));
        assert!(matches!(&d["p"], Node::Leaf(Leaf::Str(p)) if p == "/x/y"));
        assert!(matches!(&d["c"], Node::Dict(c) if c.contains_key("k")));
    }

    #[test]
    fn tuples_and_integer_keys_are_remembered_for_python() {
        // pickle.dumps({"state": {0: {"step": 1}, 1: {"step": 2}}, "betas": (0.9, 0.999),
        //               "params": [0, 1], "mixed": {0: 1, "a": 2}}, 2)
        let data = b"\x80\x02}q\x00(X\x05\x00\x00\x00stateq\x01}q\x02(K\x00}q\x03X\x04\x00\x00\x00stepq\x04K\x01sK\x01}q\x05h\x04K\x02suX\x05\x00\x00\x00betasq\x06G?\xec\xcc\xcc\xcc\xcc\xcc\xcdG?\xef\xf7\xce\xd9\x16\x87+\x86q\x07X\x06\x00\x00\x00paramsq\x08]q\t(K\x00K\x01eX\x05\x00\x00\x00mixedq\n}q\x0b(K\x00K\x01X\x01\x00\x00\x00aq\x0cK\x02uu.";
        let Node::Dict(d) = convert(data).unwrap() else {
            panic!()
        };
        assert_eq!(d.key_kind(), KeyKind::Str);
        assert!(
            matches!(&d["state"], Node::Dict(s) if s.key_kind() == KeyKind::Int && s.contains_key("1"))
        );
        assert!(matches!(&d["betas"], Node::List(b) if b.is_tuple() && b.len() == 2));
        assert!(matches!(&d["params"], Node::List(p) if !p.is_tuple()));
        assert!(matches!(&d["mixed"], Node::Dict(m) if m.key_kind() == KeyKind::Str));
    }

    #[test]
    fn unknown_classes_stay_inert_opaque_nodes() {
        // class Thing: pass; t = Thing(); t.x = 1; pickle.dumps(t, 2) with Thing in `mod`
        let data = b"\x80\x02cmod\nThing\nq\x00)\x81q\x01}q\x02X\x01\x00\x00\x00xq\x03K\x01sb.";
        let Node::Leaf(Leaf::Opaque(o)) = convert(data).unwrap() else {
            panic!()
        };
        assert_eq!((o.module.as_str(), o.name.as_str()), ("mod", "Thing"));
        assert!(matches!(o.state.as_deref(), Some(Node::Dict(d)) if d.contains_key("x")));
    }

    #[test]
    fn cycles_and_memo_bombs_are_bounded_errors() {
        // l = []; l.append(l)
        let err = convert(b"\x80\x02]q\x00h\x00a.").unwrap_err();
        assert!(err.contains("contains itself"), "{err}");
        // 40 levels of [x, x]: 2**40 nodes once expanded.
        let data = crate::format::pickle::memo_bomb(40);
        let err = convert(&data).unwrap_err();
        assert!(err.contains("more than"), "{err}");
    }
}
