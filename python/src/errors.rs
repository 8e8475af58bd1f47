//! ckptio's errors as Python's: a missing object is `FileNotFoundError`, refused credentials
//! `PermissionError`, a bad URI or argument `ValueError`, and the rest `ckptio.Error`
//! subclasses carrying the library's message (secrets already redacted).

use pyo3::exceptions::{
    PyFileNotFoundError, PyMemoryError, PyOSError, PyPermissionError, PyValueError,
};
use pyo3::prelude::*;

pyo3::create_exception!(
    ckptio,
    Error,
    pyo3::exceptions::PyException,
    "A ckptio error: the message names the URI (secrets redacted) and what went wrong."
);
pyo3::create_exception!(
    ckptio,
    UnsafeError,
    Error,
    "Something ckptio refuses to touch: a pickled global that can run code (nothing ran), or a \
     symbolic link out of a checkpoint's directory."
);
pyo3::create_exception!(
    ckptio,
    CorruptError,
    Error,
    "A file that is not what it claims: truncated, lying lengths, checksums that do not match."
);
pyo3::create_exception!(
    ckptio,
    UnsupportedError,
    Error,
    "A format (or a feature of one) ckptio recognizes but does not read."
);
pyo3::create_exception!(
    ckptio,
    TransportError,
    Error,
    "A request that failed on the way (after retries); `retryable` says whether trying again \
     may help."
);
pyo3::create_exception!(
    ckptio,
    CommittedError,
    Error,
    "The checkpoint is already committed (its commit marker exists)."
);
pyo3::create_exception!(
    ckptio,
    ChangedError,
    Error,
    "The object changed while it was read (its ETag moved)."
);

/// The Python exception for `err`.
pub(crate) fn to_py(err: ckptio::Error) -> PyErr {
    use ckptio::Error as E;
    let message = err.to_string();
    match &err {
        E::NotFound { .. } | E::NoSuchTensor { .. } => PyFileNotFoundError::new_err(message),
        E::NoCheckpoint { .. } | E::NoContainer { .. } => PyFileNotFoundError::new_err(message),
        E::PermissionDenied { .. } | E::MissingCredentials { .. } => {
            PyPermissionError::new_err(message)
        }
        E::InvalidUri { .. }
        | E::InvalidOption { .. }
        | E::InvalidArgument { .. }
        | E::InvalidRange { .. }
        | E::Config { .. } => PyValueError::new_err(message),
        E::TooLarge { .. } => PyMemoryError::new_err(message),
        E::LocalIo { .. } => PyOSError::new_err(message),
        E::Unsafe { .. } => UnsafeError::new_err(message),
        E::Corrupt { .. } => CorruptError::new_err(message),
        E::Unsupported { .. } => UnsupportedError::new_err(message),
        E::AlreadyCommitted { .. } => CommittedError::new_err(message),
        E::ObjectChanged { .. } => ChangedError::new_err(message),
        E::Transport { .. } | E::RangeFailed { .. } => {
            let retryable = err.is_retryable();
            let e = TransportError::new_err(message);
            Python::attach(|py| {
                let _ = e.value(py).setattr("retryable", retryable);
            });
            e
        }
        _ => Error::new_err(message),
    }
}

/// Registers the exception classes in `module`.
pub(crate) fn register(module: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = module.py();
    module.add("Error", py.get_type::<Error>())?;
    module.add("UnsafeError", py.get_type::<UnsafeError>())?;
    module.add("CorruptError", py.get_type::<CorruptError>())?;
    module.add("UnsupportedError", py.get_type::<UnsupportedError>())?;
    module.add("TransportError", py.get_type::<TransportError>())?;
    module.add("CommittedError", py.get_type::<CommittedError>())?;
    module.add("ChangedError", py.get_type::<ChangedError>())?;
    Ok(())
}
