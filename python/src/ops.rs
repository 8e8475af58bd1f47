//! The storage operations the CLI has, for Python: `stat`, `download` (resumable, ETag
//! pinned), `ls` (numbered checkpoints under a root), `walk` (every object below a directory),
//! `cp`, `verify`, `rm`.

use std::collections::BTreeMap;

use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::options;
use crate::runtime::wait;

/// Size, ETag, last-modified time (RFC 3339) and version of an object.
#[pyfunction]
#[pyo3(signature = (uri, storage_options=None))]
pub(crate) fn stat(
    py: Python<'_>,
    uri: &str,
    storage_options: Option<&Bound<'_, PyDict>>,
) -> PyResult<BTreeMap<&'static str, Option<String>>> {
    let location = options::resolve(uri, storage_options)?;
    let info = wait(py, ckptio::stat(&location))?;
    Ok(BTreeMap::from([
        ("uri", Some(info.uri)),
        ("size", Some(info.size.to_string())),
        ("etag", info.etag),
        ("last_modified", Some(info.last_modified.to_rfc3339())),
        ("version", info.version),
    ]))
}

/// Downloads `uri` to the local file `dest` with parallel range requests, pinned to the
/// object's ETag; an interrupted download resumes. Returns the bytes downloaded.
#[pyfunction]
#[pyo3(signature = (uri, dest, storage_options=None, *, chunk_size=None, concurrency=None, rate_limit=None, progress=None))]
#[allow(clippy::too_many_arguments)]
pub(crate) fn download(
    py: Python<'_>,
    uri: &str,
    dest: std::path::PathBuf,
    storage_options: Option<&Bound<'_, PyDict>>,
    chunk_size: Option<u64>,
    concurrency: Option<usize>,
    rate_limit: Option<u64>,
    progress: Option<Py<PyAny>>,
) -> PyResult<u64> {
    let location = options::resolve(uri, storage_options)?;
    let mut fetch = options::fetch(progress);
    if let Some(chunk) = chunk_size {
        fetch.chunk_size = chunk;
    }
    if let Some(n) = concurrency {
        fetch.concurrency = n;
    }
    fetch.rate_limit = rate_limit;
    let info = wait(py, async {
        let object = ckptio::Object::open(&location, fetch).await?;
        object.download_to(&dest).await
    })?;
    Ok(info.size)
}

/// The numbered checkpoints under `root`: `(index, name, kind, committed)`, oldest first.
#[pyfunction]
#[pyo3(signature = (root, storage_options=None, *, prefix=None))]
pub(crate) fn ls(
    py: Python<'_>,
    root: &str,
    storage_options: Option<&Bound<'_, PyDict>>,
    prefix: Option<String>,
) -> PyResult<Vec<(u64, String, String, bool)>> {
    let location = options::resolve(root, storage_options)?;
    let mut settings = ckptio::CheckpointerOptions::default();
    if let Some(prefix) = prefix {
        settings.prefix = prefix;
    }
    let checkpointer = ckptio::Checkpointer::new(location, settings);
    let entries = wait(py, checkpointer.list())?;
    Ok(entries
        .into_iter()
        .map(|e| {
            (
                e.index,
                e.name,
                format!("{:?}", e.kind).to_lowercase(),
                e.committed,
            )
        })
        .collect())
}

/// Copies the object or directory `src` to `dst` (a directory when it ends in `/` or `src` is
/// one), streaming, with multipart uploads. Returns `(objects, bytes)`.
#[pyfunction]
#[pyo3(signature = (src, dst, storage_options=None, *, src_options=None, dst_options=None, concurrency=8))]
pub(crate) fn cp(
    py: Python<'_>,
    src: &str,
    dst: &str,
    storage_options: Option<&Bound<'_, PyDict>>,
    src_options: Option<&Bound<'_, PyDict>>,
    dst_options: Option<&Bound<'_, PyDict>>,
    concurrency: usize,
) -> PyResult<(usize, u64)> {
    let options = ckptio::PairOptions {
        shared: options::storage(storage_options)?,
        src: options::storage(src_options)?,
        dst: options::storage(dst_options)?,
    };
    let (src, dst) = ckptio::resolve_pair(src, dst, &options).map_err(crate::errors::to_py)?;
    let fetch = ckptio::FetchOptions::default();
    wait(py, async {
        match ckptio::stat(&src).await {
            Ok(_) => {
                let target = if dst.names_dir() {
                    dst.join(src.path().filename().unwrap_or_default())
                } else {
                    dst.clone()
                };
                let bytes = ckptio::copy_object(&src, &target, fetch).await?;
                Ok((1, bytes))
            }
            _ => {
                let copied = ckptio::copy_dir(&src, &dst, fetch, concurrency).await?;
                Ok((copied.objects, copied.bytes))
            }
        }
    })
}

/// Reads every tensor of the checkpoint at `uri` once, checking sizes and checksums, keeping
/// none. Returns `{format, tensors, bytes, checked}`.
#[pyfunction]
#[pyo3(signature = (uri, storage_options=None, *, strict=false))]
pub(crate) fn verify<'py>(
    py: Python<'py>,
    uri: &str,
    storage_options: Option<&Bound<'_, PyDict>>,
    strict: bool,
) -> PyResult<Bound<'py, PyDict>> {
    let location = options::resolve(uri, storage_options)?;
    let open = ckptio::OpenOptions {
        read: ckptio::ReadOptions {
            strict,
            verify: true,
        },
        ..Default::default()
    };
    let verified = wait(py, ckptio::verify(&location, open))?;
    let out = PyDict::new(py);
    out.set_item("format", verified.format.to_string())?;
    out.set_item("tensors", verified.tensors)?;
    out.set_item("bytes", verified.bytes)?;
    out.set_item("checked", verified.checked)?;
    Ok(out)
}

/// Removes the checkpoint (or object) at `uri`: a directory loses its commit marker first.
/// A directory that holds no checkpoint is refused unless `force`. Returns what it was
/// (`ckptio`, `dcp`, `orbax`, `unknown`, `file`).
#[pyfunction]
#[pyo3(signature = (uri, storage_options=None, *, force=false))]
pub(crate) fn rm(
    py: Python<'_>,
    uri: &str,
    storage_options: Option<&Bound<'_, PyDict>>,
    force: bool,
) -> PyResult<String> {
    let location = options::resolve(uri, storage_options)?;
    let kind = if force {
        wait(py, ckptio::remove_any(&location))?
    } else {
        wait(py, ckptio::remove(&location))?
    };
    Ok(format!("{kind:?}").to_lowercase())
}

/// Every object below the directory `uri`, as paths relative to it (`sub/file.pt`), sorted;
/// an empty list when there is nothing there.
#[pyfunction]
#[pyo3(signature = (uri, storage_options=None))]
pub(crate) fn walk(
    py: Python<'_>,
    uri: &str,
    storage_options: Option<&Bound<'_, PyDict>>,
) -> PyResult<Vec<String>> {
    let location = options::resolve(uri, storage_options)?;
    wait(py, ckptio::walk(&location))
}
