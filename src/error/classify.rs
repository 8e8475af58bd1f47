//! The one place that decides what an object_store error means: which [`Error`](super::Error)
//! it becomes, and whether the retry policy may try again.
//!
//! object_store keeps HTTP status codes only in its error text (its `RetryError` is private),
//! so a status is read from the text as "status code: NNN"; the unit tests pin the form.

use std::error::Error as StdError;

use object_store::client::{HttpError, HttpErrorKind};

use super::TransportKind;

/// What an object_store error means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Class {
    /// No such object (404, a missing local file).
    NotFound,
    /// Credentials missing, rejected or insufficient (401, 403, a local permission).
    Denied,
    /// A conditional request whose condition failed (412): the object changed.
    Precondition,
    /// A create-only put found the object there.
    AlreadyExists,
    /// The store does not implement the operation (a conditional put over plain HTTP).
    NotImplemented,
    /// No credentials were configured, and the cloud's instance metadata service, where
    /// object_store then asks for them, gave none (off the cloud it is not there at all).
    NoCredentials,
    /// A transport failure of the given kind.
    Transport(TransportKind),
}

impl Class {
    /// Whether the fetch retry policy may try the request again.
    pub(crate) fn is_transient(self) -> bool {
        matches!(self, Self::Transport(kind) if kind.is_retryable())
    }
}

/// What `err` means.
pub(crate) fn classify(err: &object_store::Error) -> Class {
    use object_store::Error as E;
    match err {
        E::NotFound { .. } => Class::NotFound,
        E::PermissionDenied { .. } | E::Unauthenticated { .. } => Class::Denied,
        E::Precondition { .. } => Class::Precondition,
        E::AlreadyExists { .. } => Class::AlreadyExists,
        E::NotImplemented { .. } | E::NotSupported { .. } => Class::NotImplemented,
        _ if asked_metadata_service(err) => Class::NoCredentials,
        _ => from_causes(err),
    }
}

/// Where object_store's credential providers ask when no credentials are configured: AWS's and
/// Azure's instance metadata service, ECS's task credentials, GCE's metadata server (as the
/// start of a URL, so that an object named after one is not taken for it).
const METADATA_SERVICES: [&str; 3] = [
    "://169.254.169.254",
    "://169.254.170.2",
    "://metadata.google.internal",
];

