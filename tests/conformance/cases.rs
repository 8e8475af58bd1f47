//! The conformance cases. Each takes a [`Backend`] with a fresh prefix and panics on failure,
//! naming the backend.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use ckptio::Error;
use ckptio::{Resolver, redact_uri};
use futures::TryStreamExt;
use object_store::{ObjectStoreExt, PutPayload};

use bytes::Bytes;
use ckptio::{FetchOptions, Object, Progress};

use crate::support::{
    Backend, byte_range, pattern, read_all, read_tensor, relative, safetensors_file,
};

/// Resolving a URI and showing it again gives the same URI, and repeated resolves share a store.
pub async fn uri_round_trips(b: Backend) {
    let uri = b.uri("dir/obj.bin");
    let resolver = Resolver::new();
    let first = resolver.resolve(&uri, &b.options).unwrap();
    let again = resolver
        .resolve(&b.uri("dir/other.bin"), &b.options)
        .unwrap();
    let expected = redact_uri(uri.trim_end_matches('/'));
    assert_eq!(first.uri(), expected, "[{}]", b.name);
    // Local URIs each get their own view of the file system, confined to their directory;
    // every other store is one per bucket, sharing its connection pool.
    assert!(
        Arc::ptr_eq(first.store(), again.store())
            != (first.scheme() == Some(ckptio::Scheme::Local)),
        "[{}] one store per bucket",
        b.name
    );

    b.seed("dir/obj.bin", "round trip").await;
    let reresolved = resolver.resolve(&first.uri(), &b.options).unwrap();
    let info = ckptio::stat(&reresolved)
        .await
        .unwrap_or_else(|e| panic!("[{}] {e}", b.name));
    assert_eq!(info.size, 10, "[{}]", b.name);
    assert_eq!(info.uri, expected, "[{}]", b.name);
}

/// `stat` reports the exact size, an ETag and a plausible modification time.
pub async fn stat_reports_size_and_etag(b: Backend) {
    for (key, len) in [("empty.bin", 0), ("one.bin", 1), ("some.bin", 70_001)] {
        b.seed(key, pattern(len)).await;
        let info = ckptio::stat(&b.location(key))
            .await
            .unwrap_or_else(|e| panic!("[{}] stat {key}: {e}", b.name));
        assert_eq!(info.size, len as u64, "[{}] {key}", b.name);
        assert!(
            info.etag.as_deref().is_some_and(|e| !e.is_empty()),
            "[{}] {key}: no ETag",
            b.name
        );
        let age = chrono::Utc::now() - info.last_modified;
        assert!(
            age.num_hours().abs() < 24,
            "[{}] {key}: last-modified {}",
            b.name,
            info.last_modified
        );
    }
}

/// Every ranged read equals the same slice of a full read.
pub async fn ranged_read_equals_slice_of_full_read(b: Backend) {
    let len = (1 << 20) + 3;
    let data = pattern(len);
    b.seed("ranged.bin", data.clone()).await;
    let loc = b.location("ranged.bin");
    let full = read_all(&loc).await;
    assert_eq!(full, data, "[{}] full read", b.name);
    let last = len as u64;
    for range in [
        0..1,
        0..last,
        1..2,
        4095..4097,
        1000..500_000,
        last - 1..last,
        12_345..last,
    ] {
        let got = loc
            .store()
            .get_range(loc.path(), range.clone())
            .await
            .unwrap_or_else(|e| panic!("[{}] range {range:?}: {e}", b.name));
        let want = &full[range.start as usize..range.end as usize];
        assert!(
            got == want,
            "[{}] range {range:?}: {} bytes differ from the full read's slice",
            b.name,
            got.len()
        );
    }
}

