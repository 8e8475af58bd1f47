//! A bandwidth cap shared by every request of a download.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// Paces received bytes to `bytes_per_sec`: each call books the next slot of the shared
/// timeline and waits until that slot starts. Reading pauses, so TCP slows the sender down.
#[derive(Debug)]
pub(crate) struct RateLimiter {
    bytes_per_sec: u64,
    next_free: Mutex<Option<Instant>>,
}

impl RateLimiter {
    pub(crate) fn new(bytes_per_sec: u64) -> Self {
        Self {
            bytes_per_sec: bytes_per_sec.max(1),
            next_free: Mutex::new(None),
        }
    }

    /// Accounts for `bytes` just received and waits until the cap allows more.
    pub(crate) async fn consume(&self, bytes: u64) {
        let now = Instant::now();
        let start = {
            let mut next = self.next_free.lock().unwrap_or_else(|p| p.into_inner());
            let start = next.map_or(now, |n| n.max(now));
            *next = Some(start + Duration::from_secs_f64(bytes as f64 / self.bytes_per_sec as f64));
            start
        };
        if start > now {
            tokio::time::sleep_until(start).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn rate_is_capped_across_callers() {
        let limiter = std::sync::Arc::new(RateLimiter::new(1000));
        let begin = Instant::now();
        let tasks: Vec<_> = (0..4)
            .map(|_| {
                let l = limiter.clone();
                tokio::spawn(async move {
                    for _ in 0..5 {
                        l.consume(100).await;
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        // 2000 bytes at 1000 B/s: the last 100-byte slot starts at 1.9 s.
        assert_eq!(begin.elapsed(), Duration::from_millis(1900));
    }
}
