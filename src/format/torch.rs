//! PyTorch checkpoints (`torch.save` since 1.6: `.pt`, `.pth`, `.ckpt`, `pytorch_model.bin`),
//! read lazily and never executed.
//!
//! A torch file is a zip of stored entries under one top-level folder: `data.pkl` (the pickled
//! object, with tensors as persistent ids naming storages), `byteorder`, and one
//! `data/<key>` entry per storage. Opening one reads the zip's tail (one request: end records
//! and central directory), then `data.pkl` with the small records beside it (one more), and
//! interprets the pickle with [`pickle`]: tensors become [`LazyTensor`]s over
//! byte ranges of their storage entries, whose payload offsets follow torch's alignment and
//! are confirmed by the local header when read. Each storage read whole is checked against the
//! entry's CRC-32.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;

use super::pickle::convert::{self, Hooks};
use super::pickle::{self, Call, Global, Heap, Id, Policy, Value};
use super::zip::{self, Directory, DirectoryReader, Step, ZipEntry};
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::fetch::{FetchOptions, Object};
use crate::location::Location;
use crate::tree::{Check, Checksum, LazyTensor, Leaf, Node, StateTree, TensorSource, ZipAnchor};

/// How torch files are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TorchOptions {
    /// Refuse any global ckptio does not understand, instead of keeping it as an opaque node.
    pub strict: bool,
    /// Check each storage read whole against its CRC-32.
    pub verify_crc: bool,
}

impl Default for TorchOptions {
    fn default() -> Self {
        Self {
            strict: false,
            verify_crc: true,
        }
    }
}

/// Records next to `data.pkl` this close are read in the same request.
const NEARBY: u64 = 64 << 10;

/// Room for a local header's extra field when a record's payload is read with its header.
const EXTRA_ROOM: u64 = 256;

/// An open torch file.
#[derive(Debug, Clone)]
pub struct TorchFile {
    object: Object,
    tree: StateTree,
    archive: String,
}

impl TorchFile {
    /// Opens the torch file at `location`: the zip's tail, then `data.pkl` and its neighbours.
    ///
    /// # Errors
    ///
    /// [`Error::Zip`] for a broken archive, [`Error::Pickle`] for a pickle that cannot be read
    /// or is refused (naming the global), [`Error::Torch`] for records that do not fit
    /// together, and "legacy torch.save format" for a pre-1.6 file.
    pub async fn open(
        location: &Location,
        fetch: FetchOptions,
        options: TorchOptions,
    ) -> Result<Self> {
        let (object, start, tail) = Object::open_suffix(location, zip::TAIL_READ, fetch).await?;
        let size = object.info().size;
        Self::read(object, 0..size, (start, tail), options).await
    }

    /// Opens the torch file at `range` of `object` (a chunk of a distributed checkpoint,
    /// which concatenates them): the same reads as [`open`](Self::open), within the range.
    ///
    /// # Errors
    ///
    /// As [`open`](Self::open).
    pub async fn open_embedded(
        object: &Object,
        range: Range<u64>,
        options: TorchOptions,
    ) -> Result<Self> {
        let tail = range.end.saturating_sub(zip::TAIL_READ).max(range.start)..range.end;
        let bytes = object.read_range(tail.clone()).await?;
        Self::read(object.clone(), range, (tail.start, bytes), options).await
    }

