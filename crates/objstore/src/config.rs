//! S3 configuration, read the way the AWS CLI reads it, and the RGW-safe client built from it.
//!
//! Each setting comes from the first of: an explicit option (the `with_*` methods, for
//! command-line flags), the environment, the selected profile of the shared config and
//! credentials files, a default. The profile is `default` unless `AWS_PROFILE` (or a
//! `--profile` option, see [`S3Config::from_env_profile`]) names another. The files are
//! `~/.aws/config` (`[default]`, `[profile NAME]`, `[services NAME]` sections) and
//! `~/.aws/credentials` (`[NAME]` sections), or `AWS_CONFIG_FILE` and
//! `AWS_SHARED_CREDENTIALS_FILE`; a missing file counts as empty. They are parsed as the AWS
//! CLI (botocore, Python's configparser) parses them: `#` and `;` start comment lines only,
//! keys are case-insensitive, `key = value` or `key: value`, indented lines continue a value,
//! and an empty value followed by indented `key = value` lines is a sub-section (`s3 =` in a
//! services section). A credentials-file key wins over the same key in the config file.
//!
//! | setting | option | environment | profile |
//! |---|---|---|---|
//! | keys | [`S3Config::with_keys`] | `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN` | `aws_access_key_id`, `aws_secret_access_key`, `aws_session_token` (credentials file first, then config file) |
//! | endpoint | [`S3Config::with_endpoint`] | `AWS_ENDPOINT_URL_S3`, then `AWS_ENDPOINT_URL` | `endpoint_url` under `s3` in the profile's `services` section, then the profile's `endpoint_url` |
//! | region | [`S3Config::with_region`] | `AWS_REGION`, then `AWS_DEFAULT_REGION` | `region` |
//! | CA bundle | [`S3Config::with_ca_bundle`] | `AWS_CA_BUNDLE` | `ca_bundle` |
//!
//! As in the AWS CLI, `AWS_IGNORE_CONFIGURED_ENDPOINT_URLS=true` (or the profile's
//! `ignore_configured_endpoint_urls = true`) ignores the endpoints of the environment and the
//! files, and an explicit profile option (not `AWS_PROFILE`) makes the profile's keys win over
//! the environment's. Profiles that get credentials another way (`role_arn`, `sso_*`,
//! `web_identity_token_file`, `credential_process`) are refused by name, not ignored.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use aws_sdk_s3::config::interceptors::BeforeDeserializationInterceptorContextMut;
use aws_sdk_s3::config::{
    retry::RetryConfig, timeout::TimeoutConfig, BehaviorVersion, Credentials, Region,
    RequestChecksumCalculation, ResponseChecksumValidation, StalledStreamProtectionConfig,
};
use aws_sdk_s3::config::{ConfigBag, Intercept, RuntimeComponents};
use aws_sdk_s3::primitives::SdkBody;
use aws_smithy_http_client::tls::{self, rustls_provider::CryptoMode, TlsContext, TrustStore};
use rustls::pki_types::{pem::PemObject, CertificateDer};

use crate::error::{Error, Result};
use crate::read::GET_MAX;
use crate::retry::RetryPolicy;

/// Environment variable with the endpoint URL of every service (AWS CLI ≥ 2.13 reads it too).
pub const ENV_ENDPOINT_URL: &str = "AWS_ENDPOINT_URL";
/// Environment variable with the endpoint URL of S3 alone; wins over [`ENV_ENDPOINT_URL`].
pub const ENV_ENDPOINT_URL_S3: &str = "AWS_ENDPOINT_URL_S3";
/// Environment variable that, when `true`, ignores the endpoint URLs of the environment and of
/// the profile files (an explicit endpoint option still counts).
pub const ENV_IGNORE_CONFIGURED_ENDPOINT_URLS: &str = "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS";
/// Environment variable with the access key id.
pub const ENV_ACCESS_KEY_ID: &str = "AWS_ACCESS_KEY_ID";
/// Environment variable with the secret access key.
pub const ENV_SECRET_ACCESS_KEY: &str = "AWS_SECRET_ACCESS_KEY";
/// Environment variable with an optional session token.
pub const ENV_SESSION_TOKEN: &str = "AWS_SESSION_TOKEN";
/// Environment variable with the region (preferred).
pub const ENV_REGION: &str = "AWS_REGION";
/// Environment variable with the region (fallback, as the AWS CLI reads it).
pub const ENV_DEFAULT_REGION: &str = "AWS_DEFAULT_REGION";
/// Environment variable naming the profile to read from the config and credentials files.
pub const ENV_PROFILE: &str = "AWS_PROFILE";
/// Environment variable with the path of the shared config file.
pub const ENV_CONFIG_FILE: &str = "AWS_CONFIG_FILE";
/// Environment variable with the path of the shared credentials file.
pub const ENV_SHARED_CREDENTIALS_FILE: &str = "AWS_SHARED_CREDENTIALS_FILE";
/// Environment variable with a PEM file of the certificate authorities to trust for HTTPS
/// endpoints, instead of the system's.
pub const ENV_CA_BUNDLE: &str = "AWS_CA_BUNDLE";
/// The home directory, for `~` in paths and the default file locations.
const ENV_HOME: &str = "HOME";

/// The profile used when none is named.
pub const DEFAULT_PROFILE: &str = "default";
/// The shared config file when [`ENV_CONFIG_FILE`] is unset.
pub const DEFAULT_CONFIG_FILE: &str = "~/.aws/config";
/// The shared credentials file when [`ENV_SHARED_CREDENTIALS_FILE`] is unset.
pub const DEFAULT_CREDENTIALS_FILE: &str = "~/.aws/credentials";

/// Profile keys (lower-case, as the parser stores them).
const KEY_ACCESS_KEY_ID: &str = "aws_access_key_id";
const KEY_SECRET_ACCESS_KEY: &str = "aws_secret_access_key";
const KEY_SESSION_TOKEN: &str = "aws_session_token";
/// The older name of `aws_session_token`, still read by the AWS CLI.
const KEY_SECURITY_TOKEN: &str = "aws_security_token";
const KEY_REGION: &str = "region";
const KEY_ENDPOINT_URL: &str = "endpoint_url";
const KEY_SERVICES: &str = "services";
const KEY_CA_BUNDLE: &str = "ca_bundle";
const KEY_IGNORE_CONFIGURED_ENDPOINT_URLS: &str = "ignore_configured_endpoint_urls";
const KEY_CREDENTIAL_PROCESS: &str = "credential_process";
/// Profile keys of credential sources this crate does not implement (they win over static keys
/// in the AWS CLI, so a profile with them is refused rather than read differently).
const UNSUPPORTED_CREDENTIAL_KEYS: [&str; 4] = [
    "role_arn",
    "web_identity_token_file",
    "sso_session",
    "sso_start_url",
];
/// The service key of S3 in a `[services NAME]` section.
const SERVICE_S3: &str = "s3";
/// Section-name prefixes of the config file.
const SECTION_PROFILE: &str = "profile";
const SECTION_SERVICES: &str = "services";

/// PEM armour of one certificate.
const PEM_CERT_BEGIN: &str = "-----BEGIN CERTIFICATE-----";
const PEM_CERT_END: &str = "-----END CERTIFICATE-----";

/// Region used when none is configured; RGW accepts any region name.
pub const DEFAULT_REGION: &str = "us-east-1";
/// Time allowed to open a TCP (and TLS) connection: a dead endpoint fails in seconds.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Longest silence allowed while reading a response.
pub const DEFAULT_READ_TIMEOUT: Duration = Duration::from_secs(60);
/// Time allowed for one attempt of one request (a 16 MiB part at ≥ 0.15 MiB/s).
pub const DEFAULT_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(120);