/// A missing object is `Error::NotFound`, and the message names its URI.
pub async fn missing_object_is_not_found_naming_the_uri(b: Backend) {
    let loc = b.location("no/such/object.bin");
    let err = ckptio::stat(&loc)
        .await
        .expect_err("a missing object has no stat");
    assert!(
        matches!(err, Error::NotFound { .. }),
        "[{}] {err:?}",
        b.name
    );
    assert!(
        err.to_string().contains("no/such/object.bin"),
        "[{}] {err}",
        b.name
    );
    assert_eq!(err.uri(), loc.uri());
}

/// Listing with a delimiter shows direct children and sub-prefixes; a recursive listing shows
/// everything below.
pub async fn list_under_a_prefix(b: Backend) {
    for key in [
        "list/a.bin",
        "list/b.bin",
        "list/sub/c.bin",
        "listing-not-under.bin",
    ] {
        b.seed(key, "x").await;
    }
    let dir = b.location("list");
    let listed = dir
        .store()
        .list_with_delimiter(Some(dir.path()))
        .await
        .unwrap_or_else(|e| panic!("[{}] list: {e}", b.name));
    assert_eq!(
        relative(dir.path(), listed.objects.into_iter().map(|o| o.location)),
        ["a.bin", "b.bin"],
        "[{}]",
        b.name
    );
    assert_eq!(
        relative(dir.path(), listed.common_prefixes),
        ["sub"],
        "[{}]",
        b.name
    );
    if b.caps.list_recursive {
        let all: Vec<_> = dir
            .store()
            .list(Some(dir.path()))
            .try_collect()
            .await
            .unwrap();
        assert_eq!(
            relative(dir.path(), all.into_iter().map(|o| o.location)),
            ["a.bin", "b.bin", "sub/c.bin"],
            "[{}]",
            b.name
        );
    }
}

/// What is put can be read back, and is gone after a delete.
pub async fn put_get_delete_round_trip(b: Backend) {
    if b.read_only() {
        return;
    }
    let loc = b.location("rw/obj.bin");
    let data = pattern(300_007);
    loc.store()
        .put(loc.path(), PutPayload::from_bytes(data.clone()))
        .await
        .unwrap_or_else(|e| panic!("[{}] put: {e}", b.name));
    let got = read_all(&loc).await;
    assert_eq!(got, data, "[{}]", b.name);
    loc.store()
        .delete(loc.path())
        .await
        .unwrap_or_else(|e| panic!("[{}] delete: {e}", b.name));
    let err = ckptio::stat(&loc).await.expect_err("deleted");
    assert!(err.is_not_found(), "[{}] {err}", b.name);
}

/// A create-only put of an existing object fails and leaves the first in place, on every server
/// but Garage, which ignores the condition (the commit reads its object back there; the test
/// records that it still does). s3s-fs checks the condition before it writes, so it holds one
/// writer at a time but not under a race (see `two_writers` in `tests/checkpoint.rs`).
pub async fn create_only_put_keeps_the_first_object(b: Backend) {
    use object_store::{PutMode, PutOptions};
    if b.read_only() || b.name == "http" {
        return;
    }
    let loc = b.location("create-only/marker");
    let put = |body: &'static [u8]| {
        let loc = loc.clone();
        async move {
            let options = PutOptions {
                mode: PutMode::Create,
                ..Default::default()
            };
            loc.store()
                .put_opts(loc.path(), PutPayload::from_static(body), options)
                .await
        }
    };
    put(b"first")
        .await
        .unwrap_or_else(|e| panic!("[{}] first put: {e}", b.name));
    let second = put(b"second").await;
    let ignores_it = b.name == "garage";
    if ignores_it {
        assert!(
            second.is_ok(),
            "[{}] now honours If-None-Match: {second:?}",
            b.name
        );
        return;
    }
    assert!(
        matches!(second, Err(object_store::Error::AlreadyExists { .. })),
        "[{}] second create-only put: {second:?}",
        b.name
    );
    assert_eq!(read_all(&loc).await, b"first".as_slice(), "[{}]", b.name);
}

