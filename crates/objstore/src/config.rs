//! S3 configuration, read the way the AWS CLI reads it, and the RGW-safe client built from it.

use std::time::Duration;

use aws_sdk_s3::config::{
    retry::RetryConfig, timeout::TimeoutConfig, BehaviorVersion, Credentials, Region,
    RequestChecksumCalculation, ResponseChecksumValidation, StalledStreamProtectionConfig,
};

use crate::error::{Error, Result};
use crate::retry::RetryPolicy;

/// Environment variable with the endpoint URL (AWS CLI ≥ 2.13 reads it too).
pub const ENV_ENDPOINT_URL: &str = "AWS_ENDPOINT_URL";
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
/// Built with [`S3Config::from_env`] and then overridden field by field from command-line
/// flags, e.g. `S3Config::from_env().with_endpoint(flag)`.
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
    /// TCP/TLS connect timeout.
    pub connect_timeout: Duration,
    /// Read (silence) timeout.
    pub read_timeout: Duration,
    /// Timeout of one attempt of one request.
    pub attempt_timeout: Duration,
    /// Retries of transient failures, done by this crate (the SDK's own retries are off).
    pub retry: RetryPolicy,
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
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            read_timeout: DEFAULT_READ_TIMEOUT,
            attempt_timeout: DEFAULT_ATTEMPT_TIMEOUT,
            retry: RetryPolicy::default(),
        }
    }
}

impl S3Config {
    /// Reads `AWS_ENDPOINT_URL`, `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
    /// `AWS_SESSION_TOKEN` and `AWS_REGION` (else `AWS_DEFAULT_REGION`). Empty values count
    /// as unset. Profiles in `~/.aws` are not read.
    pub fn from_env() -> Self {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Like [`S3Config::from_env`], with a custom variable lookup (for tests and for callers
    /// that hold the environment in a map).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Self {
        let get = |name: &str| lookup(name).filter(|v| !v.trim().is_empty());
        Self {
            endpoint: get(ENV_ENDPOINT_URL),
            access_key_id: get(ENV_ACCESS_KEY_ID),
            secret_access_key: get(ENV_SECRET_ACCESS_KEY),
            session_token: get(ENV_SESSION_TOKEN),
            region: get(ENV_REGION)
                .or_else(|| get(ENV_DEFAULT_REGION))
                .unwrap_or_else(|| DEFAULT_REGION.to_owned()),
            ..Self::default()
        }
    }

    /// Overrides the endpoint (a `--endpoint` flag) when `endpoint` is `Some`.
    pub fn with_endpoint(mut self, endpoint: Option<String>) -> Self {
        if endpoint.is_some() {
            self.endpoint = endpoint;
        }
        self
    }

    /// Overrides both keys when given (flags such as `--access-key`/`--secret-key`).
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
        }
        self
    }

    /// A short description for messages: the endpoint or "AWS".
    pub fn describe_endpoint(&self) -> &str {
        self.endpoint.as_deref().unwrap_or("AWS (no endpoint set)")
    }

    /// Builds an `aws_sdk_s3::Client` set up for Ceph RGW (Pacific) as well as AWS:
    /// path-style addressing, checksums only when an operation requires them (Pacific rejects
    /// the aws-chunked trailers the SDK otherwise sends), the configured timeouts, and the
    /// SDK's retries turned off because this crate retries transient errors itself.
    pub fn client(&self) -> Result<aws_sdk_s3::Client> {
        let (Some(key), Some(secret)) = (&self.access_key_id, &self.secret_access_key) else {
            return Err(Error::Config {
                reason: format!(
                    "no S3 credentials for {}: set {ENV_ACCESS_KEY_ID} and {ENV_SECRET_ACCESS_KEY} \
                     (or pass the keys as options)",
                    self.describe_endpoint()
                ),
            });
        };
        if let Some(ep) = &self.endpoint {
            let url = url::Url::parse(ep).map_err(|e| Error::Config {
                reason: format!("endpoint {ep:?} is not a URL: {e}"),
            })?;
            if !matches!(url.scheme(), "http" | "https") {
                return Err(Error::Config {
                    reason: format!("endpoint {ep:?} must start with http:// or https://"),
                });
            }
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
            .stalled_stream_protection(StalledStreamProtectionConfig::disabled());
        if let Some(ep) = &self.endpoint {
            builder = builder.endpoint_url(ep.trim_end_matches('/'));
        }
        Ok(aws_sdk_s3::Client::from_conf(builder.build()))
    }
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
        assert_eq!(S3Config::from_lookup(lookup(&[])).region, DEFAULT_REGION);
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
    fn missing_credentials_and_bad_endpoint_are_config_errors() {
        let err = S3Config::default().client().unwrap_err().to_string();
        assert!(err.contains(ENV_ACCESS_KEY_ID), "{err}");
        let err = S3Config::default()
            .with_keys(Some("a".into()), Some("b".into()))
            .with_endpoint(Some("ftp://x".into()))
            .client()
            .unwrap_err()
            .to_string();
        assert!(err.contains("ftp://x"), "{err}");
    }
}