/// Where and how to reach S3 (or Ceph RGW).
///
/// Built with [`S3Config::from_env`] (environment and profile files, see the module
/// documentation) and then overridden field by field from command-line flags, e.g.
/// `S3Config::from_env().with_endpoint(flag)`. A problem in the profile files (a file that
/// does not parse, a named profile that does not exist) does not stop the building: it is
/// reported by [`S3Config::client`], so commands that never touch S3 are not affected.
#[derive(Clone)]
pub struct S3Config {
    /// Endpoint URL such as `http://127.0.0.1:7480`; `None` means AWS itself.
    pub endpoint: Option<String>,
    /// Access key id.
    pub access_key_id: Option<String>,
    /// Secret access key.
    pub secret_access_key: Option<String>,
    /// Session token for temporary credentials.
    pub session_token: Option<String>,
    /// Region name.
    pub region: String,
    /// PEM file of the certificate authorities trusted for an HTTPS endpoint, in place of the
    /// system's (as `AWS_CA_BUNDLE` in the AWS CLI).
    pub ca_bundle: Option<PathBuf>,
    /// TCP/TLS connect timeout.
    pub connect_timeout: Duration,
    /// Read (silence) timeout.
    pub read_timeout: Duration,
    /// Timeout of one attempt of one request.
    pub attempt_timeout: Duration,
    /// Retries of transient failures, done by this crate (the SDK's own retries are off).
    pub retry: RetryPolicy,
    /// Where the settings came from, for messages.
    origin: Origin,
}

/// Where the settings of an [`S3Config`] came from: what messages name.
#[derive(Clone, Debug, Default)]
struct Origin {
    /// The profile read from the files.
    profile: String,
    /// The config file, if a path could be made (and whether it exists).
    config_file: Option<(PathBuf, bool)>,
    /// The credentials file, likewise.
    credentials_file: Option<(PathBuf, bool)>,
    /// Where the region came from; `None` for the default.
    region: Option<String>,
    /// Where the CA bundle path came from.
    ca_bundle: Option<String>,
    /// A problem found while reading the files, reported by [`S3Config::client`].
    problem: Option<String>,
}

impl std::fmt::Debug for S3Config {
    // The secret stays out of logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Config")
            .field("endpoint", &self.endpoint)
            .field("access_key_id", &self.access_key_id)
            .field(
                "secret_access_key",
                &self.secret_access_key.as_ref().map(|_| "<redacted>"),
            )
            .field(
                "session_token",
                &self.session_token.as_ref().map(|_| "<redacted>"),
            )
            .field("region", &self.region)
            .field("ca_bundle", &self.ca_bundle)
            .field("profile", &self.origin.profile)
            .field("connect_timeout", &self.connect_timeout)
            .field("read_timeout", &self.read_timeout)
            .field("attempt_timeout", &self.attempt_timeout)
            .field("retry", &self.retry)
            .finish()
    }
}

impl Default for S3Config {
    fn default() -> Self {
        Self {
            endpoint: None,
            access_key_id: None,
            secret_access_key: None,
            session_token: None,
            region: DEFAULT_REGION.to_owned(),
            ca_bundle: None,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            read_timeout: DEFAULT_READ_TIMEOUT,
            attempt_timeout: DEFAULT_ATTEMPT_TIMEOUT,
            retry: RetryPolicy::default(),
            origin: Origin {
                profile: DEFAULT_PROFILE.to_owned(),
                ..Origin::default()
            },
        }
    }
}

impl S3Config {
    /// Reads the environment and the selected profile of the shared config and credentials
    /// files, as the AWS CLI does (see the module documentation). Empty variables count as
    /// unset.
    pub fn from_env() -> Self {
        Self::from_env_profile(None)
    }

    /// Like [`S3Config::from_env`], with the profile given explicitly (a `--profile` option):
    /// it wins over `AWS_PROFILE`, and its keys win over the environment's, as in the AWS CLI.
    pub fn from_env_profile(profile: Option<&str>) -> Self {
        Self::from_lookup_profile(|name| std::env::var(name).ok(), profile)
    }