/// Parallel chunked downloads into memory, into a file and as a stream all equal one plain GET,
/// for sizes around the chunk size and one of many chunks.
pub async fn parallel_download_equals_sequential(b: Backend) {
    const CHUNK: u64 = 64 << 10;
    let big = (100 << 20) + 3;
    let dir = tempfile::tempdir().unwrap();
    for (len, chunk) in [
        (0, CHUNK),
        (1, CHUNK),
        (CHUNK - 1, CHUNK),
        (CHUNK, CHUNK),
        (CHUNK + 1, CHUNK),
        (big, 8 << 20),
    ] {
        let key = format!("parallel-{len}.bin");
        b.seed(&key, pattern(len as usize)).await;
        let loc = b.location(&key);
        let sequential = read_all(&loc).await;
        assert_eq!(sequential.len() as u64, len, "[{}] seeded size", b.name);

        let options = FetchOptions {
            chunk_size: chunk,
            concurrency: 8,
            ..FetchOptions::default()
        };
        let object = Object::open(&loc, options)
            .await
            .unwrap_or_else(|e| panic!("[{}] {e}", b.name));
        let in_memory = object
            .bytes()
            .await
            .unwrap_or_else(|e| panic!("[{}] {len} bytes: {e}", b.name));
        assert!(
            in_memory == sequential,
            "[{}] {len} bytes: memory differs",
            b.name
        );

        let dest = dir.path().join(&key);
        object
            .download_to(&dest)
            .await
            .unwrap_or_else(|e| panic!("[{}] {len} bytes: {e}", b.name));
        assert!(
            std::fs::read(&dest).unwrap() == sequential,
            "[{}] {len} bytes: file differs",
            b.name
        );
        std::fs::remove_file(&dest).unwrap();

        let mut next = 0u64;
        let mut streamed = Vec::with_capacity(len as usize);
        let pieces: Vec<(u64, Bytes)> = object
            .stream()
            .try_collect()
            .await
            .unwrap_or_else(|e| panic!("[{}] {e}", b.name));
        for (offset, piece) in pieces {
            assert_eq!(
                offset, next,
                "[{}] {len} bytes: stream out of order",
                b.name
            );
            next += piece.len() as u64;
            streamed.extend_from_slice(&piece);
        }
        assert!(
            streamed == sequential,
            "[{}] {len} bytes: stream differs",
            b.name
        );
    }
}

/// Overwrites the object the first time bytes arrive, from a thread of its own (progress
/// callbacks are synchronous), so the next chunk's request sees the new version.
struct OverwriteOnce {
    backend: Backend,
    key: String,
    done: AtomicBool,
}

impl Progress for OverwriteOnce {
    fn advanced(&self, _bytes: u64) {
        if self.done.swap(true, Ordering::SeqCst) {
            return;
        }
        let (backend, key) = (self.backend.clone(), self.key.clone());
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(backend.seed(&key, pattern(3 * 65536 + 99)));
        })
        .join()
        .unwrap();
    }
}

/// An object replaced between chunks is `Error::ObjectChanged` naming both ETags, and the
/// destination file never appears.
pub async fn object_replaced_mid_download_is_detected(b: Backend) {
    let dir = tempfile::tempdir().unwrap();
    for sink in ["file", "memory"] {
        let key = format!("replaced-{sink}.bin");
        b.seed(&key, pattern(4 * 65536)).await;
        let progress = Arc::new(OverwriteOnce {
            backend: b.clone(),
            key: key.clone(),
            done: AtomicBool::new(false),
        });
        let options = FetchOptions {
            chunk_size: 65536,
            concurrency: 1,
            progress,
            ..FetchOptions::default()
        };
        let object = Object::open(&b.location(&key), options).await.unwrap();
        let pinned = object.info().etag.clone().expect("an ETag to pin");
        let dest = dir.path().join("out.bin");
        let err = match sink {
            "file" => object
                .download_to(&dest)
                .await
                .map(drop)
                .expect_err("the object changed"),
            _ => object
                .bytes()
                .await
                .map(drop)
                .expect_err("the object changed"),
        };
        assert!(
            matches!(err, Error::ObjectChanged { .. }),
            "[{}] {sink}: {err}",
            b.name
        );
        let text = err.to_string();
        assert!(
            text.contains(&pinned) && text.contains(&key),
            "[{}] names the URI and both ETags: {text}",
            b.name
        );
        assert!(!dest.exists(), "[{}] no destination file", b.name);
    }
}

