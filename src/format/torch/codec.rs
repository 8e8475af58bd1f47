//! What torch's pickles mean: the rebuild functions that make tensors out of storages, torch's
//! dtype and storage-class names, `torch.Size`, `torch.device`. Pure: where a storage's bytes
//! are is asked of a [`Storages`] the reader provides.

use std::borrow::Cow;
use std::ops::Range;
use std::sync::Arc;

use crate::dtype::DType;
use crate::format::pickle::convert::{self, Budget, Hooks};
use crate::format::pickle::{Call, Global, Heap, Id, Value};
use crate::tree::{
    LazyTensor, Leaf, List, MAX_DIMS, Node, TensorData, Unreadable, View, strided_extent,
};

/// Where storages' bytes are: the reader's side of the rebuild rules.
pub(crate) trait Storages {
    /// The data of a tensor whose elements occupy `bytes` of storage `key` (an empty range
    /// for an empty tensor).
    ///
    /// # Errors
    ///
    /// A message saying what is wrong: no record for the storage, a range past its end.
    fn data(&self, key: &str, bytes: Range<u64>) -> Result<TensorData, String>;

    /// The file the storages are in, for messages about tensors ckptio does not read.
    fn origin(&self) -> Arc<str>;
}

/// Torch's dtype names (`torch.float32` and its aliases) and ckptio's dtypes; the first name
/// of a dtype is what torch prints.
pub(crate) const DTYPES: &[(&str, DType)] = &[
    ("float32", DType::F32),
    ("float", DType::F32),
    ("float64", DType::F64),
    ("double", DType::F64),
    ("float16", DType::F16),
    ("half", DType::F16),
    ("bfloat16", DType::BF16),
    ("int64", DType::I64),
    ("long", DType::I64),
    ("int32", DType::I32),
    ("int", DType::I32),
    ("int16", DType::I16),
    ("short", DType::I16),
    ("int8", DType::I8),
    ("uint8", DType::U8),
    ("uint16", DType::U16),
    ("uint32", DType::U32),
    ("uint64", DType::U64),
    ("bool", DType::BOOL),
    ("complex64", DType::C64),
    ("cfloat", DType::C64),
    ("complex128", DType::C128),
    ("cdouble", DType::C128),
    ("complex32", DType::C32),
    ("chalf", DType::C32),
    ("float8_e4m3fn", DType::F8_E4M3),
    ("float8_e5m2", DType::F8_E5M2),
    ("float8_e4m3fnuz", DType::F8_E4M3FNUZ),
    ("float8_e5m2fnuz", DType::F8_E5M2FNUZ),
    ("float8_e8m0fnu", DType::F8_E8M0),
];

/// Typed storage classes (`torch.FloatStorage`) and their dtypes. Untyped storages hold bytes;
/// `_rebuild_tensor_v3` says the dtype.
pub(crate) const STORAGES: &[(&str, DType)] = &[
    ("FloatStorage", DType::F32),
    ("DoubleStorage", DType::F64),
    ("HalfStorage", DType::F16),
    ("BFloat16Storage", DType::BF16),
    ("LongStorage", DType::I64),
    ("IntStorage", DType::I32),
    ("ShortStorage", DType::I16),
    ("CharStorage", DType::I8),
    ("ByteStorage", DType::U8),
    ("BoolStorage", DType::BOOL),
    ("ComplexFloatStorage", DType::C64),
    ("ComplexDoubleStorage", DType::C128),
    ("ComplexHalfStorage", DType::C32),
    ("UInt16Storage", DType::U16),
    ("UInt32Storage", DType::U32),
    ("UInt64Storage", DType::U64),
    ("UntypedStorage", DType::U8),
    // Quantized storages hold the integers; the tensors over them are not read.
    ("QInt8Storage", DType::I8),
    ("QUInt8Storage", DType::U8),
    ("QInt32Storage", DType::I32),
    ("QUInt4x2Storage", DType::U8),
    ("QUInt2x4Storage", DType::U8),
];

