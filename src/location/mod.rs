//! Turning a URI into a store and an object path.
//!
//! | URI | store |
//! |---|---|
//! | `model.safetensors`, `/abs/path`, `file:///abs/path` | local filesystem |
//! | `s3://bucket/key`, `s3a://bucket/key` | S3 and S3-compatible servers |
//! | `gs://bucket/key` | Google Cloud Storage (or an emulator) |
//! | `az://container/key`, `abfss://container@account.dfs.core.windows.net/key` | Azure Blob Storage |
//! | `http(s)://host:port/path?query` | any HTTP server with Range support; the query (a presigned signature) is kept |
//! | `memory://name/key` | an in-memory store shared, process-wide, by every URI with the same name |
//!
//! Configuration comes from the environment (`AWS_*`, `GOOGLE_*`, `AZURE_*`,
//! `STORAGE_EMULATOR_HOST`, `CKPTIO_*`) and from explicit [`StorageOptions`], which win. A
//! [`Resolver`] caches stores by scheme, bucket and configuration, so repeated opens share one
//! connection pool; a local URI gets its own view of the file system, confined to the
//! directory it names (symbolic links may not lead out of it). Resolving sends no request.
//!
//! ```
//! # fn main() -> ckptio::Result<()> {
//! use ckptio::{Resolver, StorageOptions};
//!
//! let resolver = Resolver::new();
//! let loc = resolver.resolve("memory://scratch/ckpt/model.safetensors", &StorageOptions::new())?;
//! assert_eq!(loc.path().as_ref(), "ckpt/model.safetensors");
//! assert_eq!(loc.to_string(), "memory://scratch/ckpt/model.safetensors");
//!
//! // The same store is shared by every location in the bucket.
//! let other = resolver.resolve("memory://scratch/other", &StorageOptions::new())?;
//! assert!(std::sync::Arc::ptr_eq(loc.store(), other.store()));
//! # Ok(()) }
//! ```

mod backend;
mod caps;
mod confined;
mod counting;
mod options;
mod redact;
mod tap;
mod uri;

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, OnceLock};

use object_store::ObjectStore;
use object_store::path::{Path, PathPart};

pub use caps::{Capabilities, CreateOnly};
pub use counting::Counts;
pub use options::{ClientSettings, Env, PairOptions, StorageOptions};
pub use redact::{redact, redact_uri};
pub use uri::Scheme;

pub(crate) use confined::special_file;
pub(crate) use tap::ServerHints;

use crate::error::{Error, Result};
use backend::{ConfigError, StoreConfig};
use counting::CountingStore;
use redact::Redactor;
use uri::UriError;

/// An object (or a prefix) in a store: where ckptio reads and writes.
///
/// Display and Debug show the URI with secrets redacted.
#[derive(Clone)]
pub struct Location {
    store: Arc<dyn ObjectStore>,
    path: Path,
    /// The URI ended in `/`, or the location was made as a directory ([`Location::parent`]).
    dir: bool,
    root: Arc<Root>,
}

/// What all locations in one store share: what the store is and can do, how to show their URIs
/// and what to hide.
struct Root {
    /// `None` for a store built elsewhere.
    scheme: Option<Scheme>,
    caps: Capabilities,
    hints: Arc<ServerHints>,
    /// The URI up to the object path: `s3://bucket/`, `http://host:port/`, `/` for local files.
    prefix: String,
    /// The redacted query of an HTTP URI, shown after the path.
    shown_query: Option<String>,
    redactor: Redactor,
}

