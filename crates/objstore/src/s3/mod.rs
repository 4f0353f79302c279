//! S3 and Ceph RGW through aws-sdk-s3: object helpers, a ranged reader, multipart uploads
//! and a positional writer.

mod bucket;
mod errors;
mod journal;
mod multipart;
mod object;
mod writer;

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::SystemTime;

use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::Client;
use bytes::Bytes;

pub use bucket::S3Bucket;
pub use journal::{BadWriter, UploadJournal, UploadRecord, Writer, WriterState, ENV_STATE_DIR};
pub use multipart::{
    MultipartUpload, UploadedPart, MAX_PARTS, MAX_PART_NUMBER, MAX_PART_SIZE, MIN_PART_NUMBER,
    MIN_PART_SIZE,
};
pub use object::S3Object;
pub use writer::{S3Writer, S3WriterOptions, DEFAULT_PARTS_IN_FLIGHT, DEFAULT_PART_SIZE};

pub(crate) use errors::{chain_text, map_sdk_error, Target, STATUS_PRECONDITION_FAILED};

use crate::config::S3Config;
use crate::error::{Error, Result};
use crate::read::GET_MAX;
use crate::retry::RetryPolicy;
use crate::write::WrittenObject;

/// Page size asked of List* calls (the S3 maximum).
const LIST_PAGE_SIZE: i32 = 1000;

/// How a new object is stored.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PutOptions {
    /// User metadata (`x-amz-meta-*`); keys are lower-cased by S3.
    pub metadata: HashMap<String, String>,
    /// `Content-Type`, e.g. `application/octet-stream`.
    pub content_type: Option<String>,
    /// Replace an existing object. When false, an existing object is an
    /// [`Error::AlreadyExists`]; see [`S3Store::put_object`] for the race this leaves.
    pub overwrite: bool,
}

/// What HeadObject says about an object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    /// Size in bytes.
    pub size: u64,
    /// ETag, with its quotes as the server sent it.
    pub etag: Option<String>,
    /// `Content-Type`.
    pub content_type: Option<String>,
    /// User metadata.
    pub metadata: HashMap<String, String>,
    /// When the object was last written, if the store says.
    pub modified: Option<SystemTime>,
}

/// One object in a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedObject {
    /// Full key.
    pub key: String,
    /// Size in bytes.
    pub size: u64,
    /// ETag.
    pub etag: Option<String>,
}

/// A multipart upload that was started and neither completed nor aborted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingUpload {
    /// The object key.
    pub key: String,
    /// The upload id.
    pub upload_id: String,
    /// When the upload was started, if the server says.
    pub initiated: Option<SystemTime>,
}

/// An S3 client plus this crate's retry policy: the entry point for all S3 operations.
///
/// Cheap to clone; clones share one connection pool. The pool's connections are driven by
/// the Tokio runtime that opened them, so use a store from one runtime (a store used from a
/// second runtime while the first is blocked stalls until the read timeout).
#[derive(Debug, Clone)]
pub struct S3Store {
    client: Client,
    retry: RetryPolicy,
    /// The endpoint, for messages: the SDK's errors do not say where they tried to connect.
    endpoint: Option<Arc<str>>,
    /// Whether uploads leave their bodies out of the signature ([`S3Config::is_https`]).
    unsigned_payloads: bool,
}

impl S3Store {
    /// Wraps a client (which should come from [`S3Config::client`], so that it suits RGW).
    pub fn new(client: Client, retry: RetryPolicy) -> Self {
        Self {
            client,
            retry,
            endpoint: None,
            unsigned_payloads: false,
        }
    }

    /// Builds the client from `config`. Over HTTPS, uploads are sent with
    /// `UNSIGNED-PAYLOAD`, as the AWS SDK for Java does: TLS already protects the body in
    /// transit, and SigV4's SHA-256 of every part body was a fifth of an export's CPU.
    /// Over plain HTTP the signature stays the body's only protection, so it is kept.
    pub fn from_config(config: &S3Config) -> Result<Self> {
        let mut store = Self::new(config.client()?, config.retry)
            .with_endpoint_name(config.describe_endpoint());
        store.unsigned_payloads = config.is_https();
        Ok(store)
    }

