//! ckptio's error type: one `#[non_exhaustive]` enum whose variants are the situations callers
//! handle differently. Every variant names the URI it is about, already redacted: no secret
//! key, session token, presigned signature or password reaches an error's Display or Debug.
//!
//! A format's own error (a safetensors header problem, a pickle refused at some byte) is the
//! `source` of [`Error::Corrupt`], [`Error::Unsafe`] or [`Error::Unsupported`], so callers
//! branch on the situation and people read the details.
//!
//! This module sits at the bottom of the crate: it depends on nothing of ckptio's.

mod classify;

pub(crate) use classify::{Class, classify, http_status};

/// A `Result` with ckptio's [`enum@Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A format's own error, carried as a `source`.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// What went wrong, and with which URI.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let loc = ckptio::resolve("memory://doc-error/absent.safetensors", &Default::default()).unwrap();
/// match ckptio::open(&loc, Default::default()).await {
///     Err(ckptio::Error::NotFound { uri }) => assert_eq!(uri, "memory://doc-error/absent.safetensors"),
///     other => panic!("{other:?}"),
/// }
/// # }
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The URI could not be parsed, names an unknown scheme, or lacks its bucket.
    #[error("{uri}: {reason}")]
    InvalidUri {
        /// The URI, redacted.
        uri: String,
        /// What is wrong with it.
        reason: String,
    },
    /// An option or setting that is unknown or has a bad value.
    #[error("{uri}: invalid option `{key}`: {reason}")]
    InvalidOption {
        /// The URI, redacted.
        uri: String,
        /// The option's key.
        key: String,
        /// What is wrong with it.
        reason: String,
    },
    /// No credentials were found for a store that needs them: none are configured and either
    /// the cloud's metadata service is off (nothing was sent) or it gave none.
    #[error("{uri}: no credentials: {hint}")]
    MissingCredentials {
        /// The URI, redacted.
        uri: String,
        /// How to provide them.
        hint: String,
    },
    /// The store could not be configured (a credentials file that does not parse, say).
    #[error("{uri}: cannot configure the store: {detail}")]
    Config {
        /// The URI, redacted.
        uri: String,
        /// The cause, redacted.
        detail: String,
    },
    /// No object at this URI.
    #[error("{uri}: not found")]
    NotFound {
        /// The URI, redacted.
        uri: String,
    },
    /// A write found nowhere to put the object: its bucket or container (or, on a WebDAV
    /// server, its parent collection) does not exist.
    #[error("{uri}: cannot write: its bucket or container does not exist ({detail})")]
    NoContainer {
        /// The URI, redacted.
        uri: String,
        /// The store's words, redacted.
        detail: String,
    },
    /// The URI names a directory (a prefix) that exists but holds no checkpoint ckptio reads.
    #[error("{uri}: {}", no_checkpoint(found, hint))]
    NoCheckpoint {
        /// The directory's URI, redacted.
        uri: String,
        /// Some of the names found in it (at most 12, then how many more).
        found: Vec<String>,
        /// What the names suggest (an unfinished save, say), if anything.
        hint: Option<String>,
    },
    /// No tensor of that name or path in the checkpoint.
    #[error("{uri}: no tensor named `{name}`")]
    NoSuchTensor {
        /// The URI, redacted.
        uri: String,
        /// The name asked for.
        name: String,
    },
    /// The credentials were missing, rejected (HTTP 401) or do not allow this (HTTP 403, a
    /// local permission).
    #[error("{uri}: permission denied (wrong credentials, or no access to this object): {detail}")]
    PermissionDenied {
        /// The URI, redacted.
        uri: String,
        /// The cause, redacted.
        detail: String,
    },
    /// The request failed on the way: the endpoint could not be reached, stopped answering,
    /// or answered with an error. [`Error::is_retryable`] says whether trying again can help.
    #[error("{uri}: {}: {detail}", kind.describe(operation))]
    Transport {
        /// The URI, redacted.
        uri: String,
        /// What was being done (`stat`, `get`, `list`, `put`, ...).
        operation: &'static str,
        /// What kind of failure.
        kind: TransportKind,
        /// The cause, redacted.
        detail: String,
    },
    /// A byte range could not be read within the retry budget.
    #[error("{uri}: bytes {start}..{end}: failed after {attempts} attempt(s): {detail}")]
    RangeFailed {
        /// The URI, redacted.
        uri: String,
        /// First byte of the range.
        start: u64,
        /// End of the range (exclusive).
        end: u64,
        /// Attempts made.
        attempts: usize,
        /// The last cause, redacted.
        detail: String,
    },
    /// The object was replaced while it was being read: its ETag changed. Nothing mixing old
    /// and new bytes is ever returned or left under the destination's name.
    #[error(
        "{uri}: the object changed while it was being read (ETag {expected} became {found}); start again to read the new version"
    )]
    ObjectChanged {
        /// The URI, redacted.
        uri: String,
        /// The ETag when the read began.
        expected: String,
        /// The ETag the server reported later (`unknown` if it would not say).
        found: String,
    },
    /// A byte range outside the object, or one that ends before it starts, was asked for.
    #[error("{uri}: bytes {start}..{end} {}", range_problem(*.start, *.end, *.size))]
    InvalidRange {
        /// The URI, redacted.
        uri: String,
        /// First byte asked for.
        start: u64,
        /// End asked for (exclusive).
        end: u64,
        /// The object's size.
        size: u64,
    },
    /// Something too large to hold in memory on this machine.
    #[error("{uri}: {size} bytes do not fit in memory{}", if *streamable { "; download to a file or stream instead" } else { "" })]
    TooLarge {
        /// The URI, redacted.
        uri: String,
        /// The size asked for.
        size: u64,
        /// Whether a streaming or file-based call would avoid holding it.
        streamable: bool,
    },
    /// A local file (a download's destination, its `.part` file) could not be used.
    #[error("{path}: cannot {action}: {source}")]
    LocalIo {
        /// The local path.
        path: String,
        /// What was being done (`create`, `write`, `rename into place`, ...).
        action: &'static str,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// A file whose bytes are not what its format says: a bad header, a truncated archive, a
    /// checksum that does not match, records that do not fit together. The format's own error
    /// says what and where.
    #[error("{uri}: {source}")]
    Corrupt {
        /// The URI of the file at fault, redacted.
        uri: String,
        /// The format's own error.
        source: BoxError,
    },
    /// Something ckptio refuses to touch, whatever the credentials: a pickle that names a
    /// global that can run code (or, in strict mode, one it does not understand; nothing was
    /// executed), or a path whose symbolic link leads out of the checkpoint's directory
    /// ([`Escape`]).
    #[error("{uri}: {source}")]
    Unsafe {
        /// The URI of the file, redacted.
        uri: String,
        /// Which global, in which record, at which byte.
        source: BoxError,
    },
    /// A format (or a feature of one) ckptio recognizes but does not read.
    #[error("{uri}: {what}")]
    Unsupported {
        /// The URI, redacted.
        uri: String,
        /// What it is, and what to do about it.
        what: String,
    },
    /// A checkpoint that is already committed (its commit marker exists), or that another
    /// writer committed first.
    #[error("{uri}: the checkpoint is already committed (its commit marker exists)")]
    AlreadyCommitted {
        /// The checkpoint's URI, redacted.
        uri: String,
    },
    /// A call that cannot be carried out as asked (materializing an abstract tensor, a row
    /// range out of bounds, a tensor of a partial byte).
    #[error("{what}: {reason}")]
    InvalidArgument {
        /// What the argument names (a tensor's path, a URI).
        what: String,
        /// What is wrong.
        reason: String,
    },
}

