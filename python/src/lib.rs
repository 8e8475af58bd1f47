//! `ckptio._ckptio`: the Python extension over the ckptio library's public API. The package
//! `ckptio` (Python, beside this crate) wraps it: tensors become numpy arrays or torch tensors
//! over the bytes read here, without a copy.

mod buffer;
mod checkpoint;
mod checkpointer;
mod errors;
mod objects;
mod ops;
mod options;
mod runtime;
mod save;
mod tree;

use pyo3::prelude::*;

#[pymodule]
fn _ckptio(module: &Bound<'_, PyModule>) -> PyResult<()> {
    // Rust's log records (ckptio's tracing events, through tracing's `log` feature, and
    // object_store's) go to Python's `logging`, under the `ckptio` and crate loggers.
    let _ = pyo3_log::try_init();
    errors::register(module)?;
    module.add("__version__", env!("CARGO_PKG_VERSION"))?;
    module.add_class::<buffer::Buffer>()?;
    module.add_class::<checkpoint::Checkpoint>()?;
    module.add_class::<checkpoint::TensorStream>()?;
    module.add_class::<objects::ReadyRanges>()?;
    module.add_class::<tree::TensorRef>()?;
    module.add_class::<tree::Opaque>()?;
    module.add_class::<save::TensorIn>()?;
    module.add_class::<checkpointer::Checkpointer>()?;
    module.add_function(wrap_pyfunction!(checkpoint::open, module)?)?;
    module.add_function(wrap_pyfunction!(checkpoint::open_bytes, module)?)?;
    module.add_function(wrap_pyfunction!(save::save, module)?)?;
    module.add_function(wrap_pyfunction!(ops::stat, module)?)?;
    module.add_function(wrap_pyfunction!(ops::download, module)?)?;
    module.add_function(wrap_pyfunction!(ops::ls, module)?)?;
    module.add_function(wrap_pyfunction!(ops::cp, module)?)?;
    module.add_function(wrap_pyfunction!(ops::verify, module)?)?;
    module.add_function(wrap_pyfunction!(ops::rm, module)?)?;
    module.add_function(wrap_pyfunction!(ops::walk, module)?)?;
    module.add_function(wrap_pyfunction!(objects::read_ranges_as_ready, module)?)?;
    module.add_function(wrap_pyfunction!(objects::get, module)?)?;
    module.add_function(wrap_pyfunction!(objects::put, module)?)?;
    module.add_function(wrap_pyfunction!(objects::write_dcp_file, module)?)?;
    Ok(())
}
