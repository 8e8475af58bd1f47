//! Saving from Python: a nested state of dicts, lists, scalars, strings and tensors becomes a
//! state tree whose tensors are views of the caller's memory (torch tensors and numpy arrays,
//! made contiguous and little-endian once by the Python layer), streamed into the library's
//! writers: a ckptio checkpoint (atomic commit) or safetensors (shards and an index).

use std::collections::BTreeMap;

use bytes::Bytes;
use ckptio::{
    DType, Dict, Inline, Int, KeyKind, LazyTensor, Leaf, List, Node, SaveFormat, StateTree,
    TensorData,
};
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyBytes, PyDict, PyFloat, PyInt, PyList, PyString, PyTuple};

use crate::options;
use crate::runtime::wait;
use crate::tree::Opaque;

/// A tensor to save: its dtype, shape, and the contiguous little-endian bytes at `address`,
/// which `owner` keeps alive (a torch tensor or a numpy array).
#[pyclass(module = "ckptio._ckptio", frozen)]
pub(crate) struct TensorIn {
    dtype: DType,
    shape: Vec<u64>,
    address: usize,
    nbytes: usize,
    owner: Py<PyAny>,
}

#[pymethods]
impl TensorIn {
    /// `nbytes` bytes at `address`, owned by `owner`, holding a tensor of `dtype` (ckptio's
    /// name: `F32`, `BF16`, ...) and `shape`.
    #[new]
    fn new(
        dtype: &str,
        shape: Vec<u64>,
        address: usize,
        nbytes: usize,
        owner: Py<PyAny>,
    ) -> PyResult<Self> {
        let dtype: DType = dtype
            .parse()
            .map_err(|e: ckptio::UnknownDType| PyValueError::new_err(e.to_string()))?;
        let want = ckptio::DType::byte_len(dtype, shape.iter().product());
        if want != Some(nbytes as u64) {
            return Err(PyValueError::new_err(format!(
                "{dtype} × {shape:?} is not {nbytes} bytes"
            )));
        }
        if address == 0 && nbytes > 0 {
            return Err(PyValueError::new_err("a tensor at address 0"));
        }
        Ok(Self {
            dtype,
            shape,
            address,
            nbytes,
            owner,
        })
    }
}

/// Memory of a Python object, borrowed for as long as the object is held.
struct Borrowed {
    _owner: Py<PyAny>,
    address: usize,
    len: usize,
}

impl AsRef<[u8]> for Borrowed {
    fn as_ref(&self) -> &[u8] {
        if self.len == 0 {
            return &[];
        }
        // SAFETY: `address..address + len` is the contiguous memory of `_owner` (a torch tensor
        // or numpy array the Python layer made contiguous), which the held reference keeps
        // alive; ckptio only reads it.
        unsafe { std::slice::from_raw_parts(self.address as *const u8, self.len) }
    }
}

/// `t` as a tensor over its owner's memory (`path` names it in messages).
pub(crate) fn lazy_of(t: &TensorIn, py: Python<'_>, path: &str) -> LazyTensor {
    LazyTensor {
        dtype: t.dtype,
        shape: t.shape.clone(),
        strides: Vec::new(),
        data: TensorData::Inline(Inline {
            bytes: bytes_of(t, py),
            big_endian: false,
            origin: path.into(),
            checked: false,
        }),
        view: Default::default(),
        quantized: None,
    }
}

/// The bytes of `t`, borrowed from its owner.
fn bytes_of(t: &TensorIn, py: Python<'_>) -> Bytes {
    Bytes::from_owner(Borrowed {
        _owner: t.owner.clone_ref(py),
        address: t.address,
        len: t.nbytes,
    })
}