    /// Like [`S3Config::from_env`], with a custom variable lookup (for tests and for callers
    /// that hold the environment in a map). The files are found through the lookup too
    /// (`AWS_CONFIG_FILE`, `AWS_SHARED_CREDENTIALS_FILE`, else `HOME`): a lookup without them
    /// reads no file.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Self {
        Self::from_lookup_profile(lookup, None)
    }

    /// [`S3Config::from_env_profile`] with a custom variable lookup.
    pub fn from_lookup_profile(
        lookup: impl Fn(&str) -> Option<String>,
        profile: Option<&str>,
    ) -> Self {
        let get = |name: &str| lookup(name).filter(|v| !v.trim().is_empty());
        let explicit_profile = profile.filter(|p| !p.trim().is_empty());
        let profile_name = explicit_profile
            .map(str::to_owned)
            .or_else(|| get(ENV_PROFILE))
            .unwrap_or_else(|| DEFAULT_PROFILE.to_owned());
        let named = explicit_profile.is_some() || get(ENV_PROFILE).is_some();
        let home = get(ENV_HOME);
        let config_path = file_path(get(ENV_CONFIG_FILE), DEFAULT_CONFIG_FILE, home.as_deref());
        let creds_path = file_path(
            get(ENV_SHARED_CREDENTIALS_FILE),
            DEFAULT_CREDENTIALS_FILE,
            home.as_deref(),
        );
        let mut problems = Vec::new();
        let config_file = config_path
            .as_deref()
            .and_then(|p| read_ini(p, "config", &mut problems));
        let creds_file = creds_path
            .as_deref()
            .and_then(|p| read_ini(p, "credentials", &mut problems));
        let profile = SelectedProfile::new(
            &profile_name,
            config_path.as_deref(),
            config_file.as_ref(),
            creds_path.as_deref(),
            creds_file.as_ref(),
        );
        if named && !profile.exists() {
            problems.push(format!(
                "profile {profile_name:?} is in neither {} nor {}",
                describe_file(config_path.as_deref(), config_file.is_some()),
                describe_file(creds_path.as_deref(), creds_file.is_some()),
            ));
        }

        let mut config = Self::default();
        // Keys: the environment unless a profile option was given, then the profile.
        let env_keys = match (get(ENV_ACCESS_KEY_ID), get(ENV_SECRET_ACCESS_KEY)) {
            (Some(key), Some(secret)) => Some(Keys {
                key,
                secret,
                token: get(ENV_SESSION_TOKEN),
            }),
            (Some(_), None) => {
                problems.push(format!(
                    "{ENV_ACCESS_KEY_ID} is set but {ENV_SECRET_ACCESS_KEY} is not"
                ));
                None
            }
            _ => None,
        };
        let keys = match env_keys {
            Some(k) if explicit_profile.is_none() => Some(k),
            _ => match profile.keys() {
                Ok(k) => k,
                Err(problem) => {
                    problems.push(problem);
                    None
                }
            },
        };
        if let Some(k) = keys {
            config.access_key_id = Some(k.key);
            config.secret_access_key = Some(k.secret);
            config.session_token = k.token;
        }

        // Endpoint: unless ignored, the S3 variable, the global variable, the profile's
        // services section, the profile.
        let ignore = match get(ENV_IGNORE_CONFIGURED_ENDPOINT_URLS) {
            Some(v) => is_true(&v),
            None => profile
                .text(KEY_IGNORE_CONFIGURED_ENDPOINT_URLS)
                .is_some_and(|v| is_true(&v)),
        };
        if !ignore {
            config.endpoint = get(ENV_ENDPOINT_URL_S3)
                .or_else(|| get(ENV_ENDPOINT_URL))
                .or_else(|| profile.s3_service_endpoint())
                .or_else(|| profile.text(KEY_ENDPOINT_URL));
        }

        if let Some(region) = get(ENV_REGION) {
            config.region = region;
            config.origin.region = Some(ENV_REGION.to_owned());
        } else if let Some(region) = get(ENV_DEFAULT_REGION) {
            config.region = region;
            config.origin.region = Some(ENV_DEFAULT_REGION.to_owned());
        } else if let Some(region) = profile.text(KEY_REGION) {
            config.region = region;
            config.origin.region = Some(profile.describe());
        }

        if let Some(path) = get(ENV_CA_BUNDLE) {
            config.ca_bundle = Some(PathBuf::from(path));
            config.origin.ca_bundle = Some(ENV_CA_BUNDLE.to_owned());
        } else if let Some(path) = profile.text(KEY_CA_BUNDLE) {
            config.ca_bundle = Some(PathBuf::from(path));
            config.origin.ca_bundle = Some(format!("{KEY_CA_BUNDLE} of {}", profile.describe()));
        }

        config.origin.profile = profile_name;
        config.origin.config_file = config_path.map(|p| (p, config_file.is_some()));
        config.origin.credentials_file = creds_path.map(|p| (p, creds_file.is_some()));
        config.origin.problem = (!problems.is_empty()).then(|| problems.join("; "));
        config
    }

    /// Overrides the endpoint (a `--endpoint` flag) when `endpoint` is `Some`.
    pub fn with_endpoint(mut self, endpoint: Option<String>) -> Self {
        if endpoint.is_some() {
            self.endpoint = endpoint;
        }
        self
    }

    /// Overrides both keys when given.
    pub fn with_keys(mut self, access_key_id: Option<String>, secret: Option<String>) -> Self {
        if access_key_id.is_some() {
            self.access_key_id = access_key_id;
        }
        if secret.is_some() {
            self.secret_access_key = secret;
        }
        self
    }

    /// Overrides the region when `region` is `Some`.
    pub fn with_region(mut self, region: Option<String>) -> Self {
        if let Some(r) = region {
            self.region = r;
            self.origin.region = Some("an option".to_owned());
        }
        self
    }

    /// Overrides the CA bundle (a `--ca-bundle` flag) when `path` is `Some`.
    pub fn with_ca_bundle(mut self, path: Option<PathBuf>) -> Self {
        if path.is_some() {
            self.ca_bundle = path;
            self.origin.ca_bundle = Some("an option".to_owned());
        }
        self
    }

    /// Whether the region is the built-in default, set by no option, variable or profile.
    pub fn region_is_default(&self) -> bool {
        self.origin.region.is_none()
    }

    /// The profile the files were read for.
    pub fn profile(&self) -> &str {
        &self.origin.profile
    }

    /// Whether requests go over TLS: the endpoint is `https://`, or none is set (AWS's own
    /// endpoints are HTTPS).
    pub fn is_https(&self) -> bool {
        self.endpoint
            .as_deref()
            .is_none_or(|ep| url::Url::parse(ep).is_ok_and(|url| url.scheme() == "https"))
    }

    /// A short description for messages: the endpoint or "AWS".
    pub fn describe_endpoint(&self) -> &str {
        self.endpoint.as_deref().unwrap_or("AWS (no endpoint set)")
    }

    /// Builds an `aws_sdk_s3::Client` set up for Ceph RGW (Pacific) as well as AWS:
    /// path-style addressing, checksums only when an operation requires them (Pacific rejects
    /// the aws-chunked trailers the SDK otherwise sends), the configured timeouts, the SDK's
    /// retries turned off because this crate retries transient errors itself, and for an HTTPS
    /// endpoint the CA bundle, if one is set, as the only trusted authorities.
    pub fn client(&self) -> Result<aws_sdk_s3::Client> {
        if let Some(problem) = &self.origin.problem {
            return Err(Error::Config {
                reason: problem.clone(),
            });
        }
        let (Some(key), Some(secret)) = (&self.access_key_id, &self.secret_access_key) else {
            return Err(Error::Config {
                reason: self.no_credentials_message(),
            });
        };
        let mut https = true;
        if let Some(ep) = &self.endpoint {
            let url = url::Url::parse(ep).map_err(|e| Error::Config {
                reason: format!("endpoint {ep:?} is not a URL: {e}"),
            })?;
            if !matches!(url.scheme(), "http" | "https") {
                return Err(Error::Config {
                    reason: format!("endpoint {ep:?} must start with http:// or https://"),
                });
            }
            https = url.scheme() == "https";
        }
        let creds = Credentials::new(
            key.clone(),
            secret.clone(),
            self.session_token.clone(),
            None,
            "diskferry",
        );
        let timeouts = TimeoutConfig::builder()
            .connect_timeout(self.connect_timeout)
            .read_timeout(self.read_timeout)
            .operation_attempt_timeout(self.attempt_timeout)
            .build();
        let mut builder = aws_sdk_s3::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(self.region.clone()))
            .credentials_provider(creds)
            .force_path_style(true)
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .response_checksum_validation(ResponseChecksumValidation::WhenRequired)
            .timeout_config(timeouts)
            .retry_config(RetryConfig::disabled())
            // Our read timeout covers stalls; the SDK's grace-period check would also fire
            // on slow-but-moving uploads from a busy producer.
            .stalled_stream_protection(StalledStreamProtectionConfig::disabled())
            .interceptor(CapBodies);
        if let Some(ep) = &self.endpoint {
            builder = builder.endpoint_url(ep.trim_end_matches('/'));
        }
        // As the AWS CLI: the bundle matters (and is read) only for HTTPS.
        if let (Some(path), true) = (&self.ca_bundle, https) {
            let origin = self.origin.ca_bundle.as_deref().unwrap_or(ENV_CA_BUNDLE);
            let certs = read_ca_bundle(path).map_err(|problem| Error::Config {
                reason: format!("CA bundle {} (from {origin}): {problem}", path.display()),
            })?;
            builder = builder.http_client(https_client_trusting(certs)?);
        }
        Ok(aws_sdk_s3::Client::from_conf(builder.build()))
    }

    /// Every way to give keys, with the files and profile actually looked at.
    fn no_credentials_message(&self) -> String {
        let o = &self.origin;
        format!(
            "no S3 credentials for {}: set {ENV_ACCESS_KEY_ID} and {ENV_SECRET_ACCESS_KEY}, or \
             put {KEY_ACCESS_KEY_ID} and {KEY_SECRET_ACCESS_KEY} under [{}] in {} or under \
             [{}] in {}; {ENV_PROFILE} selects another profile, {ENV_SHARED_CREDENTIALS_FILE} \
             and {ENV_CONFIG_FILE} other files",
            self.describe_endpoint(),
            o.profile,
            describe_origin_file(o.credentials_file.as_ref(), DEFAULT_CREDENTIALS_FILE),
            config_section_name(&o.profile),
            describe_origin_file(o.config_file.as_ref(), DEFAULT_CONFIG_FILE),
        )
    }
}

/// Access key, secret and optional session token, taken together from one source.
struct Keys {
    key: String,
    secret: String,
    token: Option<String>,
}

/// `true`, case-insensitively (how the AWS CLI reads boolean settings).
fn is_true(v: &str) -> bool {
    v.trim().eq_ignore_ascii_case("true")
}

/// The path of a shared file: the variable's value, else the default; a leading `~` is the
/// home directory. `None` when `~` cannot be resolved.
fn file_path(value: Option<String>, default: &str, home: Option<&str>) -> Option<PathBuf> {
    let raw = value.unwrap_or_else(|| default.to_owned());
    match raw.strip_prefix('~') {
        Some(rest) if rest.is_empty() || rest.starts_with('/') => {
            home.map(|h| PathBuf::from(format!("{}{rest}", h.trim_end_matches('/'))))
        }
        _ => Some(PathBuf::from(raw)),
    }
}

