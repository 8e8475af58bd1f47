//! The backends every integration test runs against, found through environment variables so the
//! same suite runs on the servers `scripts/servers` starts, on docker compose, or on real buckets.
//!
//! A backend NAME is configured by
//! - `CKPTIO_TEST_<NAME>_URI`: the base URI (`s3://bucket/`, `gs://bucket/`, `az://container/`,
//!   `http://host:port/`);
//! - `CKPTIO_TEST_<NAME>_OPTIONS`: a JSON object of store options (endpoint, keys, ...);
//! - `CKPTIO_TEST_<NAME>_SEED=gcs-json-api`: seed objects through the GCS JSON upload API (the
//!   emulator refuses object_store's XML-API writes), which also makes the backend read-only.
//!
//! `memory` and `local` are always there. `CKPTIO_TEST_REQUIRE=s3s,moto,...` turns a missing
//! backend into a failure instead of a skip: the test script sets it, so CI cannot go green by
//! skipping.
#![allow(dead_code)]

pub mod cli;
pub mod proxy;

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use ckptio::{Location, Resolver, StorageOptions};
use object_store::ObjectStoreExt;
use object_store::path::Path;

/// Every backend name the suites know, in the order tests are generated.
pub const BACKENDS: &[&str] = &[
    "memory",
    "local",
    "s3s",
    "moto",
    "garage",
    "seaweedfs",
    "s3",
    "gcs",
    "azure",
    "http",
];

/// What a backend can do.
#[derive(Debug, Clone, Copy)]
pub struct Caps {
    /// object_store can put and delete objects.
    pub write: bool,
    /// A recursive listing works (nginx refuses PROPFIND `Depth: infinity`).
    pub list_recursive: bool,
}

/// One backend, with a prefix of its own for the running test.
#[derive(Debug, Clone)]
pub struct Backend {
    pub name: &'static str,
    /// The base URI, ending in `/`, including the test's unique prefix.
    pub base: String,
    pub options: StorageOptions,
    pub caps: Caps,
    seed: Seed,
    /// Kept alive for local backends: the directory is removed when the last clone drops.
    _dir: Option<std::sync::Arc<tempfile::TempDir>>,
}

#[derive(Debug, Clone)]
enum Seed {
    Store,
    GcsJsonApi { endpoint: String, bucket: String },
}

