//! Where store configuration comes from: explicit options, the environment, and ckptio's own
//! client settings (timeouts and request retries) that apply to every backend.

use std::collections::BTreeMap;
use std::time::Duration;

use super::redact::{REDACTED, is_secret_key};

/// Explicit store options, like fsspec's `storage_options`; they override the environment.
///
/// Keys are case-insensitive and `-` equals `_`. Backend keys are object_store's configuration
/// keys (`aws_secret_access_key` or `secret_access_key`, `endpoint`, `region`,
/// `google_service_account_key`, `azure_storage_account_name`, `allow_http`, `proxy_url`, ...);
/// ckptio's own keys are listed on [`ClientSettings`].
///
/// ```
/// use ckptio::StorageOptions;
///
/// let options = StorageOptions::new()
///     .with("endpoint", "http://127.0.0.1:9000")
///     .with("AWS_SECRET_ACCESS_KEY", "hunter22");
/// assert_eq!(options.get("aws-secret-access-key"), Some("hunter22"));
/// assert!(!format!("{options:?}").contains("hunter22"));
/// ```
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct StorageOptions(BTreeMap<String, String>);

impl StorageOptions {
    /// No options: everything comes from the environment.
    pub fn new() -> Self {
        Self::default()
    }

    /// These options plus `key = value`.
    pub fn with(mut self, key: impl AsRef<str>, value: impl Into<String>) -> Self {
        self.insert(key, value);
        self
    }

    /// Sets `key` (normalised: lower case, `-` as `_`) to `value`.
    pub fn insert(&mut self, key: impl AsRef<str>, value: impl Into<String>) {
        self.0.insert(normalize_key(key.as_ref()), value.into());
    }

    /// The value of `key`, if set.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.get(&normalize_key(key)).map(String::as_str)
    }

    /// Every option, keys normalised, in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// Whether no option is set.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// The options of an operation with a source and a destination (a copy, a conversion): those
/// both sides share, and each side's own.
///
/// A shared option configures each side whose kind of store takes it, so that
/// `ckptio cp model.pt s3://bucket/model.pt -o endpoint=…` configures S3 and leaves the local
/// file alone; a shared key that neither side takes is an error, as any unknown key is. A side's
/// own options win over the shared ones and must all be keys of its store.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PairOptions {
    /// Options for whichever side takes them.
    pub shared: StorageOptions,
    /// The source's own options.
    pub src: StorageOptions,
    /// The destination's own options.
    pub dst: StorageOptions,
}

impl<K: AsRef<str>, V: Into<String>> FromIterator<(K, V)> for StorageOptions {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        let mut options = Self::new();
        options.extend(iter);
        options
    }
}

impl<K: AsRef<str>, V: Into<String>> Extend<(K, V)> for StorageOptions {
    fn extend<I: IntoIterator<Item = (K, V)>>(&mut self, iter: I) {
        for (k, v) in iter {
            self.insert(k, v);
        }
    }
}

impl std::fmt::Debug for StorageOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        debug_redacted(f, &self.0)
    }
}

/// A snapshot of the environment variables that configure stores: `AWS_*`, `GOOGLE_*`,
/// `AZURE_*`, `CKPTIO_*`, `STORAGE_EMULATOR_HOST`, `NO_GCE_CHECK` and `HOME`.
///
/// [`Resolver::new`](super::Resolver::new) reads the process environment on every resolve; a
/// fixed snapshot makes resolution a pure function of its inputs, which tests rely on.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Env(BTreeMap<String, String>);

