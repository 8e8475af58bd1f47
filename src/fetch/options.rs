//! How a download runs: chunking, concurrency, retries, bandwidth, progress.

use std::sync::Arc;
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};

use super::progress::{NoProgress, Progress};

/// Settings of a download. `Default` suits most objects; every field can be changed.
///
/// In-flight memory is at most `concurrency × chunk_size` (plus the destination buffer when
/// downloading into memory).
#[derive(Clone)]
pub struct FetchOptions {
    /// Bytes per range request (default 16 MiB). Garage, which reads and hashes a block whole
    /// before it sends any of it, served 1 GiB 25% faster in 16 MiB ranges than in 8 MiB ones;
    /// nginx and SeaweedFS served both alike, and a store bills per request.
    pub chunk_size: u64,
    /// Range requests in flight at once (default 16; at most 1024). Through a link of 20 ms
    /// round trip and 100 MB/s per connection, 16 fetched 1 GiB 35% faster than 8, and 32 or
    /// 64 no faster on two cores (`scripts/bench fetch --sweep`); a real object store caps
    /// each connection, so more cores and a faster link want more.
    pub concurrency: usize,
    /// Ranges closer than this are read with one request (default 1 MiB).
    pub coalesce_gap: u64,
    /// When to retry a range after object_store gave up on it.
    pub retry: RetryPolicy,
    /// Cap on the download rate in bytes per second, across all requests.
    pub rate_limit: Option<u64>,
    /// Receives progress events.
    pub progress: Arc<dyn Progress>,
    /// Read local files through a private memory map (default `true`): tensors share the page
    /// cache instead of copying it, as `torch.load(mmap=True)` does. A file truncated by
    /// another process while its tensors are in use then faults the process (SIGBUS); turn
    /// this off for files that may be rewritten in place (ranges are then read straight into
    /// buffers of their own, and the file checked against the pinned version afterwards).
    pub map_local: bool,
    /// Ask the kernel for transparent huge pages for each destination buffer of 2 MiB or more
    /// in a download into memory (default `false`; Linux with THP `always` or `madvise`).
    /// Where the kernel has huge pages at hand, filling 1 GiB of fresh memory took 0.12 s
    /// instead of 0.43 s on the benchmark machine (512 times fewer page faults), and an HTTP
    /// download of 1 GiB into memory 0.47 s instead of 0.85 s. Off by default, as torch's and
    /// glibc's huge-page switches are, because where it loses it loses more: in a VM whose
    /// host takes back free memory (virtio-balloon free page reporting, which gives up free
    /// blocks of exactly a huge page's size), each huge page is memory the host must back
    /// again, and the same download took 0.6–3.2 s; where THP `defrag` is `madvise` and free
    /// memory is fragmented, the kernel compacts memory inside the fault.
    pub huge_pages: bool,
}

/// The most range requests one download keeps in flight.
pub(crate) const MAX_CONCURRENCY: usize = 1024;

impl FetchOptions {
    /// [`concurrency`](Self::concurrency), within 1..=[`MAX_CONCURRENCY`].
    pub(crate) fn in_flight(&self) -> usize {
        self.concurrency.clamp(1, MAX_CONCURRENCY)
    }
}

impl Default for FetchOptions {
    fn default() -> Self {
        Self {
            chunk_size: 16 << 20,
            concurrency: 16,
            coalesce_gap: 1 << 20,
            retry: RetryPolicy::default(),
            rate_limit: None,
            progress: Arc::new(NoProgress),
            map_local: true,
            huge_pages: false,
        }
    }
}

impl std::fmt::Debug for FetchOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FetchOptions")
            .field("chunk_size", &self.chunk_size)
            .field("concurrency", &self.concurrency)
            .field("coalesce_gap", &self.coalesce_gap)
            .field("retry", &self.retry)
            .field("rate_limit", &self.rate_limit)
            .field("map_local", &self.map_local)
            .field("huge_pages", &self.huge_pages)
            .finish_non_exhaustive()
    }
}

/// ckptio's one retry policy: exponential backoff with jitter, bounded in attempts and in time.
///
/// It applies per range, on top of object_store's own retries of a single request, and only
/// to transient failures (connection reset, timeout, truncated body, 5xx, 429). A retry asks for
/// the bytes not yet received, not for the whole range again.
///
/// ```
/// use std::time::Duration;
/// use ckptio::RetryPolicy;
///
/// let policy = RetryPolicy { jitter: false, ..RetryPolicy::default() };
/// let delays: Vec<Duration> = policy.delays().collect();
/// assert_eq!(delays.len(), policy.max_retries);
/// assert_eq!(delays[0], policy.min_delay);
/// assert!(delays.windows(2).all(|w| w[0] <= w[1]));
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    /// Retries per range after the first attempt (0 turns retries off).
    pub max_retries: usize,
    /// The first delay.
    pub min_delay: Duration,
    /// No delay is longer than this.
    pub max_delay: Duration,
    /// No more retries once the delays add up to this.
    pub max_total_delay: Duration,
    /// Randomize each delay (recommended: many clients retrying at once spread out).
    pub jitter: bool,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_retries: 8,
            min_delay: Duration::from_millis(200),
            max_delay: Duration::from_secs(15),
            max_total_delay: Duration::from_secs(120),
            jitter: true,
        }
    }
}

impl RetryPolicy {
    /// No retries: the first transient failure is final.
    pub fn none() -> Self {
        Self {
            max_retries: 0,
            ..Self::default()
        }
    }

    /// The delays before each retry, in order; as many as retries are allowed.
    pub fn delays(&self) -> impl Iterator<Item = Duration> + Send + use<> {
        let builder = ExponentialBuilder::new()
            .with_min_delay(self.min_delay)
            .with_max_delay(self.max_delay)
            .with_factor(2.0)
            .with_max_times(self.max_retries)
            .with_total_delay(Some(self.max_total_delay));
        let builder = if self.jitter {
            builder.with_jitter()
        } else {
            builder
        };
        builder.build()
    }
}
