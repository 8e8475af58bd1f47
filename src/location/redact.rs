//! Keeping secrets out of every string ckptio shows.
//!
//! Secrets reach ckptio three ways: option and environment values (secret keys, session tokens,
//! service-account JSON), URL query strings (presigned signatures, SAS tokens) and URL userinfo
//! (`user:password@`). Every URI ckptio displays goes through [`redact_uri`], and every error text
//! that came from below (object_store, reqwest, a server's error body) goes through
//! [`Redactor::redact`], which also scrubs URLs embedded in free text.

use std::sync::RwLock;

use url::Url;

/// What replaces a secret.
pub const REDACTED: &str = "REDACTED";

/// Secrets shorter than this are not searched for in free text: replacing every occurrence of
/// a one- or two-character "secret" would garble messages without protecting anything.
const MIN_SECRET_LEN: usize = 3;

/// Query parameters whose values are safe to show: presigned-URL bookkeeping, never the
/// signature, credential or token.
const PUBLIC_QUERY_KEYS: &[&str] = &[
    "x-amz-algorithm",
    "x-amz-date",
    "x-amz-expires",
    "x-amz-signedheaders",
    "x-goog-algorithm",
    "x-goog-date",
    "x-goog-expires",
    "x-goog-signedheaders",
    "versionid",
    "generation",
    "sv",
    "se",
    "st",
    "sp",
    "sr",
    "spr",
];

/// Replaces known secret values, and the secret parts of any URL, in text.
#[derive(Clone, Default)]
pub struct Redactor {
    /// Longest first, so a secret containing another is replaced whole.
    secrets: Vec<String>,
}

/// Every secret of every store configured in this process: what [`redact`] replaces in any
/// text, such as another crate's log line that shows a connection's `user:password@host`.
static KNOWN: RwLock<Vec<String>> = RwLock::new(Vec::new());

impl Redactor {
    /// A redactor for the given secret values (empty and very short ones are ignored); they
    /// are remembered for [`redact`] too.
    pub fn new(secrets: impl IntoIterator<Item = String>) -> Self {
        let mut secrets: Vec<String> = secrets
            .into_iter()
            .filter(|s| s.len() >= MIN_SECRET_LEN)
            .collect();
        longest_first(&mut secrets);
        let new: Vec<&String> = {
            let known = KNOWN.read().unwrap_or_else(|p| p.into_inner());
            secrets.iter().filter(|s| !known.contains(s)).collect()
        };
        if !new.is_empty() {
            let mut known = KNOWN.write().unwrap_or_else(|p| p.into_inner());
            known.extend(new.into_iter().cloned());
            longest_first(&mut known);
        }
        Self { secrets }
    }

    /// `text` with every known secret and every URL's query values and password replaced.
    pub fn redact(&self, text: &str) -> String {
        let mut out = scrub_urls(text);
        for secret in &self.secrets {
            if out.contains(secret.as_str()) {
                out = out.replace(secret.as_str(), REDACTED);
            }
        }
        out
    }
}

fn longest_first(secrets: &mut Vec<String>) {
    secrets.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
    secrets.dedup();
}

/// `text` with every URL's secret parts (query signatures, passwords) and every secret value
/// of every store this process has configured replaced by `REDACTED`: for text that did not
/// come through ckptio's errors, such as other crates' log lines.
///
/// ```
/// let _ = ckptio::resolve("http://alice:hunter22@127.0.0.1:9/x", &Default::default()).unwrap();
/// let line = r#"pooling idle connection for ("http", alice:hunter22@127.0.0.1:9)"#;
/// assert_eq!(ckptio::redact(line), r#"pooling idle connection for ("http", alice:REDACTED@127.0.0.1:9)"#);
/// ```
pub fn redact(text: &str) -> String {
    let mut out = scrub_urls(text);
    let known = KNOWN.read().unwrap_or_else(|p| p.into_inner());
    for secret in known.iter() {
        if out.contains(secret.as_str()) {
            out = out.replace(secret.as_str(), REDACTED);
        }
    }
    out
}

impl std::fmt::Debug for Redactor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Redactor({} secrets)", self.secrets.len())
    }
}

/// Whether an option or environment key names a secret value.
///
/// `access_key_id` is an identifier, not a secret; Azure's `access_key` is a secret.
pub fn is_secret_key(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    if key.ends_with("key_id") || key.ends_with("_id") {
        return false;
    }
    ["secret", "token", "password", "sas", "key", "credential"]
        .iter()
        .any(|word| key.contains(word))
}

/// A URI fit for display: the password in userinfo and secret query values are replaced.
///
/// Text that does not parse as a URL is cut at its query and userinfo instead, so nothing
/// after `?` or before `@` can leak.
pub fn redact_uri(uri: &str) -> String {
    match Url::parse(uri) {
        Ok(url) if url.password().is_some() || url.query().is_some() => redact_url(url),
        // Nothing to hide: shown exactly as given, not as the URL parser would rewrite it.
        Ok(_) => uri.to_owned(),
        Err(_) if uri.contains("://") => redact_unparsed(uri),
        Err(_) => uri.to_owned(),
    }
}

