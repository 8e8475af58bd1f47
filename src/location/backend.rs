//! From a parsed URI, the environment and explicit options to a configured object_store.
//!
//! [`configure`] is pure: it merges the environment with the options (options win), checks the
//! keys and the presence of credentials, and yields a [`StoreConfig`] that doubles as the store
//! cache key. [`StoreConfig::build`] turns it into a store without any network traffic.

use std::collections::{BTreeMap, HashMap};
use std::str::FromStr;
use std::sync::{Arc, Mutex, OnceLock};

use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::azure::{AzureConfigKey, MicrosoftAzureBuilder};
use object_store::gcp::{GoogleCloudStorageBuilder, GoogleConfigKey};
use object_store::http::HttpBuilder;
use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use object_store::{ClientConfigKey, ClientOptions, ObjectStore, RetryConfig};

use super::options::{ClientSettings, Env, StorageOptions, is_true};
use super::redact::is_secret_key;
use super::tap::{ServerHints, TapConnector};
use super::uri::{Scheme, Target};

/// Everything that decides which store a URI gets; equal configs share one store.
#[derive(Clone, PartialEq, Eq, Hash)]
pub(crate) struct StoreConfig {
    pub scheme: Scheme,
    pub authority: String,
    pub query: Option<String>,
    pub settings: ClientSettings,
    /// Backend configuration keys in object_store's canonical spelling.
    pub keys: BTreeMap<String, String>,
}

/// Why a configuration was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ConfigError {
    InvalidOption { key: String, reason: String },
    MissingCredentials(String),
}

/// ckptio's own GCS option: the emulator endpoint, like the `STORAGE_EMULATOR_HOST` variable.
const EMULATOR_OPTION: &str = "storage_emulator_host";

/// Merges `env` and `options` into the configuration of the store `target` names.
pub(crate) fn configure(
    target: &Target,
    env: &Env,
    options: &StorageOptions,
) -> Result<StoreConfig, ConfigError> {
    let settings =
        ClientSettings::resolve(env, options).map_err(|bad| ConfigError::InvalidOption {
            key: bad.key,
            reason: bad.reason,
        })?;
    let backend_options = options
        .iter()
        .filter(|(k, _)| !ClientSettings::KEYS.contains(k));
    let keys = match target.scheme {
        Scheme::S3 => s3_keys(env, backend_options)?,
        Scheme::Gcs => gcs_keys(env, backend_options)?,
        Scheme::Azure => azure_keys(target, env, backend_options)?,
        Scheme::Http => {
            let mut keys = merge::<ClientConfigKey>(std::iter::empty(), backend_options)?;
            if target.authority.starts_with("http://") {
                keys.entry(ClientConfigKey::AllowHttp.as_ref().to_owned())
                    .or_insert_with(|| "true".into());
            }
            keys
        }
        Scheme::Local | Scheme::Memory => merge::<NoKey>(std::iter::empty(), backend_options)?,
    };
    for (key, value) in &keys {
        check_value(key, value)?;
    }
    Ok(StoreConfig {
        scheme: target.scheme,
        authority: target.authority.clone(),
        query: target.query.clone(),
        settings,
        keys,
    })
}

/// Whether `key` (normalised) configures a store of `scheme`: a ckptio client setting, or a
/// configuration key of that backend.
pub(crate) fn takes(scheme: Scheme, key: &str) -> bool {
    ClientSettings::KEYS.contains(&key)
        || match scheme {
            Scheme::S3 => key.parse::<AmazonS3ConfigKey>().is_ok(),
            Scheme::Gcs => key == EMULATOR_OPTION || key.parse::<GoogleConfigKey>().is_ok(),
            Scheme::Azure => key.parse::<AzureConfigKey>().is_ok(),
            Scheme::Http => key.parse::<ClientConfigKey>().is_ok(),
            Scheme::Local | Scheme::Memory => false,
        }
}

/// Environment pairs first, then options; unknown environment keys are ignored, unknown option
/// keys are an error (a typo must not silently fall back to defaults).
fn merge<'a, K>(
    env: impl Iterator<Item = (String, &'a str)>,
    options: impl Iterator<Item = (&'a str, &'a str)>,
) -> Result<BTreeMap<String, String>, ConfigError>
where
    K: FromStr + AsRef<str>,
{
    let mut keys = BTreeMap::new();
    for (name, value) in env {
        if let Ok(key) = name.parse::<K>() {
            keys.insert(key.as_ref().to_owned(), value.to_owned());
        }
    }
    for (name, value) in options {
        let key = name.parse::<K>().map_err(|_| ConfigError::InvalidOption {
            key: name.to_owned(),
            reason: "not a configuration key of this kind of store".into(),
        })?;
        keys.insert(key.as_ref().to_owned(), value.to_owned());
    }
    Ok(keys)
}