    /// Reads the torch file at `range` of `object`, given a block of its tail.
    async fn read(
        object: Object,
        range: Range<u64>,
        tail: (u64, Bytes),
        options: TorchOptions,
    ) -> Result<Self> {
        let location = object.location().clone();
        let base = range.start;
        let mut blocks = Blocks::new(object.clone(), base);
        blocks.held.push(tail.clone());
        let directory = read_directory(&object, range, tail).await?;
        let uri = || location.uri();
        let torch_err = |problem: String| Error::Torch {
            uri: uri(),
            problem,
        };
        let pkl = archive_pickle(&directory).ok_or_else(|| {
            let problem = if directory.get("constants.pkl").is_some()
                || directory
                    .entries()
                    .iter()
                    .any(|e| e.name.ends_with("/constants.pkl"))
            {
                "a TorchScript archive (torch.jit.save), which holds code, not a state dict; \
                 save the state_dict with torch.save instead"
            } else {
                "a zip without a `data.pkl`: not a torch.save checkpoint"
            };
            torch_err(problem.into())
        })?;
        let archive = pkl.name.trim_end_matches("data.pkl").to_owned();
        let named = |name: &str| directory.get(&format!("{archive}{name}"));
        let wanted: Vec<&ZipEntry> = [Some(pkl), named("byteorder"), named(".storage_alignment")]
            .into_iter()
            .flatten()
            .collect();
        let records = blocks.records(&wanted, options.verify_crc).await?;

        let big_endian = match named("byteorder").map(|e| &records[&e.name][..]) {
            None | Some(b"little") => false,
            Some(b"big") => true,
            Some(other) => {
                return Err(torch_err(format!(
                    "`{archive}byteorder` says {:?}, not little or big",
                    String::from_utf8_lossy(other)
                )));
            }
        };
        let alignment = match named(".storage_alignment").map(|e| &records[&e.name][..]) {
            None => 64,
            Some(raw) => std::str::from_utf8(raw)
                .ok()
                .and_then(|s| s.trim().parse::<u64>().ok())
                .filter(|a| (1..=1 << 20).contains(a))
                .ok_or_else(|| {
                    torch_err(format!("`{archive}.storage_alignment` is not a number"))
                })?,
        };

        let policy = Policy {
            strict: options.strict,
            known: |g| is_known(g) || convert::is_known(g),
        };
        let data = &records[&pkl.name];
        let heap = pickle::parse(data, &policy).map_err(|problem| Error::Pickle {
            uri: uri(),
            record: pkl.name.clone(),
            problem,
        })?;
        let mut hooks = Storages {
            base,
            object: &object,
            directory: &directory,
            archive: &archive,
            alignment,
            big_endian,
            verify_crc: options.verify_crc,
        };
        let root = convert::to_node(&heap, &mut hooks, &uri())
            .map_err(|e| torch_err(format!("`{}`: {e}", pkl.name)))?;
        let tree = match root {
            Node::Dict(dict) => StateTree::from_dict(dict),
            other => {
                let mut dict = crate::tree::Dict::new();
                dict.insert(String::new(), other);
                StateTree::from_dict(dict)
            }
        };
        Ok(Self {
            object,
            tree,
            archive: archive.trim_end_matches('/').to_owned(),
        })
    }

    /// The tree: dicts, lists, scalars, opaque objects and lazy tensors. A pickle whose top
    /// level is not a dict (a bare tensor, a list) is found under the empty key.
    pub fn tree(&self) -> &StateTree {
        &self.tree
    }

    /// The tree, taken.
    pub fn into_tree(self) -> StateTree {
        self.tree
    }

    /// The archive's top-level folder (torch names it after the file).
    pub fn archive(&self) -> &str {
        &self.archive
    }

    /// The pinned object.
    pub fn object(&self) -> &Object {
        &self.object
    }
}

/// Reads the directory of the zip at `range` of `object`, starting from a block of its tail
/// already held. Offsets in the directory are relative to the zip's start.
async fn read_directory(
    object: &Object,
    range: Range<u64>,
    (start, tail): (u64, Bytes),
) -> Result<Directory> {
    let uri = || object.location().uri();
    let base = range.start;
    let mut reader = DirectoryReader::new(range.end - base);
    reader.supply(start - base, tail.clone());
    loop {
        match reader.advance() {
            Ok(Step::Done(directory)) => return Ok(directory),
            Ok(Step::Read(r)) => {
                let bytes = object.read_range(base + r.start..base + r.end).await?;
                reader.supply(r.start, bytes);
            }
            Err(problem) => {
                // A pre-1.6 torch file is a bare pickle: say so, rather than "not a zip".
                let first = if start == base {
                    tail.slice(..tail.len().min(16))
                } else {
                    object.read_range(base..range.end.min(base + 16)).await?
                };
                if first.starts_with(b"\x80") && first.get(1).is_some_and(|p| (2..=5).contains(p)) {
                    return Err(Error::Torch {
                        uri: uri(),
                        problem: "this is the legacy torch.save format (before PyTorch 1.6), \
                                  which ckptio does not read; re-save it with a current torch: \
                                  torch.save(torch.load(path, weights_only=True), new_path)"
                            .into(),
                    });
                }
                return Err(Error::Zip {
                    uri: uri(),
                    problem,
                });
            }
        }
    }
}

/// The `data.pkl` at the top of the archive (torch names the folder after the file, so any
/// one folder deep; the shallowest wins).
fn archive_pickle(directory: &Directory) -> Option<&ZipEntry> {
    directory
        .entries()
        .iter()
        .filter(|e| e.name == "data.pkl" || e.name.ends_with("/data.pkl"))
        .min_by_key(|e| e.name.matches('/').count())
}

