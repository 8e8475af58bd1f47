//! Downloads through a fault-injecting proxy in front of real servers (nginx, and s3s-fs for
//! S3): connection resets mid-body, 500/503/429 answers, stalls beyond the idle timeout and
//! truncated bodies. Every download completes byte-identical within the retry budget; with
//! retries off it fails naming the URI, the range and the cause; a reset re-fetches only what
//! was lost.
//!
//! object_store's own retries are turned off (`request_retries=0`) so every fault reaches
//! ckptio's retry policy, the thing under test.

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use ckptio::{Error, Location};
use ckptio::{FetchOptions, Object, Progress, RetryPolicy};
use ckptio::{Resolver, StorageOptions};
use futures::TryStreamExt;
use support::proxy::{Fault, FaultProxy};
use support::{Backend, pattern};

const CHUNK: u64 = 1 << 20;

/// An object on a real server, reachable directly and through a proxy.
struct Setup {
    backend: Backend,
    proxy: FaultProxy,
    /// The object, resolved through the proxy.
    location: Location,
    data: Bytes,
}

impl Setup {
    /// The object, pinned, read through the proxy.
    async fn open(&self, options: FetchOptions) -> Object {
        Object::open(&self.location, options)
            .await
            .unwrap_or_else(|e| panic!("[{}] {e}", self.backend.name))
    }
}

fn upstream_of(b: &Backend) -> SocketAddr {
    let endpoint = b
        .options
        .get("endpoint")
        .map(str::to_owned)
        .unwrap_or_else(|| b.base.clone());
    let url = url::Url::parse(&endpoint).expect("an endpoint URL");
    let host = url.host_str().expect("a host");
    format!("{host}:{}", url.port_or_known_default().unwrap())
        .parse()
        .expect("a loopback address")
}

async fn setup(name: &'static str, test: &str, size: usize) -> Option<Setup> {
    let backend = Backend::from_env(name, test)?;
    let data = pattern(size);
    backend.seed("obj.bin", data.clone()).await;
    let upstream = upstream_of(&backend);
    let proxy = FaultProxy::start(upstream).await;
    let mut options: StorageOptions = backend.options.clone();
    let mut uri = backend.uri("obj.bin");
    if options.get("endpoint").is_some() {
        options.insert("endpoint", format!("http://{}", proxy.addr));
    } else {
        uri = uri.replacen(&upstream.to_string(), &proxy.addr.to_string(), 1);
    }
    options.insert("request_retries", "0");
    options.insert("idle_timeout", "400ms");
    let location = Resolver::new().resolve(&uri, &options).unwrap();
    Some(Setup {
        backend,
        proxy,
        location,
        data,
    })
}

/// Counts delivered bytes: re-fetched bytes must never be counted twice.
#[derive(Default)]
struct Delivered(AtomicU64);

impl Progress for Delivered {
    fn advanced(&self, bytes: u64) {
        self.0.fetch_add(bytes, Ordering::SeqCst);
    }
}

fn options(concurrency: usize, retry: RetryPolicy, progress: Arc<Delivered>) -> FetchOptions {
    FetchOptions {
        chunk_size: CHUNK,
        concurrency,
        retry,
        progress,
        ..FetchOptions::default()
    }
}

fn quick_retries() -> RetryPolicy {
    RetryPolicy {
        max_retries: 6,
        min_delay: Duration::from_millis(20),
        max_delay: Duration::from_millis(200),
        max_total_delay: Duration::from_secs(30),
        jitter: true,
    }
}

