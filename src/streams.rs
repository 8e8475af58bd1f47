//! Stream and task helpers shared by the readers: spawned work ends with its owner (dropping
//! a download cancels every request of it), and a stream ends at its first error.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures::stream::{Stream, StreamExt};
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
        match Pin::new(&mut self.0).poll(cx) {
            Poll::Ready(Ok(value)) => Poll::Ready(value),
            Poll::Ready(Err(err)) if err.is_panic() => std::panic::resume_unwind(err.into_panic()),
            // Cancelled: not by `Drop` (a dropped handle is never polled again), so by the
            // runtime shutting down, which drops the awaiting task next. It waits for that.
            Poll::Ready(Err(_)) | Poll::Pending => Poll::Pending,
        }
    }
}

impl<T> Drop for Task<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// `stream` up to and including its first error: a consumer sees the error once, then the end,
/// and never the items that raced past it.
pub(crate) fn end_at_first_error<T, E>(
    stream: impl Stream<Item = Result<T, E>>,
) -> impl Stream<Item = Result<T, E>> {
    stream.scan(false, |failed, item| {
        let next = if *failed {
            None
        } else {
            *failed = item.is_err();
            Some(item)
        };
        std::future::ready(next)
    })
}

#[cfg(test)]
mod tests {
    use futures::stream;

    use super::*;

    #[tokio::test]
    async fn items_after_the_first_error_are_dropped() {
        let items = stream::iter([Ok(1), Err("bad"), Ok(2), Err("worse")]);
        let seen: Vec<_> = end_at_first_error(items).collect().await;
        assert_eq!(seen, [Ok(1), Err("bad")]);
    }
}
