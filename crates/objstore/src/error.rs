//! The one error type of this crate.
//!
//! Every message names the object it is about (`s3://bucket/key`, a URL or a path), so a
//! caller can print it as it is.

/// Result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Boxed source error from a lower layer (SDK, HTTP client).
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Errors from object stores, HTTP servers and local files.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The bucket, object, upload, URL or file does not exist.
    #[error("not found: {what}")]
    NotFound {
        /// What was looked for, e.g. `s3://bucket/key` or `bucket "b"`.
        what: String,
    },

    /// The object or bucket exists and the operation refuses to replace it.
    #[error("already exists: {what}")]
    AlreadyExists {
        /// What exists.
        what: String,
    },

    /// The credentials do not allow the operation.
    #[error("access denied: {what}: {detail}")]
    AccessDenied {
        /// What was accessed.
        what: String,
        /// The server's explanation.
        detail: String,
    },

    /// An address (`s3://…`, URL) could not be parsed.
    #[error("invalid address {input:?}: {reason}")]
    InvalidAddress {
        /// The text given.
        input: String,
        /// Why it is not valid.
        reason: String,
    },

    /// Configuration is missing or inconsistent (endpoint, credentials, options).
    #[error("configuration: {reason}")]
    Config {
        /// What is wrong and how to fix it.
        reason: String,
    },

    /// A failure that may go away on retry (5xx, throttling, timeout, connection error).
    #[error("transient error in {op} on {what}: {detail}")]
    Transient {
        /// The operation, e.g. `UploadPart`.
        op: &'static str,
        /// The object.
        what: String,
        /// What happened.
        detail: String,
    },

    /// No connection to the S3 endpoint could be made: refused, unreachable, a name that does
    /// not resolve, a connection lost during the TLS handshake, or the connect timeout.
    /// Retried like a transient error, since an endpoint may be restarting. (A certificate
    /// refused is [`Error::Tls`], never retried.)
    #[error(
        "cannot connect to the S3 endpoint{}: {reason} ({op} on {what})",
        endpoint.as_deref().map(|e| format!(" {e}")).unwrap_or_default()
    )]
    Unreachable {
        /// The endpoint URL, when the store knows it.
        endpoint: Option<String>,
        /// The operation, e.g. `HeadObject`.
        op: &'static str,
        /// The bucket or object.
        what: String,
        /// Why, in words: `connection refused`, `dns error: …`.
        reason: String,
    },

    /// The TLS handshake with the endpoint failed for a reason a retry cannot change: a
    /// certificate no trusted authority signed, one for another name, an expired one, a
    /// protocol the peer does not speak. Never retried.
    #[error(
        "TLS with the endpoint{}: {reason} ({op} on {what})",
        endpoint.as_deref().map(|e| format!(" {e}")).unwrap_or_default()
    )]
    Tls {
        /// The endpoint URL, when the store knows it.
        endpoint: Option<String>,
        /// The operation, e.g. `HeadObject`.
        op: &'static str,
        /// The bucket, object or URL.
        what: String,
        /// What is wrong with the certificate or the handshake, in words.
        reason: String,
    },

    /// A transient error persisted through every attempt.
    #[error("gave up after {attempts} attempts: {last}")]
    RetriesExhausted {
        /// How many attempts were made.
        attempts: u32,
        /// The error of the last attempt.
        #[source]
        last: Box<Error>,
    },

    /// An HTTP server answered with an unexpected status.
    #[error("HTTP {status} from {what}: {detail}")]
    Http {
        /// The status code.
        status: u16,
        /// The URL or object.
        what: String,
        /// What was expected or what the server said.
        detail: String,
    },

    /// The object changed since it was opened (its ETag no longer matches).
    #[error("{what} changed while being read (opened with ETag {etag})")]
    Changed {
        /// The object.
        what: String,
        /// The ETag seen at open.
        etag: String,
    },

    /// A read asked for bytes beyond the end of the object, or the server sent fewer bytes.
    #[error("short read on {what}: wanted {len} bytes at offset {offset}, {detail}")]
    ShortRead {
        /// The object.
        what: String,
        /// The offset asked for.
        offset: u64,
        /// The length asked for.
        len: u64,
        /// Why it is short (object size, bytes received).
        detail: String,
    },

    /// The server does not honour `Range` requests.
    #[error("{what} does not support range requests: {detail}")]
    RangeNotSupported {
        /// The URL.
        what: String,
        /// What the server did.
        detail: String,
    },

    /// A writer was used against its contract (overlap, gap, out of order, limit exceeded).
    #[error("invalid write to {what}: {reason}")]
    InvalidWrite {
        /// The object being written.
        what: String,
        /// What was wrong.
        reason: String,
    },

    /// An object read whole into memory is larger than the limit for such reads.
    #[error("{what} is too large to read whole: {size} bytes or more, at most {max} expected")]
    TooLarge {
        /// The object.
        what: String,
        /// Its size, or the bytes received when the refusal came.
        size: u64,
        /// The limit.
        max: u64,
    },

    /// A local I/O error.
    #[error("I/O error on {what}: {source}")]
    Io {
        /// The path or object.
        what: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },

    /// Any other S3 failure, with the SDK's full explanation.
    #[error("S3 {op} on {what} failed: {detail}")]
    S3 {
        /// The operation, e.g. `CompleteMultipartUpload`.
        op: &'static str,
        /// The bucket or object.
        what: String,
        /// The SDK's error text with its context chain.
        detail: String,
        /// The underlying error.
        #[source]
        source: BoxError,
    },

    /// An operation failed, and removing what it had started failed too (a multipart upload
    /// that could not be aborted, an object that could not be deleted).
    #[error("{error}; cleaning up also failed, {left_behind} is left behind: {cleanup}")]
    CleanupFailed {
        /// The operation's error.
        error: Box<Error>,
        /// The cleanup's error.
        cleanup: Box<Error>,
        /// What remains, e.g. `s3://bucket/key (multipart upload ID)`.
        left_behind: String,
    },
}

