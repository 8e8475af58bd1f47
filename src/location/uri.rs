//! Parsing a URI into the store it names and the object path inside it. Pure: no I/O, no
//! environment (a relative local path is made absolute against a caller-given directory).

use std::path::{Component, Path as FsPath, PathBuf};

use object_store::path::Path;
use url::Url;

/// The kind of store a URI names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Scheme {
    /// A local path or `file://` URL.
    Local,
    /// `s3://` or `s3a://`.
    S3,
    /// `gs://`.
    Gcs,
    /// `az://`, `azure://`, `abfs://`, `abfss://`, `adl://`.
    Azure,
    /// `http://` or `https://`.
    Http,
    /// `memory://NAME/`: an in-memory store shared by every URI with the same name.
    Memory,
}

impl Scheme {
    /// Every URI scheme ckptio accepts, for error messages and docs.
    pub const SUPPORTED: &'static str =
        "file, s3, s3a, gs, az, azure, abfs, abfss, adl, http, https, memory";

    fn from_url_scheme(scheme: &str) -> Option<Self> {
        Some(match scheme {
            "file" => Self::Local,
            "s3" | "s3a" => Self::S3,
            "gs" => Self::Gcs,
            "az" | "azure" | "abfs" | "abfss" | "adl" => Self::Azure,
            "http" | "https" => Self::Http,
            "memory" => Self::Memory,
            _ => return None,
        })
    }
}

/// What a URI names: a store (identified by scheme and `authority`) and a path inside it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Target {
    pub scheme: Scheme,
    /// Bucket, container, `scheme://host:port` for HTTP, memory store name; empty for local.
    pub authority: String,
    /// The object path inside the store (for local files, the absolute path without its `/`).
    pub path: Path,
    /// The query string of an HTTP URI (a presigned URL's signature), kept verbatim.
    pub query: Option<String>,
}

/// Why a URI could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum UriError {
    Malformed(String),
    UnsupportedScheme(String),
    MissingBucket(String),
}

/// Parses `uri`; relative local paths are resolved against `cwd`.
pub(crate) fn parse(uri: &str, cwd: &FsPath) -> Result<Target, UriError> {
    let trimmed = uri.trim();
    if trimmed.is_empty() {
        return Err(UriError::Malformed("empty URI".into()));
    }
    if !trimmed.contains("://") {
        if let Some((scheme, _)) = trimmed.split_once(':')
            && Scheme::from_url_scheme(&scheme.to_ascii_lowercase()).is_some()
            && scheme != "file"
        {
            return Err(UriError::Malformed(format!("expected `{scheme}://`")));
        }
        return local(&cwd.join(trimmed));
    }
    let url = Url::parse(trimmed).map_err(|e| UriError::Malformed(e.to_string()))?;
    if !matches!(url.scheme(), "http" | "https" | "file") {
        refuse_dot_segments(trimmed)?;
    }
    let scheme = Scheme::from_url_scheme(url.scheme())
        .ok_or_else(|| UriError::UnsupportedScheme(url.scheme().to_owned()))?;
    match scheme {
        Scheme::Local => {
            if !matches!(url.host_str(), None | Some("") | Some("localhost")) {
                return Err(UriError::Malformed(
                    "file:// URLs must name a local path (file:///path)".into(),
                ));
            }
            let path = url
                .to_file_path()
                .map_err(|()| UriError::Malformed("not a local file path".into()))?;
            local(&path)
        }
        Scheme::Http => {
            if url.host_str().is_none_or(str::is_empty) {
                return Err(UriError::Malformed("missing host".into()));
            }
            // The origin, userinfo included: credentials belong to the store, not the path.
            let mut origin = url.clone();
            origin.set_path("/");
            origin.set_query(None);
            origin.set_fragment(None);
            let authority = origin.as_str().trim_end_matches('/').to_owned();
            Ok(Target {
                scheme,
                authority,
                path: url_path(&url)?,
                query: url.query().map(str::to_owned),
            })
        }
        Scheme::Azure => {
            // abfss://container@account.dfs.core.windows.net keeps both parts in the authority.
            let host = url.host_str().unwrap_or_default();
            if host.is_empty() {
                return Err(UriError::MissingBucket(url.scheme().to_owned()));
            }
            let authority = match url.username() {
                "" => format!("{}://{host}", url.scheme()),
                user => format!("{}://{user}@{host}", url.scheme()),
            };
            Ok(Target {
                scheme,
                authority,
                path: url_path(&url)?,
                query: None,
            })
        }
        Scheme::S3 | Scheme::Gcs | Scheme::Memory => {
            let bucket = url.host_str().unwrap_or_default();
            if bucket.is_empty() {
                return Err(UriError::MissingBucket(url.scheme().to_owned()));
            }
            if url.query().is_some() {
                return Err(UriError::Malformed(format!(
                    "{}:// URIs take no query string",
                    url.scheme()
                )));
            }
            Ok(Target {
                scheme,
                authority: bucket.to_owned(),
                path: url_path(&url)?,
                query: None,
            })
        }
    }
}

