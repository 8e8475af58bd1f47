//! An HTTP server that ignores Range requests (Python's `http.server` answers every GET with
//! the whole object): `get` downloads the object in one stream, and reading a part of it fails
//! with an error that says why and what to do instead. It cannot list a directory either
//! (no WebDAV), which is said the same way.

mod support;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};

use ckptio::{FetchOptions, Object, Progress, RetryPolicy};
use support::cli::{ckptio, fails_with, fixture, python};
use support::proxy::{Fault, FaultProxy};

/// Python's `http.server` serving `dir` on a free loopback port, stopped when dropped.
struct Server {
    child: Child,
    url: String,
    addr: std::net::SocketAddr,
}

impl Server {
    fn start(python: &str, dir: &Path) -> Self {
        let mut child = Command::new(python)
            .args([
                "-u",
                "-m",
                "http.server",
                "0",
                "--bind",
                "127.0.0.1",
                "--directory",
            ])
            .arg(dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start python -m http.server");
        // "Serving HTTP on 127.0.0.1 port 43567 (http://127.0.0.1:43567/) ..."
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port = line
            .split_whitespace()
            .skip_while(|w| *w != "port")
            .nth(1)
            .unwrap_or_else(|| panic!("no port in {line:?}"));
        Self {
            child,
            url: format!("http://127.0.0.1:{port}/"),
            addr: format!("127.0.0.1:{port}").parse().unwrap(),
        }
    }
}

/// A temporary directory whose `served/` holds `files`, and a server of it.
fn serve(python: &str, files: &[(&str, &[u8])]) -> (tempfile::TempDir, Server) {
    let tmp = tempfile::tempdir().unwrap();
    let served = tmp.path().join("served");
    std::fs::create_dir_all(&served).unwrap();
    for (name, data) in files {
        std::fs::write(served.join(name), data).unwrap();
    }
    let server = Server::start(python, &served);
    (tmp, server)
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn get_downloads_the_whole_object_in_one_stream_when_the_server_ignores_ranges() {
    let Some(python) = python() else { return };
    let data: Vec<u8> = (0..5u32 << 20).map(|i| (i * 7 % 251) as u8).collect();
    let (tmp, server) = serve(&python, &[("big.bin", &data), ("small.bin", b"small")]);
    for (name, want) in [("big.bin", &data[..]), ("small.bin", b"small")] {
        let url = format!("{}{name}", server.url);
        let out = ckptio(
            tmp.path(),
            &["get", "--chunk-size", "1MiB", &url, name, "-q"],
        )
        .await;
        assert!(
            out.status.success(),
            "{name}: {}",
            support::cli::stderr(&out)
        );
        assert!(
            std::fs::read(tmp.path().join(name)).unwrap() == want,
            "{name}"
        );
        assert!(!tmp.path().join(format!("{name}.part")).exists());
        let out = ckptio(tmp.path(), &["get", "--chunk-size", "1MiB", &url, "-"]).await;
        assert!(
            out.status.success(),
            "{name} to stdout: {}",
            support::cli::stderr(&out)
        );
        assert!(out.stdout == want, "{name} to stdout");
        let copy = format!("copy-{name}");
        let out = ckptio(tmp.path(), &["cp", &url, &copy, "-q"]).await;
        assert!(
            out.status.success(),
            "cp {name}: {}",
            support::cli::stderr(&out)
        );
        assert!(
            std::fs::read(tmp.path().join(&copy)).unwrap() == want,
            "cp {name}"
        );
    }
}

#[tokio::test]
async fn a_directory_on_a_server_without_webdav_says_to_name_the_file() {
    let Some(python) = python() else { return };
    let tiny = std::fs::read(fixture("tiny.safetensors")).unwrap();
    let (tmp, server) = serve(&python, &[("tiny.safetensors", &tiny)]);
    for cmd in ["inspect", "cp"] {
        let mut args = vec![cmd, &server.url];
        if cmd == "cp" {
            args.push("copy/");
        }
        fails_with(
            tmp.path(),
            &args,
            &[
                "this web server cannot list a directory",
                "PROPFIND, which it answered with 501",
                "name the checkpoint's file instead",
            ],
        )
        .await;
    }
}

#[tokio::test]
async fn reading_part_of_an_object_says_the_server_ignores_ranges_and_what_to_do() {
    let Some(python) = python() else { return };
    let tiny = std::fs::read(fixture("tiny.safetensors")).unwrap();
    let (tmp, server) = serve(&python, &[("tiny.safetensors", &tiny)]);
    let url = format!("{}tiny.safetensors", server.url);
    fails_with(
        tmp.path(),
        &["inspect", &url],
        &[
            "tiny.safetensors",
            "ignores HTTP Range requests",
            "ckptio get",
        ],
    )
    .await;
    let location = ckptio::resolve(&url, &Default::default()).unwrap();
    let object = ckptio::Object::open(&location, Default::default())
        .await
        .unwrap();
    let err = object.read_range(8..16).await.unwrap_err();
    assert!(matches!(err, ckptio::Error::Unsupported { .. }), "{err}");
}

/// Counts delivered bytes: bytes re-read after a break must not count twice.
#[derive(Default)]
struct Delivered(AtomicU64);

impl Progress for Delivered {
    fn advanced(&self, bytes: u64) {
        self.0.fetch_add(bytes, Ordering::SeqCst);
    }
}

#[tokio::test]
async fn a_whole_body_that_breaks_off_is_read_again_and_the_bytes_held_are_skipped() {
    let Some(python) = python() else { return };
    let data: Vec<u8> = (0..3u32 << 20).map(|i| (i * 13 % 251) as u8).collect();
    let (tmp, server) = serve(&python, &[("obj.bin", &data)]);
    let proxy = FaultProxy::start(server.addr).await;
    // The range is answered with the whole object; the whole body breaks off after 1 MiB.
    proxy.push([Fault::Pass, Fault::TruncateAfter(1 << 20), Fault::Pass]);
    let uri = format!("http://{}/obj.bin", proxy.addr);
    let location = ckptio::Resolver::new()
        .resolve(
            &uri,
            &[("request_retries", "0")]
                .into_iter()
                .collect::<ckptio::StorageOptions>(),
        )
        .unwrap();
    let delivered = std::sync::Arc::new(Delivered::default());
    let options = FetchOptions {
        chunk_size: 8 << 20,
        retry: RetryPolicy {
            min_delay: std::time::Duration::from_millis(20),
            ..RetryPolicy::default()
        },
        progress: delivered.clone(),
        ..FetchOptions::default()
    };
    let dest = tmp.path().join("obj.bin");
    Object::open(&location, options)
        .await
        .unwrap()
        .download_to(&dest)
        .await
        .unwrap();
    assert!(std::fs::read(&dest).unwrap() == data);
    assert_eq!(delivered.0.load(Ordering::SeqCst), data.len() as u64);
    let ranges = proxy.stats.get_ranges.lock().unwrap().clone();
    assert_eq!(ranges.len(), 3, "{ranges:?}");
    assert!(ranges[0].is_some(), "the first GET asks for the range");
    assert!(
        ranges[1..].iter().all(Option::is_none),
        "then only for the whole body: {ranges:?}"
    );
}