impl Location {
    /// A location in a store built elsewhere: a wrapper such as object_store's
    /// `ThrottledStore`, or a store of your own. `name` is shown before the path (`name/path`)
    /// in messages. The store gets the cautious [`Capabilities::default`]; say what it can do
    /// with [`with_capabilities`](Self::with_capabilities).
    ///
    /// ```
    /// use std::sync::Arc;
    /// use ckptio::{Capabilities, CreateOnly, Location};
    /// use object_store::{memory::InMemory, path::Path};
    ///
    /// let loc = Location::from_store("mine:/", Arc::new(InMemory::new()), Path::from("a/b"))
    ///     .with_capabilities(Capabilities { create: CreateOnly::Atomic, ..Capabilities::default() });
    /// assert_eq!(loc.to_string(), "mine:/a/b");
    /// assert_eq!(loc.capabilities().create, CreateOnly::Atomic);
    /// ```
    pub fn from_store(name: &str, store: Arc<dyn ObjectStore>, path: Path) -> Location {
        let root = Root {
            scheme: None,
            caps: Capabilities::default(),
            hints: Arc::default(),
            prefix: format!("{}/", name.trim_end_matches('/')),
            shown_query: None,
            redactor: Redactor::default(),
        };
        Location {
            store,
            path,
            dir: false,
            root: Arc::new(root),
        }
    }