/// Opening a safetensors file costs one GET when its header fits the first read and exactly
/// two when it does not; a tensor costs one more; and every tensor read lazily equals its
/// slice of the whole file.
pub async fn safetensors_lazy_reads_cost_one_get_each(b: Backend) {
    let fixture = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/fixtures/tiny.safetensors"
    ))
    .unwrap();
    b.seed("tiny.safetensors", fixture).await;
    let (loc, counts) = b.location("tiny.safetensors").counted();
    let file = ckptio::open(&loc, Default::default())
        .await
        .unwrap_or_else(|e| panic!("[{}] {e}", b.name));
    assert_eq!((counts.gets(), counts.heads()), (1, 0), "[{}] open", b.name);
    let weight = read_tensor(&file.tree, "embed.weight").await;
    assert_eq!(
        (counts.gets(), counts.heads()),
        (2, 0),
        "[{}] one tensor",
        b.name
    );
    assert_eq!(weight.len(), 48);

    let whole = read_all(&loc).await;
    for (path, t) in file.tree.tensors() {
        let lazy = read_tensor(&file.tree, &path).await;
        let range = byte_range(t);
        assert_eq!(
            lazy,
            whole.slice(range.start as usize..range.end as usize),
            "[{}] {path}",
            b.name,
        );
    }

    let long = safetensors_file(
        &(0..12_000)
            .map(|i| (format!("layer.{i:06}.{}", "x".repeat(40)), 1))
            .collect::<Vec<_>>(),
    );
    b.seed("long.safetensors", long).await;
    let (loc, counts) = b.location("long.safetensors").counted();
    let file = ckptio::open(&loc, Default::default())
        .await
        .unwrap_or_else(|e| panic!("[{}] {e}", b.name));
    let (_, first) = file.tree.tensors().next().unwrap();
    assert!(
        byte_range(first).start > 1 << 20,
        "the data starts past 1 MiB"
    );
    assert_eq!(file.tree.tensors().count(), 12_000);
    assert_eq!(
        (counts.gets(), counts.heads()),
        (2, 0),
        "[{}] a long header costs one more GET",
        b.name
    );
}

/// A GGUF file with `tokens` vocabulary strings of 24 bytes and one F32 tensor `w` of
/// `values` values after them: its header is about `tokens` × 32 bytes.
fn gguf_file(tokens: usize, values: u32) -> Vec<u8> {
    let string = |b: &mut Vec<u8>, s: &[u8]| {
        b.extend((s.len() as u64).to_le_bytes());
        b.extend(s);
    };
    let mut b = b"GGUF".to_vec();
    b.extend(3u32.to_le_bytes());
    b.extend(1u64.to_le_bytes());
    b.extend(1u64.to_le_bytes());
    string(&mut b, b"tokenizer.ggml.tokens");
    b.extend(9u32.to_le_bytes());
    b.extend(8u32.to_le_bytes());
    b.extend((tokens as u64).to_le_bytes());
    for i in 0..tokens {
        string(&mut b, format!("{i:024}").as_bytes());
    }
    string(&mut b, b"w");
    b.extend(1u32.to_le_bytes());
    b.extend(u64::from(values).to_le_bytes());
    b.extend(0u32.to_le_bytes()); // F32
    b.extend(0u64.to_le_bytes());
    b.resize(b.len().next_multiple_of(32), 0);
    b.extend((0..values).flat_map(|i| (i as f32).to_le_bytes()));
    b
}

