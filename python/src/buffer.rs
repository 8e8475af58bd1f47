//! Bytes ckptio read, handed to Python without a copy: a `Buffer` owns them and shows them to
//! numpy through `__array_interface__` (a pure-Python protocol, so it works on every CPython
//! the abi3 wheel supports); numpy's array keeps the buffer alive, and torch shares the
//! array's memory (`torch.from_numpy`).

use bytes::Bytes;
use pyo3::prelude::*;
use pyo3::types::PyDict;

/// Bytes a tensor was read into, owned by Python.
#[pyclass(module = "ckptio._ckptio", frozen)]
pub(crate) struct Buffer {
    bytes: Bytes,
}

impl Buffer {
    pub(crate) fn new(bytes: Bytes) -> Self {
        Self { bytes }
    }

    /// The bytes, shared.
    pub(crate) fn bytes(&self) -> &Bytes {
        &self.bytes
    }
}

#[pymethods]
impl Buffer {
    /// numpy's array interface: the bytes as a one-dimensional `uint8` array, writable.
    ///
    /// The buffers the reader returns are disjoint ranges of memory nothing else in the
    /// process reads or writes once they are handed over (tensors that share a range are the
    /// same tensor, as torch shares tied weights), so Python may write them.
    #[getter]
    fn __array_interface__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let interface = PyDict::new(py);
        // numpy wants a non-null pointer even for an empty array.
        let address = if self.bytes.is_empty() {
            std::ptr::NonNull::<u8>::dangling().as_ptr() as usize
        } else {
            self.bytes.as_ptr() as usize
        };
        interface.set_item("data", (address, false))?;
        interface.set_item("shape", (self.bytes.len(),))?;
        interface.set_item("typestr", "|u1")?;
        interface.set_item("version", 3)?;
        Ok(interface)
    }

    fn __len__(&self) -> usize {
        self.bytes.len()
    }

    /// A copy of the bytes, as `bytes`.
    fn tobytes(&self) -> Vec<u8> {
        self.bytes.to_vec()
    }
}