/// Torch dtypes ckptio has no dtype for, and why: what `inspect` and the docs say of them.
pub(crate) const UNNAMED: &[(&str, &str)] = &[
    ("qint8", "quantized"),
    ("quint8", "quantized"),
    ("qint32", "quantized"),
    ("quint4x2", "quantized"),
    ("quint2x4", "quantized"),
    ("bits1x8", "raw bits"),
    ("bits2x4", "raw bits"),
    ("bits4x2", "raw bits"),
    ("bits8", "raw bits"),
    ("bits16", "raw bits"),
    ("float4_e2m1fn_x2", "packed pairs of 4-bit floats"),
    ("uint1", "sub-byte integers"),
    ("uint2", "sub-byte integers"),
    ("uint3", "sub-byte integers"),
    ("uint4", "sub-byte integers"),
    ("uint5", "sub-byte integers"),
    ("uint6", "sub-byte integers"),
    ("uint7", "sub-byte integers"),
    ("int1", "sub-byte integers"),
    ("int2", "sub-byte integers"),
    ("int3", "sub-byte integers"),
    ("int4", "sub-byte integers"),
    ("int5", "sub-byte integers"),
    ("int6", "sub-byte integers"),
    ("int7", "sub-byte integers"),
];

/// Quantization schemes, which `_rebuild_qtensor` names.
const QSCHEMES: &[&str] = &[
    "per_tensor_affine",
    "per_channel_affine",
    "per_channel_affine_float_qparams",
    "per_tensor_symmetric",
    "per_channel_symmetric",
];

/// Tensor layouts, which `_rebuild_sparse_tensor` and wrapper subclasses name.
const LAYOUTS: &[&str] = &[
    "strided",
    "sparse_coo",
    "sparse_csr",
    "sparse_csc",
    "sparse_bsr",
    "sparse_bsc",
    "jagged",
];

/// A torch dtype attribute (`torch.float32`) as a [`DType`].
pub(crate) fn torch_dtype(name: &str) -> Option<DType> {
    DTYPES.iter().find(|(n, _)| *n == name).map(|&(_, d)| d)
}

/// A torch dtype global (`torch.float32`) as a [`DType`].
pub(crate) fn dtype_of(global: &Global) -> Option<DType> {
    (global.module == "torch").then(|| torch_dtype(&global.name))?
}

/// A storage class (`FloatStorage`) as a [`DType`]; a class not in the table is read as
/// `{Dtype}Storage` of a torch dtype name.
pub(crate) fn storage_dtype(name: &str) -> Option<DType> {
    STORAGES
        .iter()
        .find(|(n, _)| *n == name)
        .map(|&(_, d)| d)
        .or_else(|| torch_dtype(&name.strip_suffix("Storage")?.to_ascii_lowercase()))
}

/// Whether `global` is one of the torch names these rules interpret.
pub(crate) fn is_known(global: &Global) -> bool {
    let (m, n) = (global.module.as_str(), global.name.as_str());
    match m {
        "torch._utils" => n.starts_with("_rebuild_"),
        "torch._tensor" => n == "_rebuild_from_type_v2",
        "torch" => {
            n.ends_with("Storage")
                || n == "Size"
                || n == "device"
                || torch_dtype(n).is_some()
                || QSCHEMES.contains(&n)
                || LAYOUTS.contains(&n)
                || UNNAMED.iter().any(|(u, _)| *u == n)
        }
        "torch.storage" => n == "UntypedStorage" || n == "TypedStorage",
        "torch.nn.parameter" => n == "Parameter",
        "torch.torch_version" => n == "TorchVersion",
        "torch.serialization" => n == "_get_layout",
        _ => false,
    }
}

/// Converts a torch pickle's heap into a node: tensors over `storages`, everything else by the
/// generic rules; `name` names the pickle in messages.
///
/// # Errors
///
/// A message naming what is wrong: a tensor whose arguments do not fit, a storage that is not
/// there, a limit of the conversion.
pub(crate) fn to_node(heap: &Heap, storages: &dyn Storages, name: &str) -> Result<Node, String> {
    let mut rules = Rebuild {
        storages,
        path: Vec::new(),
    };
    convert::to_node(heap, &mut rules, name)
}