/// Byte blocks of one object already read (at absolute offsets), and reads of small records
/// of the zip starting at `base` through them.
struct Blocks {
    object: Object,
    base: u64,
    held: Vec<(u64, Bytes)>,
}

impl Blocks {
    fn new(object: Object, base: u64) -> Self {
        Self {
            object,
            base,
            held: Vec::new(),
        }
    }

    fn get(&self, range: &Range<u64>) -> Option<Bytes> {
        self.held.iter().find_map(|(start, bytes)| {
            let end = start + bytes.len() as u64;
            (*start <= range.start && range.end <= end)
                .then(|| bytes.slice((range.start - start) as usize..(range.end - start) as usize))
        })
    }

    /// The payloads of `entries` (stored, CRC-checked), reading nearby ones together.
    async fn records(
        &mut self,
        entries: &[&ZipEntry],
        verify_crc: bool,
    ) -> Result<HashMap<String, Bytes>> {
        let uri = || self.object.location().uri();
        let size = self.object.info().size;
        let base = self.base;
        // What to read: each entry's header and payload, with room for the extra field.
        let mut spans: Vec<Range<u64>> = entries
            .iter()
            .map(|e| {
                let start = base.saturating_add(e.header_offset);
                let end = (start + zip::LOCAL_HEADER_LEN + e.name.len() as u64)
                    .saturating_add(EXTRA_ROOM)
                    .saturating_add(e.compressed_size)
                    .min(size);
                start.min(end)..end
            })
            .filter(|r| self.get(r).is_none())
            .collect();
        spans.sort_by_key(|r| r.start);
        let mut merged: Vec<Range<u64>> = Vec::new();
        for span in spans {
            match merged.last_mut() {
                Some(last) if span.start <= last.end.saturating_add(NEARBY) => {
                    last.end = last.end.max(span.end);
                }
                _ => merged.push(span),
            }
        }
        if !merged.is_empty() {
            let read = self.object.read_ranges(&merged).await?;
            self.held.extend(merged.iter().map(|r| r.start).zip(read));
        }
        let mut out = HashMap::new();
        for entry in entries {
            if let Some(method) = &entry.compression {
                return Err(Error::Torch {
                    uri: uri(),
                    problem: format!(
                        "entry `{}` is compressed ({method}); torch writes stored entries, \
                         and ckptio reads only those",
                        entry.name
                    ),
                });
            }
            let header_start = base.saturating_add(entry.header_offset).min(size);
            let header_end =
                (header_start + zip::LOCAL_HEADER_LEN + entry.name.len() as u64).min(size);
            let header = self.get(&(header_start..header_end)).unwrap_or_default();
            let payload = zip::payload_offset(entry, &header)
                .map_err(|problem| Error::Zip {
                    uri: uri(),
                    problem,
                })?
                .saturating_add(base);
            let range = payload..payload.saturating_add(entry.size);
            if range.end > size {
                return Err(Error::Zip {
                    uri: uri(),
                    problem: zip::ZipError::Truncated { offset: range.end },
                });
            }
            let data = match self.get(&range) {
                Some(data) => data,
                None => {
                    let data = self.object.read_range(range.clone()).await?;
                    self.held.push((range.start, data.clone()));
                    data
                }
            };
            if verify_crc && crc32fast::hash(&data) != entry.crc32 {
                return Err(Error::Torch {
                    uri: uri(),
                    problem: format!(
                        "entry `{}` is corrupt: expected CRC-32 {:08x}, computed {:08x}",
                        entry.name,
                        entry.crc32,
                        crc32fast::hash(&data)
                    ),
                });
            }
            out.insert(entry.name.clone(), data);
        }
        Ok(out)
    }
}