/// Opening a GGUF file moves its header only (one GET when it fits the first MiB, a few more
/// for a long vocabulary, each at least doubling what is held), and a tensor is one GET of
/// its own bytes, quantized blocks included.
pub async fn gguf_lazy_reads_cost_one_get_each(b: Backend) {
    let tiny = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/fixtures/gguf/tiny.gguf"
    ))
    .unwrap();
    b.seed("tiny.gguf", tiny.clone()).await;
    let (loc, counts) = b.location("tiny.gguf").counted();
    let file = ckptio::open(&loc, Default::default())
        .await
        .unwrap_or_else(|e| panic!("[{}] {e}", b.name));
    assert_eq!(file.format, ckptio::Format::Gguf);
    assert_eq!((counts.gets(), counts.heads()), (1, 0), "[{}] open", b.name);
    let q4k = file.tree.tensor("q4_k").unwrap();
    let values = ckptio::materialize(
        vec![("q4_k".into(), q4k.dequantized().unwrap())],
        Default::default(),
    )
    .await
    .unwrap_or_else(|e| panic!("[{}] {e}", b.name));
    assert_eq!(values[0].1.data.len(), 2 * 512 * 4);
    assert_eq!(counts.gets(), 2, "[{}] one tensor", b.name);
    let range = byte_range(q4k);
    let before = counts.bytes();
    read_tensor(&file.tree, "q4_k").await;
    assert_eq!(
        counts.bytes() - before,
        range.end - range.start,
        "[{}] its bytes",
        b.name
    );

    // 100k tokens: a 3.2 MiB header, then 8 MiB of data.
    let long = gguf_file(100_000, 2 << 20);
    let data_start = long.len() as u64 - (8 << 20);
    b.seed("long.gguf", long.clone()).await;
    let (loc, counts) = b.location("long.gguf").counted();
    let file = ckptio::open(&loc, Default::default())
        .await
        .unwrap_or_else(|e| panic!("[{}] {e}", b.name));
    assert!(
        counts.gets() <= 3,
        "[{}] {} GETs for a long header",
        b.name,
        counts.gets()
    );
    assert!(
        counts.bytes() <= 2 * data_start,
        "[{}] {} bytes read for a {data_start}-byte header",
        b.name,
        counts.bytes()
    );
    let w = read_tensor(&file.tree, "w").await;
    assert_eq!(w, long[data_start as usize..], "[{}]", b.name);
    assert_eq!(
        file.metadata["tokenizer.ggml.tokens"].len(),
        100_000 * 27 + 1
    );
}

/// Every file under `dir`, as (path relative to it, bytes).
fn files_under(dir: &std::path::Path, base: &std::path::Path, out: &mut Vec<(String, Vec<u8>)>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files_under(&path, base, out);
        } else {
            let rel = path
                .strip_prefix(base)
                .unwrap()
                .to_str()
                .unwrap()
                .to_owned();
            out.push((rel, std::fs::read(&path).unwrap()));
        }
    }
}

/// Puts the Orbax fixture `name` on the backend under `name/`; its local directory and its
/// location there.
async fn seed_orbax(b: &Backend, name: &str) -> (std::path::PathBuf, ckptio::Location) {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/orbax")
        .join(name);
    let mut files = Vec::new();
    files_under(&dir, &dir, &mut files);
    for (rel, bytes) in files {
        b.seed(&format!("{name}/{rel}"), bytes).await;
    }
    (dir, b.location(&format!("{name}/")))
}