/// How deep rebuild calls may nest (a parameter of a subclass of a tensor is three).
const MAX_REBUILD_DEPTH: usize = 8;

/// The rebuild rules, as conversion hooks.
struct Rebuild<'a> {
    storages: &'a dyn Storages,
    /// The argument tuples of the rebuild calls being followed, outermost first.
    path: Vec<Id>,
}

impl Hooks for Rebuild<'_> {
    fn call(
        &mut self,
        heap: &Heap,
        func: &Global,
        call: &Call,
        budget: &mut Budget,
    ) -> Option<Result<Node, String>> {
        self.follow(heap, func, call.args, budget)
    }
}

impl Rebuild<'_> {
    /// The call of `func` with the argument tuple `args`, unless following it would go round
    /// a cycle or too deep.
    fn follow(
        &mut self,
        heap: &Heap,
        func: &Global,
        args: Id,
        budget: &mut Budget,
    ) -> Option<Result<Node, String>> {
        if self.path.contains(&args) {
            return Some(Err(format!("a `{func}` call contains itself")));
        }
        if self.path.len() >= MAX_REBUILD_DEPTH {
            return Some(Err(format!(
                "tensor rebuild calls nest deeper than {MAX_REBUILD_DEPTH} levels"
            )));
        }
        self.path.push(args);
        let items = heap.items(args).unwrap_or_default();
        let node = self.rebuild(heap, func, items, budget);
        self.path.pop();
        node
    }

    fn rebuild(
        &mut self,
        heap: &Heap,
        func: &Global,
        args: &[Id],
        budget: &mut Budget,
    ) -> Option<Result<Node, String>> {
        let (m, n) = (func.module.as_str(), func.name.as_str());
        let tensor = |t: Result<LazyTensor, String>| Some(t.map(Node::from));
        match (m, n) {
            ("torch._utils", "_rebuild_tensor" | "_rebuild_tensor_v2") => {
                let view = match args.get(6).map(|&m| view_of(heap, m)) {
                    Some(Err(e)) => return Some(Err(e)),
                    Some(Ok(view)) => view,
                    None => View::default(),
                };
                tensor(
                    self.tensor(heap, args, None)
                        .map(|t| LazyTensor { view, ..t }),
                )
            }
            ("torch._utils", "_rebuild_tensor_v3") => {
                let dtype = match args.get(6).and_then(|&d| heap.global(d)) {
                    Some(g) if g.module == "torch" => match torch_dtype(&g.name) {
                        Some(dtype) => dtype,
                        None => return Some(Err(unnamed(g))),
                    },
                    _ => return Some(Err("_rebuild_tensor_v3 without a torch dtype".into())),
                };
                let view = match args.get(7).map(|&m| view_of(heap, m)) {
                    Some(Err(e)) => return Some(Err(e)),
                    Some(Ok(view)) => view,
                    None => View::default(),
                };
                tensor(
                    self.tensor(heap, args, Some(dtype))
                        .map(|t| LazyTensor { view, ..t }),
                )
            }
            ("torch._utils", "_rebuild_qtensor") => tensor(self.quantized(heap, args)),
            ("torch._utils", "_rebuild_sparse_tensor") => tensor(self.sparse(heap, args, budget)),
            ("torch._utils", "_rebuild_nested_tensor") => {
                let buffer = self.inner_tensor(heap, *args.first()?, budget)?;
                // `sizes` is a tensor of one row per nested tensor.
                let count = match args
                    .get(1)
                    .and_then(|&s| self.inner_tensor(heap, s, budget))
                {
                    Some(Ok(sizes)) => sizes.shape.first().copied().unwrap_or(0),
                    _ => 0,
                };
                tensor(
                    buffer
                        .map(|b| self.unreadable(b, format!("a nested tensor of {count} tensors"))),
                )
            }
            ("torch._utils", "_rebuild_meta_tensor_no_storage") => {
                // (dtype, size, stride, requires_grad): a type and shape on the meta device.
                let dtype = self.dtype_arg(heap, args.first().copied());
                let shape = args.get(1).and_then(|&s| ints(heap, s));
                tensor(match (dtype, shape) {
                    (Ok(dtype), Some(shape)) => Ok(self.unreadable(
                        LazyTensor::abstract_(dtype, shape),
                        "a meta tensor (a type and shape; no data was saved)".into(),
                    )),
                    (Err(e), _) => Err(e),
                    _ => Err("a meta tensor without a size".into()),
                })
            }
            ("torch._utils", "_rebuild_wrapper_subclass") => {
                // (cls, dtype, size, stride, storage_offset, layout, device, requires_grad)
                let class = args
                    .first()
                    .and_then(|&c| heap.global(c))
                    .map(ToString::to_string);
                let dtype = self.dtype_arg(heap, args.get(1).copied());
                let shape = args.get(2).and_then(|&s| ints(heap, s));
                tensor(match (dtype, shape) {
                    (Ok(dtype), Some(shape)) => Ok(self.unreadable(
                        LazyTensor::abstract_(dtype, shape),
                        format!(
                            "a tensor subclass `{}` whose data is not in the file",
                            class.unwrap_or_else(|| "?".into())
                        ),
                    )),
                    (Err(e), _) => Err(e),
                    _ => Err("a tensor subclass without a size".into()),
                })
            }
            ("torch._utils", "_rebuild_device_tensor_from_numpy" | "_rebuild_xla_tensor") => {
                // (array, dtype, device, requires_grad): a numpy array moved to a device.
                let dtype = self.dtype_arg(heap, args.get(1).copied());
                let shape = args.first().and_then(|&a| numpy_shape(heap, a));
                tensor(match (dtype, shape) {
                    (Ok(dtype), Some(shape)) => Ok(self.unreadable(
                        LazyTensor::abstract_(dtype, shape),
                        format!("a device tensor rebuilt from a numpy array (`{n}`)"),
                    )),
                    (Err(e), _) => Err(e),
                    _ => Err("a device tensor whose array has no shape".into()),
                })
            }
            ("torch._utils", "_rebuild_device_tensor_from_cpu_tensor") => {
                // (data, dtype, device, requires_grad): the CPU tensor, moved to a device.
                let data = self.inner_tensor(heap, *args.first()?, budget)?;
                let dtype = self.dtype_arg(heap, args.get(1).copied());
                tensor(data.and_then(|t| match dtype {
                    Ok(d) if d == t.dtype => Ok(t),
                    Ok(d) => Ok(self.unreadable(
                        t,
                        format!("a tensor cast to {d} when it is loaded, which ckptio does not do"),
                    )),
                    Err(e) => Err(e),
                }))
            }
            ("torch._utils", "_rebuild_parameter" | "_rebuild_parameter_with_state") => {
                let data = *args.first()?;
                self.inner(heap, data, budget)
            }
            ("torch._tensor", "_rebuild_from_type_v2") => {
                // (func, new_type, args, state): the tensor is func(*args).
                let inner = heap.global(*args.first()?)?;
                self.follow(heap, inner, *args.get(2)?, budget)
            }
            ("torch", "Size") => {
                let dims = heap.items(*args.first()?)?;
                let dims: Option<Vec<Node>> = dims
                    .iter()
                    .map(|&d| match heap.get(d) {
                        Value::Int(v) => Some(Node::Leaf(Leaf::Int((*v).into()))),
                        _ => None,
                    })
                    .collect();
                Some(
                    dims.map(|d| Node::List(List::tuple(d)))
                        .ok_or_else(|| "torch.Size of non-integers".into()),
                )
            }
            // A `str` subclass: the version string.
            ("torch.torch_version", "TorchVersion") => match args.first().map(|&a| heap.get(a)) {
                Some(Value::Str(s)) => Some(budget.string(s).map(|s| Node::Leaf(Leaf::Str(s)))),
                _ => None,
            },
            ("torch", "device") => {
                let kind = match args.first().map(|&a| heap.get(a)) {
                    Some(Value::Str(s)) => s,
                    _ => return None,
                };
                let device = match args.get(1).map(|&a| heap.get(a)) {
                    Some(Value::Int(i)) => format!("{kind}:{i}"),
                    _ => kind.clone(),
                };
                Some(
                    budget
                        .bytes(device.len())
                        .map(|()| Node::Leaf(Leaf::Str(device))),
                )
            }
            _ => None,
        }
    }

    /// A nested rebuild call's tensor (a sparse tensor's values, a nested tensor's buffer).
    fn inner_tensor(
        &mut self,
        heap: &Heap,
        id: Id,
        budget: &mut Budget,
    ) -> Option<Result<LazyTensor, String>> {
        Some(match self.inner(heap, id, budget)? {
            Ok(Node::Leaf(Leaf::Tensor(t))) => Ok(*t),
            Ok(_) => Err("a tensor rebuilt from something that is not a tensor".into()),
            Err(e) => Err(e),
        })
    }

    /// A torch dtype argument.
    fn dtype_arg(&self, heap: &Heap, id: Option<Id>) -> Result<DType, String> {
        match id.and_then(|d| heap.global(d)) {
            Some(g) if g.module == "torch" => torch_dtype(&g.name).ok_or_else(|| unnamed(g)),
            _ => Err("a tensor whose dtype is not a torch dtype".into()),
        }
    }

    /// `t`'s type and shape, for a tensor ckptio does not read.
    fn unreadable(&self, t: LazyTensor, what: String) -> LazyTensor {
        LazyTensor {
            data: TensorData::Unreadable(Unreadable {
                what: Arc::from(what),
                origin: self.storages.origin(),
            }),
            strides: Vec::new(),
            view: View::default(),
            ..t
        }
    }

    /// `_rebuild_qtensor(storage, storage_offset, size, stride, quantizer_params, ...)`: the
    /// integers' type and the shape, said to be quantized.
    fn quantized(&self, heap: &Heap, args: &[Id]) -> Result<LazyTensor, String> {
        let [storage, _, size, ..] = args else {
            return Err("a quantized tensor rebuilt from fewer than 3 arguments".into());
        };
        let (dtype, _, class) = storage_of(heap, *storage)?;
        let shape = ints(heap, *size).ok_or("a quantized tensor's size is not a tuple")?;
        let scheme = args
            .get(4)
            .and_then(|&q| heap.items(q))
            .and_then(|q| q.first())
            .and_then(|&s| heap.global(s))
            .map_or_else(|| "an unknown scheme".to_owned(), |g| g.name.clone());
        let kind = class.trim_end_matches("Storage").to_ascii_lowercase();
        Ok(self.unreadable(
            LazyTensor::abstract_(dtype, shape),
            format!("a quantized tensor (torch.{kind}, {scheme}) stored as {dtype}"),
        ))
    }

    /// `_rebuild_sparse_tensor(layout, data)`: the values' type and the dense shape, said to be
    /// sparse.
    fn sparse(
        &mut self,
        heap: &Heap,
        args: &[Id],
        budget: &mut Budget,
    ) -> Result<LazyTensor, String> {
        // `torch.sparse_coo`, or `torch.serialization._get_layout("torch.sparse_coo")`.
        let layout = match args.first().map(|&l| heap.get(l)) {
            Some(Value::Global(g)) => g.name.clone(),
            Some(Value::Call(c)) => match heap.items(c.args).and_then(|a| a.first()) {
                Some(&name) => match heap.get(name) {
                    Value::Str(s) => s.trim_start_matches("torch.").to_owned(),
                    _ => "sparse".into(),
                },
                None => "sparse".into(),
            },
            _ => "sparse".into(),
        };
        let parts = args
            .get(1)
            .and_then(|&d| heap.items(d))
            .ok_or("a sparse tensor without its parts")?;
        // COO: (indices, values, size[, coalesced]); compressed: (indices, indices, values, size).
        let (values, size) = if layout == "sparse_coo" {
            (parts.get(1), parts.get(2))
        } else {
            (parts.get(2), parts.get(3))
        };
        let values = values
            .and_then(|&v| self.inner_tensor(heap, v, budget))
            .ok_or("a sparse tensor without values")??;
        let shape = size
            .and_then(|&s| ints(heap, s))
            .ok_or("a sparse tensor without a size")?;
        let nnz = values.shape.first().copied().unwrap_or(0);
        Ok(self.unreadable(
            LazyTensor::abstract_(values.dtype, shape),
            format!("a sparse tensor ({layout}, {nnz} stored values)"),
        ))
    }

    /// A nested rebuild call (a parameter's data).
    fn inner(&mut self, heap: &Heap, id: Id, budget: &mut Budget) -> Option<Result<Node, String>> {
        let Value::Call(call) = heap.get(id) else {
            return Some(Err("a parameter whose data is not a tensor".into()));
        };
        let func = heap.global(call.func)?;
        self.follow(heap, func, call.args, budget)
    }

    /// `_rebuild_tensor_v2(storage, storage_offset, size, stride, ...)`.
    fn tensor(&self, heap: &Heap, args: &[Id], dtype: Option<DType>) -> Result<LazyTensor, String> {
        let [storage, offset, size, stride, ..] = args else {
            return Err("a tensor rebuilt from fewer than 4 arguments".into());
        };
        let (storage_dtype, key, _) = storage_of(heap, *storage)?;
        let dtype = dtype.unwrap_or(storage_dtype);
        let ints = |id: Id, what: &str| -> Result<Vec<u64>, String> {
            let items = heap
                .items(id)
                .ok_or_else(|| format!("a tensor's {what} is not a tuple"))?;
            if items.len() > MAX_DIMS {
                return Err(format!(
                    "a tensor's {what} has {} dimensions (more than {MAX_DIMS})",
                    items.len()
                ));
            }
            items
                .iter()
                .map(|&i| match heap.get(i) {
                    Value::Int(v) => u64::try_from(*v).map_err(|_| format!("negative {what}")),
                    _ => Err(format!("a tensor's {what} holds a non-integer")),
                })
                .collect()
        };
        let shape = ints(*size, "size")?;
        let strides = ints(*stride, "stride")?;
        let Value::Int(offset) = heap.get(*offset) else {
            return Err("a tensor's storage offset is not an integer".into());
        };
        if strides.len() != shape.len() {
            return Err(format!(
                "size {shape:?} and stride {strides:?} differ in length"
            ));
        }
        if !dtype.bits().is_multiple_of(8) {
            return Err(format!("{dtype} tensors are not supported in torch files"));
        }
        let elem = dtype.bits() / 8;
        let extent = strided_extent(dtype, &shape, &strides)
            .ok_or_else(|| format!("size {shape:?} with stride {strides:?} overflows"))?;
        let start = u64::try_from(*offset)
            .ok()
            .and_then(|o| o.checked_mul(elem))
            .ok_or_else(|| format!("storage offset {offset} is invalid"))?;
        let bytes = if extent == 0 {
            0..0
        } else {
            let end = start
                .checked_add(extent)
                .ok_or_else(|| format!("storage offset {offset} is invalid"))?;
            start..end
        };
        let data = self.storages.data(&key, bytes.clone()).map_err(|problem| {
            if problem.is_empty() {
                format!(
                    "a {dtype} tensor of size {shape:?} at offset {offset} reaches past the end \
                     of storage `{key}`"
                )
            } else {
                problem
            }
        })?;
        Ok(LazyTensor {
            dtype,
            shape,
            strides,
            data,
            view: View::default(),
            quantized: None,
        })
    }
}