impl Error {
    /// True when retrying the same request may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, Error::Transient { .. } | Error::Unreachable { .. })
    }

    /// This error naming `endpoint` if it is an [`Error::Unreachable`] or [`Error::Tls`]
    /// (also after retries) that does not name one yet: the SDK's error does not say where
    /// it tried to connect.
    pub fn at_endpoint(self, endpoint: &str) -> Self {
        match self {
            Error::Tls {
                endpoint: None,
                op,
                what,
                reason,
            } => Error::Tls {
                endpoint: Some(endpoint.to_owned()),
                op,
                what,
                reason,
            },
            Error::Unreachable {
                endpoint: None,
                op,
                what,
                reason,
            } => Error::Unreachable {
                endpoint: Some(endpoint.to_owned()),
                op,
                what,
                reason,
            },
            Error::RetriesExhausted { attempts, last } => Error::RetriesExhausted {
                attempts,
                last: Box::new(last.at_endpoint(endpoint)),
            },
            other => other,
        }
    }

    /// The TLS failure somewhere in `err`'s chain of causes, in words, if the handshake
    /// failed for a reason of the certificate or the protocol (a [`rustls::Error`]), as
    /// opposed to a connection lost during it. Such a failure is permanent.
    pub fn tls_failure(err: &(dyn std::error::Error + 'static)) -> Option<String> {
        let mut next = Some(err);
        while let Some(e) = next {
            if let Some(tls) = e.downcast_ref::<rustls::Error>() {
                return Some(describe_tls(tls));
            }
            // hyper-rustls hands the rustls error over inside an io::Error inside another;
            // an io::Error's `source()` skips its payload: step into the payload instead.
            let payload = e
                .downcast_ref::<std::io::Error>()
                .and_then(|io| io.get_ref())
                .map(|p| p as &(dyn std::error::Error + 'static));
            next = payload.or_else(|| e.source());
        }
        None
    }

    /// True for [`Error::NotFound`].
    pub fn is_not_found(&self) -> bool {
        matches!(self, Error::NotFound { .. })
    }

    /// Shorthand for an [`Error::Io`].
    pub fn io(what: impl std::fmt::Display, source: std::io::Error) -> Self {
        Error::Io {
            what: what.to_string(),
            source,
        }
    }

    /// Shorthand for an [`Error::InvalidWrite`].
    pub fn invalid_write(what: impl std::fmt::Display, reason: impl Into<String>) -> Self {
        Error::InvalidWrite {
            what: what.to_string(),
            reason: reason.into(),
        }
    }
}

/// rustls' text for `err`, with what to do added where its wording is cryptic.
fn describe_tls(err: &rustls::Error) -> String {
    use rustls::{CertificateError, Error as E};
    let hint = match err {
        E::InvalidCertificate(CertificateError::UnknownIssuer) => {
            ": no authority in the trusted bundle (AWS_CA_BUNDLE, or the system's) signed it"
        }
        E::InvalidCertificate(CertificateError::NotValidForName)
        | E::InvalidCertificate(CertificateError::NotValidForNameContext { .. }) => {
            ": the certificate does not name the endpoint's host (subjectAltName)"
        }
        // webpki's CaUsedAsEndEntity: a self-signed certificate with basicConstraints
        // CA:TRUE presented as the server's own. OpenSSL (the AWS CLI) accepts it when it is
        // itself in the bundle; rustls never does.
        E::InvalidCertificate(CertificateError::Other(other))
            if format!("{other:?}").contains("CaUsedAsEndEntity") =>
        {
            ": the endpoint presents a CA certificate (basicConstraints CA:TRUE) as its own; \
             diskferry, unlike the AWS CLI, does not accept a CA certificate as the server's: \
             give the endpoint a certificate signed by that CA, or make its self-signed \
             certificate with CA:FALSE"
        }
        _ => "",
    };
    format!("{err}{hint}")
}