impl Env {
    /// The relevant variables of the current process (non-UTF-8 values are skipped).
    pub fn from_process() -> Self {
        Self::from_vars(
            std::env::vars_os()
                .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?))),
        )
    }

    /// The relevant variables among `vars`.
    pub fn from_vars<K: Into<String>, V: Into<String>>(
        vars: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        Self(
            vars.into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .filter(|(k, _)| is_relevant(k))
                .collect(),
        )
    }

    /// The value of variable `name`, if set and not empty.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .get(name)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    /// Whether variable `name` is set to a true value (`1`, `true`, `yes`, `on`).
    pub fn flag(&self, name: &str) -> bool {
        self.get(name).is_some_and(is_true)
    }

    /// Variables starting with `prefix`, as `(lowercased name, value)`: the form object_store's
    /// configuration keys parse from.
    pub(crate) fn with_prefix<'a>(
        &'a self,
        prefix: &'a str,
    ) -> impl Iterator<Item = (String, &'a str)> + 'a {
        self.0
            .iter()
            .filter(move |(k, v)| k.starts_with(prefix) && !v.is_empty())
            .map(|(k, v)| (k.to_ascii_lowercase(), v.as_str()))
    }
}

impl std::fmt::Debug for Env {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        debug_redacted(f, &self.0)
    }
}

fn is_relevant(name: &str) -> bool {
    ["AWS_", "GOOGLE_", "AZURE_", "CKPTIO_"]
        .iter()
        .any(|p| name.starts_with(p))
        || matches!(name, "STORAGE_EMULATOR_HOST" | "NO_GCE_CHECK" | "HOME")
}

pub(crate) fn is_true(value: &str) -> bool {
    matches!(
        value.trim().to_ascii_lowercase().as_str(),
        "1" | "true" | "yes" | "on"
    )
}

fn normalize_key(key: &str) -> String {
    key.trim().to_ascii_lowercase().replace('-', "_")
}

fn debug_redacted(
    f: &mut std::fmt::Formatter<'_>,
    map: &BTreeMap<String, String>,
) -> std::fmt::Result {
    f.debug_map()
        .entries(map.iter().map(|(k, v)| {
            let shown = if is_secret_key(k) {
                REDACTED
            } else {
                v.as_str()
            };
            (k, shown)
        }))
        .finish()
}

/// ckptio's client settings, shared by every backend.
///
/// Each is an option key, or an environment variable `CKPTIO_<KEY>` (options win). Durations
/// are humantime strings (`750ms`, `30s`, `2m`) or plain seconds.
///
/// | key | default | meaning |
/// |---|---|---|
/// | `connect_timeout` | 5s | time to establish a connection |
/// | `idle_timeout` | 30s | longest wait for the next bytes of a response (0 = none) |
/// | `request_timeout` | none | cap on a whole request; off so multi-GB GETs can finish |
/// | `request_retries` | 3 | object_store's own retries of one request (5xx, connect errors) |
/// | `request_retry_timeout` | 30s | give up retrying one request after this long |
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClientSettings {
    /// Time allowed to establish a connection.
    pub connect_timeout: Duration,
    /// Longest wait for the next bytes of a response; `None` waits forever.
    pub idle_timeout: Option<Duration>,
    /// Cap on a whole request, from connect to last byte; `None` (the default) has no cap.
    pub request_timeout: Option<Duration>,
    /// How often object_store retries one failed request.
    pub request_retries: usize,
    /// How long object_store keeps retrying one request.
    pub request_retry_timeout: Duration,
}

impl Default for ClientSettings {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(5),
            idle_timeout: Some(Duration::from_secs(30)),
            request_timeout: None,
            request_retries: 3,
            request_retry_timeout: Duration::from_secs(30),
        }
    }
}

/// A ckptio setting that could not be read: the key and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BadSetting {
    pub key: String,
    pub reason: String,
}

impl ClientSettings {
    /// The option keys this type owns; every other key belongs to the backend.
    pub(crate) const KEYS: [&'static str; 5] = [
        "connect_timeout",
        "idle_timeout",
        "request_timeout",
        "request_retries",
        "request_retry_timeout",
    ];