/// A tensor's dtype that ckptio has no name for, said as such.
fn unnamed(global: &Global) -> String {
    match UNNAMED.iter().find(|(n, _)| *n == global.name) {
        Some((_, why)) => format!("tensors of dtype `{global}` ({why}) are not supported"),
        None => format!("tensors of dtype `{global}` are not supported"),
    }
}

/// A tensor's metadata (`{'conj': True}`, `{'neg': True}`): the view it is seen through.
fn view_of(heap: &Heap, id: Id) -> Result<View, String> {
    let pairs = match heap.get(id) {
        Value::Dict(pairs) => pairs,
        Value::None => return Ok(View::default()),
        _ => return Err("a tensor whose metadata is not a dict".into()),
    };
    let mut view = View::default();
    for &(k, v) in pairs {
        let flag = matches!(heap.get(v), Value::Bool(true));
        match heap.get(k) {
            Value::Str(k) if k == "conj" => view.conj = flag,
            Value::Str(k) if k == "neg" => view.neg = flag,
            other => return Err(format!("tensor metadata {other:?} is not understood")),
        }
    }
    Ok(view)
}

/// The shape of a pickled numpy array: `_reconstruct(...)` built with `(version, shape, dtype,
/// is_fortran, data)`.
fn numpy_shape(heap: &Heap, id: Id) -> Option<Vec<u64>> {
    let Value::Call(call) = heap.get(id) else {
        return None;
    };
    ints(heap, *heap.items(call.state?)?.get(1)?)
}