/// An Orbax checkpoint (OCDBT, zarr v2) opens from its metadata and B+tree alone, and an
/// array stored out of line in a data file is one more GET of its chunk; arrays inline in the
/// B+tree cost nothing more. Every array equals the local read.
pub async fn orbax_lazy_reads_cost_one_get_per_chunk(b: Backend) {
    let (dir, loc) = seed_orbax(&b, "standard").await;
    let (loc, counts) = loc.counted();
    let remote = ckptio::open(&loc, Default::default())
        .await
        .unwrap_or_else(|e| panic!("[{}] {e}", b.name));
    let opened = (counts.gets(), counts.heads());
    // LIST (probe), LIST (checkpointables), _METADATA, manifest, a HEAD per data file and
    // one GET per B+tree level.
    assert!(opened.0 <= 4, "[{}] {opened:?} to open", b.name);
    let big = remote.tree.subtree("params").unwrap();
    let big = ckptio::materialize(
        vec![(
            "big".into(),
            big.tensors().find(|(p, _)| p == "big").unwrap().1.clone(),
        )],
        Default::default(),
    )
    .await
    .unwrap_or_else(|e| panic!("[{}] {e}", b.name));
    assert_eq!(big[0].1.data.len(), 32 * 32 * 4);
    assert_eq!(counts.gets(), opened.0 + 1, "[{}] the big array", b.name);
    let all = ckptio::materialize_tree(&remote.tree, Default::default())
        .await
        .unwrap_or_else(|e| panic!("[{}] {e}", b.name));
    let local = ckptio::open(
        &ckptio::resolve(dir.to_str().unwrap(), &Default::default()).unwrap(),
        Default::default(),
    )
    .await
    .unwrap();
    let want = ckptio::materialize_tree(&local.tree, Default::default())
        .await
        .unwrap();
    assert_eq!(all, want, "[{}]", b.name);
}

/// The chunks of one Orbax array stored side by side in a data file come in one request, and
/// read what a local read of the same checkpoint does.
pub async fn orbax_chunks_of_one_array_come_in_one_request(b: Backend) {
    let (dir, loc) = seed_orbax(&b, "sharded").await;
    let (loc, counts) = loc.counted();
    let remote = ckptio::open(&loc, Default::default())
        .await
        .unwrap_or_else(|e| panic!("[{}] {e}", b.name));
    let wide = |tree: &ckptio::StateTree| {
        let t = tree.tensor("wide").expect("a tensor `wide`").clone();
        let ckptio::TensorData::Pieces(p) = &t.data else {
            panic!("`wide` is not in chunks")
        };
        assert_eq!(p.boxes.len(), 4, "`wide` is written as 4 chunks");
        vec![("wide".to_owned(), t)]
    };
    let before = counts.gets();
    let got = ckptio::materialize(wide(&remote.tree), Default::default())
        .await
        .unwrap_or_else(|e| panic!("[{}] {e}", b.name));
    assert_eq!(counts.gets() - before, 1, "[{}] 4 chunks of `wide`", b.name);
    let local = ckptio::open(
        &ckptio::resolve(dir.to_str().unwrap(), &Default::default()).unwrap(),
        Default::default(),
    )
    .await
    .unwrap();
    let want = ckptio::materialize(wide(&local.tree), Default::default())
        .await
        .unwrap();
    assert_eq!(got, want, "[{}]", b.name);
    assert_eq!(got[0].1.data.len(), 64 * 64 * 4);
}

/// A safetensors file written through the store's multipart path (over the 16 MiB part size)
/// reads back tensor for tensor.
pub async fn safetensors_large_write_reads_back(b: Backend) {
    use ckptio::{WriteOptions, write_safetensors};

    if b.read_only() {
        return;
    }
    // The source: a 40 MiB safetensors file in memory, three tensors.
    let sizes = [(20u64 << 20) + 4, 12 << 20, 8 << 20];
    let source = safetensors_file(
        &sizes
            .iter()
            .enumerate()
            .map(|(i, &n)| (format!("t{i}"), n))
            .collect::<Vec<_>>(),
    );
    let src = ckptio::resolve(
        &format!("memory://large-write-{}/src.safetensors", b.name),
        &Default::default(),
    )
    .unwrap();
    src.store().put(src.path(), source.into()).await.unwrap();
    let src = ckptio::open(&src, Default::default()).await.unwrap();

    let dest = b.location("big/model.safetensors");
    let tensors = src.tree.tensors().map(|(p, t)| (p, t.clone())).collect();
    write_safetensors(tensors, &dest, &WriteOptions::default())
        .await
        .unwrap_or_else(|e| panic!("[{}] {e}", b.name));
    let written = ckptio::open(&dest, Default::default())
        .await
        .unwrap_or_else(|e| panic!("[{}] {e}", b.name));
    for (path, _) in src.tree.tensors() {
        let (want, got) = (
            read_tensor(&src.tree, &path).await,
            read_tensor(&written.tree, &path).await,
        );
        assert!(want == got, "[{}] {path} differs after the write", b.name);
    }
}

