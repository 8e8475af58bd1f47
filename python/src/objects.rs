//! Objects as bytes, for the framework plugins: byte ranges of one object read in parallel and
//! pinned to one version, whole small objects, puts (create-only for commits), and DCP data
//! files written from tensors without a copy.

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict};

use crate::buffer::Buffer;
use crate::options;
use crate::runtime::wait;
use crate::save::{TensorIn, lazy_of};

/// Byte ranges `(start, end)` of the object at `uri`, read in parallel (near ranges coalesced)
/// and all from the version it had when this call began.
#[pyfunction]
#[pyo3(signature = (uri, ranges, storage_options=None))]
pub(crate) fn read_ranges(
    py: Python<'_>,
    uri: &str,
    ranges: Vec<(u64, u64)>,
    storage_options: Option<&Bound<'_, PyDict>>,
) -> PyResult<Vec<Buffer>> {
    let location = options::resolve(uri, storage_options)?;
    let ranges: Vec<std::ops::Range<u64>> = ranges.into_iter().map(|(a, b)| a..b).collect();
    let parts = wait(py, async {
        let object = ckptio::Object::open(&location, Default::default()).await?;
        object.read_ranges(&ranges).await
    })?;
    Ok(parts.into_iter().map(Buffer::new).collect())
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