/// `value` (at `path`) as a tree node.
fn node(py: Python<'_>, value: &Bound<'_, PyAny>, path: &str) -> PyResult<Node> {
    let join = |key: &str| {
        if path.is_empty() {
            key.to_owned()
        } else {
            format!("{path}/{key}")
        }
    };
    if let Ok(t) = value.cast::<TensorIn>() {
        return Ok(Node::from(lazy_of(t.get(), py, path)));
    }
    if let Ok(d) = value.cast::<PyDict>() {
        let mut dict = Dict::with_capacity(d.len());
        let mut kind = None;
        for (key, child) in d.iter() {
            let (key, key_kind) = dict_key(&key, path)?;
            // Integer keys (an optimizer's `state`) are remembered, so that they load as
            // integers; a dict holds one kind, as the manifest and a torch file record it.
            if kind.replace(key_kind).is_some_and(|k| k != key_kind) {
                return Err(PyTypeError::new_err(format!(
                    "`{}`: a dict whose keys mix strings and integers cannot be saved (they \
                     would load as one kind)",
                    shown(path)
                )));
            }
            let child = node(py, &child, &join(&ckptio::path::escape(&key)))?;
            dict.insert(key, child);
        }
        return Ok(Node::Dict(dict.with_key_kind(kind.unwrap_or(KeyKind::Str))));
    }
    if value.is_instance_of::<PyList>() || value.is_instance_of::<PyTuple>() {
        let items: Vec<Node> = value
            .try_iter()?
            .enumerate()
            .map(|(i, item)| node(py, &item?, &join(&i.to_string())))
            .collect::<PyResult<_>>()?;
        return Ok(Node::List(if value.is_instance_of::<PyTuple>() {
            List::tuple(items)
        } else {
            items.into()
        }));
    }
    let leaf = if value.is_none() {
        Leaf::None
    } else if value.is_instance_of::<PyBool>() {
        Leaf::Bool(value.extract()?)
    } else if value.is_instance_of::<PyInt>() {
        match value.extract::<i64>() {
            Ok(v) => Leaf::Int(Int::Small(v)),
            Err(_) => Leaf::Int(Int::Big(value.str()?.to_string())),
        }
    } else if value.is_instance_of::<PyFloat>() {
        Leaf::Float(value.extract()?)
    } else if let Ok(s) = value.cast::<PyString>() {
        Leaf::Str(s.to_string())
    } else if let Ok(b) = value.cast::<PyBytes>() {
        Leaf::Bytes(Bytes::copy_from_slice(b.as_bytes()))
    } else if let Ok(o) = value.cast::<Opaque>() {
        return opaque(py, o.get(), path);
    } else {
        return Err(PyTypeError::new_err(format!(
            "`{path}`: a value of type `{}` cannot be saved (tensors, arrays, dicts, lists, \
             tuples, numbers, strings, bytes and None can)",
            value.get_type().name()?
        )));
    };
    Ok(Node::Leaf(leaf))
}

/// A dict key as saved: a string, or an integer within 64 bits. Any other key (a bool, a
/// float, a tuple) is refused rather than saved as its text, which would load as another key.
fn dict_key(key: &Bound<'_, PyAny>, path: &str) -> PyResult<(String, KeyKind)> {
    if let Ok(s) = key.cast::<PyString>() {
        return Ok((s.to_string(), KeyKind::Str));
    }
    if key.is_instance_of::<PyInt>()
        && !key.is_instance_of::<PyBool>()
        && let Ok(v) = key.extract::<i64>()
    {
        return Ok((v.to_string(), KeyKind::Int));
    }
    Err(PyTypeError::new_err(format!(
        "`{}`: the dict key {} (of type `{}`) cannot be saved: keys are strings or 64-bit \
         integers",
        shown(path),
        key.repr()?,
        key.get_type().name()?
    )))
}

/// A dict's path in a message: the root has none.
fn shown(path: &str) -> &str {
    if path.is_empty() {
        "the top level"
    } else {
        path
    }
}

/// An opaque placeholder `load` returned, saved back as it was read.
fn opaque(py: Python<'_>, o: &Opaque, path: &str) -> PyResult<Node> {
    let (module, name, args, kwargs, state) = o.parts(py);
    let Node::List(args) = node(py, args.bind(py).as_any(), path)? else {
        unreachable!("a list converts to a list");
    };
    let boxed = |v: Option<Py<PyAny>>| -> PyResult<Option<Box<Node>>> {
        v.map(|v| node(py, v.bind(py), path).map(Box::new))
            .transpose()
    };
    Ok(Node::from(ckptio::Opaque {
        module,
        name,
        args: args.into_items(),
        kwargs: boxed(kwargs)?,
        state: boxed(state)?,
    }))
}