/// A torch file written to the store (through multipart where the store has it) reads back as
/// the tree it was written from; a write that fails midway leaves the file that was there.
pub async fn torch_write_reads_back_and_replaces_whole_or_not_at_all(b: Backend) {
    use ckptio::{Dict, Node, StateTree, WriteOptions, write_torch};

    if b.read_only() {
        return;
    }
    let sizes = [(20u64 << 20) + 4, 1 << 10];
    let tensors = sizes
        .iter()
        .enumerate()
        .map(|(i, &n)| (format!("t{i}"), n))
        .collect::<Vec<_>>();
    let src = ckptio::resolve(
        &format!("memory://torch-write-{}/src.safetensors", b.name),
        &Default::default(),
    )
    .unwrap();
    src.store()
        .put(src.path(), safetensors_file(&tensors).into())
        .await
        .unwrap();
    let weights = ckptio::open(&src, Default::default()).await.unwrap().tree;
    let lightning = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/torch/lightning.ckpt");
    let lightning = ckptio::open(
        &ckptio::resolve(lightning, &Default::default()).unwrap(),
        Default::default(),
    )
    .await
    .unwrap()
    .tree;
    let mut root = Dict::new();
    root.insert("weights".into(), Node::Dict(weights.root().clone()));
    root.insert("lightning".into(), Node::Dict(lightning.root().clone()));
    let tree = StateTree::from_dict(root);

    let dest = b.location("run/last.ckpt");
    write_torch(&tree, &dest, &WriteOptions::default())
        .await
        .unwrap_or_else(|e| panic!("[{}] {e}", b.name));
    let written = ckptio::open(&dest, Default::default())
        .await
        .unwrap_or_else(|e| panic!("[{}] {e}", b.name));
    assert_eq!(written.format, ckptio::Format::Torch, "[{}]", b.name);
    let want = contents(&tree).await;
    assert!(
        contents(&written.tree).await == want,
        "[{}] differs after the write",
        b.name
    );

    // The source changes under the next write: it fails, and the first file stays.
    src.store()
        .put(src.path(), safetensors_file(&tensors[..1]).into())
        .await
        .unwrap();
    let err = write_torch(&tree, &dest, &WriteOptions::default())
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::ObjectChanged { .. }),
        "[{}] {err}",
        b.name
    );
    let still = ckptio::open(&dest, Default::default())
        .await
        .unwrap_or_else(|e| panic!("[{}] {e}", b.name));
    assert!(
        contents(&still.tree).await == want,
        "[{}] the first file changed",
        b.name
    );
}

