//! Blocking file I/O off the async workers, its errors named by path.

use std::io;
use std::path::Path;

use crate::error::{Error, Result};

/// Maps an I/O error on `path` while doing `action` to ckptio's error.
pub(crate) fn local_io<'a>(
    path: &'a Path,
    action: &'static str,
) -> impl FnOnce(io::Error) -> Error + 'a {
    move |source| Error::LocalIo {
        path: path.display().to_string(),
        action,
        source,
    }
}

/// Runs blocking file I/O off the async workers; `path` and `action` name it in errors.
pub(crate) async fn blocking<T: Send + 'static>(
    path: &Path,
    action: &'static str,
    io: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(io)
        .await
        .unwrap_or_else(|join| Err(io::Error::other(join)))
        .map_err(local_io(path, action))
}