/// Whether `err` is a failed request for credentials to a metadata service: the failure is
/// the credentials', whatever status or connection error it carries.
fn asked_metadata_service(err: &(dyn StdError + 'static)) -> bool {
    let mut cause: Option<&(dyn StdError + 'static)> = Some(err);
    while let Some(e) = cause {
        let text = e.to_string();
        if METADATA_SERVICES.iter().any(|host| text.contains(host)) {
            return true;
        }
        cause = e.source();
    }
    false
}

/// The first cause in the chain that says what kind of failure this was.
fn from_causes(err: &(dyn StdError + 'static)) -> Class {
    use std::io::ErrorKind as Io;
    let mut cause: Option<&(dyn StdError + 'static)> = Some(err);
    while let Some(e) = cause {
        if let Some(http) = e.downcast_ref::<HttpError>() {
            match http.kind() {
                HttpErrorKind::Connect => return Class::Transport(TransportKind::Unreachable),
                HttpErrorKind::Timeout => return Class::Transport(TransportKind::TimedOut),
                _ => {}
            }
        }
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            match io.kind() {
                Io::ConnectionRefused
                | Io::HostUnreachable
                | Io::NetworkUnreachable
                | Io::AddrNotAvailable => return Class::Transport(TransportKind::Unreachable),
                Io::TimedOut => return Class::Transport(TransportKind::TimedOut),
                Io::PermissionDenied => return Class::Denied,
                Io::NotFound => return Class::NotFound,
                _ => {}
            }
        }
        if let Some(code) = status_code(&e.to_string()) {
            return match code {
                404 => Class::NotFound,
                401 | 403 => Class::Denied,
                412 => Class::Precondition,
                408 | 429 => Class::Transport(TransportKind::ServerBusy),
                400..=499 => Class::Transport(TransportKind::Rejected),
                _ => Class::Transport(TransportKind::ServerBusy),
            };
        }
        cause = e.source();
    }
    Class::Transport(TransportKind::Other)
}

/// The HTTP status a server answered `err` with, if it did.
pub(crate) fn http_status(err: &(dyn StdError + 'static)) -> Option<u16> {
    let mut cause: Option<&(dyn StdError + 'static)> = Some(err);
    while let Some(e) = cause {
        if let Some(code) = status_code(&e.to_string()) {
            return Some(code);
        }
        cause = e.source();
    }
    None
}

/// The HTTP status in object_store's "... status code: 503 Service Unavailable ..." text.
fn status_code(text: &str) -> Option<u16> {
    let at = text.find("status code: ")? + "status code: ".len();
    let digits = text.get(at..at + 3)?;
    digits.parse().ok().filter(|code| (100..600).contains(code))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn generic(msg: &str) -> object_store::Error {
        object_store::Error::Generic {
            store: "HTTP",
            source: msg.to_owned().into(),
        }
    }

    #[test]
    fn statuses_in_object_stores_text_are_classified() {
        let class = |msg: &str| classify(&generic(msg));
        let status = |code: &str| format!("Server returned non-2xx status code: {code}: ");
        assert_eq!(
            class(&status("503 Service Unavailable")),
            Class::Transport(TransportKind::ServerBusy)
        );
        assert_eq!(
            class(&status("429 Too Many Requests")),
            Class::Transport(TransportKind::ServerBusy)
        );
        assert_eq!(
            class(&status("400 Bad Request")),
            Class::Transport(TransportKind::Rejected)
        );
        assert_eq!(
            class(&status("416 Range Not Satisfiable")),
            Class::Transport(TransportKind::Rejected)
        );
        assert_eq!(
            class("error decoding response body: connection reset"),
            Class::Transport(TransportKind::Other)
        );
    }

    #[test]
    fn a_metadata_service_that_gives_no_credentials_is_no_credentials_not_a_denial() {
        let class = |msg: &str| classify(&generic(msg));
        for text in [
            "Error performing PUT http://169.254.169.254/latest/api/token in 1ms - Server returned non-2xx status code: 403 Forbidden",
            "Error performing token request: Error performing GET http://169.254.169.254/metadata/identity/oauth2/token in 5s - HTTP error: error sending request",
            "Error performing GET http://metadata.google.internal/computeMetadata/v1/instance/service-accounts/default/token: timed out",
        ] {
            assert_eq!(class(text), Class::NoCredentials, "{text}");
            assert!(!class(text).is_transient());
        }
        assert_eq!(
            class("Server returned non-2xx status code: 403 Forbidden"),
            Class::Denied
        );
        assert_eq!(
            class("GET http://h/b/169.254.169.254.bin: status code: 403 Forbidden"),
            Class::Denied
        );
    }

    #[test]
    fn transient_means_worth_retrying() {
        assert!(classify(&generic("status code: 503 x")).is_transient());
        assert!(classify(&generic("error decoding response body")).is_transient());
        assert!(!classify(&generic("status code: 400 x")).is_transient());
        let not_found = object_store::Error::NotFound {
            path: "x".into(),
            source: "404".into(),
        };
        assert!(!classify(&not_found).is_transient());
        let precondition = object_store::Error::Precondition {
            path: "x".into(),
            source: "412".into(),
        };
        assert_eq!(classify(&precondition), Class::Precondition);
        assert!(!classify(&precondition).is_transient());
    }

    #[test]
    fn status_codes_are_three_digits_after_the_marker() {
        assert_eq!(status_code("x status code: 503 Service"), Some(503));
        assert_eq!(status_code("status code: 99"), None);
        assert_eq!(status_code("no status here"), None);
        assert_eq!(status_code("status code: abc"), None);
    }
}
