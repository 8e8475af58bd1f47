//! Stream helpers shared by the readers.

use futures::stream::{Stream, StreamExt};

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
