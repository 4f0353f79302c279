//! Maps aws-sdk-s3 errors onto [`Error`], naming the bucket, key or upload.

use std::error::Error as StdError;
use std::io;

use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};

use crate::error::Error;

/// HTTP statuses and S3 error codes that mean "try again".
const TRANSIENT_CODES: &[&str] = &[
    "RequestTimeout",
    "SlowDown",
    "InternalError",
    "ServiceUnavailable",
    "Throttling",
    "ThrottlingException",
    "RequestTimeTooSkewed",
];
/// S3 error codes that mean the thing asked for does not exist.
const NOT_FOUND_CODES: &[&str] = &["NoSuchKey", "NoSuchBucket", "NoSuchUpload", "NotFound"];
/// S3 error codes about credentials or permissions.
const DENIED_CODES: &[&str] = &[
    "AccessDenied",
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "AllAccessDisabled",
];
/// S3 error codes for a bucket that exists already.
const EXISTS_CODES: &[&str] = &["BucketAlreadyExists", "BucketAlreadyOwnedByYou"];

/// HTTP 403.
const STATUS_FORBIDDEN: u16 = 403;
/// HTTP 404.
const STATUS_NOT_FOUND: u16 = 404;
/// HTTP 412, a failed `If-Match` / `If-None-Match`.
pub(crate) const STATUS_PRECONDITION_FAILED: u16 = 412;
/// HTTP 429.
const STATUS_TOO_MANY_REQUESTS: u16 = 429;
/// First 5xx status.
const STATUS_SERVER_ERROR: u16 = 500;

/// What an S3 request was about, for messages.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Target<'a> {
    pub(crate) bucket: &'a str,
    pub(crate) key: Option<&'a str>,
}

impl Target<'_> {
    pub(crate) fn describe(&self) -> String {
        match self.key {
            Some(k) => format!("s3://{}/{}", self.bucket, k),
            None => format!("bucket {:?}", self.bucket),
        }
    }
}

/// Converts an SDK error from operation `op` on `target`.
pub(crate) fn map_sdk_error<E>(
    op: &'static str,
    target: Target<'_>,
    err: SdkError<E, HttpResponse>,
) -> Error
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let what = target.describe();
    let detail = chain_text(&err);
    let transient = |detail: String| Error::Transient {
        op,
        what: what.clone(),
        detail,
    };
    // Before the connect check: a refused certificate is a failure to connect too, but one
    // that every retry meets again.
    if let Some(reason) = Error::tls_failure(&err) {
        return Error::Tls {
            endpoint: None,
            op,
            what,
            reason,
        };
    }
    if let Some(reason) = connect_failure(&err) {
        return Error::Unreachable {
            endpoint: None,
            op,
            what,
            reason,
        };
    }
    match &err {
        SdkError::TimeoutError(_) | SdkError::ResponseError(_) => return transient(detail),
        // Every failure to get a response is worth another try except a malformed request:
        // hyper's "connection closed before message completed" (RGW under load) comes back
        // as an unclassified error, not as I/O.
        SdkError::DispatchFailure(d) if !d.is_user() => return transient(detail),
        SdkError::ServiceError(_) => {}
        _ => {
            return Error::S3 {
                op,
                what,
                detail,
                source: Box::new(err),
            };
        }
    }
    let status = err.raw_response().map_or(0, |r| r.status().as_u16());
    let code = err.code().unwrap_or("");
    let message = err.message().unwrap_or("");
    let short = if code.is_empty() {
        format!("HTTP {status}")
    } else if message.is_empty() {
        format!("{code} (HTTP {status})")
    } else {
        format!("{code}: {message} (HTTP {status})")
    };
    if code == "NoSuchBucket" {
        return Error::NotFound {
            what: format!("bucket {:?} (for {op} on {what})", target.bucket),
        };
    }
    if NOT_FOUND_CODES.contains(&code) || (status == STATUS_NOT_FOUND && code.is_empty()) {
        return Error::NotFound { what };
    }
    if DENIED_CODES.contains(&code) || status == STATUS_FORBIDDEN {
        return Error::AccessDenied {
            what,
            detail: short,
        };
    }
    if EXISTS_CODES.contains(&code) {
        return Error::AlreadyExists { what };
    }
    if TRANSIENT_CODES.contains(&code)
        || status >= STATUS_SERVER_ERROR
        || status == STATUS_TOO_MANY_REQUESTS
    {
        return transient(short);
    }
    if status == STATUS_PRECONDITION_FAILED {
        return Error::Http {
            status,
            what,
            detail: short,
        };
    }
    Error::S3 {
        op,
        what,
        detail: short,
        source: Box::new(err),
    }
}

