//! Arguments Python passes, as the library's options: storage options (a dict of strings, as
//! fsspec and obstore take them), globs, and a progress callback.

use std::sync::Arc;

use pyo3::prelude::*;
use pyo3::types::PyDict;

/// A `storage_options` dict (or `None`) as [`ckptio::StorageOptions`]; values are turned into
/// strings (`True` becomes `"true"`).
pub(crate) fn storage(options: Option<&Bound<'_, PyDict>>) -> PyResult<ckptio::StorageOptions> {
    let mut out = ckptio::StorageOptions::new();
    if let Some(options) = options {
        for (key, value) in options.iter() {
            let key: String = key.extract()?;
            let value = match value.extract::<bool>() {
                Ok(b) if value.is_instance_of::<pyo3::types::PyBool>() => b.to_string(),
                _ => value.str()?.to_string(),
            };
            out = out.with(key, value);
        }
    }
    Ok(out)
}

/// Resolves `uri` with `options`.
pub(crate) fn resolve(
    uri: &str,
    options: Option<&Bound<'_, PyDict>>,
) -> PyResult<ckptio::Location> {
    ckptio::resolve(uri, &storage(options)?).map_err(crate::errors::to_py)
}

/// Progress told to a Python callable as `(done, total)` bytes, from whatever thread the bytes
/// arrive on.
pub(crate) struct Callback {
    callable: Py<PyAny>,
    done: std::sync::atomic::AtomicU64,
    total: std::sync::atomic::AtomicU64,
}

impl Callback {
    pub(crate) fn new(callable: Py<PyAny>) -> Arc<Self> {
        Arc::new(Self {
            callable,
            done: 0.into(),
            total: 0.into(),
        })
    }

    fn report(&self) {
        use std::sync::atomic::Ordering::Relaxed;
        Python::attach(|py| {
            // Read under the GIL, which orders the reports of concurrent requests: read before
            // it, a report could overtake a later one, and the last call would not show the end.
            let (done, total) = (self.done.load(Relaxed), self.total.load(Relaxed));
            if let Err(e) = self.callable.call1(py, (done, total)) {
                // A broken callback must not fail the read; it is reported once, as Python would.
                e.write_unraisable(py, Some(self.callable.bind(py)));
            }
        });
    }
}

impl ckptio::Progress for Callback {
    fn started(&self, _: &str, total: u64) {
        self.total
            .fetch_add(total, std::sync::atomic::Ordering::Relaxed);
        self.report();
    }

    fn advanced(&self, bytes: u64) {
        self.done
            .fetch_add(bytes, std::sync::atomic::Ordering::Relaxed);
        self.report();
    }
}

/// Fetch options with `progress` (a callable, or `None`).
pub(crate) fn fetch(progress: Option<Py<PyAny>>) -> ckptio::FetchOptions {
    let mut options = ckptio::FetchOptions::default();
    if let Some(callable) = progress {
        options.progress = Callback::new(callable);
    }
    options
}