/// A request that would leave a local checkpoint's directory through a symbolic link: the
/// source of an [`Error::Unsafe`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "`{}` leads to `{}`, outside `{}`: ckptio does not follow symbolic links out of a \
     checkpoint's directory",
    path.display(),
    target.display(),
    root.display()
)]
pub struct Escape {
    /// The path asked for.
    pub path: std::path::PathBuf,
    /// Where its links lead.
    pub target: std::path::PathBuf,
    /// The directory requests must stay in.
    pub root: std::path::PathBuf,
}

/// A local file refused because it exists and is not a regular file. A write puts a staging
/// file and renames it over the target, which would replace a device or a FIFO; a read asks
/// for byte ranges of a size the file system reports as 0, which a pipe cannot serve.
#[derive(Debug, Clone, thiserror::Error)]
#[error("a {kind}, not a regular file: {}", if *.write {
    "writing there would replace it with the file written, so ckptio does not"
} else {
    "ckptio reads a file by byte ranges, which it cannot serve (copy it into a file first)"
})]
pub(crate) struct NotAFile {
    /// The path asked for.
    pub path: std::path::PathBuf,
    /// What it is (`character device`, `FIFO`, ...).
    pub kind: &'static str,
    /// Whether it was to be written (else read).
    pub write: bool,
}

