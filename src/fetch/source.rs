//! Reading one byte range of a pinned object, with ckptio's one retry policy.

use std::fs::File;
use std::ops::Range;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::{Buf, Bytes};
use futures::StreamExt;
use object_store::{GetOptions, GetRange, GetResult, GetResultPayload, ObjectStoreExt};

use super::options::FetchOptions;
use super::pool::Pool;
use super::rate::RateLimiter;
use super::sink::RangeSink;
use super::stat::ObjectInfo;
use super::task::{LOCAL_BLOCK, read_at};
use crate::error::{Class, Error, Result, TransportKind, classify, ranges_ignored};
use crate::location::Location;

/// An object pinned to the ETag (and version) of its first HEAD, shared by every task of a
/// download.
pub(crate) struct Source {
    pub location: Location,
    pub info: ObjectInfo,
    pub options: FetchOptions,
    limiter: Option<RateLimiter>,
    /// The server answered a range request with the whole object (an HTTP server without
    /// Range support): later attempts at the whole object ask for its body straight away.
    whole_only: AtomicBool,
}

/// Why one attempt at a range failed.
#[derive(Debug)]
enum Failure {
    /// object_store's error: from the request, or from the body stream mid-way.
    Store(object_store::Error),
    /// The server answered for another version of the object.
    Changed { found: Option<String> },
    /// The body ended before the range did.
    Truncated { expected: u64, got: u64 },
    /// The body went on past the range.
    Overflow { expected: u64 },
    /// The destination refused the bytes (a local write failed).
    Sink(Error),
    /// The object is a local file, and reading it failed.
    Read(Error),
}

impl Failure {
    fn is_transient(&self) -> bool {
        match self {
            Self::Truncated { .. } => true,
            Self::Changed { .. } | Self::Overflow { .. } | Self::Sink(_) | Self::Read(_) => false,
            Self::Store(err) => classify(err).is_transient(),
        }
    }

    fn describe(&self) -> String {
        match self {
            Self::Store(e) => e.to_string(),
            Self::Changed { found } => {
                format!("ETag changed to {}", found.as_deref().unwrap_or("unknown"))
            }
            Self::Truncated { expected, got } => {
                format!("body ended after {got} of {expected} bytes")
            }
            Self::Overflow { expected } => {
                format!("server sent more than the {expected} bytes asked for")
            }
            Self::Sink(err) | Self::Read(err) => err.to_string(),
        }
    }
}

/// ETags compare without quotes or a weak-validator prefix: servers differ in how they print
/// the same tag between HEAD and GET.
fn same_etag(a: &str, b: &str) -> bool {
    let bare = |t: &str| {
        t.trim()
            .trim_start_matches("W/")
            .trim_matches('"')
            .to_owned()
    };
    bare(a) == bare(b)
}

/// Whether two optional ETags name the same version (both absent counts as agreeing).
fn etags_agree(a: Option<&str>, b: Option<&str>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => same_etag(a, b),
        (a, b) => a.is_none() && b.is_none(),
    }
}

impl Source {
    pub fn new(location: Location, info: ObjectInfo, options: FetchOptions) -> Self {
        let limiter = options.rate_limit.map(RateLimiter::new);
        Self {
            location,
            info,
            options,
            limiter,
            whole_only: AtomicBool::new(false),
        }
    }

    /// [`Error::TooLarge`] for `size` bytes of this object that could not be had in memory;
    /// `streamable` when streaming or downloading to a file would avoid holding them.
    pub fn too_large(&self, size: u64, streamable: bool) -> Error {
        Error::TooLarge {
            uri: self.location.uri(),
            size,
            streamable,
        }
    }

