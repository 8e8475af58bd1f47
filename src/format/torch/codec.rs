//! What torch's pickles mean: the rebuild functions that make tensors out of storages, torch's
//! dtype and storage-class names, `torch.Size`, `torch.device`. Pure: where a storage's bytes
//! are is asked of a [`Storages`] the reader provides.

use std::ops::Range;

use crate::dtype::DType;
use crate::format::pickle::convert::{self, Hooks};
use crate::format::pickle::{Call, Global, Heap, Id, Value};
use crate::tree::{LazyTensor, Leaf, Node, TensorData, strided_extent};

/// Where storages' bytes are: the reader's side of the rebuild rules.
pub(crate) trait Storages {
    /// The data of a tensor whose elements occupy `bytes` of storage `key` (an empty range
    /// for an empty tensor).
    ///
    /// # Errors
    ///
    /// A message saying what is wrong: no record for the storage, a range past its end.
    fn data(&self, key: &str, bytes: Range<u64>) -> Result<TensorData, String>;
}

/// Torch's dtype names (`torch.float32` and its aliases) and ckptio's dtypes; the first name
/// of a dtype is what torch prints.
const DTYPES: &[(&str, DType)] = &[
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
    ("float8_e4m3fn", DType::F8_E4M3),
    ("float8_e5m2", DType::F8_E5M2),
    ("float8_e4m3fnuz", DType::F8_E4M3FNUZ),
    ("float8_e5m2fnuz", DType::F8_E5M2FNUZ),
    ("float8_e8m0fnu", DType::F8_E8M0),
];

/// Typed storage classes (`torch.FloatStorage`) and their dtypes. Untyped storages hold bytes;
/// `_rebuild_tensor_v3` says the dtype.
const STORAGES: &[(&str, DType)] = &[
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
    ("UInt16Storage", DType::U16),
    ("UInt32Storage", DType::U32),
    ("UInt64Storage", DType::U64),
    ("UntypedStorage", DType::U8),
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
fn storage_dtype(name: &str) -> Option<DType> {
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
            n.ends_with("Storage") || n == "Size" || n == "device" || torch_dtype(n).is_some()
        }
        "torch.storage" => n == "UntypedStorage" || n == "TypedStorage",
        "torch.nn.parameter" => n == "Parameter",
        "torch.torch_version" => n == "TorchVersion",
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
    convert::to_node(heap, &mut Rebuild { storages }, name)
}

/// The rebuild rules, as conversion hooks.
struct Rebuild<'a> {
    storages: &'a dyn Storages,
}

impl Hooks for Rebuild<'_> {
    fn call(&mut self, heap: &Heap, func: &Global, call: &Call) -> Option<Result<Node, String>> {
        let args = heap.items(call.args).unwrap_or_default();
        self.rebuild(heap, func, args)
    }
}