/// A `torch.save` zip is found from its tail: one suffix GET where the store takes them, a
/// HEAD then a bounded GET where it cannot (Azure), and the same after a refusal when a store
/// that cannot claims it can. Every way opens the same tree.
pub async fn torch_zip_tail_is_read_with_or_without_suffix_ranges(b: Backend) {
    // Larger than the tail asked for: a longer suffix is a case of its own (s3s-fs refuses it).
    let scratch = |name: &str| {
        ckptio::resolve(
            &format!("memory://zip-tail-{}/{name}", b.name),
            &Default::default(),
        )
        .unwrap()
    };
    let src = scratch("src.safetensors");
    let tensors = [("w".to_owned(), 200 << 10), ("b".to_owned(), 100)];
    src.store()
        .put(src.path(), safetensors_file(&tensors).into())
        .await
        .unwrap();
    let tree = ckptio::open(&src, Default::default()).await.unwrap().tree;
    let file = scratch("big.pt");
    ckptio::write_torch(&tree, &file, &Default::default())
        .await
        .unwrap();
    b.seed("big.pt", read_all(&file).await).await;
    let loc = b.location("big.pt");
    let caps = loc.capabilities();
    let mut trees = Vec::new();
    for suffix_ranges in [caps.suffix_ranges, !caps.suffix_ranges] {
        let claimed = loc.with_capabilities(ckptio::Capabilities {
            suffix_ranges,
            ..caps
        });
        let (counted, counts) = claimed.counted();
        let file = ckptio::open(&counted, Default::default())
            .await
            .unwrap_or_else(|e| panic!("[{}] suffix ranges {suffix_ranges}: {e}", b.name));
        assert_eq!(file.format, ckptio::Format::Torch, "[{}]", b.name);
        let head = !(suffix_ranges && caps.suffix_ranges);
        assert_eq!(
            counts.heads(),
            u64::from(head),
            "[{}] suffix ranges claimed {suffix_ranges}, taken {}",
            b.name,
            caps.suffix_ranges
        );
        trees.push(contents(&file.tree).await);
    }
    assert!(trees[0] == trees[1], "[{}] the two ways differ", b.name);
}

/// Names with spaces, `%`, `+` and non-ASCII letters are keys like any other: a directory
/// holding them is walked, copied to a local directory and back under the same names, and
/// removed whole.
pub async fn odd_names_are_walked_copied_and_removed_as_they_are(b: Backend) {
    if b.read_only() {
        return;
    }
    let names = [
        "dir with space/ünï%code+plus.bin",
        "日本/重み.bin",
        "plain.bin",
    ];
    for (i, name) in names.iter().enumerate() {
        b.seed(&format!("odd/{name}"), pattern(100 + i)).await;
    }
    let mut want: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
    want.sort();
    let src = b.location("odd/");
    let mut walked = ckptio::walk(&src).await.unwrap();
    walked.sort();
    assert_eq!(walked, want, "[{}] walk", b.name);

    let local = tempfile::tempdir().unwrap();
    let here = ckptio::resolve(
        &format!("{}/copy/", local.path().display()),
        &Default::default(),
    )
    .unwrap();
    ckptio::copy_dir(&src, &here, FetchOptions::default(), 4)
        .await
        .unwrap_or_else(|e| panic!("[{}] copy down: {e}", b.name));
    for (i, name) in names.iter().enumerate() {
        let got = std::fs::read(local.path().join("copy").join(name)).unwrap();
        assert_eq!(got, pattern(100 + i), "[{}] {name}", b.name);
    }
    let back = b.location("back/");
    ckptio::copy_dir(&here, &back, FetchOptions::default(), 4)
        .await
        .unwrap_or_else(|e| panic!("[{}] copy up: {e}", b.name));
    let mut walked = ckptio::walk(&back).await.unwrap();
    walked.sort();
    assert_eq!(walked, want, "[{}] copied back", b.name);

    ckptio::remove_any(&src)
        .await
        .unwrap_or_else(|e| panic!("[{}] remove: {e}", b.name));
    assert!(
        ckptio::walk(&src).await.unwrap_or_default().is_empty(),
        "[{}] removed whole",
        b.name
    );
}

/// What a tree holds: every tensor's bytes and every other leaf's value, by path.
async fn contents(tree: &ckptio::StateTree) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (path, leaf) in tree.leaves() {
        let shown = match leaf {
            ckptio::Leaf::Tensor(_) => format!("{:?}", read_tensor(tree, &path).await),
            other => format!("{other:?}"),
        };
        out.push((path, shown));
    }
    out
}