fn redact_url(mut url: Url) -> String {
    if url.password().is_some() {
        // Infallible for URLs with a host, which is the only way to have a password.
        let _ = url.set_password(Some(REDACTED));
    }
    if url.query().is_some() {
        let pairs: Vec<(String, String)> = url
            .query_pairs()
            .map(|(k, v)| {
                let shown = if PUBLIC_QUERY_KEYS.contains(&k.to_ascii_lowercase().as_str()) {
                    v.into_owned()
                } else {
                    REDACTED.to_owned()
                };
                (k.into_owned(), shown)
            })
            .collect();
        url.query_pairs_mut().clear().extend_pairs(pairs);
    }
    url.to_string()
}

fn redact_unparsed(uri: &str) -> String {
    let (before_query, has_query) = match uri.split_once('?') {
        Some((head, _)) => (head, true),
        None => (uri, false),
    };
    let mut out = match before_query.split_once("://") {
        Some((scheme, rest)) => {
            let authority_end = rest.find('/').unwrap_or(rest.len());
            match rest[..authority_end].rfind('@') {
                Some(at) => format!("{scheme}://{REDACTED}{}", &rest[at..]),
                None => before_query.to_owned(),
            }
        }
        None => before_query.to_owned(),
    };
    if has_query {
        out.push('?');
        out.push_str(REDACTED);
    }
    out
}

/// `text` with every embedded URL passed through [`redact_uri`].
pub(crate) fn scrub_urls(text: &str) -> String {
    if !text.contains("://") {
        return text.to_owned();
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(sep) = rest.find("://") {
        let start = rest[..sep]
            .rfind(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.')))
            .map_or(0, |i| i + 1);
        let end = rest[sep..]
            .find(|c: char| c.is_whitespace() || matches!(c, ')' | '"' | '\'' | '<' | '>' | '`'))
            .map_or(rest.len(), |i| sep + i);
        // Sentence punctuation after a URL is not part of it ("s3://b/k: not found").
        let end = start
            + rest[start..end]
                .trim_end_matches([':', ',', '.', ';'])
                .len();
        out.push_str(&rest[..start]);
        out.push_str(&redact_uri(&rest[start..end]));
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presigned_signature_is_redacted_but_bookkeeping_kept() {
        let uri = "https://b.s3.amazonaws.com/k?X-Amz-Algorithm=AWS4-HMAC-SHA256\
                   &X-Amz-Credential=AKIA%2F20260101&X-Amz-Signature=deadbeef&X-Amz-Expires=60";
        let shown = redact_uri(uri);
        assert!(!shown.contains("deadbeef"), "{shown}");
        assert!(!shown.contains("AKIA"), "{shown}");
        assert!(shown.contains("X-Amz-Expires=60"), "{shown}");
        assert!(shown.contains("X-Amz-Signature=REDACTED"), "{shown}");
    }

    #[test]
    fn userinfo_password_is_redacted_username_kept() {
        let shown = redact_uri("http://alice:hunter2@example.com/w.bin");
        assert_eq!(shown, "http://alice:REDACTED@example.com/w.bin");
    }

    #[test]
    fn unparseable_uri_is_cut_at_query_and_userinfo() {
        let shown = redact_uri("http://bob:pw@[bad/x?sig=abc");
        assert!(!shown.contains("pw") && !shown.contains("abc"), "{shown}");
    }

    #[test]
    fn plain_paths_are_unchanged() {
        assert_eq!(
            redact_uri("/data/model.safetensors"),
            "/data/model.safetensors"
        );
        assert_eq!(redact_uri("s3://bucket/key"), "s3://bucket/key");
    }

    #[test]
    fn urls_inside_free_text_are_scrubbed() {
        let text = "error sending request for url (http://h:1/o?X-Amz-Signature=s3cr3t): refused";
        let shown = scrub_urls(text);
        assert_eq!(
            shown,
            "error sending request for url (http://h:1/o?X-Amz-Signature=REDACTED): refused"
        );
    }

    #[test]
    fn punctuation_after_a_url_survives() {
        assert_eq!(
            scrub_urls("ftp://x/y?sig=abc: bad."),
            "ftp://x/y?sig=REDACTED: bad."
        );
    }

    #[test]
    fn known_secrets_are_replaced_wherever_they_appear() {
        let r = Redactor::new(["wJalrXUtnFEMI".to_owned(), "x".to_owned()]);
        assert_eq!(
            r.redact("signed with wJalrXUtnFEMI (x)"),
            "signed with REDACTED (x)"
        );
    }

    #[test]
    fn secret_keys_are_recognised() {
        for key in [
            "aws_secret_access_key",
            "aws_session_token",
            "google_service_account_key",
            "azure_storage_access_key",
            "azure_storage_sas_key",
            "password",
        ] {
            assert!(is_secret_key(key), "{key}");
        }
        for key in [
            "aws_access_key_id",
            "aws_region",
            "endpoint",
            "azure_client_id",
        ] {
            assert!(!is_secret_key(key), "{key}");
        }
    }
}