async fn resets_mid_body_are_resumed(name: &'static str) {
    let Some(s) = setup(name, "fault-reset", 5 * CHUNK as usize + 17).await else {
        return;
    };
    s.proxy.push([
        Fault::ResetAfter(100_000),
        Fault::Pass,
        Fault::ResetAfter(10),
        Fault::ResetAfter(700_000),
    ]);
    let delivered = Arc::new(Delivered::default());
    let object = s.open(options(4, quick_retries(), delivered.clone())).await;
    let got = object
        .bytes()
        .await
        .unwrap_or_else(|e| panic!("[{name}] {e}"));
    assert!(got == s.data, "[{name}] bytes differ after resets");
    assert_eq!(
        delivered.0.load(Ordering::SeqCst),
        s.data.len() as u64,
        "[{name}] bytes counted once"
    );
    assert!(
        s.proxy.gets() >= 6 + 3,
        "[{name}] three resets, three retries: {} GETs",
        s.proxy.gets()
    );
    s.backend.cleanup().await;
}

async fn server_errors_are_retried(name: &'static str) {
    let Some(s) = setup(name, "fault-status", 3 * CHUNK as usize + 1).await else {
        return;
    };
    s.proxy.push([
        Fault::Status(500, None),
        Fault::Status(503, None),
        Fault::Status(429, Some(1)),
    ]);
    let object = s.open(options(2, quick_retries(), Arc::default())).await;
    let got = object
        .bytes()
        .await
        .unwrap_or_else(|e| panic!("[{name}] {e}"));
    assert!(got == s.data, "[{name}] bytes differ after 5xx/429");
    assert!(
        s.proxy.gets() >= 4 + 3,
        "[{name}] every injected answer was retried"
    );
    s.backend.cleanup().await;
}

async fn stalls_beyond_the_idle_timeout_are_retried(name: &'static str) {
    let Some(s) = setup(name, "fault-stall", 2 * CHUNK as usize + 3).await else {
        return;
    };
    s.proxy
        .push([Fault::StallAfter(200_000, Duration::from_secs(5))]);
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("out.bin");
    let object = s.open(options(1, quick_retries(), Arc::default())).await;
    object
        .download_to(&dest)
        .await
        .unwrap_or_else(|e| panic!("[{name}] {e}"));
    assert!(
        std::fs::read(&dest).unwrap() == s.data,
        "[{name}] file differs after a stall"
    );
    assert!(
        s.proxy.gets() > 3,
        "[{name}] the stalled request was retried"
    );
    s.backend.cleanup().await;
}

async fn truncated_bodies_are_resumed(name: &'static str) {
    let Some(s) = setup(name, "fault-truncate", 3 * CHUNK as usize + 5).await else {
        return;
    };
    s.proxy.push([
        Fault::TruncateAfter(123_457),
        Fault::Pass,
        Fault::TruncateAfter(1),
    ]);
    let object = s.open(options(3, quick_retries(), Arc::default())).await;
    let pieces: Vec<(u64, Bytes)> = object
        .stream()
        .try_collect()
        .await
        .unwrap_or_else(|e| panic!("[{name}] {e}"));
    let joined: Vec<u8> = pieces.iter().flat_map(|(_, b)| b.iter().copied()).collect();
    assert!(
        joined == s.data,
        "[{name}] stream differs after truncated bodies"
    );
    assert!(
        s.proxy.gets() >= 4 + 2,
        "[{name}] both truncated bodies were resumed"
    );
    s.backend.cleanup().await;
}

async fn without_retries_a_fault_names_uri_range_and_cause(name: &'static str) {
    let Some(s) = setup(name, "fault-noretry", 2 * CHUNK as usize).await else {
        return;
    };
    s.proxy.push([Fault::ResetAfter(1000)]);
    let object = s
        .open(options(1, RetryPolicy::none(), Arc::default()))
        .await;
    let err = object
        .bytes()
        .await
        .expect_err("a reset with retries off fails");
    let text = err.to_string();
    assert!(
        matches!(
            err,
            Error::RangeFailed {
                start: 0,
                end: CHUNK,
                attempts: 1,
                ..
            }
        ),
        "[{name}] {text}"
    );
    assert!(
        text.contains(&s.location.uri()),
        "[{name}] names the URI: {text}"
    );
    assert!(
        text.contains(&format!("bytes 0..{CHUNK}")),
        "[{name}] names the range: {text}"
    );
    let Error::RangeFailed { detail, .. } = &err else {
        unreachable!()
    };
    assert!(!detail.is_empty(), "[{name}] names the cause");

    s.proxy.push([Fault::Status(503, None)]);
    let err = object
        .bytes()
        .await
        .expect_err("a 503 with retries off fails");
    assert!(err.to_string().contains("503"), "[{name}] {err}");
    s.backend.cleanup().await;
}