    /// Delivers to `sink` the bytes of `range` it does not hold yet: the sink holds the first
    /// [`received`](RangeSink::received) bytes of the range, and a retry asks only for the rest.
    /// The sink never gets more than the range's length.
    pub async fn fill(&self, range: Range<u64>, sink: &mut impl RangeSink) -> Result<()> {
        let mut delays = self.options.retry.delays();
        let mut attempt = 1;
        loop {
            let failure = match self.attempt(&range, sink).await {
                Ok(()) => return Ok(()),
                Err(failure) => failure,
            };
            if !failure.is_transient() {
                return Err(self.fatal(failure).await);
            }
            let Some(delay) = delays.next() else {
                return Err(Error::RangeFailed {
                    uri: self.location.uri(),
                    start: range.start,
                    end: range.end,
                    attempts: attempt,
                    detail: self.location.redact(&failure.describe()),
                });
            };
            let delay = match self.location.server_hints().take_retry_after() {
                Some(advised) => advised.max(delay),
                None => delay,
            };
            let cause = self.location.redact(&failure.describe());
            self.notify_retry(&range, sink.received(), attempt, delay, &cause);
            tokio::time::sleep(delay).await;
            attempt += 1;
        }
    }

    fn notify_retry(
        &self,
        range: &Range<u64>,
        received: u64,
        attempt: usize,
        delay: Duration,
        cause: &str,
    ) {
        tracing::warn!(
            uri = %self.location,
            range = ?range,
            received,
            attempt,
            delay_ms = delay.as_millis() as u64,
            cause,
            "retrying range"
        );
        self.options.progress.retrying(attempt, delay, cause);
    }

    /// A GET of `range` (the whole object for `None`) of the pinned version: If-Match its ETag
    /// where the store honours it, and its version where the store has them.
    fn pinned_get(&self, range: Option<GetRange>) -> GetOptions {
        GetOptions {
            range,
            if_match: self
                .info
                .etag
                .clone()
                .filter(|_| self.location.capabilities().conditional_get),
            version: self.info.version.clone(),
            ..GetOptions::default()
        }
    }

    /// One GET of the object, as `attempt` makes it.
    async fn get(&self, options: GetOptions) -> Result<GetResult, Failure> {
        self.location
            .store()
            .get_opts(self.location.path(), options)
            .await
            .map_err(Failure::Store)
    }

    async fn attempt(&self, range: &Range<u64>, sink: &mut impl RangeSink) -> Result<(), Failure> {
        let expected = range.end - range.start;
        let start = range.start + sink.received();
        if start >= range.end {
            return Ok(());
        }
        // A server without Range support still serves the whole object when that is what was
        // asked for: its body, less the bytes the sink holds (a retry re-reads and skips them).
        // Any other range is an error (`Error::Unsupported`, saying what to do) rather than a
        // read of everything before it.
        let whole = range.start == 0 && range.end == self.info.size;
        let ranged = if whole && self.whole_only.load(Ordering::Relaxed) {
            None
        } else {
            let options = self.pinned_get(Some(GetRange::Bounded(start..range.end)));
            match self.get(options).await {
                Ok(result) => Some(result),
                Err(Failure::Store(err)) if whole && ranges_ignored(&err) => {
                    self.whole_only.store(true, Ordering::Relaxed);
                    None
                }
                Err(failure) => return Err(failure),
            }
        };
        let (result, mut skip) = match ranged {
            Some(result) => (result, 0),
            None => (self.get(self.pinned_get(None)).await?, start),
        };
        // Servers that ignore If-Match still say which version they sent.
        if let (Some(pinned), Some(sent)) = (&self.info.etag, &result.meta.e_tag)
            && !same_etag(pinned, sent)
        {
            return Err(Failure::Changed {
                found: Some(sent.clone()),
            });
        }
        match result.payload {
            // A local file: object_store would stream it in 8 KiB reads, each on the blocking
            // pool; read the served range in large positional blocks instead, into buffers
            // that come back once the sink has written them.
            GetResultPayload::File(file, path) => {
                let file = Arc::new(file);
                let blocks = Pool::new(LOCAL_BLOCK);
                let mut at = result.range.start;
                while at < result.range.end {
                    let len = (result.range.end - at).min(LOCAL_BLOCK as u64);
                    let lease = blocks
                        .lend(len as usize)
                        .ok_or_else(|| Failure::Sink(self.too_large(len, false)))?;
                    // Progress counts the bytes as they are delivered, not as they are read.
                    let piece = read_at(Arc::clone(&file), path.clone(), lease, at, |_| ())
                        .await
                        .map_err(Failure::Read)?
                        .freeze();
                    at += len;
                    self.deliver(piece, expected, sink).await?;
                }
            }
            GetResultPayload::Stream(mut body) => {
                while let Some(piece) = body.next().await {
                    let mut piece = piece.map_err(Failure::Store)?;
                    if skip > 0 {
                        let held = skip.min(piece.len() as u64);
                        piece.advance(held as usize);
                        skip -= held;
                    }
                    if !piece.is_empty() {
                        self.deliver(piece, expected, sink).await?;
                    }
                }
            }
        }
        let got = sink.received();
        if got < expected {
            return Err(Failure::Truncated { expected, got });
        }
        Ok(())
    }