    /// This location, with every request to its store counted into the returned [`Counts`].
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> ckptio::Result<()> {
    /// let loc = ckptio::resolve("fixtures/tiny.safetensors", &Default::default())?;
    /// let (counted, counts) = loc.counted();
    /// ckptio::stat(&counted).await?;
    /// assert_eq!((counts.heads(), counts.gets()), (1, 0));
    /// # Ok(()) }
    /// ```
    pub fn counted(&self) -> (Location, Arc<Counts>) {
        let counts = Arc::new(Counts::default());
        let store = Arc::new(CountingStore::new(
            Arc::clone(&self.store),
            Arc::clone(&counts),
        ));
        (
            Location {
                store,
                path: self.path.clone(),
                dir: self.dir,
                root: Arc::clone(&self.root),
            },
            counts,
        )
    }

    /// The store holding the object.
    pub fn store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    /// The object's path inside [`store`](Self::store).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The kind of store the URI named; `None` for a store built elsewhere.
    pub fn scheme(&self) -> Option<Scheme> {
        self.root.scheme
    }

    /// What the store can do.
    pub fn capabilities(&self) -> Capabilities {
        self.root.caps
    }

    /// This location, in a store that can do what `caps` says: how a store you wrapped
    /// yourself tells ckptio it has multipart uploads or atomic create-only puts.
    pub fn with_capabilities(&self, caps: Capabilities) -> Location {
        let root = Root {
            scheme: self.root.scheme,
            caps,
            hints: Arc::clone(&self.root.hints),
            prefix: self.root.prefix.clone(),
            shown_query: self.root.shown_query.clone(),
            redactor: self.root.redactor.clone(),
        };
        Location {
            store: Arc::clone(&self.store),
            path: self.path.clone(),
            dir: self.dir,
            root: Arc::new(root),
        }
    }

    /// The file this location names on the local file system, for a local store.
    pub fn local_path(&self) -> Option<std::path::PathBuf> {
        (self.root.scheme == Some(Scheme::Local))
            .then(|| std::path::Path::new("/").join(self.path.as_ref()))
    }

    /// The URI with secrets redacted: what ckptio shows in every message about this location.
    pub fn uri(&self) -> String {
        let mut uri = format!("{}{}", self.root.prefix, self.path);
        if let Some(query) = &self.root.shown_query {
            uri.push('?');
            uri.push_str(query);
        }
        uri
    }

    /// The location at `path` in the same store (a listed object, a sibling file).
    pub fn with_path(&self, path: Path) -> Location {
        Location {
            store: Arc::clone(&self.store),
            path,
            dir: false,
            root: Arc::clone(&self.root),
        }
    }

    /// Whether the location names a directory (a prefix): its URI ended in `/`, or it was made
    /// as one ([`parent`](Self::parent), [`join`](Self::join) of a path ending in `/`). Readers
    /// list such a location instead of asking for an object of its name first.
    pub fn names_dir(&self) -> bool {
        self.dir
    }

    /// Whether the location is a directory as far as can be told without a request: it
    /// [names one](Self::names_dir), or it is an existing local directory. Where a one-file
    /// write into it puts its file under a name of its own.
    pub fn is_directory(&self) -> bool {
        self.dir || self.local_path().is_some_and(|p| p.is_dir())
    }

    /// The directory (prefix) holding this location; the store's root stays the root.
    ///
    /// ```
    /// # fn main() -> ckptio::Result<()> {
    /// let index = ckptio::resolve("memory://m/run/model.safetensors.index.json", &Default::default())?;
    /// assert_eq!(index.parent().join("model-00001-of-00002.safetensors").path().as_ref(), "run/model-00001-of-00002.safetensors");
    /// # Ok(()) }
    /// ```
    pub fn parent(&self) -> Location {
        let parts: Vec<_> = self.path.parts().collect();
        let keep = parts.len().saturating_sub(1);
        Location {
            dir: true,
            ..self.with_path(Path::from_iter(parts.into_iter().take(keep)))
        }
    }

    /// The location `relative` (`/`-separated) below this one.
    ///
    /// ```
    /// # fn main() -> ckptio::Result<()> {
    /// let dir = ckptio::resolve("memory://m/run/ckpt-10", &Default::default())?;
    /// assert_eq!(dir.join("model.safetensors").path().as_ref(), "run/ckpt-10/model.safetensors");
    /// # Ok(()) }
    /// ```
    pub fn join(&self, relative: &str) -> Location {
        // A name is a key as a listing gives it and a URI resolves to: kept as it is (`%`,
        // spaces, non-ASCII), where `PathPart::from` would escape it into another key. Only
        // what no key segment may be (`.`, `..`, control characters) is escaped.
        let parts = self.path.parts().chain(
            relative
                .split('/')
                .filter(|p| !p.is_empty())
                .map(|p| PathPart::parse(p).unwrap_or_else(|_| PathPart::from(p))),
        );
        Location {
            dir: relative.ends_with('/') || (relative.is_empty() && self.dir),
            ..self.with_path(Path::from_iter(parts))
        }
    }

    /// What the store's server advised about retrying (`Retry-After`).
    pub(crate) fn server_hints(&self) -> &ServerHints {
        &self.root.hints
    }

    /// `text` with this location's secrets and every URL's secret parts redacted.
    pub(crate) fn redact(&self, text: &str) -> String {
        self.root.redactor.redact(text)
    }

    /// The ckptio error for `err`, which `operation` on this location returned.
    pub(crate) fn error(&self, operation: &'static str, err: object_store::Error) -> Error {
        if operation == "list"
            && self.scheme() == Some(Scheme::Http)
            && let Some(code @ (405 | 501)) = crate::error::http_status(&err)
        {
            return Error::Unsupported {
                uri: self.uri(),
                what: format!(
                    "this web server cannot list a directory: ckptio lists over HTTP with \
                     WebDAV's PROPFIND, which it answered with {code}; name the checkpoint's \
                     file instead (…/model.safetensors, …/model.safetensors.index.json, \
                     …/last.ckpt)"
                ),
            };
        }
        // A local file system's own failure (no space left, a path through a file, a read-only
        // file system) is a local I/O error, not a transport one.
        let local = self
            .local_path()
            .and_then(|path| Some((path, local_cause(&err)?)));
        let credentials = self.scheme().and_then(backend::credentials_advice);
        let error = Error::from_store(
            err,
            self.uri(),
            operation,
            &|text| self.redact(text),
            credentials,
        );
        match (error, local) {
            (Error::Transport { .. }, Some((path, source))) => Error::LocalIo {
                path: path.display().to_string(),
                action: match operation {
                    "put" => "write",
                    "get" => "read",
                    other => other,
                },
                source,
            },
            (error, _) => error,
        }
    }
}

/// The operating system's error under a local store's `err`, as an error of its own.
fn local_cause(err: &object_store::Error) -> Option<std::io::Error> {
    let mut at: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = at {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            return Some(std::io::Error::new(io.kind(), io.to_string()));
        }
        at = e.source();
    }
    None
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.uri())
    }
}

impl fmt::Debug for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Location")
            .field("uri", &self.uri())
            .finish_non_exhaustive()
    }
}