/// The `T` that caused `err`, if one did.
fn cause_in<'e, T: std::error::Error + 'static>(
    err: &'e (dyn std::error::Error + 'static),
) -> Option<&'e T> {
    let mut at: Option<&'e (dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = at {
        if let Some(found) = e.downcast_ref::<T>() {
            return Some(found);
        }
        at = e.source();
    }
    None
}

/// How many names an [`Error::NoCheckpoint`] shows.
pub(crate) const NO_CHECKPOINT_NAMES: usize = 12;

fn no_checkpoint(found: &[String], hint: &Option<String>) -> String {
    let mut text = if found.is_empty() {
        "holds no checkpoint ckptio reads".to_owned()
    } else {
        format!(
            "holds no checkpoint ckptio reads (found: {})",
            found.join(", ")
        )
    };
    if let Some(hint) = hint {
        text.push_str("; ");
        text.push_str(hint);
    }
    text
}

fn range_problem(start: u64, end: u64, size: u64) -> String {
    if start > end {
        "end before they start".to_owned()
    } else {
        format!("are outside the object ({size} bytes)")
    }
}

/// What kind of transport failure an [`Error::Transport`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum TransportKind {
    /// The endpoint could not be reached (refused connection, unknown host, TLS failure).
    Unreachable,
    /// The server stopped answering within the configured timeouts.
    TimedOut,
    /// The server failed (5xx) or asked to slow down (429): worth retrying later.
    ServerBusy,
    /// The server refused the request for good (a 4xx other than 408 and 429).
    Rejected,
    /// Anything else (a broken body, a local I/O failure of the store).
    Other,
}

impl TransportKind {
    /// Whether trying again later can succeed.
    pub fn is_retryable(self) -> bool {
        !matches!(self, Self::Rejected)
    }

    fn describe(self, operation: &str) -> String {
        match self {
            Self::Unreachable => "cannot reach the endpoint".to_owned(),
            Self::TimedOut => "timed out".to_owned(),
            _ => format!("{operation} failed"),
        }
    }
}

impl Error {
    /// The (redacted) URI the error is about (for [`Error::LocalIo`], the local path; for
    /// [`Error::InvalidArgument`], what the argument names).
    pub fn uri(&self) -> &str {
        match self {
            Self::InvalidUri { uri, .. }
            | Self::InvalidOption { uri, .. }
            | Self::MissingCredentials { uri, .. }
            | Self::Config { uri, .. }
            | Self::NotFound { uri }
            | Self::NoContainer { uri, .. }
            | Self::NoCheckpoint { uri, .. }
            | Self::NoSuchTensor { uri, .. }
            | Self::PermissionDenied { uri, .. }
            | Self::Transport { uri, .. }
            | Self::RangeFailed { uri, .. }
            | Self::ObjectChanged { uri, .. }
            | Self::InvalidRange { uri, .. }
            | Self::TooLarge { uri, .. }
            | Self::Corrupt { uri, .. }
            | Self::Unsafe { uri, .. }
            | Self::Unsupported { uri, .. }
            | Self::AlreadyCommitted { uri } => uri,
            Self::LocalIo { path, .. } => path,
            Self::InvalidArgument { what, .. } => what,
        }
    }