/// A file as messages name it: its path, and that it does not exist when so.
fn describe_file(path: Option<&Path>, exists: bool) -> String {
    match (path, exists) {
        (Some(p), true) => p.display().to_string(),
        (Some(p), false) => format!("{} (not found)", p.display()),
        (None, _) => "no file ($HOME unset)".to_owned(),
    }
}

fn describe_origin_file(file: Option<&(PathBuf, bool)>, default: &str) -> String {
    match file {
        Some((p, exists)) => describe_file(Some(p), *exists),
        None => format!("{default} ($HOME unset)"),
    }
}

/// How a profile's section is written in the config file.
fn config_section_name(profile: &str) -> String {
    if profile == DEFAULT_PROFILE {
        DEFAULT_PROFILE.to_owned()
    } else {
        format!("{SECTION_PROFILE} {profile}")
    }
}

/// Reads and parses a shared file; `None` when it does not exist (as the AWS CLI, which
/// treats a missing file as empty) or cannot be used (the problem is recorded).
fn read_ini(path: &Path, what: &str, problems: &mut Vec<String>) -> Option<Ini> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => {
            problems.push(format!(
                "cannot read the {what} file {}: {e}",
                path.display()
            ));
            return None;
        }
    };
    match Ini::parse(&text) {
        Ok(ini) => Some(ini),
        Err(e) => {
            problems.push(format!(
                "cannot parse the {what} file {}: {e}",
                path.display()
            ));
            None
        }
    }
}

/// A value in a shared file.
#[derive(Debug, Clone, PartialEq, Eq)]
enum IniValue {
    /// A value (continuation lines joined with `\n`).
    Text(String),
    /// An empty first line followed by indented `key = value` lines (one level, as botocore).
    Nested(HashMap<String, String>),
}

/// One section: lower-case keys to values.
type IniSection = HashMap<String, IniValue>;

/// A parsed shared file: its sections in file order.
#[derive(Debug, Default)]
struct Ini {
    sections: Vec<(String, IniSection)>,
}

impl Ini {
    /// Parses as Python's configparser (strict, no inline comments, `=` or `:`) and botocore's
    /// nested values. Errors name the line, never its content: it may hold a secret.
    fn parse(text: &str) -> std::result::Result<Ini, String> {
        let mut ini = Ini::default();
        let mut current: Option<PendingKey> = None;
        for (i, raw) in text.lines().enumerate() {
            let n = i + 1;
            let line = raw.trim_end();
            let stripped = line.trim_start();
            let indent = line.len() - stripped.len();
            if stripped.is_empty() {
                continue;
            }
            if stripped.starts_with('#') || stripped.starts_with(';') {
                // A comment line ends a multi-line value.
                ini.store(current.take())?;
                continue;
            }
            if let Some(key) = &mut current {
                if indent > key.indent {
                    key.lines.push(stripped.to_owned());
                    continue;
                }
            }
            ini.store(current.take())?;
            if stripped.starts_with('[') {
                let name = match stripped.rfind(']') {
                    Some(end) if end > 1 => &stripped[1..end],
                    _ => return Err(format!("line {n}: a section header without a closing ]")),
                };
                if ini.sections.iter().any(|(s, _)| s == name) {
                    return Err(format!("line {n}: section [{name}] appears twice"));
                }
                ini.sections.push((name.to_owned(), IniSection::new()));
                continue;
            }
            let Some((_, section)) = ini.sections.last() else {
                return Err(format!("line {n}: a setting before any [section]"));
            };
            let Some(at) = stripped.find(['=', ':']) else {
                return Err(format!("line {n}: not a `key = value` line"));
            };
            let key = stripped[..at].trim_end().to_lowercase();
            if key.is_empty() {
                return Err(format!("line {n}: a value without a key"));
            }
            if section.contains_key(&key) {
                return Err(format!(
                    "line {n}: key {key:?} appears twice in its section"
                ));
            }
            current = Some(PendingKey {
                key,
                line: n,
                indent,
                lines: vec![stripped[at + 1..].trim().to_owned()],
            });
        }
        ini.store(current.take())?;
        Ok(ini)
    }

    /// Stores a finished key in the last section.
    fn store(&mut self, key: Option<PendingKey>) -> std::result::Result<(), String> {
        if let (Some(k), Some((_, section))) = (key, self.sections.last_mut()) {
            let value = join_value(&k.lines).map_err(|e| format!("line {}: {e}", k.line))?;
            section.insert(k.key, value);
        }
        Ok(())
    }

    /// The section named exactly `name`.
    fn section(&self, name: &str) -> Option<&IniSection> {
        self.sections
            .iter()
            .find(|(s, _)| s == name)
            .map(|(_, v)| v)
    }

    /// The section of `[PREFIX NAME]` (botocore splits the header like a shell, so
    /// `[profile "my name"]` names `my name`); the last one wins, as in botocore.
    fn prefixed(&self, prefix: &str, name: &str) -> Option<&IniSection> {
        self.sections
            .iter()
            .rev()
            .find(|(s, _)| {
                s.starts_with(prefix)
                    && shell_words(s)
                        .is_some_and(|w| w.len() == 2 && w[0] == prefix && w[1] == name)
            })
            .map(|(_, v)| v)
    }

    /// A profile of the config file: `[profile NAME]`, or `[default]` for `default` (of the
    /// two, the later in the file, as botocore).
    fn config_profile(&self, name: &str) -> Option<&IniSection> {
        self.sections
            .iter()
            .rev()
            .find(|(s, _)| {
                (name == DEFAULT_PROFILE && s == DEFAULT_PROFILE)
                    || (s.starts_with(SECTION_PROFILE)
                        && shell_words(s).is_some_and(|w| {
                            w.len() == 2 && w[0] == SECTION_PROFILE && w[1] == name
                        }))
            })
            .map(|(_, v)| v)
    }
}

/// A key whose value may continue on the next lines.
struct PendingKey {
    key: String,
    /// Line number of the key, for messages.
    line: usize,
    /// Indentation of the key's line: more indented lines continue its value.
    indent: usize,
    lines: Vec<String>,
}

/// Joins a value's lines as configparser does; an empty first line followed by more lines is
/// a nested section.
fn join_value(lines: &[String]) -> std::result::Result<IniValue, String> {
    if lines.len() > 1 && lines[0].is_empty() {
        let mut nested = HashMap::new();
        for l in &lines[1..] {
            let Some((k, v)) = l.split_once('=') else {
                return Err("an indented line of a sub-section is not `key = value`".to_owned());
            };
            nested.insert(k.trim().to_owned(), v.trim().to_owned());
        }
        return Ok(IniValue::Nested(nested));
    }
    Ok(IniValue::Text(lines.join("\n").trim_end().to_owned()))
}

/// Splits a section header into words as a POSIX shell would (quotes group, backslash
/// escapes); `None` for an unterminated quote, which botocore skips.
fn shell_words(s: &str) -> Option<Vec<String>> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                in_word = true;
                loop {
                    match chars.next()? {
                        '\'' => break,
                        c => word.push(c),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next()? {
                        '"' => break,
                        '\\' => word.push(chars.next()?),
                        c => word.push(c),
                    }
                }
            }
            '\\' => {
                in_word = true;
                word.push(chars.next()?);
            }
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            c => {
                in_word = true;
                word.push(c);
            }
        }
    }
    if in_word {
        words.push(word);
    }
    Some(words)
}

/// The selected profile in both files, and the services section it names.
struct SelectedProfile<'a> {
    name: &'a str,
    config_path: Option<&'a Path>,
    config: Option<&'a IniSection>,
    creds_path: Option<&'a Path>,
    creds: Option<&'a IniSection>,
    services: Option<&'a IniSection>,
}