/// `torch.Size((a, b))` or a tuple of at most [`MAX_DIMS`] non-negative ints.
pub(crate) fn ints(heap: &Heap, id: Id) -> Option<Vec<u64>> {
    let items = match heap.get(id) {
        Value::Call(call) => heap.items(*heap.items(call.args)?.first()?)?,
        _ => heap.items(id)?,
    };
    if items.len() > MAX_DIMS {
        return None;
    }
    items
        .iter()
        .map(|&i| match heap.get(i) {
            Value::Int(v) => u64::try_from(*v).ok(),
            _ => None,
        })
        .collect()
}

/// A persistent id `('storage', storage_type, key, location, numel)`: its dtype, key and class.
fn storage_of(heap: &Heap, id: Id) -> Result<(DType, Cow<'_, str>, &str), String> {
    let Value::PersistentId(pid) = heap.get(id) else {
        return Err("a tensor whose storage is not a persistent id".into());
    };
    let fields = heap
        .items(*pid)
        .ok_or("a storage persistent id that is not a tuple")?;
    let [tag, kind, key, ..] = fields else {
        return Err("a storage persistent id with fewer than 3 fields".into());
    };
    if !matches!(heap.get(*tag), Value::Str(t) if t == "storage") {
        return Err("a persistent id that is not a storage".into());
    }
    let kind = heap
        .global(*kind)
        .ok_or("a storage whose type is not a class")?;
    let dtype = storage_dtype(&kind.name)
        .ok_or_else(|| format!("storage type `{kind}` is not supported"))?;
    let key = match heap.get(*key) {
        Value::Str(k) => Cow::Borrowed(k.as_str()),
        Value::Int(k) => Cow::Owned(k.to_string()),
        _ => return Err("a storage key that is not a string".into()),
    };
    Ok((dtype, key, &kind.name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_torch_dtype_name_round_trips() {
        for &(name, dtype) in DTYPES {
            assert_eq!(torch_dtype(name), Some(dtype), "{name}");
            // The first name listed for a dtype is torch's own; every name maps back to it.
            let first = DTYPES.iter().find(|(_, d)| *d == dtype).unwrap().0;
            assert_eq!(torch_dtype(first), Some(dtype));
        }
        assert_eq!(torch_dtype("complex128"), Some(DType::C128));
        assert_eq!(torch_dtype("quint4x2"), None, "quantized: no dtype");
        let g = Global {
            module: "torch".into(),
            name: "bfloat16".into(),
        };
        assert_eq!(dtype_of(&g), Some(DType::BF16));
    }

    #[test]
    fn every_storage_class_round_trips() {
        let mut names = std::collections::BTreeSet::new();
        for &(name, dtype) in STORAGES {
            assert!(names.insert(name), "{name} listed twice");
            assert_eq!(storage_dtype(name), Some(dtype), "{name}");
            assert!(is_known(&Global {
                module: "torch".into(),
                name: name.into()
            }));
        }
        assert_eq!(storage_dtype("Float8_e5m2Storage"), Some(DType::F8_E5M2));
        assert_eq!(storage_dtype("NoSuchStorage"), None);
    }

    /// A storage provider over nothing: records how tensors ask for bytes.
    struct Recorder(std::cell::RefCell<Vec<(String, Range<u64>)>>);

    impl Storages for Recorder {
        fn data(&self, key: &str, bytes: Range<u64>) -> Result<TensorData, String> {
            self.0.borrow_mut().push((key.to_owned(), bytes));
            Ok(TensorData::Abstract)
        }

        fn origin(&self) -> Arc<str> {
            Arc::from("test")
        }
    }

    #[test]
    fn a_strided_view_asks_for_the_bytes_its_elements_span() {
        // torch.save({"t": torch.arange(12, dtype=torch.float32).reshape(3, 4)[1:, ::2]}) →
        // storage offset 4, size (2, 2), stride (4, 2): elements 4..=10, bytes 16..44.
        let data = b"\x80\x02}q\x00X\x01\x00\x00\x00tq\x01ctorch._utils\n_rebuild_tensor_v2\nq\x02((X\x07\x00\x00\x00storageq\x03ctorch\nFloatStorage\nq\x04X\x01\x00\x00\x000q\x05X\x03\x00\x00\x00cpuq\x06K\x0ctq\x07QK\x04K\x02K\x02\x86q\x08K\x04K\x02\x86q\t\x89ccollections\nOrderedDict\nq\n)Rq\x0btq\x0cRq\rs.";
        let heap = crate::format::pickle::parse(data, &crate::format::pickle::Policy::permissive())
            .unwrap();
        let recorder = Recorder(Default::default());
        let Node::Dict(d) = to_node(&heap, &recorder, "test").unwrap() else {
            panic!("a dict")
        };
        let Node::Leaf(Leaf::Tensor(t)) = &d["t"] else {
            panic!("a tensor")
        };
        assert_eq!((t.dtype, t.shape.as_slice()), (DType::F32, &[2, 2][..]));
        assert_eq!(t.strides, [4, 2]);
        assert_eq!(recorder.0.into_inner(), [("0".to_owned(), 16..44)]);
    }

    #[test]
    fn a_rebuild_call_that_contains_itself_is_a_cycle_not_a_hang() {
        // F = torch._tensor._rebuild_from_type_v2; L = [F, torch.Tensor, L, {}]; F(F, Tensor, L, {})
        let data = b"\x80\x02ctorch._tensor\n_rebuild_from_type_v2\n\x94(j\x00\x00\x00\x00ctorch\nTensor\n]\x94(j\x00\x00\x00\x00ctorch\nTensor\nj\x01\x00\x00\x00}e}tR.";
        let heap = crate::format::pickle::parse(data, &crate::format::pickle::Policy::permissive())
            .unwrap();
        let err = to_node(&heap, &Recorder(Default::default()), "test").unwrap_err();
        assert!(err.contains("contains itself"), "{err}");
    }

    #[test]
    fn rebuild_calls_nested_too_deep_are_refused() {
        // _rebuild_parameter(_rebuild_parameter(... 20 deep ...)), each a fresh call.
        let mut data = b"\x80\x02".to_vec();
        for _ in 0..20 {
            data.extend(b"ctorch._utils\n_rebuild_parameter\n");
        }
        data.extend(b"N");
        for _ in 0..20 {
            data.extend(b"\x85R");
        }
        data.extend(b".");
        let heap =
            crate::format::pickle::parse(&data, &crate::format::pickle::Policy::permissive())
                .unwrap();
        let err = to_node(&heap, &Recorder(Default::default()), "test").unwrap_err();
        assert!(err.contains("deeper than"), "{err}");
    }
}
