//! An open checkpoint: its format, metadata and tree, and reads of its tensors (all, some, a
//! range of rows, a byte range), each returning `(dtype, shape, Buffer)` for the Python layer
//! to view as numpy or torch without a copy.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use ckptio::{LazyTensor, MaterializeOptions, StateTree, TensorData};
use futures::StreamExt;
use futures::stream::BoxStream;
use indexmap::IndexMap;
use pyo3::exceptions::{PyKeyError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict};

use crate::buffer::Buffer;
use crate::runtime::wait;
use crate::{options, tree};

/// A tensor read: its dtype name, its shape, its bytes (contiguous, little-endian).
type Read = (&'static str, Vec<u64>, Buffer);

/// A checkpoint opened lazily: only its metadata has moved.
#[pyclass(module = "ckptio._ckptio", frozen)]
pub(crate) struct Checkpoint {
    uri: String,
    format: String,
    metadata: BTreeMap<String, String>,
    tree: StateTree,
    tensors: IndexMap<String, LazyTensor>,
    budget: u64,
    /// Opened from a buffer the caller holds: tensors read are views of it, not copies.
    views: bool,
}

impl Checkpoint {
    fn new(uri: String, checkpoint: ckptio::Checkpoint, budget: u64) -> Self {
        let tensors = checkpoint
            .tree
            .tensors()
            .map(|(p, t)| (p, t.clone()))
            .collect();
        Self {
            uri,
            format: checkpoint.format.to_string(),
            metadata: checkpoint.metadata,
            tree: checkpoint.tree,
            tensors,
            budget,
            views: false,
        }
    }

    /// The tensors at `paths` (every tensor when `None`), by path.
    fn wanted(&self, paths: Option<Vec<String>>) -> PyResult<Vec<(String, LazyTensor)>> {
        match paths {
            None => Ok(self
                .tensors
                .iter()
                .map(|(p, t)| (p.clone(), t.clone()))
                .collect()),
            Some(paths) => paths
                .into_iter()
                .map(|p| self.tensor(&p).cloned().map(|t| (p, t)))
                .collect(),
        }
    }

    fn tensor(&self, path: &str) -> PyResult<&LazyTensor> {
        self.tensors
            .get(path)
            .ok_or_else(|| PyKeyError::new_err(format!("{}: no tensor `{path}`", self.uri)))
    }

    fn materialize_options(&self) -> MaterializeOptions {
        MaterializeOptions {
            to_f32: false,
            memory_budget: self.budget,
        }
    }
}

/// The read of `tensor`: bytes the checkpoint itself holds (a numpy array inside a pickle) are
/// copied, so that every buffer handed to Python is its own, unless they are `views` of a
/// buffer the caller gave.
fn read(lazy: &LazyTensor, tensor: ckptio::Tensor, views: bool) -> Read {
    let data = match lazy.data {
        TensorData::Inline(_) if !views => Bytes::copy_from_slice(&tensor.data),
        _ => tensor.data,
    };
    (tensor.dtype.name(), tensor.shape, Buffer::new(data))
}

/// Opens the checkpoint at `uri`, whatever its format; only metadata moves. With `mmap`, a
/// local file's tensors are views of a private mapping of it (shared with the page cache).
/// With `huge_pages`, tensors fetched into memory ask for transparent huge pages.
/// With `dequantize`, block-quantized tensors ckptio decodes are their F32 values.
#[pyfunction]
#[pyo3(signature = (uri, storage_options=None, *, select=None, ignore=None, strict=false, verify=true, memory_budget=64 << 20, mmap=true, huge_pages=false, dequantize=false, progress=None))]
#[allow(clippy::too_many_arguments)]
pub(crate) fn open(
    py: Python<'_>,
    uri: &str,
    storage_options: Option<&Bound<'_, PyDict>>,
    select: Option<Vec<String>>,
    ignore: Option<Vec<String>>,
    strict: bool,
    verify: bool,
    memory_budget: u64,
    mmap: bool,
    huge_pages: bool,
    dequantize: bool,
    progress: Option<Py<PyAny>>,
) -> PyResult<Checkpoint> {
    let location = options::resolve(uri, storage_options)?;
    let open = ckptio::OpenOptions {
        fetch: ckptio::FetchOptions {
            map_local: mmap,
            huge_pages,
            ..options::fetch(progress)
        },
        read: ckptio::ReadOptions { strict, verify },
        select: select.unwrap_or_default(),
    };
    let mut checkpoint = wait(py, ckptio::open(&location, open))?;
    if let Some(ignore) = ignore.filter(|i| !i.is_empty()) {
        let globs: Vec<&str> = ignore.iter().map(String::as_str).collect();
        checkpoint.tree = checkpoint
            .tree
            .ignore(&globs)
            .map_err(|e| PyValueError::new_err(e.to_string()))?;
    }
    if dequantize {
        let decoded: Vec<(String, LazyTensor)> = checkpoint
            .tree
            .tensors()
            .filter_map(|(path, t)| Some((path, t.dequantized()?)))
            .collect();
        for (path, values) in decoded {
            checkpoint
                .tree
                .insert(&path, ckptio::Node::from(values))
                .map_err(|e| PyValueError::new_err(e.to_string()))?;
        }
    }
    Ok(Checkpoint::new(location.uri(), checkpoint, memory_budget))
}

/// Reads a checkpoint held whole in `data` (a `torch.save` zip or a safetensors file; a
/// `Buffer` ckptio read, or `bytes`), named `name` in messages. Tensors read from it are views
/// of `data` when it is a `Buffer`: nothing is copied.
#[pyfunction]
#[pyo3(signature = (data, name, *, strict=false, verify=true, memory_budget=64 << 20))]
pub(crate) fn open_bytes(
    py: Python<'_>,
    data: &Bound<'_, PyAny>,
    name: &str,
    strict: bool,
    verify: bool,
    memory_budget: u64,
) -> PyResult<Checkpoint> {
    let (bytes, views) = if let Ok(buffer) = data.cast::<Buffer>() {
        (buffer.get().bytes().clone(), true)
    } else if let Ok(bytes) = data.cast::<PyBytes>() {
        (Bytes::copy_from_slice(bytes.as_bytes()), false)
    } else {
        return Err(PyTypeError::new_err(format!(
            "{name}: open_bytes takes a ckptio Buffer or bytes, not {}",
            data.get_type().name()?
        )));
    };
    let options = ckptio::ReadOptions { strict, verify };
    let checkpoint = py
        .detach(|| ckptio::open_bytes(bytes, name, options))
        .map_err(crate::errors::to_py)?;
    Ok(Checkpoint {
        views,
        ..Checkpoint::new(name.to_owned(), checkpoint, memory_budget)
    })
}

#[pymethods]
impl Checkpoint {
    /// The URI it was opened from (secrets redacted).
    #[getter]
    fn uri(&self) -> &str {
        &self.uri
    }

    /// The format it was read as (`safetensors`, `torch (zip + pickle)`, ...).
    #[getter]
    fn format(&self) -> &str {
        &self.format
    }

    /// Free-form metadata (safetensors `__metadata__`, an index's `metadata`, a manifest's).
    #[getter]
    fn metadata(&self) -> BTreeMap<String, String> {
        self.metadata.clone()
    }

    /// Every tensor's path, in tree order.
    fn keys(&self) -> Vec<String> {
        self.tensors.keys().cloned().collect()
    }

    fn __len__(&self) -> usize {
        self.tensors.len()
    }

    fn __contains__(&self, path: &str) -> bool {
        self.tensors.contains_key(path)
    }

    /// A tensor's dtype name, shape and size in bytes, without reading it.
    fn info(&self, path: &str) -> PyResult<(&'static str, Vec<u64>, u64)> {
        let t = self.tensor(path)?;
        Ok((t.dtype.name(), t.shape.clone(), t.nbytes()))
    }

    /// A quantized tensor's scheme (`Q4_K`) and the shape of its values; `None` for any other.
    fn quantization(&self, path: &str) -> PyResult<Option<(&'static str, Vec<u64>)>> {
        let t = self.tensor(path)?;
        Ok(t.quantized
            .map(|q| (q.scheme.name(), q.values_shape(&t.shape))))
    }

    /// A tensor's reference (path, dtype, shape, and why ckptio does not read it, if so).
    fn tensor_ref(&self, py: Python<'_>, path: &str) -> PyResult<Py<tree::TensorRef>> {
        tree::tensor_ref(py, path, self.tensor(path)?)
    }

    /// The whole tree as Python values: dicts, lists, scalars, strings, `TensorRef`s, and
    /// `Opaque` placeholders.
    fn tree(&self, py: Python<'_>) -> PyResult<Py<PyDict>> {
        Ok(tree::dict_to_python(py, self.tree.root(), "")?.unbind())
    }

    /// Reads the tensors at `paths` (every tensor when `None`): grouped per object, coalesced,
    /// checked, in parallel. Returns `(path, dtype, shape, buffer)` in file order.
    #[pyo3(signature = (paths=None))]
    fn read(&self, py: Python<'_>, paths: Option<Vec<String>>) -> PyResult<Vec<(String, Read)>> {
        let wanted = self.wanted(paths)?;
        let read_all = ckptio::materialize(wanted, self.materialize_options());
        let tensors = wait(py, read_all)?;
        Ok(tensors
            .into_iter()
            .map(|(path, t)| {
                let lazy = &self.tensors[&path];
                let r = read(lazy, t, self.views);
                (path, r)
            })
            .collect())
    }

    /// Reads rows `start..end` of a tensor's first dimension: only the bytes (or, for a
    /// tensor in chunks, the chunks) those rows need.
    fn read_rows(&self, py: Python<'_>, path: &str, start: u64, end: u64) -> PyResult<Read> {
        let t = self.tensor(path)?;
        let rows = t.rows(start..end).ok_or_else(|| {
            let why = match t.shape.first() {
                None => "a scalar has no rows".to_owned(),
                Some(&n) if start > end || end > n => format!("it has {n} rows"),
                Some(_) => "its rows cannot be read on their own".to_owned(),
            };
            PyValueError::new_err(format!(
                "{}: rows {start}..{end} of `{path}` ({:?}): {why}",
                self.uri, t.shape
            ))
        })?;
        let mut out = wait(
            py,
            ckptio::materialize(
                vec![(path.to_owned(), rows.clone())],
                self.materialize_options(),
            ),
        )?;
        let (_, tensor) = out.pop().expect("one tensor asked, one read");
        Ok(read(&rows, tensor, self.views))
    }

    /// Bytes `start..end` of a contiguous tensor's stored bytes, as stored.
    fn read_bytes(&self, py: Python<'_>, path: &str, start: u64, end: u64) -> PyResult<Buffer> {
        let t = self.tensor(path)?;
        let TensorData::Range(range) = &t.data else {
            return Err(PyValueError::new_err(format!(
                "{}: `{path}` is not stored as one byte range",
                self.uri
            )));
        };
        let len = range.range.end - range.range.start;
        let why = if !t.is_contiguous() {
            Some("its stored bytes are not in its own order (a strided view); read it whole")
        } else if start > end || end > len {
            Some("out of range")
        } else {
            None
        };
        if let Some(why) = why {
            return Err(PyValueError::new_err(format!(
                "{}: bytes {start}..{end} of `{path}` ({len} bytes): {why}",
                self.uri
            )));
        }
        let absolute = range.range.start + start..range.range.start + end;
        let source = Arc::clone(&range.source);
        let mut data = wait(py, source.read_ranges(vec![absolute]))?;
        Ok(Buffer::new(data.pop().unwrap_or_default()))
    }

    /// The tensors at `paths` (every tensor when `None`) as an iterator of
    /// `(path, dtype, shape, buffer)` in file order, at most two batches of the memory budget
    /// held at once.
    #[pyo3(signature = (paths=None))]
    fn stream(&self, paths: Option<Vec<String>>) -> PyResult<TensorStream> {
        let wanted = self.wanted(paths)?;
        let inline: std::collections::HashSet<String> = wanted
            .iter()
            .filter(|(_, t)| !self.views && matches!(t.data, TensorData::Inline(_)))
            .map(|(p, _)| p.clone())
            .collect();
        Ok(TensorStream {
            stream: Mutex::new(Some(ckptio::materialize_stream(
                wanted,
                self.materialize_options(),
            ))),
            inline,
        })
    }

    fn __repr__(&self) -> String {
        format!(
            "<ckptio.Checkpoint {} ({}, {} tensors)>",
            self.uri,
            self.format,
            self.tensors.len()
        )
    }
}

/// What the library's tensor stream yields.
type Tensors = BoxStream<'static, ckptio::Result<(String, ckptio::Tensor)>>;

/// Tensors arriving in file order.
#[pyclass(module = "ckptio._ckptio", frozen)]
pub(crate) struct TensorStream {
    stream: Mutex<Option<Tensors>>,
    inline: std::collections::HashSet<String>,
}

#[pymethods]
impl TensorStream {
    fn __iter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    fn __next__(&self, py: Python<'_>) -> PyResult<Option<(String, Read)>> {
        let mut guard = crate::runtime::held(&self.stream)?;
        let Some(stream) = guard.as_mut() else {
            return Ok(None);
        };
        let next = wait(py, async { stream.next().await.transpose() })?;
        match next {
            None => {
                *guard = None;
                Ok(None)
            }
            Some((path, t)) => {
                let data = if self.inline.contains(&path) {
                    Bytes::copy_from_slice(&t.data)
                } else {
                    t.data
                };
                Ok(Some((path, (t.dtype.name(), t.shape, Buffer::new(data)))))
            }
        }
    }
}