impl<'a> SelectedProfile<'a> {
    fn new(
        name: &'a str,
        config_path: Option<&'a Path>,
        config_file: Option<&'a Ini>,
        creds_path: Option<&'a Path>,
        creds_file: Option<&'a Ini>,
    ) -> Self {
        let config = config_file.and_then(|f| f.config_profile(name));
        // The credentials file names profiles without a prefix.
        let creds = creds_file.and_then(|f| f.section(name));
        let mut profile = Self {
            name,
            config_path,
            config,
            creds_path,
            creds,
            services: None,
        };
        profile.services = profile
            .text(KEY_SERVICES)
            .and_then(|s| config_file.and_then(|f| f.prefixed(SECTION_SERVICES, &s)));
        profile
    }

    fn exists(&self) -> bool {
        self.config.is_some() || self.creds.is_some()
    }

    /// `profile "NAME"` and the files that hold it, for messages.
    fn describe(&self) -> String {
        let mut files = Vec::new();
        if let (Some(_), Some(p)) = (self.creds, self.creds_path) {
            files.push(p.display().to_string());
        }
        if let (Some(_), Some(p)) = (self.config, self.config_path) {
            files.push(p.display().to_string());
        }
        format!("profile {:?} in {}", self.name, files.join(" and "))
    }

    /// A non-empty text value: the credentials file's, else the config file's (the AWS CLI
    /// overlays the credentials file on the config file).
    fn text(&self, key: &str) -> Option<String> {
        [self.creds, self.config]
            .into_iter()
            .flatten()
            .find_map(|s| match s.get(key) {
                Some(IniValue::Text(v)) if !v.is_empty() => Some(v.clone()),
                _ => None,
            })
    }

    /// `endpoint_url` under `s3` in the profile's services section.
    fn s3_service_endpoint(&self) -> Option<String> {
        match self.services?.get(SERVICE_S3)? {
            IniValue::Nested(m) => m.get(KEY_ENDPOINT_URL).filter(|v| !v.is_empty()).cloned(),
            IniValue::Text(_) => None,
        }
    }

    /// The profile's keys in the AWS CLI's order: sources it does not support are refused,
    /// then the credentials file, then (unless `credential_process` comes first) the config
    /// file. `Ok(None)` when the profile has none.
    fn keys(&self) -> std::result::Result<Option<Keys>, String> {
        for key in UNSUPPORTED_CREDENTIAL_KEYS {
            if self.text(key).is_some() {
                return Err(format!(
                    "{} gets credentials with {key}, which diskferry does not support: give \
                     {KEY_ACCESS_KEY_ID} and {KEY_SECRET_ACCESS_KEY} (or {ENV_ACCESS_KEY_ID} \
                     and {ENV_SECRET_ACCESS_KEY}) instead",
                    self.describe()
                ));
            }
        }
        if let Some(keys) = section_keys(self.creds, self.creds_path, self.name)? {
            return Ok(Some(keys));
        }
        if self.text(KEY_CREDENTIAL_PROCESS).is_some() {
            return Err(format!(
                "{} gets credentials with {KEY_CREDENTIAL_PROCESS}, which diskferry does not \
                 support: give {KEY_ACCESS_KEY_ID} and {KEY_SECRET_ACCESS_KEY} instead",
                self.describe()
            ));
        }
        section_keys(self.config, self.config_path, self.name)
    }
}

/// Static keys of one section; an access key without its secret is an error.
fn section_keys(
    section: Option<&IniSection>,
    path: Option<&Path>,
    profile: &str,
) -> std::result::Result<Option<Keys>, String> {
    let Some(section) = section else {
        return Ok(None);
    };
    let text = |k: &str| match section.get(k) {
        Some(IniValue::Text(v)) if !v.is_empty() => Some(v.clone()),
        _ => None,
    };
    match (text(KEY_ACCESS_KEY_ID), text(KEY_SECRET_ACCESS_KEY)) {
        (Some(key), Some(secret)) => Ok(Some(Keys {
            key,
            secret,
            token: text(KEY_SESSION_TOKEN).or_else(|| text(KEY_SECURITY_TOKEN)),
        })),
        (Some(_), None) => Err(format!(
            "profile {profile:?} in {} has {KEY_ACCESS_KEY_ID} but no {KEY_SECRET_ACCESS_KEY}",
            path.map_or_else(String::new, |p| p.display().to_string())
        )),
        _ => Ok(None),
    }
}

/// The certificates of a PEM bundle, each as its own PEM block. Blocks that do not parse as a
/// trust anchor are skipped with a warning (a system bundle may hold a few); a bundle with
/// none is an error.
fn read_ca_bundle(path: &Path) -> std::result::Result<Vec<Vec<u8>>, String> {
    let bytes = std::fs::read(path).map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&bytes);
    let mut certs = Vec::new();
    let mut skipped = 0usize;
    let mut rest = &text[..];
    while let Some(start) = rest.find(PEM_CERT_BEGIN) {
        let Some(len) = rest[start..].find(PEM_CERT_END) else {
            skipped += 1;
            break;
        };
        let end = start + len + PEM_CERT_END.len();
        let block = &rest[start..end];
        rest = &rest[end..];
        let mut roots = rustls::RootCertStore::empty();
        let usable = CertificateDer::pem_slice_iter(block.as_bytes())
            .collect::<std::result::Result<Vec<_>, _>>()
            .is_ok_and(|ders| ders.len() == 1 && ders.into_iter().all(|d| roots.add(d).is_ok()));
        if usable {
            certs.push(block.as_bytes().to_vec());
        } else {
            skipped += 1;
        }
    }
    if certs.is_empty() {
        return Err(if skipped > 0 {
            format!("none of its {skipped} certificates can be used")
        } else {
            "it holds no PEM certificate (-----BEGIN CERTIFICATE-----)".to_owned()
        });
    }
    if skipped > 0 {
        tracing::warn!(
            "CA bundle {}: {skipped} certificates skipped (not usable as trust anchors)",
            path.display()
        );
    }
    Ok(certs)
}

/// Largest body of an S3 error answer read: an S3 error document is an XML `<Error>` of a
/// few hundred bytes, which the SDK reads whole into memory to parse.
pub const ERROR_BODY_MAX: usize = 64 << 10;

/// Caps every response body the SDK reads, before it reads it: an error's at
/// [`ERROR_BODY_MAX`], any other at [`GET_MAX`] (the largest object read whole; ranged reads
/// and listings are far smaller). A longer body fails as a broken one, so no endpoint can
/// make the SDK buffer more.
#[derive(Debug)]
struct CapBodies;

impl Intercept for CapBodies {
    fn name(&self) -> &'static str {
        "diskferry-cap-bodies"
    }

    fn modify_before_deserialization(
        &self,
        context: &mut BeforeDeserializationInterceptorContextMut<'_>,
        _: &RuntimeComponents,
        _: &mut ConfigBag,
    ) -> std::result::Result<(), aws_sdk_s3::error::BoxError> {
        let response = context.response_mut();
        let max = if response.status().is_success() {
            usize::try_from(GET_MAX).unwrap_or(usize::MAX)
        } else {
            ERROR_BODY_MAX
        };
        let body = std::mem::replace(response.body_mut(), SdkBody::taken());
        *response.body_mut() =
            body.map(move |b| SdkBody::from_body_1_x(http_body_util::Limited::new(b, max)));
        Ok(())
    }
}