    /// Settings from `CKPTIO_*` variables, overridden by `options`.
    pub(crate) fn resolve(env: &Env, options: &StorageOptions) -> Result<Self, BadSetting> {
        let mut settings = Self::default();
        for key in Self::KEYS {
            let env_name = format!("CKPTIO_{}", key.to_ascii_uppercase());
            let Some(value) = options.get(key).or_else(|| env.get(&env_name)) else {
                continue;
            };
            let bad = |reason: String| BadSetting {
                key: key.to_owned(),
                reason,
            };
            match key {
                "connect_timeout" => {
                    settings.connect_timeout = parse_duration(value).map_err(bad)?
                }
                "idle_timeout" => {
                    settings.idle_timeout = nonzero(parse_duration(value).map_err(bad)?)
                }
                "request_timeout" => {
                    settings.request_timeout = nonzero(parse_duration(value).map_err(bad)?)
                }
                "request_retries" => {
                    settings.request_retries = value
                        .trim()
                        .parse()
                        .map_err(|_| bad(format!("expected a count, got `{value}`")))?
                }
                "request_retry_timeout" => {
                    settings.request_retry_timeout = parse_duration(value).map_err(bad)?
                }
                _ => unreachable!("every key of KEYS is handled"),
            }
        }
        Ok(settings)
    }
}

fn nonzero(d: Duration) -> Option<Duration> {
    (!d.is_zero()).then_some(d)
}

/// A humantime duration (`30s`, `1m 30s`, `750ms`) or plain seconds (`30`, `0.5`).
pub(crate) fn parse_duration(value: &str) -> Result<Duration, String> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<f64>() {
        return Duration::try_from_secs_f64(secs)
            .map_err(|_| format!("`{value}` is not a valid number of seconds"));
    }
    humantime::parse_duration(value).map_err(|e| format!("`{value}` is not a duration ({e})"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn option_keys_are_case_and_dash_insensitive() {
        let options = StorageOptions::new().with("Request-Retries", "5");
        assert_eq!(options.get("REQUEST_RETRIES"), Some("5"));
    }

    #[test]
    fn debug_never_shows_secret_values() {
        let options = StorageOptions::new()
            .with("aws_secret_access_key", "topsecret")
            .with("region", "eu-west-1");
        let env = Env::from_vars([("AWS_SESSION_TOKEN", "tok3n"), ("AWS_REGION", "us-east-1")]);
        let shown = format!("{options:?} {env:?}");
        assert!(
            !shown.contains("topsecret") && !shown.contains("tok3n"),
            "{shown}"
        );
        assert!(
            shown.contains("eu-west-1") && shown.contains("us-east-1"),
            "{shown}"
        );
    }

    #[test]
    fn env_keeps_only_store_variables() {
        let env = Env::from_vars([
            ("AWS_REGION", "r"),
            ("PATH", "/bin"),
            ("STORAGE_EMULATOR_HOST", "h"),
        ]);
        assert_eq!(env.get("AWS_REGION"), Some("r"));
        assert_eq!(env.get("PATH"), None);
        assert_eq!(env.get("STORAGE_EMULATOR_HOST"), Some("h"));
    }

    #[test]
    fn client_settings_default_has_no_whole_request_timeout() {
        let s = ClientSettings::resolve(&Env::default(), &StorageOptions::new()).unwrap();
        assert_eq!(s, ClientSettings::default());
        assert_eq!(s.request_timeout, None);
        assert!(s.idle_timeout.is_some());
    }

    #[test]
    fn client_settings_options_override_environment() {
        let env = Env::from_vars([
            ("CKPTIO_IDLE_TIMEOUT", "10s"),
            ("CKPTIO_REQUEST_RETRIES", "7"),
        ]);
        let options = StorageOptions::new().with("idle_timeout", "250ms");
        let s = ClientSettings::resolve(&env, &options).unwrap();
        assert_eq!(s.idle_timeout, Some(Duration::from_millis(250)));
        assert_eq!(s.request_retries, 7);
    }

    #[test]
    fn zero_idle_timeout_means_none() {
        let options = StorageOptions::new().with("idle_timeout", "0");
        let s = ClientSettings::resolve(&Env::default(), &options).unwrap();
        assert_eq!(s.idle_timeout, None);
    }

    #[test]
    fn bad_setting_names_the_key() {
        let options = StorageOptions::new().with("connect_timeout", "soon");
        let err = ClientSettings::resolve(&Env::default(), &options).unwrap_err();
        assert_eq!(err.key, "connect_timeout");
        assert!(err.reason.contains("soon"), "{}", err.reason);
    }
}