    /// Whether uploads are sent with `UNSIGNED-PAYLOAD` (see [`S3Store::from_config`]).
    pub fn unsigned_payloads(&self) -> bool {
        self.unsigned_payloads
    }

    /// Names `endpoint` in [`Error::Unreachable`] errors, without any user or password it
    /// holds.
    pub fn with_endpoint_name(mut self, endpoint: &str) -> Self {
        let redacted = crate::http::redact_url(endpoint);
        // The URL as the user wrote it, unless redaction took something out (not just
        // added the `/` a parsed URL gets).
        let shown = if redacted.trim_end_matches('/') == endpoint.trim_end_matches('/') {
            endpoint
        } else {
            &redacted
        };
        self.endpoint = Some(Arc::from(shown));
        self
    }

    /// `err`, naming the endpoint if it is a failure to connect.
    pub(crate) fn name_endpoint(&self, err: Error) -> Error {
        match &self.endpoint {
            Some(endpoint) => err.at_endpoint(endpoint),
            None => err,
        }
    }

    /// The SDK client, for this crate's requests only: no other crate names the SDK.
    pub(crate) fn client(&self) -> &Client {
        &self.client
    }

    /// The retry policy.
    pub fn retry(&self) -> RetryPolicy {
        self.retry
    }

    /// Sends the request `send` builds, retrying transient failures with the store's policy;
    /// a failure is mapped to an [`Error`] naming `op` and `target`.
    async fn send<T, E, F, Fut>(&self, op: &'static str, target: Target<'_>, send: F) -> Result<T>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = std::result::Result<T, SdkError<E, HttpResponse>>>,
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        self.retry
            .run(|| async {
                send()
                    .await
                    .map_err(|e| self.name_endpoint(map_sdk_error(op, target, e)))
            })
            .await
    }

    /// HeadObject. A missing object is [`Error::NotFound`] naming `s3://bucket/key`, or the
    /// bucket when it is the bucket that is missing.
    pub async fn head(&self, bucket: &str, key: &str) -> Result<ObjectInfo> {
        match self.head_raw(bucket, key).await {
            // HEAD responses have no body, so tell a missing bucket from a missing key here.
            Err(e) if e.is_not_found() => Err(self.not_found(bucket, key).await),
            other => other,
        }
    }

    /// HeadObject without telling a missing bucket from a missing key.
    async fn head_raw(&self, bucket: &str, key: &str) -> Result<ObjectInfo> {
        let t = Target {
            bucket,
            key: Some(key),
        };
        let out = self
            .send("HeadObject", t, || {
                self.client.head_object().bucket(bucket).key(key).send()
            })
            .await?;
        Ok(ObjectInfo {
            size: out.content_length().map_or(0, |n| n.max(0) as u64),
            etag: out.e_tag().map(str::to_owned),
            content_type: out.content_type().map(str::to_owned),
            metadata: out.metadata().cloned().unwrap_or_default(),
            modified: out
                .last_modified()
                .and_then(|t| SystemTime::try_from(*t).ok()),
        })
    }

    /// The most specific not-found error for `s3://bucket/key`.
    async fn not_found(&self, bucket: &str, key: &str) -> Error {
        match self.bucket_exists(bucket).await {
            Ok(false) => missing_bucket(bucket, key),
            _ => Error::NotFound {
                what: format!("s3://{bucket}/{key}"),
            },
        }
    }

    /// Whether the object exists. A missing bucket is an error, not `false`.
    pub async fn exists(&self, bucket: &str, key: &str) -> Result<bool> {
        match self.head_raw(bucket, key).await {
            Ok(_) => Ok(true),
            Err(e) if e.is_not_found() => match self.bucket_exists(bucket).await? {
                true => Ok(false),
                false => Err(missing_bucket(bucket, key)),
            },
            Err(e) => Err(e),
        }
    }

    /// Whether the bucket exists (HeadBucket).
    pub async fn bucket_exists(&self, bucket: &str) -> Result<bool> {
        let t = Target { bucket, key: None };
        let res = self
            .send("HeadBucket", t, || {
                self.client.head_bucket().bucket(bucket).send()
            })
            .await;
        match res {
            Ok(_) => Ok(true),
            Err(e) if e.is_not_found() => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Deletes an object. Deleting a missing key succeeds, as in S3.
    pub async fn delete(&self, bucket: &str, key: &str) -> Result<()> {
        let t = Target {
            bucket,
            key: Some(key),
        };
        self.send("DeleteObject", t, || {
            self.client.delete_object().bucket(bucket).key(key).send()
        })
        .await?;
        Ok(())
    }

    /// Lists every object whose key starts with `prefix`, following continuation tokens.
    pub async fn list(&self, bucket: &str, prefix: &str) -> Result<Vec<ListedObject>> {
        Ok(self.list_inner(bucket, prefix, None).await?.0)
    }

    /// Lists one level under `prefix` with delimiter `/`: the objects directly under it and
    /// the common prefixes ("directories", each ending in `/`).
    pub async fn list_dir(
        &self,
        bucket: &str,
        prefix: &str,
    ) -> Result<(Vec<ListedObject>, Vec<String>)> {
        self.list_inner(bucket, prefix, Some("/")).await
    }

    async fn list_inner(
        &self,
        bucket: &str,
        prefix: &str,
        delimiter: Option<&str>,
    ) -> Result<(Vec<ListedObject>, Vec<String>)> {
        let what = format!("s3://{bucket}/{prefix}");
        let t = Target {
            bucket,
            key: Some(prefix),
        };
        let mut objects = Vec::new();
        let mut prefixes = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let page = self
                .send("ListObjectsV2", t, || {
                    self.client
                        .list_objects_v2()
                        .bucket(bucket)
                        .prefix(prefix)
                        .set_delimiter(delimiter.map(str::to_owned))
                        .max_keys(LIST_PAGE_SIZE)
                        .set_continuation_token(token.clone())
                        .send()
                })
                .await?;
            objects.extend(page.contents().iter().map(|o| ListedObject {
                key: o.key().unwrap_or_default().to_owned(),
                size: o.size().map_or(0, |n| n.max(0) as u64),
                etag: o.e_tag().map(str::to_owned),
            }));
            prefixes.extend(
                page.common_prefixes()
                    .iter()
                    .filter_map(|p| p.prefix().map(str::to_owned)),
            );
            match page.next_continuation_token() {
                Some(next) if page.is_truncated() == Some(true) => {
                    if token.as_deref() == Some(next) {
                        return Err(Error::S3 {
                            op: "ListObjectsV2",
                            what,
                            detail: "the server repeated a continuation token".into(),
                            source: "pagination loop".into(),
                        });
                    }
                    token = Some(next.to_owned());
                }
                _ => return Ok((objects, prefixes)),
            }
        }
    }

    /// Lists multipart uploads in progress under `prefix`, following the markers.
    pub async fn list_multipart_uploads(
        &self,
        bucket: &str,
        prefix: &str,
    ) -> Result<Vec<PendingUpload>> {
        let t = Target {
            bucket,
            key: Some(prefix),
        };
        let mut out = Vec::new();
        let mut key_marker: Option<String> = None;
        let mut id_marker: Option<String> = None;
        loop {
            let page = self
                .send("ListMultipartUploads", t, || {
                    self.client
                        .list_multipart_uploads()
                        .bucket(bucket)
                        .prefix(prefix)
                        .max_uploads(LIST_PAGE_SIZE)
                        .set_key_marker(key_marker.clone())
                        .set_upload_id_marker(id_marker.clone())
                        .send()
                })
                .await?;
            out.extend(page.uploads().iter().map(|u| PendingUpload {
                key: u.key().unwrap_or_default().to_owned(),
                upload_id: u.upload_id().unwrap_or_default().to_owned(),
                initiated: u.initiated().and_then(|t| SystemTime::try_from(*t).ok()),
            }));
            let next = (
                page.next_key_marker().map(str::to_owned),
                page.next_upload_id_marker().map(str::to_owned),
            );
            if page.is_truncated() != Some(true) || next == (key_marker.clone(), id_marker.clone())
            {
                return Ok(out);
            }
            (key_marker, id_marker) = next;
        }
    }

    /// When the upload `upload_id` of `key` last showed life: the newest of its parts'
    /// times (ListParts, following the markers), or `None` when it has no part yet. A missing
    /// upload is [`Error::NotFound`].
    pub async fn upload_last_part_time(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
    ) -> Result<Option<SystemTime>> {
        let t = Target {
            bucket,
            key: Some(key),
        };
        let mut newest: Option<SystemTime> = None;
        let mut marker: Option<String> = None;
        loop {
            let page = self
                .send("ListParts", t, || {
                    self.client
                        .list_parts()
                        .bucket(bucket)
                        .key(key)
                        .upload_id(upload_id)
                        .max_parts(LIST_PAGE_SIZE)
                        .set_part_number_marker(marker.clone())
                        .send()
                })
                .await?;
            for part in page.parts() {
                if let Some(at) = part
                    .last_modified()
                    .and_then(|t| SystemTime::try_from(*t).ok())
                {
                    newest = Some(newest.map_or(at, |n| n.max(at)));
                }
            }
            let next = page.next_part_number_marker().map(str::to_owned);
            if page.is_truncated() != Some(true) || next.is_none() || next == marker {
                return Ok(newest);
            }
            marker = next;
        }
    }

    /// The endpoint this store talks to, as named in messages (`None` when none was named).
    pub fn endpoint(&self) -> Option<&str> {
        self.endpoint.as_deref()
    }

    /// Aborts a multipart upload by id (for cleaning up after crashed runs).
    pub async fn abort_upload(&self, bucket: &str, key: &str, upload_id: &str) -> Result<()> {
        let t = Target {
            bucket,
            key: Some(key),
        };
        self.send("AbortMultipartUpload", t, || {
            self.client
                .abort_multipart_upload()
                .bucket(bucket)
                .key(key)
                .upload_id(upload_id)
                .send()
        })
        .await?;
        Ok(())
    }

    /// Creates a bucket. An existing bucket is [`Error::AlreadyExists`].
    pub async fn create_bucket(&self, bucket: &str) -> Result<()> {
        let t = Target { bucket, key: None };
        self.send("CreateBucket", t, || {
            self.client.create_bucket().bucket(bucket).send()
        })
        .await?;
        Ok(())
    }

    /// Deletes an empty bucket.
    pub async fn delete_bucket(&self, bucket: &str) -> Result<()> {
        let t = Target { bucket, key: None };
        self.send("DeleteBucket", t, || {
            self.client.delete_bucket().bucket(bucket).send()
        })
        .await?;
        Ok(())
    }

    /// Deletes every object and aborts every pending upload in the bucket, then the bucket
    /// itself (for tests and tools; there is no undo).
    pub async fn empty_and_delete_bucket(&self, bucket: &str) -> Result<()> {
        for u in self.list_multipart_uploads(bucket, "").await? {
            self.abort_upload(bucket, &u.key, &u.upload_id).await?;
        }
        for o in self.list(bucket, "").await? {
            self.delete(bucket, &o.key).await?;
        }
        self.delete_bucket(bucket).await
    }

    /// Reads a whole (small) object into memory, e.g. a metadata file; one larger than
    /// [`GET_MAX`] is refused with [`Error::TooLarge`].
    pub async fn get_object_bytes(&self, bucket: &str, key: &str) -> Result<Bytes> {
        let t = Target {
            bucket,
            key: Some(key),
        };
        let res = self
            .retry
            .run(|| async {
                let out = self
                    .client
                    .get_object()
                    .bucket(bucket)
                    .key(key)
                    .send()
                    .await
                    .map_err(|e| self.name_endpoint(map_sdk_error("GetObject", t, e)))?;
                // Refused before a byte is read when the server says the size at once.
                let size = out.content_length().and_then(|n| u64::try_from(n).ok());
                if let Some(size) = size.filter(|&n| n > GET_MAX) {
                    return Err(Error::TooLarge {
                        what: t.describe(),
                        size,
                        max: GET_MAX,
                    });
                }
                collect_body("GetObject", t, out.body, GET_MAX).await
            })
            .await;
        match res {
            Err(Error::NotFound { .. }) => Err(self.not_found(bucket, key).await),
            other => other,
        }
    }

    /// Stores a small object with one PUT (an in-memory body, so RGW checks its SHA-256).
    ///
    /// Without `opts.overwrite`, an existing object is refused in two ways: a HeadObject
    /// first (for servers that ignore conditional PUTs), then `If-None-Match: *` on the PUT,
    /// which RGW 16.2.15 honours (HTTP 412, tested). On a server that ignores the header, a
    /// writer that creates the key between our HeadObject and our PUT is overwritten.
    pub async fn put_object(
        &self,
        bucket: &str,
        key: &str,
        data: Bytes,
        opts: &PutOptions,
    ) -> Result<WrittenObject> {
        let t = Target {
            bucket,
            key: Some(key),
        };
        if !opts.overwrite && self.exists(bucket, key).await? {
            return Err(Error::AlreadyExists { what: t.describe() });
        }
        let size = data.len() as u64;
        let res = self
            .send("PutObject", t, || {
                let req = self
                    .client
                    .put_object()
                    .bucket(bucket)
                    .key(key)
                    .body(ByteStream::from(data.clone()))
                    .content_length(data.len() as i64)
                    .set_metadata(Some(opts.metadata.clone()))
                    .set_content_type(opts.content_type.clone());
                let req = if opts.overwrite {
                    req
                } else {
                    req.if_none_match("*")
                };
                let unsigned = self.unsigned_payloads;
                async move {
                    if unsigned {
                        req.customize().disable_payload_signing().send().await
                    } else {
                        req.send().await
                    }
                }
            })
            .await;
        match res {
            Ok(out) => Ok(WrittenObject {
                location: t.describe(),
                size,
                etag: out.e_tag().map(str::to_owned),
            }),
            Err(Error::Http { status, .. }) if status == STATUS_PRECONDITION_FAILED => {
                Err(Error::AlreadyExists { what: t.describe() })
            }
            Err(e) => Err(e),
        }
    }

    /// Opens an object for range reads (HeadObject for its size and ETag).
    pub async fn open(&self, bucket: &str, key: &str) -> Result<S3Object> {
        S3Object::open(self, bucket, key).await
    }

    /// Starts a low-level multipart upload.
    pub async fn create_multipart(
        &self,
        bucket: &str,
        key: &str,
        opts: &PutOptions,
    ) -> Result<MultipartUpload> {
        MultipartUpload::create(self, bucket, key, opts).await
    }

    /// Starts a positional writer (see [`S3Writer`]).
    pub async fn writer(&self, bucket: &str, key: &str, opts: S3WriterOptions) -> Result<S3Writer> {
        S3Writer::create(self, bucket, key, opts).await
    }
}