fn s3_keys<'a>(
    env: &'a Env,
    options: impl Iterator<Item = (&'a str, &'a str)>,
) -> Result<BTreeMap<String, String>, ConfigError> {
    let mut keys = merge::<AmazonS3ConfigKey>(env.with_prefix("AWS_"), options)?;
    allow_http_for_explicit_http_endpoint(
        &mut keys,
        &[
            AmazonS3ConfigKey::Endpoint.as_ref(),
            AmazonS3ConfigKey::S3Endpoint.as_ref(),
        ],
        ClientConfigKey::AllowHttp.as_ref(),
    );
    // As AWS's CRT client (Mountpoint, s3torchconnector) sends it: the signature covers the
    // request, not the body. Over TLS the body is protected anyway; over plain HTTP the
    // responses to reads never are, so hashing each uploaded byte (a core-second per GiB)
    // would buy little.
    keys.entry(AmazonS3ConfigKey::UnsignedPayload.as_ref().to_owned())
        .or_insert_with(|| "true".into());

    let has = |k: AmazonS3ConfigKey| keys.contains_key(k.as_ref());
    match (has(AmazonS3ConfigKey::AccessKeyId), has(AmazonS3ConfigKey::SecretAccessKey)) {
        (true, true) => {}
        (true, false) => return Err(ConfigError::MissingCredentials("an access key id is set (AWS_ACCESS_KEY_ID) but no secret access key (AWS_SECRET_ACCESS_KEY)".into())),
        (false, true) => return Err(ConfigError::MissingCredentials("a secret access key is set (AWS_SECRET_ACCESS_KEY) but no access key id (AWS_ACCESS_KEY_ID)".into())),
        (false, false) => {
            let other_source = keys.get(AmazonS3ConfigKey::SkipSignature.as_ref()).is_some_and(|v| is_true(v))
                || has(AmazonS3ConfigKey::WebIdentityTokenFile)
                || has(AmazonS3ConfigKey::ContainerCredentialsRelativeUri)
                || has(AmazonS3ConfigKey::ContainerCredentialsFullUri);
            if !other_source && env.flag("AWS_EC2_METADATA_DISABLED") {
                return Err(ConfigError::MissingCredentials(format!(
                    "{S3_CREDENTIALS}; the instance metadata service is off \
                     (AWS_EC2_METADATA_DISABLED)"
                )));
            }
        }
    }
    Ok(keys)
}

fn gcs_keys<'a>(
    env: &'a Env,
    options: impl Iterator<Item = (&'a str, &'a str)>,
) -> Result<BTreeMap<String, String>, ConfigError> {
    let (emulator_opt, options): (Vec<_>, Vec<_>) =
        options.partition(|(k, _)| *k == EMULATOR_OPTION);
    let mut keys = merge::<GoogleConfigKey>(env.with_prefix("GOOGLE_"), options.into_iter())?;
    let emulator = emulator_opt
        .first()
        .map(|(_, v)| *v)
        .or_else(|| env.get("STORAGE_EMULATOR_HOST"));
    if let Some(host) = emulator {
        // Google's client libraries accept the host with or without a scheme.
        let base = if host.contains("://") {
            host.to_owned()
        } else {
            format!("http://{host}")
        };
        keys.insert(
            GoogleConfigKey::BaseUrl.as_ref().to_owned(),
            base.trim_end_matches('/').to_owned(),
        );
        keys.insert(
            GoogleConfigKey::SkipSignature.as_ref().to_owned(),
            "true".into(),
        );
        // object_store fetches a token for uploads even when told to skip signing: an
        // emulator takes any, so it gets a placeholder rather than a metadata-server lookup.
        keys.entry(GoogleConfigKey::BearerToken.as_ref().to_owned())
            .or_insert_with(|| "emulator".into());
    }
    allow_http_for_explicit_http_endpoint(
        &mut keys,
        &[GoogleConfigKey::BaseUrl.as_ref()],
        ClientConfigKey::AllowHttp.as_ref(),
    );

    let has = |k: GoogleConfigKey| keys.contains_key(k.as_ref());
    let has_credentials = has(GoogleConfigKey::ServiceAccount)
        || has(GoogleConfigKey::ServiceAccountKey)
        || has(GoogleConfigKey::ApplicationCredentials)
        || has(GoogleConfigKey::BearerToken)
        || keys
            .get(GoogleConfigKey::SkipSignature.as_ref())
            .is_some_and(|v| is_true(v))
        || env.get("HOME").is_some_and(|home| {
            std::path::Path::new(home)
                .join(".config/gcloud/application_default_credentials.json")
                .is_file()
        });
    if !has_credentials && env.flag("NO_GCE_CHECK") {
        return Err(ConfigError::MissingCredentials(format!(
            "{GCS_CREDENTIALS}; the metadata server is off (NO_GCE_CHECK)"
        )));
    }
    Ok(keys)
}