/// Whether `global` is one of the torch names this reader interprets.
pub fn is_known(global: &Global) -> bool {
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

/// A torch dtype global (`torch.float32`) as a [`DType`].
pub(crate) fn dtype_of(global: &Global) -> Option<DType> {
    (global.module == "torch").then(|| torch_dtype(&global.name))?
}

/// A torch dtype attribute (`torch.float32`) as a [`DType`].
fn torch_dtype(name: &str) -> Option<DType> {
    Some(match name {
        "float32" | "float" => DType::F32,
        "float64" | "double" => DType::F64,
        "float16" | "half" => DType::F16,
        "bfloat16" => DType::BF16,
        "int64" | "long" => DType::I64,
        "int32" | "int" => DType::I32,
        "int16" | "short" => DType::I16,
        "int8" => DType::I8,
        "uint8" => DType::U8,
        "uint16" => DType::U16,
        "uint32" => DType::U32,
        "uint64" => DType::U64,
        "bool" => DType::BOOL,
        "complex64" | "cfloat" => DType::C64,
        "float8_e4m3fn" => DType::F8_E4M3,
        "float8_e5m2" => DType::F8_E5M2,
        "float8_e4m3fnuz" => DType::F8_E4M3FNUZ,
        "float8_e5m2fnuz" => DType::F8_E5M2FNUZ,
        "float8_e8m0fnu" => DType::F8_E8M0,
        _ => return None,
    })
}

/// A typed storage class (`torch.FloatStorage`) as a [`DType`].
fn storage_dtype(name: &str) -> Option<DType> {
    Some(match name {
        "FloatStorage" => DType::F32,
        "DoubleStorage" => DType::F64,
        "HalfStorage" => DType::F16,
        "BFloat16Storage" => DType::BF16,
        "LongStorage" => DType::I64,
        "IntStorage" => DType::I32,
        "ShortStorage" => DType::I16,
        "CharStorage" => DType::I8,
        "ByteStorage" | "UntypedStorage" => DType::U8,
        "BoolStorage" => DType::BOOL,
        "ComplexFloatStorage" => DType::C64,
        "UInt16Storage" => DType::U16,
        "UInt32Storage" => DType::U32,
        "UInt64Storage" => DType::U64,
        _ => {
            let stem = name.strip_suffix("Storage")?;
            return torch_dtype(&stem.to_ascii_lowercase());
        }
    })
}

/// The torch rules: tensors over storage entries, `torch.Size`, `torch.device`.
struct Storages<'a> {
    /// Where the zip starts in the object.
    base: u64,
    object: &'a Object,
    directory: &'a Directory,
    archive: &'a str,
    alignment: u64,
    big_endian: bool,
    verify_crc: bool,
}

impl Hooks for Storages<'_> {
    fn call(&mut self, heap: &Heap, func: &Global, call: &Call) -> Option<Result<Node, String>> {
        let args = heap.items(call.args).unwrap_or_default();
        self.rebuild(heap, func, args)
    }
}

impl Storages<'_> {
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
        let (storage_dtype, key) = self.storage(heap, *storage)?;
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
        let name = format!("{}data/{key}", self.archive);
        let entry = self.directory.get(&name).ok_or_else(|| {
            format!("a tensor refers to storage `{key}`, which has no record `{name}`")
        })?;
        if let Some(method) = &entry.compression {
            return Err(format!("storage record `{name}` is compressed ({method})"));
        }
        let extent = crate::materialize::strided_extent(dtype, &shape, &strides)
            .ok_or_else(|| format!("size {shape:?} with stride {strides:?} overflows"))?;
        let start = u64::try_from(*offset)
            .ok()
            .and_then(|o| o.checked_mul(elem))
            .ok_or_else(|| format!("storage offset {offset} is invalid"))?;
        let end = start
            .checked_add(extent)
            .filter(|&end| end <= entry.size || extent == 0)
            .ok_or_else(|| {
                format!(
                    "a {dtype} tensor of size {shape:?} at offset {offset} reaches past the end \
                     of storage `{key}` ({} bytes)",
                    entry.size
                )
            })?;
        let beyond = || format!("storage record `{name}` lies beyond any offset");
        let payload = entry
            .torch_payload_offset(self.alignment)
            .and_then(|p| p.checked_add(self.base))
            .ok_or_else(beyond)?;
        let mut entry = entry.clone();
        entry.header_offset = entry
            .header_offset
            .checked_add(self.base)
            .ok_or_else(beyond)?;
        let check = self.verify_crc.then(|| Check {
            span: payload..payload + entry.size,
            checksum: Checksum::Crc32(entry.crc32),
            record: Arc::from(name.as_str()),
        });
        let (start, end) = if extent == 0 { (0, 0) } else { (start, end) };
        Ok(LazyTensor {
            dtype,
            shape,
            strides,
            source: Some(TensorSource {
                big_endian: self.big_endian,
                check,
                anchor: Some(Arc::new(ZipAnchor { entry, payload })),
                ..TensorSource::new(self.object.clone(), payload + start..payload + end)
            }),
            pieces: None,
        })
    }

    /// A persistent id `('storage', storage_type, key, location, numel)`: its dtype and key.
    fn storage(&self, heap: &Heap, id: Id) -> Result<(DType, String), String> {
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
}