async fn a_reset_refetches_only_what_was_lost(name: &'static str) {
    let size = 4 * CHUNK;
    let Some(s) = setup(name, "fault-refetch", size as usize).await else {
        return;
    };
    let reset_at = 700_000;
    s.proxy.push([Fault::ResetAfter(reset_at)]);
    let delivered = Arc::new(Delivered::default());
    let object = s.open(options(1, quick_retries(), delivered.clone())).await;
    let got = object
        .bytes()
        .await
        .unwrap_or_else(|e| panic!("[{name}] {e}"));
    assert!(got == s.data, "[{name}] bytes differ");

    let ranges = s.proxy.stats.get_ranges.lock().unwrap().clone();
    let resumed = ranges[1].as_deref().expect("the retry asks for a range");
    let resumed_from: u64 = resumed
        .trim_start_matches("bytes=")
        .split('-')
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("[{name}] unexpected Range {resumed}"));
    assert!(
        resumed_from > 0,
        "[{name}] the retry resumed mid-chunk ({resumed}), not from the chunk start"
    );
    // The proxy sent `reset_at` bytes before the reset; the client had read `resumed_from` of
    // them (the proxy waits for it to drain, so usually all). Only the difference is sent twice.
    assert!(
        resumed_from <= reset_at as u64,
        "[{name}] resumed past the reset: {resumed}"
    );
    let refetched = s.proxy.body_bytes() - size;
    assert_eq!(
        refetched,
        reset_at as u64 - resumed_from,
        "[{name}] only lost bytes are sent twice"
    );
    assert_eq!(
        delivered.0.load(Ordering::SeqCst),
        size,
        "[{name}] bytes counted once"
    );
    eprintln!(
        "[{name}] reset after {reset_at} bytes: retry asked for {resumed}; {refetched} bytes sent twice"
    );
    s.backend.cleanup().await;
}

async fn dropping_a_download_stops_its_requests(name: &'static str) {
    let Some(s) = setup(name, "fault-drop", 64 * CHUNK as usize).await else {
        return;
    };
    // Two 32 MiB ranges read at 1 MiB/s: each is far from done when the download is dropped.
    let options = FetchOptions {
        chunk_size: 32 * CHUNK,
        concurrency: 2,
        rate_limit: Some(CHUNK),
        retry: quick_retries(),
        ..FetchOptions::default()
    };
    let object = Object::open(&s.location, options).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("out.bin");
    let cut_short =
        tokio::time::timeout(Duration::from_millis(500), object.download_to(&dest)).await;
    assert!(
        cut_short.is_err(),
        "[{name}] the capped download was still running"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (gets, bytes) = (s.proxy.gets(), s.proxy.body_bytes());
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        s.proxy.gets(),
        gets,
        "[{name}] no request starts after the drop"
    );
    assert_eq!(
        s.proxy.body_bytes(),
        bytes,
        "[{name}] no bytes flow after the drop"
    );
    assert!(!dest.exists(), "[{name}] no final-named file");
    s.backend.cleanup().await;
}

macro_rules! fault_tests {
    ($($case:ident),* $(,)?) => {
        $(
            mod $case {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn nginx() {
                    super::$case("http").await;
                }
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn s3s() {
                    super::$case("s3s").await;
                }
            }
        )*
    };
}

fault_tests!(
    resets_mid_body_are_resumed,
    server_errors_are_retried,
    stalls_beyond_the_idle_timeout_are_retried,
    truncated_bodies_are_resumed,
    without_retries_a_fault_names_uri_range_and_cause,
    a_reset_refetches_only_what_was_lost,
    dropping_a_download_stops_its_requests,
);