/// An HTTPS client of the SDK's own stack (rustls with aws-lc) that trusts exactly `certs`,
/// as the AWS CLI trusts exactly the bundle it is given.
fn https_client_trusting(certs: Vec<Vec<u8>>) -> Result<aws_sdk_s3::config::SharedHttpClient> {
    let store = certs.into_iter().fold(TrustStore::empty(), |store, pem| {
        store.with_pem_certificate(pem)
    });
    let context = TlsContext::builder()
        .with_trust_store(store)
        .build()
        .map_err(|e| Error::Config {
            reason: format!("TLS settings: {e}"),
        })?;
    Ok(aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(CryptoMode::AwsLc))
        .tls_context(context)
        .build_https())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn lookup(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |name| map.get(name).cloned()
    }

    /// A home directory with `~/.aws/credentials` and `~/.aws/config` holding what is given
    /// (`None`: no file).
    fn home(credentials: Option<&str>, config: Option<&str>) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let aws = dir.path().join(".aws");
        std::fs::create_dir(&aws).unwrap();
        if let Some(text) = credentials {
            std::fs::write(aws.join("credentials"), text).unwrap();
        }
        if let Some(text) = config {
            std::fs::write(aws.join("config"), text).unwrap();
        }
        dir
    }

    fn path(dir: &tempfile::TempDir) -> &str {
        dir.path().to_str().unwrap()
    }

    /// The settings read with `HOME` at a fresh [`home`] holding those files, plus `vars`.
    fn from_home(
        credentials: Option<&str>,
        config: Option<&str>,
        vars: &[(&str, &str)],
    ) -> S3Config {
        let h = home(credentials, config);
        let mut all = vec![(ENV_HOME, path(&h))];
        all.extend_from_slice(vars);
        S3Config::from_lookup(lookup(&all))
    }

    const CREDENTIALS: &str = "[default]\naws_access_key_id = FILEKEY\naws_secret_access_key = \
                               file-secret\n\n[other]\naws_access_key_id = OTHERKEY\n\
                               aws_secret_access_key = other-secret\n";
    const CONFIG: &str = "[default]\nregion = file-region\nendpoint_url = http://profile:1\n\n\
                          [profile other]\nregion = other-region\nendpoint_url = http://other:2\n";

    #[test]
    fn reads_the_aws_cli_variables() {
        let c = S3Config::from_lookup(lookup(&[
            (ENV_ENDPOINT_URL, "http://127.0.0.1:7480"),
            (ENV_ACCESS_KEY_ID, "AK"),
            (ENV_SECRET_ACCESS_KEY, "SK"),
            (ENV_DEFAULT_REGION, "eu-1"),
        ]));
        assert_eq!(c.endpoint.as_deref(), Some("http://127.0.0.1:7480"));
        assert_eq!(c.access_key_id.as_deref(), Some("AK"));
        assert_eq!(c.region, "eu-1");
        assert!(c.session_token.is_none());
        let dbg = format!("{c:?}");
        assert!(!dbg.contains("SK"), "secret leaked into Debug: {dbg}");
    }

    #[test]
    fn region_prefers_aws_region_and_defaults() {
        let c = S3Config::from_lookup(lookup(&[(ENV_REGION, "a"), (ENV_DEFAULT_REGION, "b")]));
        assert_eq!(c.region, "a");
        assert!(!c.region_is_default());
        let c = S3Config::from_lookup(lookup(&[]));
        assert_eq!(c.region, DEFAULT_REGION);
        assert!(c.region_is_default());
    }

    #[test]
    fn overrides_win_and_none_keeps_env() {
        let c = S3Config::from_lookup(lookup(&[(ENV_ENDPOINT_URL, "http://env:1")]))
            .with_endpoint(Some("http://flag:2".into()))
            .with_keys(Some("k".into()), None)
            .with_region(None);
        assert_eq!(c.endpoint.as_deref(), Some("http://flag:2"));
        assert_eq!(c.access_key_id.as_deref(), Some("k"));
        assert_eq!(c.region, DEFAULT_REGION);
    }

    #[test]
    fn default_profile_of_the_home_files_gives_keys_endpoint_and_region() {
        let c = from_home(Some(CREDENTIALS), Some(CONFIG), &[]);
        assert_eq!(c.profile(), DEFAULT_PROFILE);
        assert_eq!(c.access_key_id.as_deref(), Some("FILEKEY"));
        assert_eq!(c.secret_access_key.as_deref(), Some("file-secret"));
        assert_eq!(c.endpoint.as_deref(), Some("http://profile:1"));
        assert_eq!(c.region, "file-region");
        c.client().unwrap();
    }

    #[test]
    fn aws_profile_selects_profile_name_in_config_and_name_in_credentials() {
        let c = from_home(Some(CREDENTIALS), Some(CONFIG), &[(ENV_PROFILE, "other")]);
        assert_eq!(c.profile(), "other");
        assert_eq!(c.access_key_id.as_deref(), Some("OTHERKEY"));
        assert_eq!(c.endpoint.as_deref(), Some("http://other:2"));
        assert_eq!(c.region, "other-region");
    }

    #[test]
    fn a_config_section_without_the_profile_prefix_is_not_a_profile() {
        let c = from_home(
            None,
            Some("[other]\nregion = wrong\n"),
            &[(ENV_PROFILE, "other")],
        );
        assert!(c.region_is_default());
        let err = c.client().unwrap_err().to_string();
        assert!(err.contains("profile \"other\" is in neither"), "{err}");
    }

    #[test]
    fn environment_beats_profile_and_options_beat_environment() {
        let h = home(Some(CREDENTIALS), Some(CONFIG));
        let env = [
            (ENV_HOME, path(&h)),
            (ENV_ACCESS_KEY_ID, "ENVKEY"),
            (ENV_SECRET_ACCESS_KEY, "env-secret"),
            (ENV_SESSION_TOKEN, "env-token"),
            (ENV_ENDPOINT_URL, "http://env:3"),
            (ENV_DEFAULT_REGION, "env-region"),
            (ENV_CA_BUNDLE, "/env/ca.pem"),
        ];
        let c = S3Config::from_lookup(lookup(&env));
        assert_eq!(c.access_key_id.as_deref(), Some("ENVKEY"));
        assert_eq!(c.session_token.as_deref(), Some("env-token"));
        assert_eq!(c.endpoint.as_deref(), Some("http://env:3"));
        assert_eq!(c.region, "env-region");
        assert_eq!(c.ca_bundle.as_deref(), Some(Path::new("/env/ca.pem")));
        let c = c
            .with_keys(Some("FLAGKEY".into()), Some("flag-secret".into()))
            .with_endpoint(Some("http://flag:4".into()))
            .with_region(Some("flag-region".into()))
            .with_ca_bundle(Some("/flag/ca.pem".into()));
        assert_eq!(c.access_key_id.as_deref(), Some("FLAGKEY"));
        assert_eq!(c.endpoint.as_deref(), Some("http://flag:4"));
        assert_eq!(c.region, "flag-region");
        assert_eq!(c.ca_bundle.as_deref(), Some(Path::new("/flag/ca.pem")));
    }

    #[test]
    fn aws_profile_keeps_environment_keys_but_a_profile_option_takes_the_profiles() {
        let h = home(Some(CREDENTIALS), Some(CONFIG));
        let env = [
            (ENV_HOME, path(&h)),
            (ENV_PROFILE, "other"),
            (ENV_ACCESS_KEY_ID, "ENVKEY"),
            (ENV_SECRET_ACCESS_KEY, "env-secret"),
        ];
        let c = S3Config::from_lookup(lookup(&env));
        assert_eq!(c.access_key_id.as_deref(), Some("ENVKEY"));
        let c = S3Config::from_lookup_profile(lookup(&env), Some("default"));
        assert_eq!(c.profile(), DEFAULT_PROFILE);
        assert_eq!(c.access_key_id.as_deref(), Some("FILEKEY"));
        assert_eq!(c.region, "file-region");
    }

    #[test]
    fn file_variables_replace_the_home_files() {
        let h = home(Some(CREDENTIALS), Some(CONFIG));
        let dir = tempfile::tempdir().unwrap();
        let creds = dir.path().join("creds");
        let conf = dir.path().join("conf");
        std::fs::write(
            &creds,
            "[default]\naws_access_key_id=VARKEY\naws_secret_access_key=s\n",
        )
        .unwrap();
        std::fs::write(&conf, "[default]\nendpoint_url=http://var:5\n").unwrap();
        let c = S3Config::from_lookup(lookup(&[
            (ENV_HOME, path(&h)),
            (ENV_SHARED_CREDENTIALS_FILE, creds.to_str().unwrap()),
            (ENV_CONFIG_FILE, conf.to_str().unwrap()),
        ]));
        assert_eq!(c.access_key_id.as_deref(), Some("VARKEY"));
        assert_eq!(c.endpoint.as_deref(), Some("http://var:5"));
        assert!(c.region_is_default(), "the home config file is not read");
        // `~` is the home directory.
        let c = S3Config::from_lookup(lookup(&[
            (ENV_HOME, path(&h)),
            (ENV_CONFIG_FILE, "~/.aws/config"),
            (ENV_SHARED_CREDENTIALS_FILE, "/nonexistent/credentials"),
        ]));
        assert_eq!(c.region, "file-region");
        assert!(c.access_key_id.is_none());
    }

    #[test]
    fn credentials_file_keys_win_over_config_file_keys() {
        let c = from_home(
            Some("[default]\naws_access_key_id = CREDKEY\naws_secret_access_key = c\n"),
            Some("[default]\naws_access_key_id = CONFKEY\naws_secret_access_key = d\n"),
            &[],
        );
        assert_eq!(c.access_key_id.as_deref(), Some("CREDKEY"));
        let c = from_home(
            None,
            Some("[default]\naws_access_key_id = CONFKEY\naws_secret_access_key = d\n"),
            &[],
        );
        assert_eq!(c.access_key_id.as_deref(), Some("CONFKEY"));
    }

    /// Upload bodies go unsigned only where TLS protects them (see `S3Store::from_config`).
    #[test]
    fn only_https_endpoints_and_aws_itself_count_as_tls() {
        let h = home(None, None);
        for (endpoint, https) in [
            (None, true),
            (Some("https://rgw.example.org"), true),
            (Some("HTTPS://rgw.example.org:8443/"), true),
            (Some("http://127.0.0.1:7480"), false),
            (Some("not a url"), false),
        ] {
            let mut pairs = vec![(ENV_HOME, path(&h))];
            if let Some(ep) = endpoint {
                pairs.push((ENV_ENDPOINT_URL, ep));
            }
            let config = S3Config::from_lookup(lookup(&pairs));
            assert_eq!(config.is_https(), https, "{endpoint:?}");
        }
    }

    #[test]
    fn endpoint_precedence_is_the_aws_clis() {
        let config = "[default]\nendpoint_url = http://global-profile:1\nservices = local\n\n\
                      [services local]\ns3 =\n  endpoint_url = http://s3-profile:2\n\
                      dynamodb =\n  endpoint_url = http://dynamo:3\n";
        let h = home(None, Some(config));
        let base = [(ENV_HOME, path(&h))];
        let with = |extra: &[(&str, &str)]| {
            let mut all = base.to_vec();
            all.extend_from_slice(extra);
            S3Config::from_lookup(lookup(&all)).endpoint
        };
        assert_eq!(with(&[]).as_deref(), Some("http://s3-profile:2"));
        assert_eq!(
            with(&[(ENV_ENDPOINT_URL, "http://global-env:4")]).as_deref(),
            Some("http://global-env:4")
        );
        assert_eq!(
            with(&[
                (ENV_ENDPOINT_URL, "http://global-env:4"),
                (ENV_ENDPOINT_URL_S3, "http://s3-env:5")
            ])
            .as_deref(),
            Some("http://s3-env:5")
        );
        let ignored = [
            (ENV_ENDPOINT_URL, "http://global-env:4"),
            (ENV_IGNORE_CONFIGURED_ENDPOINT_URLS, "TRUE"),
        ];
        assert_eq!(with(&ignored), None);
        let mut all = base.to_vec();
        all.extend_from_slice(&ignored);
        let c = S3Config::from_lookup(lookup(&all)).with_endpoint(Some("http://flag:6".into()));
        assert_eq!(c.endpoint.as_deref(), Some("http://flag:6"));
        // Without a services section, the profile's global endpoint.
        let c = from_home(
            None,
            Some("[default]\nendpoint_url = http://global-profile:1\n"),
            &[],
        );
        assert_eq!(c.endpoint.as_deref(), Some("http://global-profile:1"));
        // The profile can ignore configured endpoints too.
        let c = from_home(
            None,
            Some("[default]\nendpoint_url = http://x:1\nignore_configured_endpoint_urls = true\n"),
            &[],
        );
        assert_eq!(c.endpoint, None);
    }

    #[test]
    fn files_parse_as_the_aws_cli_parses_them() {
        let config = "# comment\n; another\n[profile \"my name\"]\nREGION: r1\n\
                      endpoint_url = http://h:1 # not a comment\n\n[default]\nregion=r2\n";
        let c = from_home(None, Some(config), &[(ENV_PROFILE, "my name")]);
        assert_eq!(c.region, "r1");
        assert_eq!(c.endpoint.as_deref(), Some("http://h:1 # not a comment"));
        let c = from_home(None, Some(config), &[]);
        assert_eq!(c.region, "r2");
        // `[profile default]` names the default profile too; the later section wins.
        let c = from_home(
            None,
            Some("[default]\nregion = a\n[profile default]\nregion = b\n"),
            &[],
        );
        assert_eq!(c.region, "b");
    }

    #[test]
    fn a_missing_named_profile_is_an_error_but_a_missing_default_is_not() {
        let c = from_home(Some(CREDENTIALS), None, &[(ENV_PROFILE, "nope")]);
        let err = c.client().unwrap_err().to_string();
        assert!(err.contains("profile \"nope\""), "{err}");
        assert!(err.contains(".aws/credentials"), "{err}");
        assert!(err.contains("config (not found)"), "{err}");
        let c = from_home(
            None,
            None,
            &[(ENV_ACCESS_KEY_ID, "a"), (ENV_SECRET_ACCESS_KEY, "b")],
        );
        c.client().unwrap();
    }

    #[test]
    fn broken_files_are_errors_that_name_the_line_but_not_its_content() {
        for (text, says) in [
            ("aws_secret_access_key = hunter2\n", "before any [section]"),
            ("[default]\nhunter2\n", "not a `key = value` line"),
            ("[default]\na = 1\n[default]\n", "appears twice"),
            ("[default]\nregion = a\nregion = hunter2\n", "appears twice"),
            ("[default\nhunter2 = x\n", "without a closing ]"),
        ] {
            let c = from_home(
                Some(text),
                None,
                &[(ENV_ACCESS_KEY_ID, "a"), (ENV_SECRET_ACCESS_KEY, "b")],
            );
            let err = c.client().unwrap_err().to_string();
            assert!(
                err.contains(says) && err.contains("line "),
                "{text:?}: {err}"
            );
            assert!(err.contains(".aws/credentials"), "{err}");
            assert!(!err.contains("hunter2"), "the content leaked: {err}");
        }
    }

    #[test]
    fn secrets_from_files_stay_out_of_debug_and_errors() {
        let c = from_home(
            Some(
                "[default]\naws_access_key_id = K\naws_secret_access_key = s3cr3t-file\n\
                  aws_session_token = t0ken-file\n",
            ),
            None,
            &[],
        )
        .with_endpoint(Some("ftp://x".into()));
        assert_eq!(c.session_token.as_deref(), Some("t0ken-file"));
        let dbg = format!("{c:?}");
        assert!(!dbg.contains("s3cr3t") && !dbg.contains("t0ken"), "{dbg}");
        let err = c.client().unwrap_err().to_string();
        assert!(!err.contains("s3cr3t") && !err.contains("t0ken"), "{err}");
    }

    #[test]
    fn partial_keys_and_unsupported_sources_are_refused_by_name() {
        let err = from_home(Some("[default]\naws_access_key_id = K\n"), None, &[])
            .client()
            .unwrap_err()
            .to_string();
        assert!(err.contains("no aws_secret_access_key"), "{err}");
        let err = from_home(
            Some("[default]\naws_access_key_id = K\naws_secret_access_key = S\n"),
            Some("[default]\nrole_arn = arn:aws:iam::1:role/r\n"),
            &[],
        )
        .client()
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("role_arn") && err.contains("does not support"),
            "{err}"
        );
        let err = S3Config::from_lookup(lookup(&[(ENV_ACCESS_KEY_ID, "K")]))
            .client()
            .unwrap_err()
            .to_string();
        assert!(err.contains("AWS_SECRET_ACCESS_KEY is not"), "{err}");
    }

    #[test]
    fn missing_credentials_name_the_real_ways_to_give_them() {
        let c = from_home(None, None, &[(ENV_ENDPOINT_URL, "http://e:1")]);
        let err = c.client().unwrap_err().to_string();
        for part in [
            ENV_ACCESS_KEY_ID,
            ENV_SECRET_ACCESS_KEY,
            KEY_ACCESS_KEY_ID,
            "under [default] in",
            ".aws/credentials (not found)",
            ".aws/config (not found)",
            ENV_PROFILE,
            ENV_SHARED_CREDENTIALS_FILE,
            ENV_CONFIG_FILE,
            "http://e:1",
        ] {
            assert!(err.contains(part), "{part:?} missing: {err}");
        }
        assert!(
            !err.contains("option"),
            "names options that do not exist: {err}"
        );
        let err = S3Config::default()
            .with_keys(Some("a".into()), Some("b".into()))
            .with_endpoint(Some("ftp://x".into()))
            .client()
            .unwrap_err()
            .to_string();
        assert!(err.contains("ftp://x"), "{err}");
    }

    /// A self-signed CA made for these tests (its key was thrown away).
    const TEST_CA: &str = "-----BEGIN CERTIFICATE-----