fn azure_keys<'a>(
    target: &Target,
    env: &'a Env,
    options: impl Iterator<Item = (&'a str, &'a str)>,
) -> Result<BTreeMap<String, String>, ConfigError> {
    let mut keys = merge::<AzureConfigKey>(env.with_prefix("AZURE_"), options)?;
    allow_http_for_explicit_http_endpoint(
        &mut keys,
        &[AzureConfigKey::Endpoint.as_ref()],
        ClientConfigKey::AllowHttp.as_ref(),
    );
    // The account is an option, or the host of `abfss://container@account.dfs.core.windows.net`;
    // the emulator has a default one. Without it object_store says only "Account must be
    // specified".
    let emulator = keys
        .get(AzureConfigKey::UseEmulator.as_ref())
        .is_some_and(|v| is_true(v));
    let account =
        keys.contains_key(AzureConfigKey::AccountName.as_ref()) || target.authority.contains('@');
    if !account && !emulator {
        return Err(ConfigError::MissingCredentials(
            "set AZURE_STORAGE_ACCOUNT_NAME (or the account_name option) to the storage account, \
             or name it in the URI (abfss://container@account.dfs.core.windows.net/path)"
                .into(),
        ));
    }
    Ok(keys)
}

/// How an S3 store is given credentials.
const S3_CREDENTIALS: &str = "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or the \
    access_key_id/secret_access_key options), or skip_signature=true for a public bucket";

/// How a GCS store is given credentials.
const GCS_CREDENTIALS: &str = "set GOOGLE_APPLICATION_CREDENTIALS or GOOGLE_SERVICE_ACCOUNT \
    to a service-account JSON file, or STORAGE_EMULATOR_HOST for an emulator";

/// How an Azure store is given credentials.
const AZURE_CREDENTIALS: &str = "set AZURE_STORAGE_ACCOUNT_KEY or AZURE_STORAGE_SAS_TOKEN (or \
    the access_key/sas_token options), or AZURE_CLIENT_ID, AZURE_CLIENT_SECRET and \
    AZURE_TENANT_ID, or use_azure_cli=true; skip_signature=true for a public container";

/// How to give a store of `scheme` credentials, for an error that found none.
pub(crate) fn credentials_advice(scheme: Scheme) -> Option<&'static str> {
    match scheme {
        Scheme::S3 => Some(S3_CREDENTIALS),
        Scheme::Gcs => Some(GCS_CREDENTIALS),
        Scheme::Azure => Some(AZURE_CREDENTIALS),
        Scheme::Http | Scheme::Local | Scheme::Memory => None,
    }
}

/// The keys whose values are URLs (object_store builds requests from them, and panics on one
/// that is not), with the schemes each may have.
const URL_KEYS: [(&str, &[&str]); 10] = [
    ("aws_endpoint", &["http", "https"]),
    ("aws_endpoint_url_s3", &["http", "https"]),
    ("aws_endpoint_url_sts", &["http", "https"]),
    ("aws_metadata_endpoint", &["http", "https"]),
    ("aws_container_credentials_full_uri", &["http", "https"]),
    ("google_base_url", &["http", "https"]),
    ("azure_storage_endpoint", &["http", "https"]),
    ("azure_msi_endpoint", &["http", "https"]),
    ("azure_storage_authority_host", &["http", "https"]),
    ("proxy_url", &["http", "https", "socks5", "socks5h"]),
];

/// The keys whose values are JSON documents, where line breaks are part of the text.
const JSON_KEYS: [&str; 1] = ["google_service_account_key"];