fn unique(test: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!(
        "{test}-{}-{nanos}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

fn env_var(name: &str, key: &str) -> Option<String> {
    std::env::var(format!("CKPTIO_TEST_{}_{key}", name.to_ascii_uppercase()))
        .ok()
        .filter(|v| !v.is_empty())
}

fn required(name: &str) -> bool {
    std::env::var("CKPTIO_TEST_REQUIRE").is_ok_and(|list| list.split(',').any(|n| n.trim() == name))
}

impl Backend {
    /// The backend `name` for `test`, or `None` when it is not configured (a failure when it is
    /// required).
    pub fn from_env(name: &'static str, test: &str) -> Option<Backend> {
        let prefix = unique(test);
        let caps = Caps {
            write: true,
            list_recursive: true,
        };
        match name {
            "memory" => {
                return Some(Backend {
                    name,
                    base: format!("memory://{prefix}/"),
                    options: StorageOptions::new(),
                    caps,
                    seed: Seed::Store,
                    _dir: None,
                });
            }
            "local" => {
                let dir = tempfile::tempdir().expect("temp dir");
                let base = format!("{}/", dir.path().display());
                return Some(Backend {
                    name,
                    base,
                    options: StorageOptions::new(),
                    caps,
                    seed: Seed::Store,
                    _dir: Some(std::sync::Arc::new(dir)),
                });
            }
            _ => {}
        }
        let Some(uri) = env_var(name, "URI") else {
            assert!(
                !required(name),
                "backend `{name}` is required (CKPTIO_TEST_REQUIRE) but CKPTIO_TEST_{}_URI is not set",
                name.to_ascii_uppercase()
            );
            eprintln!("skipped: backend `{name}` is not configured");
            return None;
        };
        let options: StorageOptions = match env_var(name, "OPTIONS") {
            Some(json) => serde_json::from_str::<std::collections::BTreeMap<String, String>>(&json)
                .unwrap_or_else(|e| {
                    panic!(
                        "CKPTIO_TEST_{}_OPTIONS is not a JSON object of strings: {e}",
                        name.to_ascii_uppercase()
                    )
                })
                .into_iter()
                .collect(),
            None => StorageOptions::new(),
        };
        let base = format!("{}/{prefix}/", uri.trim_end_matches('/'));
        let (seed, caps) = match env_var(name, "SEED").as_deref() {
            Some("gcs-json-api") => {
                let endpoint = options
                    .get("storage_emulator_host")
                    .expect("gcs-json-api seeding needs storage_emulator_host")
                    .trim_end_matches('/')
                    .to_owned();
                let bucket = uri
                    .trim_start_matches("gs://")
                    .split('/')
                    .next()
                    .unwrap_or_default()
                    .to_owned();
                (
                    Seed::GcsJsonApi { endpoint, bucket },
                    Caps {
                        write: false,
                        ..caps
                    },
                )
            }
            Some(other) => panic!("unknown seeding method `{other}`"),
            None => (
                Seed::Store,
                Caps {
                    list_recursive: !uri.starts_with("http"),
                    ..caps
                },
            ),
        };
        Some(Backend {
            name,
            base,
            options,
            caps,
            seed,
            _dir: None,
        })
    }

    /// Whether the backend takes no writes from object_store (the case then has nothing to
    /// check, and says so).
    pub fn read_only(&self) -> bool {
        if !self.caps.write {
            eprintln!("[{}] read-only backend: nothing to write", self.name);
        }
        !self.caps.write
    }

    /// The backend's options as the CLI's `-o KEY=VALUE` arguments.
    pub fn option_args(&self) -> Vec<String> {
        self.options
            .iter()
            .flat_map(|(k, v)| ["-o".to_owned(), format!("{k}={v}")])
            .collect()
    }

    /// The URI of `key` under this test's prefix.
    pub fn uri(&self, key: &str) -> String {
        format!("{}{key}", self.base)
    }

    /// `key` resolved with this backend's options (on a fresh resolver, so nothing is cached
    /// from another test).
    pub fn location(&self, key: &str) -> Location {
        Resolver::new()
            .resolve(&self.uri(key), &self.options)
            .unwrap_or_else(|e| panic!("[{}] resolve {key}: {e}", self.name))
    }

    /// Writes `data` at `key`, through the store or, for read-only emulators, their own API.
    pub async fn seed(&self, key: &str, data: impl Into<Bytes>) {
        let data = data.into();
        match &self.seed {
            Seed::Store => {
                let loc = self.location(key);
                loc.store()
                    .put(loc.path(), data.into())
                    .await
                    .unwrap_or_else(|e| panic!("[{}] seed {key}: {e}", self.name));
            }
            Seed::GcsJsonApi { endpoint, bucket } => {
                let name = self.location(key).path().to_string();
                let mut url =
                    url::Url::parse(&format!("{endpoint}/upload/storage/v1/b/{bucket}/o"))
                        .expect("emulator URL");
                url.query_pairs_mut()
                    .append_pair("uploadType", "media")
                    .append_pair("name", &name);
                let response = reqwest::Client::new()
                    .post(url)
                    .header("content-type", "application/octet-stream")
                    .body(data)
                    .send()
                    .await
                    .and_then(|r| r.error_for_status());
                response.unwrap_or_else(|e| {
                    panic!("[{}] seed {key} through the JSON API: {e}", self.name)
                });
            }
        }
    }

    /// Writes every file of the local directory `dir` under `key/`, by name.
    pub async fn seed_dir(&self, key: &str, dir: &std::path::Path) {
        for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let entry = entry.unwrap();
            let name = entry.file_name().into_string().unwrap();
            self.seed(
                &format!("{key}/{name}"),
                std::fs::read(entry.path()).unwrap(),
            )
            .await;
        }
    }

    /// Removes everything under this test's prefix (best effort).
    pub async fn cleanup(&self) {
        if !self.caps.write || !self.caps.list_recursive {
            return;
        }
        use futures::TryStreamExt;
        let root = self.location("");
        let Ok(objects) = root
            .store()
            .list(Some(root.path()))
            .try_collect::<Vec<_>>()
            .await
        else {
            return;
        };
        for object in objects {
            let _ = root.store().delete(&object.location).await;
        }
    }
}

/// The whole object at `loc`, read by one plain GET: the reference the parallel paths are
/// compared against.
pub async fn read_all(loc: &Location) -> Bytes {
    let got = loc.store().get(loc.path()).await;
    let got = got.unwrap_or_else(|e| panic!("GET {loc}: {e}"));
    got.bytes()
        .await
        .unwrap_or_else(|e| panic!("GET {loc}: {e}"))
}

/// The bytes of the tensor at `path`, materialized.
pub async fn read_tensor(tree: &ckptio::StateTree, path: &str) -> Bytes {
    let (_, t) = tree
        .tensors()
        .find(|(p, _)| p == path)
        .unwrap_or_else(|| panic!("no tensor `{path}`"));
    let got = ckptio::materialize(vec![(path.to_owned(), t.clone())], Default::default())
        .await
        .unwrap_or_else(|e| panic!("{path}: {e}"));
    got.into_iter().next().unwrap().1.data
}

/// Where a tensor's bytes are in its object.
pub fn byte_range(t: &ckptio::LazyTensor) -> std::ops::Range<u64> {
    match &t.data {
        ckptio::TensorData::Range(r) => r.range.clone(),
        other => panic!("not a byte range: {other:?}"),
    }
}

/// A safetensors file of U8 tensors with the given names and sizes, in that order, holding
/// [`pattern`] bytes.
pub fn safetensors_file(tensors: &[(String, u64)]) -> Vec<u8> {
    let mut offset = 0u64;
    let entries: Vec<String> = tensors
        .iter()
        .map(|(name, size)| {
            let entry = format!(
                r#"{}:{{"dtype":"U8","shape":[{size}],"data_offsets":[{offset},{}]}}"#,
                serde_json::Value::from(name.as_str()),
                offset + size
            );
            offset += size;
            entry
        })
        .collect();
    let json = format!("{{{}}}", entries.join(","));
    let mut out = (json.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(json.as_bytes());
    out.extend_from_slice(&pattern(offset as usize));
    out
}

/// Deterministic bytes that differ at every offset of interest (a ranged read at the wrong
/// offset cannot match).
pub fn pattern(len: usize) -> Bytes {
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15 ^ len as u64;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect::<Vec<u8>>()
        .into()
}

/// Runs `case` on backend `name` if it is configured, then cleans up its prefix.
pub async fn run<F, Fut>(name: &'static str, test: &str, case: F)
where
    F: FnOnce(Backend) -> Fut,
    Fut: Future<Output = ()>,
{
    let Some(backend) = Backend::from_env(name, test) else {
        return;
    };
    case(backend.clone()).await;
    backend.cleanup().await;
}

/// Object paths relative to `base`, sorted.
pub fn relative(base: &Path, paths: impl IntoIterator<Item = Path>) -> Vec<String> {
    let mut out: Vec<String> = paths
        .into_iter()
        .map(|p| {
            p.prefix_match(base)
                .map(|parts| {
                    parts
                        .map(|part| part.as_ref().to_owned())
                        .collect::<Vec<_>>()
                        .join("/")
                })
                .unwrap_or_else(|| p.to_string())
        })
        .collect();
    out.sort();
    out
}