/// Resolves URIs to [`Location`]s, sharing one store per scheme, bucket and configuration.
///
/// Stores hold connection pools; keep one resolver (or use [`resolve`]) for the life of the
/// program.
pub struct Resolver {
    env: Option<Env>,
    cache: Mutex<HashMap<StoreConfig, CachedStore>>,
}

type CachedStore = (Arc<dyn ObjectStore>, Arc<ServerHints>);

/// Past this many cached stores, stores no location uses any more are dropped (each presigned
/// URL has its own query, and so its own store).
const CACHE_SOFT_LIMIT: usize = 256;

impl Resolver {
    /// A resolver reading the process environment each time it resolves.
    pub fn new() -> Self {
        Self {
            env: None,
            cache: Mutex::default(),
        }
    }

    /// A resolver that sees only `env`, never the process environment.
    pub fn with_env(env: Env) -> Self {
        Self {
            env: Some(env),
            cache: Mutex::default(),
        }
    }

    /// The location `uri` names, configured from the environment and `options`.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidUri`] for a malformed URI, an unknown scheme or a missing bucket;
    /// [`Error::InvalidOption`] for an unknown option key or a bad value;
    /// [`Error::MissingCredentials`] when a store needs credentials and none are configured;
    /// [`Error::Config`] when object_store refuses the configuration.
    pub fn resolve(&self, uri: &str, options: &StorageOptions) -> Result<Location> {
        let shown = redact_uri(uri.trim());
        let invalid = |reason: String| Error::InvalidUri {
            uri: shown.clone(),
            reason,
        };
        let cwd = std::env::current_dir()
            .map_err(|e| invalid(format!("cannot resolve a relative path: {e}")))?;
        let target = uri::parse(uri, &cwd).map_err(|e| {
            invalid(match e {
                UriError::Malformed(reason) => format!("malformed URI: {reason}"),
                UriError::UnsupportedScheme(scheme) => format!(
                    "unsupported scheme `{scheme}` (supported: {})",
                    Scheme::SUPPORTED
                ),
                UriError::MissingBucket(scheme) => {
                    format!("missing bucket name (expected {scheme}://BUCKET/KEY)")
                }
            })
        })?;

        let process_env;
        let env = match &self.env {
            Some(env) => env,
            None => {
                process_env = Env::from_process();
                &process_env
            }
        };
        let config = backend::configure(&target, env, options).map_err(|e| match e {
            ConfigError::InvalidOption { key, reason } => Error::InvalidOption {
                uri: shown.clone(),
                key,
                reason,
            },
            ConfigError::MissingCredentials(hint) => Error::MissingCredentials {
                uri: shown.clone(),
                hint,
            },
        })?;

        let redactor = Redactor::new(config.secrets());
        let (store, hints) = self.store(&config).map_err(|e| Error::Config {
            uri: shown.clone(),
            detail: redactor.redact(&e.to_string()),
        })?;
        let prefix = match target.scheme {
            Scheme::Local => "/".to_owned(),
            Scheme::Memory => format!("memory://{}/", target.authority),
            Scheme::S3 => format!("s3://{}/", target.authority),
            Scheme::Gcs => format!("gs://{}/", target.authority),
            Scheme::Azure | Scheme::Http => redact_uri(&format!("{}/", target.authority)),
        };
        let shown_query = target.query.as_ref().map(|q| {
            let shown = redact_uri(&format!("http://h/?{q}"));
            shown
                .split_once('?')
                .map(|(_, q)| q.to_owned())
                .unwrap_or_default()
        });
        let root = Arc::new(Root {
            scheme: Some(target.scheme),
            caps: Capabilities::of(target.scheme, target.query.is_some()),
            hints,
            prefix,
            shown_query,
            redactor,
        });
        let before_query = uri.trim().split(['?', '#']).next().unwrap_or_default();
        let dir = before_query.ends_with('/');
        let store: Arc<dyn ObjectStore> = match target.scheme {
            // Each local URI is confined to its own checkpoint's directory.
            Scheme::Local => Arc::new(confined::Confined::new(store, &target.path, dir)),
            _ => store,
        };
        Ok(Location {
            store,
            path: target.path,
            dir,
            root,
        })
    }