/// Refuses, before any request, a value object_store would put into a request it cannot
/// build (and panic): a control character (a `\r` left by a file with Windows line endings),
/// a region that is no host name label, a URL-valued key that is no URL.
fn check_value(key: &str, value: &str) -> Result<(), ConfigError> {
    let invalid = |reason: String| ConfigError::InvalidOption {
        key: key.to_owned(),
        reason,
    };
    if !JSON_KEYS.contains(&key) && value.chars().any(char::is_control) {
        return Err(invalid(
            "holds a control character (a line ending read from a file?)".into(),
        ));
    }
    let label = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
    if key == AmazonS3ConfigKey::Region.as_ref() && !value.chars().all(label) {
        return Err(invalid(format!(
            "`{value}` is not a region name (letters, digits, `-`, `_`, `.`)"
        )));
    }
    check_url(key, value)
}

/// Refuses a URL-valued key whose value is not a URL with a host.
fn check_url(key: &str, value: &str) -> Result<(), ConfigError> {
    let Some((_, schemes)) = URL_KEYS.iter().find(|(k, _)| *k == key) else {
        return Ok(());
    };
    let fine = url::Url::parse(value).is_ok_and(|url| {
        schemes.contains(&url.scheme()) && url.host_str().is_some_and(|h| !h.is_empty())
    });
    if fine {
        return Ok(());
    }
    Err(ConfigError::InvalidOption {
        key: key.to_owned(),
        reason: format!(
            "`{}` is not a URL ({}://host[:port][/path])",
            super::redact::redact_uri(value),
            schemes.join("|")
        ),
    })
}

/// Asking for an `http://` endpoint by name is consent to plain HTTP, as with the AWS CLI.
fn allow_http_for_explicit_http_endpoint(
    keys: &mut BTreeMap<String, String>,
    endpoint_keys: &[&str],
    allow_key: &str,
) {
    let explicit_http = endpoint_keys
        .iter()
        .any(|k| keys.get(*k).is_some_and(|v| v.starts_with("http://")));
    if explicit_http && !keys.contains_key(allow_key) {
        keys.insert(allow_key.to_owned(), "true".into());
    }
}

impl StoreConfig {
    /// The secret values in this configuration, for redaction.
    pub fn secrets(&self) -> impl Iterator<Item = String> + '_ {
        let query_values = self
            .query
            .iter()
            .flat_map(|q| url::form_urlencoded::parse(q.as_bytes()).map(|(_, v)| v.into_owned()));
        // Passwords in the URI's userinfo and in any URL-valued option (an S3 `endpoint`).
        let passwords = std::iter::once(self.authority.as_str())
            .chain(self.keys.values().map(String::as_str))
            .filter_map(|v| {
                let url = url::Url::parse(v).ok()?;
                url.password().map(str::to_owned)
            });
        self.keys
            .iter()
            .filter(|(k, _)| is_secret_key(k))
            .map(|(_, v)| v.clone())
            .chain(query_values)
            .chain(passwords)
    }

    /// A store for this configuration, and the hints its server gives. Builds clients only;
    /// sends nothing.
    pub fn build(&self) -> Result<(Arc<dyn ObjectStore>, Arc<ServerHints>), object_store::Error> {
        let hints = Arc::new(ServerHints::default());
        let tap = || TapConnector {
            hints: Arc::clone(&hints),
        };
        let client = self.client_options();
        let retry = RetryConfig {
            max_retries: self.settings.request_retries,
            retry_timeout: self.settings.request_retry_timeout,
            ..RetryConfig::default()
        };
        let store: Arc<dyn ObjectStore> = match self.scheme {
            Scheme::Local => Arc::new(LocalFileSystem::new()),
            Scheme::Memory => memory_store(&self.authority),
            Scheme::S3 => {
                let builder = AmazonS3Builder::new()
                    .with_client_options(client)
                    .with_retry(retry)
                    .with_http_connector(tap());
                let builder = apply_keys(builder, &self.keys, |b, k, v| b.with_config(k, v))?;
                Arc::new(builder.with_bucket_name(&self.authority).build()?)
            }
            Scheme::Gcs => {
                let builder = GoogleCloudStorageBuilder::new()
                    .with_client_options(client)
                    .with_retry(retry)
                    .with_http_connector(tap());
                let builder = apply_keys(builder, &self.keys, |b, k, v| b.with_config(k, v))?;
                Arc::new(builder.with_bucket_name(&self.authority).build()?)
            }
            Scheme::Azure => {
                let builder = MicrosoftAzureBuilder::new()
                    .with_client_options(client)
                    .with_retry(retry)
                    .with_http_connector(tap());
                let builder = apply_keys(builder, &self.keys, |b, k, v| b.with_config(k, v))?;
                Arc::new(builder.with_url(&self.authority).build()?)
            }
            Scheme::Http => {
                let mut url = format!("{}/", self.authority);
                if let Some(query) = &self.query {
                    url.push('?');
                    url.push_str(query);
                }
                let builder = HttpBuilder::new()
                    .with_url(url)
                    .with_client_options(client)
                    .with_retry(retry)
                    .with_http_connector(tap());
                let builder = apply_keys(builder, &self.keys, |b, k, v| b.with_config(k, v))?;
                Arc::new(builder.build()?)
            }
        };
        Ok((store, hints))
    }

    fn client_options(&self) -> ClientOptions {
        let s = &self.settings;
        let options = ClientOptions::new().with_connect_timeout(s.connect_timeout);
        let options = match s.request_timeout {
            Some(t) => options.with_timeout(t),
            None => options.with_timeout_disabled(),
        };
        match s.idle_timeout {
            Some(t) => options.with_read_timeout(t),
            None => options.with_read_timeout_disabled(),
        }
    }
}