/// Object keys are names, not paths to resolve: URL parsing would turn `s3://b/a/../x` into
/// `s3://b/x`, a different object than the one written, so `.` and `..` segments (also
/// percent-encoded) are refused.
fn refuse_dot_segments(uri: &str) -> Result<(), UriError> {
    let after_scheme = uri.split_once("://").map_or(uri, |(_, rest)| rest);
    let path = after_scheme.split(['?', '#']).next().unwrap_or_default();
    for segment in path.split('/').skip(1) {
        let decoded = segment.to_ascii_lowercase().replace("%2e", ".");
        if decoded == "." || decoded == ".." {
            return Err(UriError::Malformed(format!(
                "`{segment}` segments are not allowed in object keys"
            )));
        }
    }
    Ok(())
}

fn url_path(url: &Url) -> Result<Path, UriError> {
    Path::from_url_path(url.path())
        .map_err(|e| UriError::Malformed(format!("invalid object path: {e}")))
}

/// A local absolute path, lexically normalised (`.` dropped, `..` applied) so that it can be
/// an object_store path; symlinks are left for the filesystem to follow.
fn local(path: &FsPath) -> Result<Target, UriError> {
    let mut normal = PathBuf::from("/");
    for component in path.components() {
        match component {
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
            Component::ParentDir => {
                normal.pop();
            }
            Component::Normal(part) => normal.push(part),
        }
    }
    if !normal.is_absolute() {
        return Err(UriError::Malformed("not an absolute path".into()));
    }
    let path = Path::from_absolute_path(&normal)
        .map_err(|e| UriError::Malformed(format!("invalid local path: {e}")))?;
    Ok(Target {
        scheme: Scheme::Local,
        authority: String::new(),
        path,
        query: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(uri: &str) -> Result<Target, UriError> {
        parse(uri, FsPath::new("/work/run"))
    }

    #[test]
    fn relative_and_absolute_paths_are_local() {
        let t = p("ckpt/model.safetensors").unwrap();
        assert_eq!(
            (t.scheme, t.path.as_ref()),
            (Scheme::Local, "work/run/ckpt/model.safetensors")
        );
        let t = p("/data/./a/../w.pt").unwrap();
        assert_eq!(t.path.as_ref(), "data/w.pt");
        let t = p("../../../../x").unwrap();
        assert_eq!(t.path.as_ref(), "x");
    }

    #[test]
    fn file_urls_are_local_and_percent_decoded() {
        let t = p("file:///data/my%20model.pt").unwrap();
        assert_eq!(
            (t.scheme, t.path.as_ref()),
            (Scheme::Local, "data/my model.pt")
        );
        assert_eq!(p("file://localhost/x").unwrap().path.as_ref(), "x");
        assert!(matches!(
            p("file://otherhost/x"),
            Err(UriError::Malformed(_))
        ));
    }

    #[test]
    fn s3_and_gcs_take_bucket_and_key() {
        let t = p("s3://bucket/dir/model.safetensors").unwrap();
        assert_eq!(
            (t.scheme, t.authority.as_str(), t.path.as_ref()),
            (Scheme::S3, "bucket", "dir/model.safetensors")
        );
        assert_eq!(p("s3a://b/k").unwrap().scheme, Scheme::S3);
        let t = p("gs://bucket/k").unwrap();
        assert_eq!((t.scheme, t.authority.as_str()), (Scheme::Gcs, "bucket"));
        assert_eq!(p("s3://bucket").unwrap().path.as_ref(), "");
        assert_eq!(p("s3://bucket/prefix/").unwrap().path.as_ref(), "prefix");
    }

    #[test]
    fn missing_bucket_is_its_own_error() {
        assert_eq!(p("s3:///key"), Err(UriError::MissingBucket("s3".into())));
        assert_eq!(p("gs://"), Err(UriError::MissingBucket("gs".into())));
    }

    #[test]
    fn http_is_rooted_at_the_origin_and_keeps_the_query() {
        let t = p("https://host:8443/a/b.bin?X-Amz-Signature=abc&x=1").unwrap();
        assert_eq!(t.scheme, Scheme::Http);
        assert_eq!(t.authority, "https://host:8443");
        assert_eq!(t.path.as_ref(), "a/b.bin");
        assert_eq!(t.query.as_deref(), Some("X-Amz-Signature=abc&x=1"));
        assert_eq!(p("http://h/x").unwrap().authority, "http://h");
        assert_eq!(p("http://u:pw@h/x").unwrap().authority, "http://u:pw@h");
    }

    #[test]
    fn azure_keeps_container_and_account() {
        let t = p("abfss://c@acct.dfs.core.windows.net/dir/f").unwrap();
        assert_eq!(
            (t.scheme, t.authority.as_str(), t.path.as_ref()),
            (
                Scheme::Azure,
                "abfss://c@acct.dfs.core.windows.net",
                "dir/f"
            )
        );
        assert_eq!(p("az://container/f").unwrap().authority, "az://container");
    }

    #[test]
    fn unknown_schemes_and_garbage_are_rejected() {
        assert_eq!(
            p("ftp://h/x"),
            Err(UriError::UnsupportedScheme("ftp".into()))
        );
        assert!(matches!(p("s3:bucket/key"), Err(UriError::Malformed(_))));
        assert!(matches!(p("http://"), Err(UriError::Malformed(_))));
        assert!(matches!(p("   "), Err(UriError::Malformed(_))));
        assert!(matches!(
            p("s3://b/k?versionId=1"),
            Err(UriError::Malformed(_))
        ));
    }

    #[test]
    fn dot_segments_in_object_keys_are_refused_not_resolved() {
        for uri in [
            "s3://b/a/../x",
            "s3://b/../../x",
            "gs://b/%2e%2e/x",
            "memory://m/./x",
            "az://c/%2E/x",
        ] {
            assert!(
                matches!(p(uri), Err(UriError::Malformed(ref m)) if m.contains("not allowed")),
                "{uri}: {:?}",
                p(uri)
            );
        }
        assert_eq!(
            p("s3://b/a..b/.x").unwrap().path.as_ref(),
            "a..b/.x",
            "dots inside names are fine"
        );
        assert_eq!(
            p("http://h/a/../x").unwrap().path.as_ref(),
            "x",
            "web URLs normalize as browsers do"
        );
    }

    #[test]
    fn memory_names_a_shared_store() {
        let t = p("memory://scratch/a/b").unwrap();
        assert_eq!(
            (t.scheme, t.authority.as_str(), t.path.as_ref()),
            (Scheme::Memory, "scratch", "a/b")
        );
    }
}
