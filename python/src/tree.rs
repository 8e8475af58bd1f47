//! A state tree as Python values: dicts and lists as themselves, scalars and strings as
//! Python's, tensors as [`TensorRef`]s to be read, objects ckptio does not interpret as inert
//! [`Opaque`] placeholders that name their class (nothing was executed).

use pyo3::IntoPyObjectExt;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PyTuple};

/// A tensor of the tree, not read yet: its path, dtype and shape.
#[pyclass(module = "ckptio._ckptio", frozen, get_all)]
pub(crate) struct TensorRef {
    /// Its path in the checkpoint (`state_dict/layer.weight`).
    path: String,
    /// ckptio's dtype name (`F32`, `BF16`, ...).
    dtype: &'static str,
    /// Its dimensions.
    shape: Vec<u64>,
    /// Why ckptio does not read it (a quantized or sparse tensor), if it does not.
    unreadable: Option<String>,
}

#[pymethods]
impl TensorRef {
    fn __repr__(&self) -> String {
        format!(
            "TensorRef({:?}, {}, {:?})",
            self.path, self.dtype, self.shape
        )
    }
}

/// An object of a class ckptio does not interpret, kept inert: what the pickle said to build,
/// never built.
#[pyclass(module = "ckptio._ckptio", frozen, get_all)]
pub(crate) struct Opaque {
    /// The class's module.
    module: String,
    /// The class's name.
    name: String,
    /// The arguments it would have been constructed with.
    args: Py<PyList>,
    /// Keyword arguments, if any.
    kwargs: Option<Py<PyAny>>,
    /// The state `__setstate__` would have received, if any.
    state: Option<Py<PyAny>>,
}

impl Opaque {
    /// Its class's module and name, arguments, keyword arguments and state.
    #[allow(clippy::type_complexity)]
    pub(crate) fn parts(
        &self,
        py: Python<'_>,
    ) -> (
        String,
        String,
        Py<PyList>,
        Option<Py<PyAny>>,
        Option<Py<PyAny>>,
    ) {
        (
            self.module.clone(),
            self.name.clone(),
            self.args.clone_ref(py),
            self.kwargs.as_ref().map(|k| k.clone_ref(py)),
            self.state.as_ref().map(|s| s.clone_ref(py)),
        )
    }
}

#[pymethods]
impl Opaque {
    fn __repr__(&self) -> String {
        format!(
            "<ckptio.Opaque {}.{} (not executed)>",
            self.module, self.name
        )
    }
}

/// The dict `d` (at `path`) as a Python dict, its keys integers where they were.
pub(crate) fn dict_to_python<'py>(
    py: Python<'py>,
    d: &ckptio::Dict,
    path: &str,
) -> PyResult<Bound<'py, PyDict>> {
    let dict = PyDict::new(py);
    let int_keys = d.key_kind() == ckptio::KeyKind::Int;
    for (key, child) in d.iter() {
        let escaped = ckptio::path::escape(key);
        let at = if path.is_empty() {
            escaped
        } else {
            format!("{path}/{escaped}")
        };
        let value = to_python(py, child, &at)?;
        match key.parse::<i64>() {
            Ok(k) if int_keys => dict.set_item(k, value)?,
            _ => dict.set_item(key, value)?,
        }
    }
    Ok(dict)
}

/// `node` (at `path`) as a Python value.
pub(crate) fn to_python(py: Python<'_>, node: &ckptio::Node, path: &str) -> PyResult<Py<PyAny>> {
    use ckptio::{Int, Leaf, Node};
    let join = |key: &str| {
        let key = ckptio::path::escape(key);
        if path.is_empty() {
            key
        } else {
            format!("{path}/{key}")
        }
    };
    Ok(match node {
        Node::Dict(d) => dict_to_python(py, d, path)?.into_any().unbind(),
        Node::List(items) => {
            let values = items
                .iter()
                .enumerate()
                .map(|(i, child)| to_python(py, child, &join(&i.to_string())))
                .collect::<PyResult<Vec<_>>>()?;
            if items.is_tuple() {
                PyTuple::new(py, values)?.into_any().unbind()
            } else {
                PyList::new(py, values)?.into_any().unbind()
            }
        }
        Node::Leaf(leaf) => match leaf {
            Leaf::None => py.None(),
            Leaf::Bool(b) => b.into_py_any(py)?,
            Leaf::Int(Int::Small(v)) => v.into_py_any(py)?,
            Leaf::Int(Int::Big(digits)) => py
                .get_type::<pyo3::types::PyInt>()
                .call1((digits.as_str(),))?
                .unbind(),
            Leaf::Float(v) => v.into_py_any(py)?,
            Leaf::Str(s) => s.into_py_any(py)?,
            Leaf::Bytes(b) => PyBytes::new(py, b).into_any().unbind(),
            Leaf::Tensor(t) => tensor_ref(py, path, t)?.into_any(),
            Leaf::Opaque(o) => {
                let args = PyList::empty(py);
                for (i, arg) in o.args.iter().enumerate() {
                    args.append(to_python(py, arg, &join(&format!("args/{i}")))?)?;
                }
                let kwargs = o
                    .kwargs
                    .as_deref()
                    .map(|k| to_python(py, k, path))
                    .transpose()?;
                let state = o
                    .state
                    .as_deref()
                    .map(|s| to_python(py, s, path))
                    .transpose()?;
                Py::new(
                    py,
                    Opaque {
                        module: o.module.clone(),
                        name: o.name.clone(),
                        args: args.unbind(),
                        kwargs,
                        state,
                    },
                )?
                .into_any()
            }
        },
    })
}

/// The reference to tensor `t` at `path`.
pub(crate) fn tensor_ref(
    py: Python<'_>,
    path: &str,
    t: &ckptio::LazyTensor,
) -> PyResult<Py<TensorRef>> {
    let unreadable = match &t.data {
        ckptio::TensorData::Unreadable(u) => Some(u.what.to_string()),
        _ => None,
    };
    Py::new(
        py,
        TensorRef {
            path: path.to_owned(),
            dtype: t.dtype.name(),
            shape: t.shape.clone(),
            unreadable,
        },
    )
}