/// `builder` with every key of `keys` applied through `with_config`.
fn apply_keys<B, K>(
    builder: B,
    keys: &BTreeMap<String, String>,
    with_config: impl Fn(B, K, &str) -> B,
) -> Result<B, object_store::Error>
where
    K: FromStr<Err = object_store::Error>,
{
    keys.iter()
        .try_fold(builder, |b, (k, v)| Ok(with_config(b, k.parse()?, v)))
}

/// The in-memory store named `name`: one per name for the whole process, like a tmpfs mount,
/// so every resolver (and every part of a program) sees the same objects.
fn memory_store(name: &str) -> Arc<dyn ObjectStore> {
    static STORES: OnceLock<Mutex<HashMap<String, Arc<InMemory>>>> = OnceLock::new();
    let mut stores = STORES
        .get_or_init(Mutex::default)
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let store = stores
        .entry(name.to_owned())
        .or_insert_with(|| Arc::new(InMemory::new()));
    Arc::clone(store) as Arc<dyn ObjectStore>
}

/// Local and memory stores take no backend keys.
struct NoKey;

impl FromStr for NoKey {
    type Err = ();
    fn from_str(_: &str) -> Result<Self, ()> {
        Err(())
    }
}

impl AsRef<str> for NoKey {
    fn as_ref(&self) -> &str {
        ""
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::location::uri::parse;

    fn target(uri: &str) -> Target {
        parse(uri, std::path::Path::new("/")).unwrap()
    }

    #[test]
    fn s3_options_override_environment() {
        let env = Env::from_vars([
            ("AWS_ACCESS_KEY_ID", "envkey"),
            ("AWS_SECRET_ACCESS_KEY", "envsecret"),
            ("AWS_REGION", "us-east-1"),
        ]);
        let options = StorageOptions::new()
            .with("region", "eu-west-1")
            .with("secret_access_key", "optsecret");
        let cfg = configure(&target("s3://b/k"), &env, &options).unwrap();
        assert_eq!(cfg.keys["aws_region"], "eu-west-1");
        assert_eq!(cfg.keys["aws_secret_access_key"], "optsecret");
        assert_eq!(cfg.keys["aws_access_key_id"], "envkey");
    }

    #[test]
    fn s3_endpoint_variables_select_a_custom_endpoint_and_allow_http() {
        let env = Env::from_vars([
            ("AWS_ENDPOINT_URL", "http://127.0.0.1:9000"),
            ("AWS_ACCESS_KEY_ID", "k"),
            ("AWS_SECRET_ACCESS_KEY", "s"),
        ]);
        let cfg = configure(&target("s3://b/k"), &env, &StorageOptions::new()).unwrap();
        assert_eq!(cfg.keys["aws_endpoint"], "http://127.0.0.1:9000");
        assert_eq!(cfg.keys["allow_http"], "true");
        assert!(
            !cfg.keys.contains_key("aws_virtual_hosted_style_request"),
            "path-style by default"
        );

        let env = Env::from_vars([
            ("AWS_ENDPOINT_URL_S3", "https://s3.example"),
            ("AWS_ACCESS_KEY_ID", "k"),
            ("AWS_SECRET_ACCESS_KEY", "s"),
        ]);
        let cfg = configure(&target("s3://b/k"), &env, &StorageOptions::new()).unwrap();
        assert_eq!(cfg.keys["aws_endpoint_url_s3"], "https://s3.example");
        assert!(!cfg.keys.contains_key("allow_http"));

        // Asked for by name, plain HTTP stays refused: the key it is kept under is the one the
        // endpoint's consent looks for.
        let env = Env::from_vars([
            ("AWS_ENDPOINT_URL", "http://127.0.0.1:9000"),
            ("AWS_ALLOW_HTTP", "false"),
            ("AWS_ACCESS_KEY_ID", "k"),
            ("AWS_SECRET_ACCESS_KEY", "s"),
        ]);
        let cfg = configure(&target("s3://b/k"), &env, &StorageOptions::new()).unwrap();
        assert_eq!(cfg.keys["allow_http"], "false");
        assert!(!cfg.keys.contains_key("aws_allow_http"));
    }

    #[test]
    fn s3_payloads_go_unsigned_unless_signing_is_asked_for() {
        let keys = |endpoint: Option<&str>, options: StorageOptions| {
            let mut vars = vec![("AWS_ACCESS_KEY_ID", "k"), ("AWS_SECRET_ACCESS_KEY", "s")];
            vars.extend(endpoint.map(|e| ("AWS_ENDPOINT_URL", e)));
            configure(&target("s3://b/k"), &Env::from_vars(vars), &options)
                .unwrap()
                .keys
        };
        let unsigned = |k: BTreeMap<String, String>| k.get("aws_unsigned_payload").cloned();
        let none = StorageOptions::new;
        for endpoint in [
            None,
            Some("https://s3.example"),
            Some("http://127.0.0.1:9000"),
        ] {
            assert_eq!(
                unsigned(keys(endpoint, none())).as_deref(),
                Some("true"),
                "{endpoint:?}"
            );
        }
        let asked = none().with("unsigned_payload", "false");
        assert_eq!(unsigned(keys(None, asked)).as_deref(), Some("false"));
        let env = Env::from_vars([
            ("AWS_ACCESS_KEY_ID", "k"),
            ("AWS_SECRET_ACCESS_KEY", "s"),
            ("AWS_UNSIGNED_PAYLOAD", "false"),
        ]);
        let cfg = configure(&target("s3://b/k"), &env, &none()).unwrap();
        assert_eq!(
            cfg.keys["aws_unsigned_payload"], "false",
            "from the environment"
        );
    }

    #[test]
    fn plain_http_uris_allow_http() {
        let cfg = configure(
            &target("http://h/x"),
            &Env::default(),
            &StorageOptions::new(),
        )
        .unwrap();
        assert_eq!(cfg.keys["allow_http"], "true");
        let cfg = configure(
            &target("https://h/x"),
            &Env::default(),
            &StorageOptions::new(),
        )
        .unwrap();
        assert!(!cfg.keys.contains_key("allow_http"));
    }

    #[test]
    fn unknown_option_key_is_an_error_naming_it() {
        let env = Env::from_vars([("AWS_ACCESS_KEY_ID", "k"), ("AWS_SECRET_ACCESS_KEY", "s")]);
        let err = configure(
            &target("s3://b/k"),
            &env,
            &StorageOptions::new().with("endpiont", "x"),
        )
        .err()
        .unwrap();
        assert!(
            matches!(err, ConfigError::InvalidOption { ref key, .. } if key == "endpiont"),
            "{err:?}"
        );
        let err = configure(
            &target("/tmp/x"),
            &Env::default(),
            &StorageOptions::new().with("region", "x"),
        )
        .err()
        .unwrap();
        assert!(matches!(err, ConfigError::InvalidOption { .. }));
    }

    #[test]
    fn takes_agrees_with_what_configure_accepts() {
        let env = Env::from_vars([
            ("AWS_ACCESS_KEY_ID", "k"),
            ("AWS_SECRET_ACCESS_KEY", "s"),
            ("STORAGE_EMULATOR_HOST", "127.0.0.1:1"),
        ]);
        let uris = [
            ("s3://b/k", Scheme::S3),
            ("gs://b/k", Scheme::Gcs),
            ("az://c/k", Scheme::Azure),
            ("http://h/k", Scheme::Http),
            ("/tmp/k", Scheme::Local),
        ];
        let keys = [
            "endpoint",
            "region",
            "storage_emulator_host",
            "service_account",
            "account_name",
            "timeout",
            "request_retries",
            "endpiont",
        ];
        for (uri, scheme) in uris {
            for key in keys {
                let refused = matches!(
                    configure(&target(uri), &env, &StorageOptions::new().with(key, "1")),
                    Err(ConfigError::InvalidOption { key: k, .. }) if k == key
                );
                assert_eq!(takes(scheme, key), !refused, "{key} on {uri}");
            }
        }
        assert!(takes(Scheme::S3, "endpoint") && !takes(Scheme::Local, "endpoint"));
        assert!(takes(Scheme::Local, "request_retries"));
    }

    #[test]
    fn half_a_key_pair_is_missing_credentials() {
        let env = Env::from_vars([("AWS_ACCESS_KEY_ID", "k")]);
        let err = configure(&target("s3://b/k"), &env, &StorageOptions::new())
            .err()
            .unwrap();
        assert!(
            matches!(err, ConfigError::MissingCredentials(ref m) if m.contains("AWS_SECRET_ACCESS_KEY")),
            "{err:?}"
        );
    }

    #[test]
    fn no_credentials_with_metadata_disabled_is_missing_credentials() {
        let env = Env::from_vars([("AWS_EC2_METADATA_DISABLED", "true")]);
        let err = configure(&target("s3://b/k"), &env, &StorageOptions::new())
            .err()
            .unwrap();
        assert!(matches!(err, ConfigError::MissingCredentials(_)));
        let ok = configure(
            &target("s3://b/k"),
            &env,
            &StorageOptions::new().with("skip_signature", "true"),
        );
        assert!(ok.is_ok(), "anonymous access needs no credentials");

        let env = Env::from_vars([("NO_GCE_CHECK", "true")]);
        assert!(matches!(
            configure(&target("gs://b/k"), &env, &StorageOptions::new()),
            Err(ConfigError::MissingCredentials(_))
        ));
    }

    #[test]
    fn an_endpoint_that_is_not_a_url_is_an_invalid_option_not_a_panic() {
        let s3 = StorageOptions::new()
            .with("access_key_id", "k")
            .with("secret_access_key", "s");
        let azure = StorageOptions::new().with("account_name", "a");
        for (uri, options) in [
            ("s3://b/k", s3.clone().with("endpoint", "not-a-url")),
            ("s3://b/k", s3.clone().with("endpoint", "http://")),
            ("s3://b/k", s3.clone().with("endpoint", "ftp://h:21")),
            ("s3://b/k", s3.clone().with("proxy_url", "127.0.0.1:3128")),
            (
                "gs://b/k",
                StorageOptions::new().with("google_base_url", "::"),
            ),
            ("az://c/k", azure.with("endpoint", "localhost:10000/acct")),
        ] {
            let err = configure(&target(uri), &Env::default(), &options).err();
            assert!(
                matches!(&err, Some(ConfigError::InvalidOption { reason, .. }) if reason.contains("is not a URL")),
                "{uri} {options:?}: {err:?}"
            );
        }
        let fine = s3
            .clone()
            .with("endpoint", "http://127.0.0.1:9000")
            .with("proxy_url", "socks5://p:1080")
            .with("region", "eu-west-3");
        assert!(configure(&target("s3://b/k"), &Env::default(), &fine).is_ok());
    }

    #[test]
    fn every_url_key_checked_is_a_key_object_store_keeps_under_that_name() {
        fn canonical<K: FromStr + AsRef<str>>(name: &str) -> bool {
            name.parse::<K>().is_ok_and(|k| k.as_ref() == name)
        }
        for (name, _) in URL_KEYS {
            assert!(
                canonical::<AmazonS3ConfigKey>(name)
                    || canonical::<GoogleConfigKey>(name)
                    || canonical::<AzureConfigKey>(name)
                    || canonical::<ClientConfigKey>(name),
                "{name}: not a canonical key, so its value would go unchecked"
            );
        }
    }

    #[test]
    fn a_value_no_request_could_carry_is_an_invalid_option_not_a_panic() {
        let s3 = StorageOptions::new()
            .with("access_key_id", "k")
            .with("secret_access_key", "s");
        for (key, value, says) in [
            ("access_key_id", "AKID\r", "control character"),
            ("session_token", "a\nb", "control character"),
            ("region", "a b", "not a region name"),
            ("region", "a:b", "not a region name"),
        ] {
            let options = s3.clone().with(key, value);
            let err = configure(&target("s3://b/k"), &Env::default(), &options).err();
            assert!(
                matches!(&err, Some(ConfigError::InvalidOption { reason, .. }) if reason.contains(says)),
                "{key}: {err:?}"
            );
            if key != "region" {
                assert!(!format!("{err:?}").contains(value), "a secret is not shown");
            }
        }
        let key_json = "{\n  \"type\": \"service_account\"\n}";
        let options = StorageOptions::new().with("service_account_key", key_json);
        assert!(configure(&target("gs://b/k"), &Env::default(), &options).is_ok());
    }

    #[test]
    fn an_azure_store_needs_an_account_named_somewhere() {
        let none = StorageOptions::new();
        let err = configure(&target("az://c/k"), &Env::default(), &none).err();
        assert!(
            matches!(&err, Some(ConfigError::MissingCredentials(m)) if m.contains("AZURE_STORAGE_ACCOUNT_NAME")),
            "{err:?}"
        );
        let named = [
            (
                "az://c/k",
                Env::from_vars([("AZURE_STORAGE_ACCOUNT_NAME", "a")]),
                none.clone(),
            ),
            (
                "az://c/k",
                Env::default(),
                none.clone().with("account_name", "a"),
            ),
            (
                "abfss://c@a.dfs.core.windows.net/k",
                Env::default(),
                none.clone(),
            ),
            (
                "az://c/k",
                Env::default(),
                none.clone().with("use_emulator", "true"),
            ),
        ];
        for (uri, env, options) in named {
            assert!(
                configure(&target(uri), &env, &options).is_ok(),
                "{uri} {options:?}"
            );
        }
    }

    #[test]
    fn an_azure_http_endpoint_allows_http() {
        let options = StorageOptions::new()
            .with("account_name", "a")
            .with("endpoint", "http://127.0.0.1:10000/a");
        let cfg = configure(&target("az://c/k"), &Env::default(), &options).unwrap();
        assert_eq!(cfg.keys["allow_http"], "true");
        let options = options.with("endpoint", "https://a.blob.core.windows.net");
        let cfg = configure(&target("az://c/k"), &Env::default(), &options).unwrap();
        assert!(!cfg.keys.contains_key("allow_http"));
    }

    #[test]
    fn gcs_emulator_host_sets_base_url_without_auth() {
        let env = Env::from_vars([
            ("STORAGE_EMULATOR_HOST", "127.0.0.1:4443"),
            ("NO_GCE_CHECK", "true"),
        ]);
        let cfg = configure(&target("gs://b/k"), &env, &StorageOptions::new()).unwrap();
        assert_eq!(cfg.keys["google_base_url"], "http://127.0.0.1:4443");
        assert_eq!(cfg.keys["google_skip_signature"], "true");
        assert_eq!(cfg.keys["allow_http"], "true");
        // Uploads still ask for a token: a placeholder, never the metadata server.
        assert_eq!(cfg.keys["google_bearer_token"], "emulator");
        let cfg = configure(
            &target("gs://b/k"),
            &Env::default(),
            &StorageOptions::new().with(EMULATOR_OPTION, "http://h:1/"),
        )
        .unwrap();
        assert_eq!(cfg.keys["google_base_url"], "http://h:1");
    }

    #[test]
    fn secrets_include_secret_keys_and_query_values() {
        let env = Env::from_vars([
            ("AWS_ACCESS_KEY_ID", "AKIDPUBLIC"),
            ("AWS_SECRET_ACCESS_KEY", "wJalrXUt"),
            ("AWS_SESSION_TOKEN", "FwoGZX"),
        ]);
        let cfg = configure(&target("s3://b/k"), &env, &StorageOptions::new()).unwrap();
        let secrets: Vec<String> = cfg.secrets().collect();
        assert!(secrets.contains(&"wJalrXUt".to_owned()) && secrets.contains(&"FwoGZX".to_owned()));
        assert!(!secrets.contains(&"AKIDPUBLIC".to_owned()));
        let cfg = configure(
            &target("https://h/o?X-Amz-Signature=abc123"),
            &Env::default(),
            &StorageOptions::new(),
        )
        .unwrap();
        assert_eq!(cfg.secrets().collect::<Vec<_>>(), ["abc123"]);
    }

    #[test]
    fn every_configuration_builds_without_network() {
        let env = Env::from_vars([
            ("AWS_ACCESS_KEY_ID", "k"),
            ("AWS_SECRET_ACCESS_KEY", "s"),
            ("STORAGE_EMULATOR_HOST", "127.0.0.1:1"),
        ]);
        for uri in [
            "/tmp/x",
            "memory://m/x",
            "s3://b/k",
            "gs://b/k",
            "http://127.0.0.1:1/x?sig=1",
        ] {
            let cfg = configure(&target(uri), &env, &StorageOptions::new()).unwrap();
            assert!(cfg.build().is_ok(), "{uri}");
        }
    }
}
