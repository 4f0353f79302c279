//! Maps aws-sdk-s3 errors onto [`Error`], naming the bucket, key or upload.

use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};

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
    let detail = DisplayErrorContext(&err).to_string();
    let transient = |detail: String| Error::Transient {
        op,
        what: what.clone(),
        detail,
    };
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