    /// The source and destination of a copy or conversion, each configured from the
    /// environment, the shared options its kind of store takes, and its own options.
    ///
    /// ```
    /// # fn main() -> ckptio::Result<()> {
    /// use ckptio::{PairOptions, Resolver, StorageOptions};
    ///
    /// let options = PairOptions {
    ///     shared: StorageOptions::new().with("region", "eu-west-1"),
    ///     ..PairOptions::default()
    /// };
    /// let env = ckptio::Env::from_vars([("AWS_ACCESS_KEY_ID", "k"), ("AWS_SECRET_ACCESS_KEY", "s")]);
    /// // `region` configures the bucket; a local path has no such key and is left alone.
    /// let (src, dst) = Resolver::with_env(env).resolve_pair("model.pt", "s3://b/model.pt", &options)?;
    /// assert_eq!(dst.to_string(), "s3://b/model.pt");
    /// # let _ = src;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// As [`Resolver::resolve`] for either side; [`Error::InvalidOption`] naming SRC for a
    /// shared key that neither side's kind of store takes.
    pub fn resolve_pair(
        &self,
        src: &str,
        dst: &str,
        options: &PairOptions,
    ) -> Result<(Location, Location)> {
        let scheme = |uri: &str| {
            uri::parse(uri, std::path::Path::new("/"))
                .ok()
                .map(|t| t.scheme)
        };
        let (src_scheme, dst_scheme) = (scheme(src), scheme(dst));
        // An unparseable side takes every key, so that its URI's error is the one reported.
        let takes =
            |scheme: Option<Scheme>, key: &str| scheme.is_none_or(|s| backend::takes(s, key));
        if let Some((key, _)) = options
            .shared
            .iter()
            .find(|(key, _)| !takes(src_scheme, key) && !takes(dst_scheme, key))
        {
            return Err(Error::InvalidOption {
                uri: redact_uri(src.trim()),
                key: key.to_owned(),
                reason: format!(
                    "not a configuration key of this kind of store, nor of {}'s",
                    redact_uri(dst.trim())
                ),
            });
        }
        let side = |uri: &str, scheme: Option<Scheme>, own: &StorageOptions| {
            let mut merged: StorageOptions = options
                .shared
                .iter()
                .filter(|(key, _)| takes(scheme, key))
                .collect();
            merged.extend(own.iter());
            self.resolve(uri, &merged)
        };
        Ok((
            side(src, src_scheme, &options.src)?,
            side(dst, dst_scheme, &options.dst)?,
        ))
    }

    fn store(&self, config: &StoreConfig) -> Result<CachedStore, object_store::Error> {
        let mut cache = self
            .cache
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(cached) = cache.get(config) {
            return Ok(cached.clone());
        }
        if cache.len() >= CACHE_SOFT_LIMIT {
            cache.retain(|_, (store, _)| Arc::strong_count(store) > 1);
        }
        let built = config.build()?;
        cache.insert(config.clone(), built.clone());
        Ok(built)
    }
}

impl Default for Resolver {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for Resolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let stores = self.cache.lock().map_or(0, |c| c.len());
        f.debug_struct("Resolver")
            .field("env", &self.env)
            .field("stores", &stores)
            .finish()
    }
}

/// Resolves `uri` with the process-wide [`Resolver`] (process environment, shared store cache).
///
/// # Errors
///
/// As [`Resolver::resolve`].
pub fn resolve(uri: &str, options: &StorageOptions) -> Result<Location> {
    global().resolve(uri, options)
}

/// Resolves a source and a destination with the process-wide [`Resolver`]; see
/// [`Resolver::resolve_pair`].
///
/// # Errors
///
/// As [`Resolver::resolve_pair`].
pub fn resolve_pair(src: &str, dst: &str, options: &PairOptions) -> Result<(Location, Location)> {
    global().resolve_pair(src, dst, options)
}