impl Rebuild<'_> {
    fn rebuild(&self, heap: &Heap, func: &Global, args: &[Id]) -> Option<Result<Node, String>> {
        let (m, n) = (func.module.as_str(), func.name.as_str());
        let tensor = |t: Result<LazyTensor, String>| Some(t.map(|t| Node::Leaf(Leaf::Tensor(t))));
        match (m, n) {
            ("torch._utils", "_rebuild_tensor" | "_rebuild_tensor_v2") => {
                tensor(self.tensor(heap, args, None))
            }
            ("torch._utils", "_rebuild_tensor_v3") => {
                let dtype = args
                    .get(6)
                    .and_then(|&d| heap.global(d))
                    .filter(|g| g.module == "torch")
                    .map(|g| torch_dtype(&g.name).ok_or(g));
                match dtype {
                    Some(Ok(dtype)) => tensor(self.tensor(heap, args, Some(dtype))),
                    Some(Err(g)) => Some(Err(format!("tensors of dtype `{g}` are not supported"))),
                    None => Some(Err("_rebuild_tensor_v3 without a torch dtype".into())),
                }
            }
            ("torch._utils", "_rebuild_parameter" | "_rebuild_parameter_with_state") => {
                let data = *args.first()?;
                self.inner(heap, data)
            }
            ("torch._tensor", "_rebuild_from_type_v2") => {
                // (func, new_type, args, state): the tensor is func(*args).
                let inner = heap.global(*args.first()?)?;
                let inner_args = heap.items(*args.get(2)?)?;
                self.rebuild(heap, inner, inner_args)
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
                    dims.map(Node::List)
                        .ok_or_else(|| "torch.Size of non-integers".into()),
                )
            }
            // A `str` subclass: the version string.
            ("torch.torch_version", "TorchVersion") => match args.first().map(|&a| heap.get(a)) {
                Some(Value::Str(s)) => Some(Ok(Node::Leaf(Leaf::Str(s.clone())))),
                _ => None,
            },
            ("torch", "device") => {
                let kind = match args.first().map(|&a| heap.get(a)) {
                    Some(Value::Str(s)) => s.clone(),
                    _ => return None,
                };
                let device = match args.get(1).map(|&a| heap.get(a)) {
                    Some(Value::Int(i)) => format!("{kind}:{i}"),
                    _ => kind,
                };
                Some(Ok(Node::Leaf(Leaf::Str(device))))
            }
            _ => None,
        }
    }

    /// A nested rebuild call (a parameter's data).
    fn inner(&self, heap: &Heap, id: Id) -> Option<Result<Node, String>> {
        let Value::Call(call) = heap.get(id) else {
            return Some(Err("a parameter whose data is not a tensor".into()));
        };
        let func = heap.global(call.func)?;
        self.rebuild(heap, func, heap.items(call.args).unwrap_or_default())
    }

    /// `_rebuild_tensor_v2(storage, storage_offset, size, stride, ...)`.
    fn tensor(&self, heap: &Heap, args: &[Id], dtype: Option<DType>) -> Result<LazyTensor, String> {
        let [storage, offset, size, stride, ..] = args else {
            return Err("a tensor rebuilt from fewer than 4 arguments".into());
        };
        let (storage_dtype, key) = storage_of(heap, *storage)?;
        let dtype = dtype.unwrap_or(storage_dtype);
        let ints = |id: Id, what: &str| -> Result<Vec<u64>, String> {
            let items = heap
                .items(id)
                .ok_or_else(|| format!("a tensor's {what} is not a tuple"))?;
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
        if dtype.bits() % 8 != 0 {
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
        })
    }
}

/// A persistent id `('storage', storage_type, key, location, numel)`: its dtype and key.
fn storage_of(heap: &Heap, id: Id) -> Result<(DType, String), String> {
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
        Value::Str(k) => k.clone(),
        Value::Int(k) => k.to_string(),
        _ => return Err("a storage key that is not a string".into()),
    };
    Ok((dtype, key))
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
        assert_eq!(torch_dtype("complex128"), None, "no ckptio dtype yet");
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
    }

    #[test]
    fn a_strided_view_asks_for_the_bytes_its_elements_span() {
        // torch.save({"t": torch.arange(12, dtype=torch.float32).reshape(3, 4)[1:, ::2]}) →
        // storage offset 4, size (2, 2), stride (4, 2): elements 4..=10, bytes 16..44.
        let data = b"\x80\x02}q\x00X\x01\x00\x00\x00tq\x01ctorch._utils\n_rebuild_tensor_v2\nq\x02((X\x07\x00\x00\x00storageq\x03ctorch\nFloatStorage\nq\x04X\x01\x00\x00\x000q\x05X\x03\x00\x00\x00cpuq\x06K\x0ctq\x07QK\x04K\x02K\x02\x86q\x08K\x04K\x02\x86q\tN\x89ccollections\nOrderedDict\nq\n)Rq\x0btq\x0cRq\rs.";
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
}