/// The state tree of `state` (a dict) to be saved at `target`, which a refusal names.
pub(crate) fn state_tree(
    py: Python<'_>,
    state: &Bound<'_, PyDict>,
    target: &str,
) -> PyResult<StateTree> {
    match node(py, state.as_any(), "") {
        Ok(Node::Dict(root)) => Ok(StateTree::from_dict(root)),
        Ok(_) => unreachable!("a dict converts to a dict"),
        Err(e) if e.is_instance_of::<PyTypeError>(py) => {
            Err(PyTypeError::new_err(format!("{target}: {}", e.value(py))))
        }
        Err(e) => Err(e),
    }
}

/// Saves `state` at `uri`: a ckptio checkpoint (`format="ckptio"`, committed atomically),
/// safetensors (`format="safetensors"`, tensors only; shards and an index with
/// `max_shard_size`), or one `torch.save` file (`format="torch"`); without `format`, as the
/// name asks ([`ckptio::SaveFormat::for_name`]). Returns the URIs written.
#[pyfunction]
#[pyo3(signature = (uri, state, format=None, storage_options=None, *, metadata=None, max_shard_size=None, memory_budget=64 << 20, progress=None))]
#[allow(clippy::too_many_arguments)]
pub(crate) fn save(
    py: Python<'_>,
    uri: &str,
    state: &Bound<'_, PyDict>,
    format: Option<&str>,
    storage_options: Option<&Bound<'_, PyDict>>,
    metadata: Option<BTreeMap<String, String>>,
    max_shard_size: Option<u64>,
    memory_budget: u64,
    progress: Option<Py<PyAny>>,
) -> PyResult<Vec<String>> {
    let format = match format {
        Some(name) => name.parse().map_err(PyValueError::new_err)?,
        None => SaveFormat::for_name(uri),
    };
    let location = options::resolve(uri, storage_options)?;
    let tree = state_tree(py, state, &location.to_string())?;
    let materialize = ckptio::MaterializeOptions {
        to_f32: false,
        memory_budget,
    };
    let progress: std::sync::Arc<dyn ckptio::Progress> = match progress {
        Some(callable) => options::Callback::new(callable),
        None => std::sync::Arc::new(ckptio::NoProgress),
    };
    if let Some(ext) = format.extension()
        && location.is_directory()
    {
        return Err(PyValueError::new_err(format!(
            "{location}: names a directory, and format={:?} writes one file: give it a file \
             name (`{}/model.{ext}`)",
            format.name(),
            location.uri().trim_end_matches('/'),
        )));
    }
    match format {
        SaveFormat::Ckptio => {
            let defaults = ckptio::SaveOptions::default();
            let options = ckptio::SaveOptions {
                metadata: metadata.unwrap_or_default(),
                max_file_size: max_shard_size.unwrap_or(defaults.max_file_size),
                materialize,
                progress,
                ..defaults
            };
            let saved = wait(py, ckptio::save(&location, &tree, &options))?;
            Ok(vec![saved.uri])
        }
        SaveFormat::Safetensors => {
            let mut other = None;
            tree.walk_leaves(|path, leaf| {
                if other.is_none() && !matches!(leaf, Leaf::Tensor(_)) {
                    other = Some(path.to_owned());
                }
            });
            if let Some(path) = other {
                return Err(PyValueError::new_err(format!(
                    "`{path}` is not a tensor: safetensors holds tensors only (save it with \
                     format=\"ckptio\")"
                )));
            }
            let mut metadata = metadata.unwrap_or_default();
            metadata
                .entry("format".into())
                .or_insert_with(|| "pt".into());
            let options = ckptio::WriteOptions {
                max_shard_size,
                metadata,
                materialize,
                progress,
            };
            let written = wait(
                py,
                ckptio::write_safetensors(tree.into_tensors(), &location, &options),
            )?;
            Ok(written.files)
        }
        SaveFormat::Torch => {
            if metadata.is_some() || max_shard_size.is_some() {
                return Err(PyValueError::new_err(
                    "metadata and max_shard_size are safetensors options; a torch file has neither",
                ));
            }
            let options = ckptio::WriteOptions {
                materialize,
                progress,
                ..Default::default()
            };
            let written = wait(py, ckptio::write_torch(&tree, &location, &options))?;
            Ok(written.files)
        }
    }
}