/// The messages of `err` and its sources, joined by `": "`, each left out when the text so
/// far already holds it. Unlike the SDK's `DisplayErrorContext`, no `Debug` dump of the
/// error structure is appended: this text is for users.
pub(crate) fn chain_text(err: &(dyn StdError + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(e) = source {
        let part = e.to_string();
        if !part.is_empty() && !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = e.source();
    }
    text
}

/// Why no connection could be made, in words, when `err` is a failure to connect (refused,
/// unreachable, DNS, TLS handshake, connect timeout) rather than a failure of a request on a
/// connection; `None` otherwise.
fn connect_failure(err: &(dyn StdError + 'static)) -> Option<String> {
    let mut source = Some(err);
    while let Some(e) = source {
        if let Some(client) = e.downcast_ref::<hyper_util::client::legacy::Error>() {
            return client.is_connect().then(|| connect_reason(client));
        }
        source = e.source();
    }
    None
}

/// I/O error kinds whose name says all a user needs (`connection refused`).
const PLAIN_CONNECT_ERRORS: &[io::ErrorKind] = &[
    io::ErrorKind::ConnectionRefused,
    io::ErrorKind::ConnectionReset,
    io::ErrorKind::ConnectionAborted,
    io::ErrorKind::HostUnreachable,
    io::ErrorKind::NetworkUnreachable,
    io::ErrorKind::AddrNotAvailable,
    io::ErrorKind::TimedOut,
];

/// What the causes below the HTTP client's connect error say: the I/O error kind's name when
/// that says it all, else their messages (`dns error: failed to lookup address …`).
fn connect_reason(connect: &(dyn StdError + 'static)) -> String {
    let mut source = connect.source();
    while let Some(e) = source {
        if let Some(io) = e.downcast_ref::<io::Error>() {
            if PLAIN_CONNECT_ERRORS.contains(&io.kind()) {
                return io.kind().to_string();
            }
        }
        source = e.source();
    }
    match connect.source() {
        Some(cause) => chain_text(cause),
        None => "the connection failed".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An error with a source, as the HTTP stack nests them.
    #[derive(Debug)]
    struct Nested(&'static str, Option<Box<dyn StdError + Send + Sync>>);

    impl std::fmt::Display for Nested {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(self.0)
        }
    }

    impl StdError for Nested {
        fn source(&self) -> Option<&(dyn StdError + 'static)> {
            self.1.as_deref().map(|e| e as _)
        }
    }

    #[test]
    fn chain_text_joins_messages_without_repeats_or_debug() {
        let err = Nested(
            "dispatch failure",
            Some(Box::new(Nested(
                "io error",
                Some(Box::new(io::Error::from(io::ErrorKind::ConnectionRefused))),
            ))),
        );
        assert_eq!(
            chain_text(&err),
            "dispatch failure: io error: connection refused"
        );
        let repeated = Nested(
            "timeout: connect timed out",
            Some(Box::new(Nested("connect timed out", None))),
        );
        assert_eq!(chain_text(&repeated), "timeout: connect timed out");
    }

    #[test]
    fn a_refused_certificate_is_a_tls_error_that_is_never_retried() {
        use aws_sdk_s3::error::ConnectorError;
        use aws_sdk_s3::operation::get_object::GetObjectError;

        let target = Target {
            bucket: "b",
            key: Some("k"),
        };
        // As hyper-rustls hands it over: the rustls error inside an io::Error inside another.
        let tls = io::Error::other(io::Error::new(
            io::ErrorKind::InvalidData,
            rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer),
        ));
        let chain = Nested(
            "client error (Connect)",
            Some(Box::new(Nested("tls handshake", Some(Box::new(tls))))),
        );
        let err: SdkError<GetObjectError, HttpResponse> =
            SdkError::dispatch_failure(ConnectorError::io(Box::new(chain)));
        let err = map_sdk_error("GetObject", target, err);
        assert!(matches!(err, Error::Tls { .. }), "{err}");
        assert!(!err.is_transient(), "{err}");
        let text = err.at_endpoint("https://rgw:443").to_string();
        assert!(
            text.contains("https://rgw:443")
                && text.contains("UnknownIssuer")
                && text.contains("no authority in the trusted bundle"),
            "{text}"
        );

        // A connection lost during the handshake is no certificate problem: retried.
        let reset = io::Error::from(io::ErrorKind::ConnectionReset);
        let err: SdkError<GetObjectError, HttpResponse> =
            SdkError::dispatch_failure(ConnectorError::io(Box::new(reset)));
        assert!(map_sdk_error("GetObject", target, err).is_transient());
    }

    #[test]
    fn connect_reason_names_the_io_error_kind_or_the_causes() {
        let refused = Nested(
            "tcp connect error",
            Some(Box::new(io::Error::from(io::ErrorKind::ConnectionRefused))),
        );
        let client = Nested("client error (Connect)", Some(Box::new(refused)));
        assert_eq!(connect_reason(&client), "connection refused");
        let dns = Nested(
            "dns error",
            Some(Box::new(io::Error::other(
                "failed to lookup address information",
            ))),
        );
        let client = Nested("client error (Connect)", Some(Box::new(dns)));
        assert_eq!(
            connect_reason(&client),
            "dns error: failed to lookup address information"
        );
    }
}
