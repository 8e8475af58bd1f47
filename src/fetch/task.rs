//! Spawned work that ends with its owner: dropping a download cancels every request of it.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use std::io;
use std::path::Path;

use tokio::task::JoinHandle;

use crate::error::{Error, Result};

/// A spawned task, aborted when this handle is dropped; a panic in the task resumes in the
/// awaiting code.
pub(crate) struct Task<T>(JoinHandle<T>);

/// Runs `future` on the runtime's worker threads.
pub(crate) fn spawn<T: Send + 'static>(
    future: impl Future<Output = T> + Send + 'static,
) -> Task<T> {
    Task(tokio::spawn(future))
}

impl<T> Future for Task<T> {
    type Output = T;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<T> {
        Pin::new(&mut self.0).poll(cx).map(|joined| match joined {
            Ok(value) => value,
            Err(err) if err.is_panic() => std::panic::resume_unwind(err.into_panic()),
            // Only `Drop` aborts, and a dropped task is never polled again.
            Err(err) => unreachable!("a task was cancelled while awaited: {err}"),
        })
    }
}

impl<T> Drop for Task<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

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