    /// Whether the error says the object does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(self, Self::NotFound { .. })
    }

    /// Whether trying the same thing again later can succeed: a transport failure that is not
    /// a refusal, or a range that ran out of retries.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Transport { kind, .. } => kind.is_retryable(),
            Self::RangeFailed { .. } => true,
            _ => false,
        }
    }

    /// A corrupt-file error about `uri`, with the format's own error as its source.
    pub(crate) fn corrupt(uri: impl Into<String>, source: impl Into<BoxError>) -> Self {
        Self::Corrupt {
            uri: uri.into(),
            source: source.into(),
        }
    }

    /// Whether this is the error of a server that ignores range requests.
    pub(crate) fn is_ranges_ignored(&self) -> bool {
        matches!(self, Self::Unsupported { what, .. } if what == RANGES_IGNORED)
    }

    /// The error for `err`, which `operation` on `uri` returned; `redact` scrubs the cause's
    /// text (object_store's messages can hold URLs with signatures), and `credentials` says how
    /// this kind of store is given credentials, for an error that found none.
    pub(crate) fn from_store(
        err: object_store::Error,
        uri: String,
        operation: &'static str,
        redact: &dyn Fn(&str) -> String,
        credentials: Option<&str>,
    ) -> Self {
        if let Some(escape) = cause_in::<Escape>(&err) {
            return Self::Unsafe {
                uri,
                source: Box::new(escape.clone()),
            };
        }
        if let Some(not_a_file) = cause_in::<NotAFile>(&err) {
            return Self::Unsupported {
                uri,
                what: not_a_file.to_string(),
            };
        }
        if ranges_ignored(&err) {
            return Self::Unsupported {
                uri,
                what: RANGES_IGNORED.to_owned(),
            };
        }
        let detail = redact(&chain(&err));
        match classify(&err) {
            // A write creates its object: what is missing is where it goes (unless it is the
            // multipart upload itself, aborted meanwhile).
            Class::NotFound if operation == "put" && !detail.contains("NoSuchUpload") => {
                Self::NoContainer { uri, detail }
            }
            Class::NotFound if operation == "put" => Self::Transport {
                uri,
                operation,
                kind: TransportKind::Rejected,
                detail,
            },
            Class::NotFound => Self::NotFound { uri },
            Class::Denied => Self::PermissionDenied { uri, detail },
            Class::NoCredentials => Self::MissingCredentials {
                uri,
                hint: format!(
                    "{}none are configured, and the cloud's metadata service gave none ({detail})",
                    credentials.map_or_else(String::new, |how| format!("{how}; "))
                ),
            },
            Class::Transport(kind) => Self::Transport {
                uri,
                operation,
                kind,
                detail,
            },
            Class::Precondition | Class::AlreadyExists | Class::NotImplemented => Self::Transport {
                uri,
                operation,
                kind: TransportKind::Rejected,
                detail,
            },
        }
    }
}

/// What [`Error::Unsupported`] says of a server that answers a range request with the whole
/// object.
const RANGES_IGNORED: &str = "the server ignores HTTP Range requests (it answers with the \
    whole object), and ckptio reads a part of an object by ranges: `ckptio get` (Python: \
    `download`) fetches it whole in one stream, to open from disk; or serve it from a server \
    that honours Range (nginx, Caddy, any object store)";

/// Whether the store refused a range request because the server sent the whole object (an
/// HTTP server without Range support). object_store says so only in its error's text.
pub(crate) fn ranges_ignored(err: &object_store::Error) -> bool {
    matches!(err, object_store::Error::NotSupported { .. })
        && chain(err).contains("Range request not supported")
}

/// A checksum that does not match: the source of an [`Error::Corrupt`] about a tensor.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("tensor `{path}`: `{record}` is corrupt: expected {expected}, computed {found}")]
pub struct ChecksumMismatch {
    /// The tensor being read.
    pub path: String,
    /// The checksummed record (a zip entry, a data file).
    pub record: String,
    /// The checksum stored with the data (`CRC-32C 1a2b3c4d`).
    pub expected: String,
    /// The checksum of the bytes read.
    pub found: String,
}

/// A tensor whose stored layout does not fit its bytes: the source of an [`Error::Corrupt`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("tensor `{path}` {reason}")]
pub struct TensorError {
    /// The tensor's path in its tree.
    pub path: String,
    /// What is wrong.
    pub reason: String,
}