MIIBkDCCATWgAwIBAgIUY4fARhOIiTnqf/sUuD9tR7pKI+8wCgYIKoZIzj0EAwIw
HDEaMBgGA1UEAwwRZGlza2ZlcnJ5LXRlc3QtY2EwIBcNMjYxMjA2MTYzODQ2WhgP
MjEyNjExMTIxNjM4NDZaMBwxGjAYBgNVBAMMEWRpc2tmZXJyeS10ZXN0LWNhMFkw
EwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEbYH+45s2czTesJTfk2NS+TYA5sugQSAu
v8ZtWQhHy+J0GjUSdo1Z155XkY9+5bFpGt/1z0qjQfwjoqgH1tWfu6NTMFEwHQYD
VR0OBBYEFDzgMg/ABUWcYMY5MwymYX/JrgTxMB8GA1UdIwQYMBaAFDzgMg/ABUWc
YMY5MwymYX/JrgTxMA8GA1UdEwEB/wQFMAMBAf8wCgYIKoZIzj0EAwIDSQAwRgIh
AN/eO1PbsME74b2HyGgF68BiG9RcoeTg32WpWnpHMJDFAiEAt9l7c0NnKAJ9c1LP
oxKwpg8HFQxIUtlE5kcPZut+C7Q=
-----END CERTIFICATE-----
";

    fn https_config(ca: &Path, origin: &[(&str, &str)]) -> S3Config {
        let mut env = vec![
            (ENV_ACCESS_KEY_ID, "a"),
            (ENV_SECRET_ACCESS_KEY, "b"),
            (ENV_ENDPOINT_URL, "https://rgw.example:443"),
            (ENV_CA_BUNDLE, ca.to_str().unwrap()),
        ];
        env.extend_from_slice(origin);
        S3Config::from_lookup(lookup(&env))
    }

    #[test]
    fn ca_bundle_is_read_for_https() {
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca.pem");
        // Text around and between certificates is allowed, as in system bundles.
        std::fs::write(&ca, format!("# test CAs\n{TEST_CA}\n{TEST_CA}")).unwrap();
        let certs = read_ca_bundle(&ca).unwrap();
        assert_eq!(certs.len(), 2);
        assert!(certs[0].starts_with(PEM_CERT_BEGIN.as_bytes()));
        https_config(&ca, &[]).client().unwrap();
    }

    #[test]
    fn a_bad_ca_bundle_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.pem");
        let err = https_config(&missing, &[])
            .client()
            .unwrap_err()
            .to_string();
        assert!(err.contains("missing.pem"), "{err}");
        assert!(
            err.contains(ENV_CA_BUNDLE),
            "names where the path came from: {err}"
        );
        assert!(err.contains("No such file"), "{err}");
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let err = https_config(&empty, &[]).client().unwrap_err().to_string();
        assert!(err.contains("no PEM certificate"), "{err}");
        let broken = dir.path().join("broken.pem");
        std::fs::write(&broken, format!("{PEM_CERT_BEGIN}\nAAAA\n{PEM_CERT_END}\n")).unwrap();
        let err = https_config(&broken, &[]).client().unwrap_err().to_string();
        assert!(err.contains("none of its 1 certificates"), "{err}");
        // Plain HTTP does not use the bundle, so it is not read.
        https_config(&missing, &[(ENV_ENDPOINT_URL_S3, "http://rgw:80")])
            .client()
            .unwrap();
    }

    #[test]
    fn ca_bundle_comes_from_the_profile_too() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("profile-ca.pem");
        let c = from_home(
            None,
            Some(&format!("[default]\nca_bundle = {}\n", missing.display())),
            &[(ENV_ACCESS_KEY_ID, "a"), (ENV_SECRET_ACCESS_KEY, "b")],
        );
        assert_eq!(c.ca_bundle.as_deref(), Some(missing.as_path()));
        let err = c.client().unwrap_err().to_string();
        assert!(err.contains("ca_bundle of profile \"default\""), "{err}");
    }

    /// A server whose one answer has status `status` and an S3 error document padded to
    /// `len` bytes as its body; returns the endpoint.
    fn padded_error_server(status: &'static str, len: usize) -> String {
        let mut body = b"<?xml version=\"1.0\"?><Error><Code>AccessDenied</Code>\
            <Message>denied</Message></Error>"
            .to_vec();
        body.resize(len, b' ');
        let mut answer = format!(
            "HTTP/1.1 {status}\r\nContent-Type: application/xml\r\n\
             Content-Length: {len}\r\nConnection: close\r\n\r\n"
        )
        .into_bytes();
        answer.extend(body);
        format!(
            "http://127.0.0.1:{}",
            crate::http::tests::serve_once(answer)
        )
    }

    #[tokio::test]
    async fn an_error_body_over_its_cap_is_not_read() {
        for (len, capped) in [(ERROR_BODY_MAX, false), (ERROR_BODY_MAX + 1, true)] {
            let config = S3Config::from_lookup(|name| match name {
                ENV_ACCESS_KEY_ID => Some("AK".into()),
                ENV_SECRET_ACCESS_KEY => Some("SK".into()),
                _ => None,
            })
            .with_endpoint(Some(padded_error_server("403 Forbidden", len)));
            let store = crate::S3Store::new(config.client().unwrap(), RetryPolicy::none());
            let err = store.get_object_bytes("b", "k").await.unwrap_err();
            let text = err.to_string();
            if capped {
                assert!(text.contains("length limit exceeded"), "{len}: {text}");
            } else {
                assert!(matches!(err, Error::AccessDenied { .. }), "{len}: {text}");
            }
        }
    }
}
