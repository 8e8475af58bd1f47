//! Objects as bytes, for the framework plugins: byte ranges of objects read in parallel,
//! pinned to one version and handed over as they land; whole small objects; puts (create-only
//! for commits); and DCP data files written from tensors without a copy.

use std::sync::Mutex;

use bytes::Bytes;
use futures::stream::{self, BoxStream, StreamExt, TryStreamExt};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict};

use crate::buffer::Buffer;
use crate::options;
use crate::runtime::{held, wait};
use crate::save::{TensorIn, lazy_of};

/// How many objects [`read_ranges_as_ready`] reads at once.
const OBJECTS_AT_ONCE: usize = 8;

/// What [`ReadyRanges`] yields: which object, which of its ranges, the bytes.
type Landed = BoxStream<'static, ckptio::Result<(usize, usize, Bytes)>>;

/// Byte ranges `(start, end)` of several objects, each range yielded as
/// `(object_index, range_index, buffer)` as soon as its bytes have landed: a caller works on the
/// first while the rest are on the wire. Each object is pinned to the version it had when its
/// reading began; its ranges are read in parallel, near ones coalesced; a few objects are
/// read at once.
#[pyfunction]
#[pyo3(signature = (reads, storage_options=None))]
pub(crate) fn read_ranges_as_ready(
    reads: Vec<(String, Vec<(u64, u64)>)>,
    storage_options: Option<&Bound<'_, PyDict>>,
) -> PyResult<ReadyRanges> {
    let reads = reads
        .into_iter()
        .map(|(uri, ranges)| {
            let location = options::resolve(&uri, storage_options)?;
            Ok((location, ranges.into_iter().map(|(a, b)| a..b).collect()))
        })
        .collect::<PyResult<Vec<(ckptio::Location, Vec<std::ops::Range<u64>>)>>>()?;
    let landed = stream::iter(reads.into_iter().enumerate())
        .map(|(n, (location, ranges))| {
            stream::once(async move {
                let object = ckptio::Object::open(&location, Default::default()).await?;
                Ok(object
                    .ranges_as_ready(ranges)
                    .map_ok(move |(i, bytes)| (n, i, bytes)))
            })
            .try_flatten()
            .boxed()
        })
        .flatten_unordered(OBJECTS_AT_ONCE)
        .boxed();
    Ok(ReadyRanges {
        landed: Mutex::new(Some(landed)),
    })
}

/// Ranges of objects as they land (from [`read_ranges_as_ready`]); ends after the first error.
#[pyclass(module = "ckptio._ckptio", frozen)]
pub(crate) struct ReadyRanges {
    landed: Mutex<Option<Landed>>,
}

#[pymethods]
impl ReadyRanges {
    fn __iter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    fn __next__(&self, py: Python<'_>) -> PyResult<Option<(usize, usize, Buffer)>> {
        let mut guard = held(&self.landed)?;
        let Some(landed) = guard.as_mut() else {
            return Ok(None);
        };
        match wait(py, async { landed.next().await.transpose() }) {
            Ok(Some((object, range, bytes))) => Ok(Some((object, range, Buffer::new(bytes)))),
            ended => {
                *guard = None;
                ended.map(|_| None)
            }
        }
    }
}

/// The whole object at `uri` (for small objects: metadata, indexes).
#[pyfunction]
#[pyo3(signature = (uri, storage_options=None))]
pub(crate) fn get(
    py: Python<'_>,
    uri: &str,
    storage_options: Option<&Bound<'_, PyDict>>,
) -> PyResult<Buffer> {
    let location = options::resolve(uri, storage_options)?;
    let bytes = wait(py, async {
        ckptio::Object::open(&location, Default::default())
            .await?
            .bytes()
            .await
    })?;
    Ok(Buffer::new(bytes))
}

/// Writes `data` as the object `uri`; with `create`, only if nothing is there
/// (`ckptio.CommittedError` otherwise): a commit.
#[pyfunction]
#[pyo3(signature = (uri, data, storage_options=None, *, create=false))]
pub(crate) fn put(
    py: Python<'_>,
    uri: &str,
    data: &Bound<'_, PyBytes>,
    storage_options: Option<&Bound<'_, PyDict>>,
    create: bool,
) -> PyResult<()> {
    let location = options::resolve(uri, storage_options)?;
    let body = data.as_bytes().to_vec();
    wait(py, ckptio::put_object(&location, body, create))
}

/// Writes the DCP data file `uri` from `items` (`TensorIn`s, written as `torch.save` archives,
/// and `bytes`, written as they are), tensors read in place; returns each item's
/// `(offset, length)` in the file.
#[pyfunction]
#[pyo3(signature = (uri, items, storage_options=None, *, memory_budget=64 << 20))]
pub(crate) fn write_dcp_file(
    py: Python<'_>,
    uri: &str,
    items: Vec<Bound<'_, PyAny>>,
    storage_options: Option<&Bound<'_, PyDict>>,
    memory_budget: u64,
) -> PyResult<Vec<(u64, u64)>> {
    let location = options::resolve(uri, storage_options)?;
    let mut planned = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        if let Ok(t) = item.cast::<TensorIn>() {
            let t = lazy_of(t.get(), py, &format!("{uri} item {i}"));
            planned.push(ckptio::DcpItem::Tensor(t));
        } else if let Ok(b) = item.cast::<PyBytes>() {
            planned.push(ckptio::DcpItem::Bytes(bytes::Bytes::copy_from_slice(
                b.as_bytes(),
            )));
        } else {
            return Err(PyValueError::new_err(format!(
                "item {i}: a tensor or bytes, not {}",
                item.get_type().name()?
            )));
        }
    }
    let options = ckptio::WriteOptions {
        materialize: ckptio::MaterializeOptions {
            to_f32: false,
            memory_budget,
        },
        ..Default::default()
    };
    let ranges = wait(py, ckptio::write_dcp_file(&location, planned, &options))?;
    Ok(ranges
        .into_iter()
        .map(|r| (r.start, r.end - r.start))
        .collect())
}