/// An error and its causes as one line, skipping causes whose text the parent already shows.
pub(crate) fn chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut out = err.to_string();
    let mut cause = err.source();
    while let Some(e) = cause {
        let text = e.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        cause = e.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn from_store(err: object_store::Error) -> Error {
        Error::from_store(
            err,
            "s3://b/k".into(),
            "stat",
            &|s: &str| s.replace("s3cr3tvalue", "REDACTED"),
            None,
        )
    }

    #[test]
    fn not_found_names_the_uri() {
        let err = from_store(object_store::Error::NotFound {
            path: "k".into(),
            source: "404".into(),
        });
        assert!(err.is_not_found());
        assert_eq!(err.to_string(), "s3://b/k: not found");
    }

    #[test]
    fn a_write_that_finds_nothing_says_its_bucket_is_missing() {
        let put = |source: &str| {
            let err = object_store::Error::NotFound {
                path: "k".into(),
                source: source.to_owned().into(),
            };
            Error::from_store(err, "s3://b/k".into(), "put", &|s: &str| s.to_owned(), None)
        };
        let err = put("404 Not Found: <Code>NoSuchBucket</Code>");
        assert_eq!(
            err.to_string(),
            "s3://b/k: cannot write: its bucket or container does not exist (Object at location k \
             not found: 404 Not Found: <Code>NoSuchBucket</Code>)"
        );
        let err = put("404 Not Found: <Code>NoSuchUpload</Code>");
        assert!(
            matches!(
                err,
                Error::Transport {
                    kind: TransportKind::Rejected,
                    ..
                }
            ),
            "{err:?}"
        );
    }

    #[test]
    fn permission_denied_is_classified_and_redacted() {
        let source = "403 Forbidden: SignatureDoesNotMatch for s3cr3tvalue".into();
        let err = from_store(object_store::Error::PermissionDenied {
            path: "k".into(),
            source,
        });
        assert!(matches!(err, Error::PermissionDenied { .. }), "{err:?}");
        let shown = format!("{err} {err:?}");
        assert!(!shown.contains("s3cr3tvalue"), "{shown}");
        assert!(shown.contains("SignatureDoesNotMatch"), "{shown}");
        let err = from_store(object_store::Error::Unauthenticated {
            path: "k".into(),
            source: "401".into(),
        });
        assert!(matches!(err, Error::PermissionDenied { .. }), "{err:?}");
    }

    #[test]
    fn io_causes_are_classified() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        let err = from_store(object_store::Error::Generic {
            store: "S3",
            source: Box::new(io),
        });
        assert!(
            matches!(
                err,
                Error::Transport {
                    kind: TransportKind::Unreachable,
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(err.to_string().contains("cannot reach the endpoint"));
        assert!(err.is_retryable());
        let io = std::io::Error::other("disk on fire");
        let err = from_store(object_store::Error::Generic {
            store: "S3",
            source: Box::new(io),
        });
        assert!(
            matches!(
                err,
                Error::Transport {
                    operation: "stat",
                    kind: TransportKind::Other,
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(err.to_string().contains("disk on fire"));
    }

    #[test]
    fn a_refused_request_is_not_retryable() {
        let err = from_store(object_store::Error::Generic {
            store: "HTTP",
            source: "Server returned non-2xx status code: 400 Bad Request: ".into(),
        });
        assert!(!err.is_retryable(), "{err:?}");
        let err = from_store(object_store::Error::Generic {
            store: "HTTP",
            source: "Server returned non-2xx status code: 503 Service Unavailable: ".into(),
        });
        assert!(err.is_retryable(), "{err:?}");
    }

    #[test]
    fn no_checkpoint_lists_what_it_found() {
        let err = Error::NoCheckpoint {
            uri: "/d".into(),
            found: vec!["a.txt".into(), "b/".into()],
            hint: Some("a DCP directory without `.metadata`".into()),
        };
        assert_eq!(
            err.to_string(),
            "/d: holds no checkpoint ckptio reads (found: a.txt, b/); a DCP directory without `.metadata`"
        );
    }
}