    /// The object's file, opened through the store for `span` (so the directory's confinement
    /// applies) and pinned like every read; `None` when the store does not serve it as a file.
    pub async fn open_file(&self, span: Range<u64>) -> Result<Option<(File, PathBuf)>> {
        let options = GetOptions {
            range: Some(GetRange::Bounded(span)),
            if_match: self.info.etag.clone(),
            ..GetOptions::default()
        };
        let result = match self
            .location
            .store()
            .get_opts(self.location.path(), options)
            .await
        {
            Ok(result) => result,
            Err(err) => return Err(self.fatal(Failure::Store(err)).await),
        };
        if let (Some(pinned), Some(sent)) = (&self.info.etag, &result.meta.e_tag)
            && !same_etag(pinned, sent)
        {
            return Err(self.changed(Some(sent.clone())).await);
        }
        Ok(match result.payload {
            GetResultPayload::File(file, path) => Some((file, path)),
            GetResultPayload::Stream(_) => None,
        })
    }

    /// Hands the next bytes of the range to the sink, reporting and pacing them.
    async fn deliver(
        &self,
        piece: Bytes,
        expected: u64,
        sink: &mut impl RangeSink,
    ) -> Result<(), Failure> {
        let len = piece.len() as u64;
        if sink.received() + len > expected {
            return Err(Failure::Overflow { expected });
        }
        sink.accept(piece).await.map_err(Failure::Sink)?;
        self.options.progress.advanced(len);
        if let Some(limiter) = &self.limiter {
            limiter.consume(len).await;
        }
        Ok(())
    }

    async fn fatal(&self, failure: Failure) -> Error {
        match failure {
            Failure::Store(err) if classify(&err) == Class::Precondition => {
                self.changed(None).await
            }
            // A pinned version (GCS generation, S3 versionId) that is gone while the object is
            // still there was replaced, not deleted.
            Failure::Store(err)
                if classify(&err) == Class::NotFound && self.info.version.is_some() =>
            {
                match self.location.store().head(self.location.path()).await {
                    Ok(now) => self.changed(now.e_tag).await,
                    Err(_) => self.location.error("get", err),
                }
            }
            Failure::Store(err) => self.location.error("get", err),
            Failure::Changed { found } => self.changed(found).await,
            Failure::Sink(err) => err,
            // A local file rewritten or cut short under the read is no longer the pinned
            // version: that is the error to report, rather than the short read it caused.
            Failure::Read(err) => match self.location.store().head(self.location.path()).await {
                Ok(now) if !etags_agree(now.e_tag.as_deref(), self.info.etag.as_deref()) => {
                    self.changed(now.e_tag).await
                }
                _ => err,
            },
            other => Error::Transport {
                uri: self.location.uri(),
                operation: "get",
                kind: TransportKind::Other,
                detail: self.location.redact(&other.describe()),
            },
        }
    }

