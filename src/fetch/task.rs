//! Spawned work that ends with its owner: dropping a download cancels every request of it.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::task::JoinHandle;

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