fn global() -> &'static Resolver {
    static GLOBAL: OnceLock<Resolver> = OnceLock::new();
    GLOBAL.get_or_init(Resolver::new)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env() -> Env {
        Env::from_vars([
            ("AWS_ACCESS_KEY_ID", "AKID"),
            ("AWS_SECRET_ACCESS_KEY", "verysecret"),
            ("AWS_REGION", "us-east-1"),
        ])
    }

    #[test]
    fn stores_are_shared_per_bucket_and_configuration() {
        let r = Resolver::with_env(env());
        let none = StorageOptions::new();
        let a = r.resolve("s3://bucket/a", &none).unwrap();
        let b = r.resolve("s3://bucket/b/c", &none).unwrap();
        let other_bucket = r.resolve("s3://other/a", &none).unwrap();
        let other_options = r
            .resolve(
                "s3://bucket/a",
                &StorageOptions::new().with("region", "eu-west-1"),
            )
            .unwrap();
        assert!(Arc::ptr_eq(a.store(), b.store()));
        assert!(!Arc::ptr_eq(a.store(), other_bucket.store()));
        assert!(!Arc::ptr_eq(a.store(), other_options.store()));
    }

    #[test]
    fn a_shared_option_configures_the_sides_whose_store_takes_it() {
        let r = Resolver::with_env(env());
        let region = StorageOptions::new().with("region", "eu-west-1");
        let (_, dst) = r
            .resolve_pair(
                "/tmp/model.pt",
                "s3://bucket/model.pt",
                &PairOptions {
                    shared: region.clone(),
                    ..PairOptions::default()
                },
            )
            .unwrap();
        let with_region = r.resolve("s3://bucket/a", &region).unwrap();
        assert!(Arc::ptr_eq(dst.store(), with_region.store()));

        // A side's own option wins over the shared one.
        let (src, _) = r
            .resolve_pair(
                "s3://bucket/a",
                "/tmp/b",
                &PairOptions {
                    shared: region,
                    src: StorageOptions::new().with("region", "us-east-1"),
                    ..PairOptions::default()
                },
            )
            .unwrap();
        assert!(!Arc::ptr_eq(src.store(), with_region.store()));
    }

    #[test]
    fn a_shared_option_neither_side_takes_and_a_wrong_own_option_are_errors() {
        let r = Resolver::with_env(env());
        let refused = |options: PairOptions| {
            r.resolve_pair("/tmp/a", "s3://bucket/b", &options)
                .unwrap_err()
        };
        let err = refused(PairOptions {
            shared: StorageOptions::new().with("endpiont", "http://x"),
            ..PairOptions::default()
        });
        assert_eq!(
            err.to_string(),
            "/tmp/a: invalid option `endpiont`: not a configuration key of this kind of store, \
             nor of s3://bucket/b's"
        );
        let err = refused(PairOptions {
            src: StorageOptions::new().with("region", "eu-west-1"),
            ..PairOptions::default()
        });
        assert!(
            matches!(&err, Error::InvalidOption { uri, key, .. } if uri == "/tmp/a" && key == "region"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn a_local_file_systems_own_failure_is_a_local_io_error() {
        use object_store::ObjectStoreExt;
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("file"), "x").unwrap();
        let under = format!("{}/file/x.pt", dir.path().display());
        let loc = resolve(&under, &StorageOptions::new()).unwrap();
        let err = loc
            .store()
            .put(loc.path(), vec![1u8].into())
            .await
            .map_err(|e| loc.error("put", e))
            .unwrap_err();
        assert!(
            matches!(&err, Error::LocalIo { action: "write", source, .. }
                if source.kind() == std::io::ErrorKind::NotADirectory),
            "{err:?}"
        );
        assert!(
            err.to_string()
                .starts_with(&format!("{under}: cannot write: ")),
            "{err}"
        );
    }

    #[test]
    fn memory_stores_are_shared_by_name_across_resolvers() {
        let r = Resolver::with_env(Env::default());
        let a = r.resolve("memory://x/1", &StorageOptions::new()).unwrap();
        let b = Resolver::new()
            .resolve("memory://x/2", &StorageOptions::new())
            .unwrap();
        let c = r.resolve("memory://y/1", &StorageOptions::new()).unwrap();
        assert!(Arc::ptr_eq(a.store(), b.store()));
        assert!(!Arc::ptr_eq(a.store(), c.store()));
    }

    #[test]
    fn display_is_canonical_and_redacted() {
        let r = Resolver::with_env(env());
        let loc = r
            .resolve(
                "https://u:pw@h:8443/a/b.bin?X-Amz-Signature=sig&X-Amz-Expires=9",
                &StorageOptions::new(),
            )
            .unwrap();
        assert_eq!(loc.path().as_ref(), "a/b.bin");
        assert_eq!(
            loc.to_string(),
            "https://u:REDACTED@h:8443/a/b.bin?X-Amz-Signature=REDACTED&X-Amz-Expires=9"
        );
        assert!(!format!("{loc:?}").contains("sig&"));
        let loc = r
            .resolve("/data/../data/x.pt", &StorageOptions::new())
            .unwrap();
        assert_eq!(loc.to_string(), "/data/x.pt");
        let loc = r
            .resolve("s3://bucket/dir/", &StorageOptions::new())
            .unwrap();
        assert_eq!(
            loc.join("model.safetensors").to_string(),
            "s3://bucket/dir/model.safetensors"
        );
    }

    #[test]
    fn join_keeps_a_listed_name_as_the_key_it_is() {
        let dir = resolve("memory://m/run/", &StorageOptions::new()).unwrap();
        for name in [
            "ünï%code+plus.bin",
            "dir with space/x.bin",
            "a%2Fb",
            "~x#y?z",
        ] {
            assert_eq!(dir.join(name).path().as_ref(), format!("run/{name}"));
        }
        // What no key segment may be is escaped, never a step up.
        assert_eq!(dir.join("../x").path().as_ref(), "run/%2E%2E/x");
        assert_eq!(dir.join("./x").path().as_ref(), "run/%2E/x");
    }

    #[test]
    fn no_credentials_from_the_metadata_service_says_what_to_set_for_that_store() {
        let r = Resolver::with_env(Env::default());
        let failed = || object_store::Error::Generic {
            store: "store",
            source: "Error performing token request: Error performing GET \
                     http://169.254.169.254/metadata/identity/oauth2/token: timed out"
                .into(),
        };
        for (uri, set) in [
            ("s3://b/k", "AWS_ACCESS_KEY_ID"),
            ("gs://b/k", "GOOGLE_APPLICATION_CREDENTIALS"),
            (
                "abfss://c@a.dfs.core.windows.net/k",
                "AZURE_STORAGE_ACCOUNT_KEY",
            ),
        ] {
            let loc = r.resolve(uri, &StorageOptions::new()).unwrap();
            let err = loc.error("stat", failed());
            assert!(matches!(err, Error::MissingCredentials { .. }), "{err:?}");
            let shown = err.to_string();
            assert!(
                shown.starts_with(&format!("{uri}: no credentials: set {set}"))
                    && shown.contains("metadata service gave none"),
                "{shown}"
            );
        }
    }

    #[test]
    fn errors_name_the_uri_and_never_a_secret() {
        let r = Resolver::with_env(env());
        let cases = [
            ("ftp://h/x?token=tok1234", "unsupported scheme `ftp`"),
            ("s3:///key", "missing bucket name"),
            ("http://u:pw12345@/x", "malformed URI"),
        ];
        for (uri, expected) in cases {
            let err = r.resolve(uri, &StorageOptions::new()).unwrap_err();
            let shown = format!("{err} {err:?}");
            assert!(shown.contains(expected), "{shown}");
            assert!(
                !shown.contains("tok1234") && !shown.contains("pw12345"),
                "{shown}"
            );
        }
        let err = r
            .resolve(
                "s3://b/k",
                &StorageOptions::new().with("request_retries", "many"),
            )
            .unwrap_err();
        assert!(
            matches!(err, Error::InvalidOption { ref key, .. } if key == "request_retries"),
            "{err}"
        );
    }
}