/// The error for a missing bucket, naming the object that was wanted.
fn missing_bucket(bucket: &str, key: &str) -> Error {
    Error::NotFound {
        what: format!("bucket {bucket:?} (looking for s3://{bucket}/{key})"),
    }
}

/// Reads a response body of at most `max` bytes into memory; a broken body is transient,
/// a longer one [`Error::TooLarge`] (checked as it arrives: a server cannot make us hold
/// more than `max`, whatever its Content-Length said).
pub(crate) async fn collect_body(
    op: &'static str,
    t: Target<'_>,
    mut body: ByteStream,
    max: u64,
) -> Result<Bytes> {
    let mut out = bytes::BytesMut::new();
    while let Some(chunk) = body.try_next().await.map_err(|e| Error::Transient {
        op,
        what: t.describe(),
        detail: format!("reading the body: {}", chain_text(&e)),
    })? {
        let size = (out.len() + chunk.len()) as u64;
        if size > max {
            return Err(Error::TooLarge {
                what: t.describe(),
                size,
                max,
            });
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;

    const TARGET: Target<'static> = Target {
        bucket: "b",
        key: Some("k"),
    };

    #[tokio::test]
    async fn a_body_longer_than_its_limit_is_refused_and_a_fitting_one_read() {
        let body = ByteStream::from(vec![7u8; 100]);
        let err = collect_body("GetObject", TARGET, body, 99)
            .await
            .unwrap_err();
        assert!(
            matches!(
                err,
                Error::TooLarge {
                    size: 100,
                    max: 99,
                    ..
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains("s3://b/k"), "{err}");
        let body = ByteStream::from(vec![7u8; 100]);
        let bytes = collect_body("GetObject", TARGET, body, 100).await.unwrap();
        assert_eq!(bytes.len(), 100);
    }
}
