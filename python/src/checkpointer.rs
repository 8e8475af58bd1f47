//! The library's checkpointer, for Python: numbered checkpoints under a root, saved by period,
//! the last N kept, the latest committed one found. `ckptio.checkpointer.DefaultCheckpointer`
//! (Python) is built on it.

use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::options;
use crate::runtime::wait;

/// Numbered checkpoints under a root: ckptio directories `{prefix}{index}`, or with `extension`
/// torch files `{prefix}{index}.{extension}`.
#[pyclass(module = "ckptio._ckptio", frozen)]
pub(crate) struct Checkpointer {
    inner: ckptio::Checkpointer,
}

#[pymethods]
impl Checkpointer {
    #[new]
    #[pyo3(signature = (root, storage_options=None, *, prefix="step-".to_owned(), period=1, keep_last=None, extension=None))]
    fn new(
        root: &str,
        storage_options: Option<&Bound<'_, PyDict>>,
        prefix: String,
        period: u64,
        keep_last: Option<usize>,
        extension: Option<String>,
    ) -> PyResult<Self> {
        let root = options::resolve(&format!("{}/", root.trim_end_matches('/')), storage_options)?;
        let form = match extension {
            Some(extension) => ckptio::Form::TorchFile {
                extension: extension.trim_start_matches('.').to_owned(),
            },
            None => ckptio::Form::Directory,
        };
        let settings = ckptio::CheckpointerOptions {
            prefix,
            period,
            keep_last,
            form,
            ..Default::default()
        };
        Ok(Self {
            inner: ckptio::Checkpointer::new(root, settings),
        })
    }

    /// The URI of checkpoint `index`.
    fn location(&self, index: u64) -> String {
        self.inner.location(index).uri()
    }

    /// Saves `state` as checkpoint `index` when the period says so (or `force`); returns its
    /// URI, or `None` when it was not time to save.
    #[pyo3(signature = (index, state, force=false))]
    fn save(
        &self,
        py: Python<'_>,
        index: u64,
        state: &Bound<'_, PyDict>,
        force: bool,
    ) -> PyResult<Option<String>> {
        let tree = crate::save::state_tree(py, state, &self.inner.location(index).to_string())?;
        let saved = wait(py, self.inner.save(index, &tree, force))?;
        Ok(saved.map(|s| s.uri))
    }

    /// Every checkpoint under the root, committed or partial: `(index, uri, kind, committed)`.
    fn list(&self, py: Python<'_>) -> PyResult<Vec<(u64, String, String, bool)>> {
        let entries = wait(py, self.inner.list())?;
        Ok(entries
            .into_iter()
            .map(|e| {
                let uri = self.inner.location_of(&e).uri();
                (
                    e.index,
                    uri,
                    format!("{:?}", e.kind).to_lowercase(),
                    e.committed,
                )
            })
            .collect())
    }

    /// The greatest committed index, skipping partial directories and files that do not open.
    fn latest(&self, py: Python<'_>) -> PyResult<Option<u64>> {
        wait(py, self.inner.latest())
    }

    /// Removes checkpoint `index` (its commit marker first).
    fn remove(&self, py: Python<'_>, index: u64) -> PyResult<()> {
        wait(py, self.inner.remove(index))
    }

    /// Removes every checkpoint under the root.
    fn delete_existing(&self, py: Python<'_>) -> PyResult<()> {
        wait(py, self.inner.delete_existing())
    }
}
