//! Progress events. The library reports; only the binary draws.

use std::time::Duration;

/// Receives the events of a download. Every method has an empty default.
///
/// Called from the download's tasks, so implementations must be cheap and thread-safe.
pub trait Progress: Send + Sync {
    /// The download of `uri` started; `total` bytes will be delivered (bytes already present
    /// from an earlier, interrupted download are reported through [`advanced`](Self::advanced)).
    fn started(&self, uri: &str, total: u64) {
        let _ = (uri, total);
    }

    /// `bytes` more bytes arrived. Bytes re-fetched after a failure are never counted twice.
    fn advanced(&self, bytes: u64) {
        let _ = bytes;
    }

    /// A range failed with `cause`; retry number `attempt` follows after `delay`.
    fn retrying(&self, attempt: usize, delay: Duration, cause: &str) {
        let _ = (attempt, delay, cause);
    }

    /// The download completed.
    fn finished(&self) {}
}

/// Ignores every event.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoProgress;

impl Progress for NoProgress {}
