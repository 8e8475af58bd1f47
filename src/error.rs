//! ckptio's error type. Every variant names the URI it is about, already redacted: no secret
//! key, session token, presigned signature or password reaches an error's Display or Debug.

use std::error::Error as StdError;

use object_store::client::{HttpError, HttpErrorKind};

use crate::location::{Redactor, Scheme};

/// A `Result` with ckptio's [`enum@Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong, and with which URI.
///
/// Callers branch on the variant (a missing object, a permission problem, an unreachable
/// endpoint); the message is for people. `detail` fields carry the underlying cause as text,
/// redacted, rather than the source error, whose own messages may embed secrets.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The URI could not be parsed.
    #[error("{uri}: malformed URI: {reason}")]
    InvalidUri {
        /// The URI, redacted.
        uri: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The URI's scheme is not one ckptio knows.
    #[error(
        "{uri}: unsupported scheme `{scheme}` (supported: {})",
        Scheme::SUPPORTED
    )]
    UnsupportedScheme {
        /// The URI, redacted.
        uri: String,
        /// The scheme that was given.
        scheme: String,
    },
    /// A bucket or container URI without the bucket.
    #[error("{uri}: missing bucket name (expected {scheme}://BUCKET/KEY)")]
    MissingBucket {
        /// The URI, redacted.
        uri: String,
        /// The URI's scheme.
        scheme: String,
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
    /// No credentials were found for a store that needs them.
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
    /// The credentials were accepted but do not allow this (HTTP 403, or a local permission).
    #[error("{uri}: permission denied (wrong credentials, or no access to this object): {detail}")]
    PermissionDenied {
        /// The URI, redacted.
        uri: String,
        /// The cause, redacted.
        detail: String,
    },
    /// The server did not accept the credentials (HTTP 401).
    #[error("{uri}: not authenticated (credentials missing or rejected): {detail}")]
    Unauthenticated {
        /// The URI, redacted.
        uri: String,
        /// The cause, redacted.
        detail: String,
    },
    /// The endpoint could not be reached (refused connection, unknown host, TLS failure).
    #[error("{uri}: cannot reach the endpoint: {detail}")]
    Unreachable {
        /// The URI, redacted.
        uri: String,
        /// The cause, redacted.
        detail: String,
    },
    /// The server stopped answering within the configured timeouts.
    #[error("{uri}: timed out: {detail}")]
    TimedOut {
        /// The URI, redacted.
        uri: String,
        /// The cause, redacted.
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
    /// A byte range outside the object was asked for.
    #[error("{uri}: bytes {start}..{end} are outside the object ({size} bytes)")]
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
    /// The object is too large to hold in memory on this machine.
    #[error("{uri}: {size} bytes do not fit in memory; download to a file instead")]
    TooLarge {
        /// The URI, redacted.
        uri: String,
        /// The object's size.
        size: u64,
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
    /// A safetensors file whose header is invalid.
    #[error("{uri}: not a valid safetensors file: {problem}")]
    Safetensors {
        /// The URI, redacted.
        uri: String,
        /// What is wrong with the header.
        problem: crate::format::safetensors::HeaderError,
    },
    /// A zip archive (a torch checkpoint) whose directory or local headers are invalid.
    #[error("{uri}: {problem}")]
    Zip {
        /// The URI, redacted.
        uri: String,
        /// What is wrong.
        problem: crate::format::zip::ZipError,
    },
    /// A pickle that cannot be read, or is refused.
    #[error("{uri}: `{record}`: {problem}")]
    Pickle {
        /// The URI, redacted.
        uri: String,
        /// The pickle's name inside the checkpoint (`archive/data.pkl`).
        record: String,
        /// What is wrong, and where.
        problem: crate::format::pickle::PickleError,
    },
    /// A torch checkpoint whose records do not fit together (a tensor without its storage
    /// record, a compressed entry, arguments of the wrong kind, ...).
    #[error("{uri}: {problem}")]
    Torch {
        /// The URI, redacted.
        uri: String,
        /// What is wrong.
        problem: String,
    },
    /// A ckptio checkpoint whose manifest does not validate, or whose data files do not match
    /// it (missing, or of another size).
    #[error("{uri}: {problem}")]
    Checkpoint {
        /// The URI of the manifest or data file, redacted.
        uri: String,
        /// What is wrong.
        problem: String,
    },
    /// Stored bytes that do not match their checksum.
    #[error("{uri}: tensor `{path}`: `{record}` is corrupt: expected {expected}, computed {found}")]
    Checksum {
        /// The URI of the object holding the record, redacted.
        uri: String,
        /// The tensor being read.
        path: String,
        /// The checksummed record (a zip entry, a data file).
        record: String,
        /// The checksum stored with the data (`CRC-32C 1a2b3c4d`).
        expected: String,
        /// The checksum of the bytes read.
        found: String,
    },
    /// A checkpoint that is already committed (its manifest exists), or that another writer
    /// committed first.
    #[error("{uri}: the checkpoint is already committed (its manifest exists)")]
    AlreadyCommitted {
        /// The checkpoint's URI, redacted.
        uri: String,
    },
    /// A checkpoint format ckptio recognizes but does not read yet.
    #[error("{uri}: this is {what}, which ckptio cannot read yet")]
    UnsupportedFormat {
        /// The URI, redacted.
        uri: String,
        /// What the file looks like.
        what: &'static str,
    },
    /// No tensor of that name in the file.
    #[error("{uri}: no tensor named `{name}`")]
    NoSuchTensor {
        /// The URI, redacted.
        uri: String,
        /// The name asked for.
        name: String,
    },
    /// A tensor whose stored layout does not fit its range, or that has no data.
    #[error("{uri}: tensor `{path}` {reason}")]
    Tensor {
        /// The URI of the object holding it, redacted (`(no data source)` for an abstract tensor).
        uri: String,
        /// The tensor's path in its tree.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// Any other failure of a storage operation.
    #[error("{uri}: {operation} failed: {detail}")]
    Storage {
        /// The URI, redacted.
        uri: String,
        /// What was being done (`stat`, `get`, `list`, ...).
        operation: &'static str,
        /// The cause, redacted.
        detail: String,
    },
}

impl Error {
    /// The (redacted) URI the error is about (for [`Error::LocalIo`], the local path).
    pub fn uri(&self) -> &str {
        match self {
            Self::InvalidUri { uri, .. }
            | Self::UnsupportedScheme { uri, .. }
            | Self::MissingBucket { uri, .. }
            | Self::InvalidOption { uri, .. }
            | Self::MissingCredentials { uri, .. }
            | Self::Config { uri, .. }
            | Self::NotFound { uri }
            | Self::PermissionDenied { uri, .. }
            | Self::Unauthenticated { uri, .. }
            | Self::Unreachable { uri, .. }
            | Self::TimedOut { uri, .. }
            | Self::ObjectChanged { uri, .. }
            | Self::RangeFailed { uri, .. }
            | Self::InvalidRange { uri, .. }
            | Self::TooLarge { uri, .. }
            | Self::Safetensors { uri, .. }
            | Self::UnsupportedFormat { uri, .. }
            | Self::Zip { uri, .. }
            | Self::Pickle { uri, .. }
            | Self::Torch { uri, .. }
            | Self::Checkpoint { uri, .. }
            | Self::Checksum { uri, .. }
            | Self::AlreadyCommitted { uri, .. }
            | Self::NoSuchTensor { uri, .. }
            | Self::Tensor { uri, .. }
            | Self::Storage { uri, .. } => uri,
            Self::LocalIo { path, .. } => path,
        }
    }

    /// Whether the error says the object does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(self, Self::NotFound { .. })
    }

    /// Classifies an object_store error from `operation` on `uri`, redacting its text.
    pub(crate) fn from_store(
        err: object_store::Error,
        uri: String,
        operation: &'static str,
        redactor: &Redactor,
    ) -> Self {
        use object_store::Error as E;
        let detail = redactor.redact(&chain(&err));
        match err {
            E::NotFound { .. } => Self::NotFound { uri },
            E::PermissionDenied { .. } => Self::PermissionDenied { uri, detail },
            E::Unauthenticated { .. } => Self::Unauthenticated { uri, detail },
            _ => match transport_kind(&err) {
                Some(Transport::Unreachable) => Self::Unreachable { uri, detail },
                Some(Transport::TimedOut) => Self::TimedOut { uri, detail },
                Some(Transport::Denied) => Self::PermissionDenied { uri, detail },
                Some(Transport::Missing) => Self::NotFound { uri },
                None => Self::Storage {
                    uri,
                    operation,
                    detail,
                },
            },
        }
    }
}

enum Transport {
    Unreachable,
    TimedOut,
    Denied,
    Missing,
}

/// The first cause in the chain that says what kind of transport or filesystem failure this was.
fn transport_kind(err: &(dyn StdError + 'static)) -> Option<Transport> {
    use std::io::ErrorKind as Io;
    let mut cause: Option<&(dyn StdError + 'static)> = Some(err);
    while let Some(e) = cause {
        if let Some(http) = e.downcast_ref::<HttpError>() {
            match http.kind() {
                HttpErrorKind::Connect => return Some(Transport::Unreachable),
                HttpErrorKind::Timeout => return Some(Transport::TimedOut),
                _ => {}
            }
        }
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            match io.kind() {
                Io::ConnectionRefused
                | Io::HostUnreachable
                | Io::NetworkUnreachable
                | Io::AddrNotAvailable => return Some(Transport::Unreachable),
                Io::TimedOut => return Some(Transport::TimedOut),
                Io::PermissionDenied => return Some(Transport::Denied),
                Io::NotFound => return Some(Transport::Missing),
                _ => {}
            }
        }
        cause = e.source();
    }
    None
}

/// An error and its causes as one line, skipping causes whose text the parent already shows.
fn chain(err: &(dyn StdError + 'static)) -> String {
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

    fn classify(err: object_store::Error) -> Error {
        let redactor = Redactor::new(["s3cr3tvalue".to_owned()]);
        Error::from_store(err, "s3://b/k".into(), "stat", &redactor)
    }

    #[test]
    fn not_found_names_the_uri() {
        let err = classify(object_store::Error::NotFound {
            path: "k".into(),
            source: "404".into(),
        });
        assert!(err.is_not_found());
        assert_eq!(err.to_string(), "s3://b/k: not found");
    }

    #[test]
    fn permission_denied_is_classified_and_redacted() {
        let source = "403 Forbidden: SignatureDoesNotMatch for s3cr3tvalue".into();
        let err = classify(object_store::Error::PermissionDenied {
            path: "k".into(),
            source,
        });
        assert!(matches!(err, Error::PermissionDenied { .. }), "{err:?}");
        let shown = format!("{err} {err:?}");
        assert!(!shown.contains("s3cr3tvalue"), "{shown}");
        assert!(shown.contains("SignatureDoesNotMatch"), "{shown}");
    }

    #[test]
    fn io_causes_are_classified() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        let err = classify(object_store::Error::Generic {
            store: "S3",
            source: Box::new(io),
        });
        assert!(matches!(err, Error::Unreachable { .. }), "{err:?}");
        let io = std::io::Error::other("disk on fire");
        let err = classify(object_store::Error::Generic {
            store: "S3",
            source: Box::new(io),
        });
        assert!(
            matches!(
                err,
                Error::Storage {
                    operation: "stat",
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(err.to_string().contains("disk on fire"));
    }
}