    /// The object-changed error, asking the store for the new ETag if the failure did not say.
    async fn changed(&self, found: Option<String>) -> Error {
        let found = match found {
            Some(found) => Some(found),
            None => self
                .location
                .store()
                .head(self.location.path())
                .await
                .ok()
                .and_then(|m| m.e_tag),
        };
        Error::ObjectChanged {
            uri: self.location.uri(),
            expected: self.info.etag.clone().unwrap_or_else(|| "unknown".into()),
            found: found.unwrap_or_else(|| "unknown".into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etags_compare_without_quotes_or_weak_prefix() {
        assert!(same_etag("\"abc\"", "abc"));
        assert!(same_etag("W/\"abc\"", "\"abc\""));
        assert!(!same_etag("\"abc\"", "\"abd\""));
    }

    #[test]
    fn transient_failures_are_retried_and_permanent_ones_not() {
        let generic = |msg: &str| {
            Failure::Store(object_store::Error::Generic {
                store: "HTTP",
                source: msg.to_owned().into(),
            })
        };
        assert!(
            generic("Server returned non-2xx status code: 503 Service Unavailable: ")
                .is_transient()
        );
        assert!(generic("error decoding response body: connection reset").is_transient());
        assert!(!generic("Server returned non-2xx status code: 400 Bad Request: ").is_transient());
        assert!(
            Failure::Truncated {
                expected: 10,
                got: 3
            }
            .is_transient()
        );
        assert!(!Failure::Changed { found: None }.is_transient());
        assert!(!Failure::Overflow { expected: 1 }.is_transient());
    }
}

#[cfg(test)]
mod retry_tests {
    //! The retry loop against a store that fails on demand, on tokio's paused clock: the
    //! delays are the policy's, to the millisecond, with no real sleeping.

    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use async_trait::async_trait;
    use futures::stream::BoxStream;
    use object_store::memory::InMemory;
    use object_store::path::Path;
    use object_store::{
        CopyOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
        PutMultipartOptions, PutOptions, PutPayload, PutResult,
    };
    use tokio::time::Instant;

    use bytes::BytesMut;

    use super::*;
    use crate::fetch::{FetchOptions, Progress, RetryPolicy, stat};

    /// Fails the first `failures` GETs with a 503, then serves from memory.
    #[derive(Debug)]
    struct Flaky {
        inner: InMemory,
        failures: usize,
        gets: AtomicUsize,
    }

    impl std::fmt::Display for Flaky {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("Flaky")
        }
    }

    #[async_trait]
    impl ObjectStore for Flaky {
        async fn put_opts(
            &self,
            p: &Path,
            payload: PutPayload,
            o: PutOptions,
        ) -> object_store::Result<PutResult> {
            self.inner.put_opts(p, payload, o).await
        }
        async fn put_multipart_opts(
            &self,
            p: &Path,
            o: PutMultipartOptions,
        ) -> object_store::Result<Box<dyn MultipartUpload>> {
            self.inner.put_multipart_opts(p, o).await
        }
        async fn get_opts(&self, p: &Path, o: GetOptions) -> object_store::Result<GetResult> {
            if o.head || self.gets.fetch_add(1, Ordering::SeqCst) >= self.failures {
                return self.inner.get_opts(p, o).await;
            }
            Err(object_store::Error::Generic {
                store: "Flaky",
                source: "Server returned non-2xx status code: 503 Service Unavailable: ".into(),
            })
        }
        fn delete_stream(
            &self,
            paths: BoxStream<'static, object_store::Result<Path>>,
        ) -> BoxStream<'static, object_store::Result<Path>> {
            self.inner.delete_stream(paths)
        }
        fn list(&self, p: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
            self.inner.list(p)
        }
        async fn list_with_delimiter(&self, p: Option<&Path>) -> object_store::Result<ListResult> {
            self.inner.list_with_delimiter(p).await
        }
        async fn copy_opts(
            &self,
            from: &Path,
            to: &Path,
            o: CopyOptions,
        ) -> object_store::Result<()> {
            self.inner.copy_opts(from, to, o).await
        }
    }

    #[derive(Default)]
    struct Recorder(std::sync::Mutex<Vec<(usize, Duration)>>);

    impl Progress for Recorder {
        fn retrying(&self, attempt: usize, delay: Duration, _cause: &str) {
            self.0.lock().unwrap().push((attempt, delay));
        }
    }

    async fn source(failures: usize, retry: RetryPolicy, progress: Arc<Recorder>) -> Source {
        let store = Arc::new(Flaky {
            inner: InMemory::new(),
            failures,
            gets: AtomicUsize::new(0),
        });
        let location = Location::from_store("flaky:/", store, Path::from("obj"));
        location
            .store()
            .put(location.path(), vec![7u8; 100].into())
            .await
            .unwrap();
        let info = stat(&location).await.unwrap();
        Source::new(
            location,
            info,
            FetchOptions {
                retry,
                progress,
                ..FetchOptions::default()
            },
        )
    }

    fn policy(max_retries: usize) -> RetryPolicy {
        RetryPolicy {
            max_retries,
            min_delay: Duration::from_millis(100),
            max_delay: Duration::from_millis(350),
            max_total_delay: Duration::from_secs(60),
            jitter: false,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn backoff_waits_the_policy_delays_then_succeeds() {
        let recorder = Arc::new(Recorder::default());
        let source = source(4, policy(5), recorder.clone()).await;
        let begin = Instant::now();
        let mut buf = BytesMut::new();
        source.fill(0..100, &mut buf).await.unwrap();
        assert_eq!(buf.len(), 100);
        let expected: Vec<Duration> = policy(5).delays().take(4).collect();
        let approx = [100, 200, 350, 350].map(Duration::from_millis);
        for (got, want) in expected.iter().zip(approx) {
            assert!(
                got.abs_diff(want) < Duration::from_micros(1),
                "policy delay {got:?}, expected {want:?}"
            );
        }
        // tokio's timer rounds each sleep up to its 1 ms tick.
        let waited = begin.elapsed() - expected.iter().sum::<Duration>();
        assert!(
            waited <= Duration::from_millis(4),
            "waited {waited:?} past the policy's delays"
        );
        let seen = recorder.0.lock().unwrap().clone();
        assert_eq!(
            seen,
            [
                (1, expected[0]),
                (2, expected[1]),
                (3, expected[2]),
                (4, expected[3])
            ]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn exhausted_retries_name_the_range_and_the_cause() {
        let recorder = Arc::new(Recorder::default());
        let source = source(10, policy(2), recorder).await;
        let err = source.fill(10..60, &mut BytesMut::new()).await.unwrap_err();
        let text = err.to_string();
        assert!(
            matches!(
                err,
                Error::RangeFailed {
                    start: 10,
                    end: 60,
                    attempts: 3,
                    ..
                }
            ),
            "{text}"
        );
        assert!(
            text.contains("flaky:/obj: bytes 10..60") && text.contains("503"),
            "{text}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn server_retry_after_advice_lengthens_the_wait() {
        let recorder = Arc::new(Recorder::default());
        let source = source(1, policy(3), recorder.clone()).await;
        source
            .location
            .server_hints()
            .record(Duration::from_secs(5));
        let begin = Instant::now();
        source.fill(0..100, &mut BytesMut::new()).await.unwrap();
        let waited = begin.elapsed();
        assert!(
            waited >= Duration::from_secs(5) && waited <= Duration::from_millis(5001),
            "{waited:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn retries_off_fail_at_the_first_transient_error() {
        let source = source(1, RetryPolicy::none(), Arc::default()).await;
        let err = source.fill(0..100, &mut BytesMut::new()).await.unwrap_err();
        assert!(
            matches!(err, Error::RangeFailed { attempts: 1, .. }),
            "{err}"
        );
    }
}
