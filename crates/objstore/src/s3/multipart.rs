//! Low-level multipart uploads: parts in any order, concurrently; abort on any failure.

use std::future::Future;
use std::sync::Arc;

use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use bytes::Bytes;

use super::journal::{UploadJournal, UploadRecord, Writer};
use super::{map_sdk_error, PutOptions, S3Store, Target, STATUS_PRECONDITION_FAILED};
use crate::error::{Error, Result};
use crate::write::WrittenObject;

/// Lowest part number S3 accepts.
pub const MIN_PART_NUMBER: u32 = 1;
/// Highest part number S3 accepts (RGW: `rgw_multipart_part_upload_limit`).
pub const MAX_PART_NUMBER: u32 = 10_000;
/// Most parts one upload can have.
pub const MAX_PARTS: u32 = MAX_PART_NUMBER;
/// Smallest size of every part but the last (RGW: `rgw_multipart_min_part_size`).
pub const MIN_PART_SIZE: usize = 5 * 1024 * 1024;
/// Largest size of one part.
pub const MAX_PART_SIZE: usize = 5 * 1024 * 1024 * 1024;

/// A part that was stored, as [`MultipartUpload::complete`] needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadedPart {
    /// Its number, 1..=10000.
    pub part_number: u32,
    /// The ETag the server gave it.
    pub etag: String,
    /// Its size in bytes.
    pub size: u64,
}

/// One multipart upload in progress. Cheap to clone; clones share the upload, so parts can be
/// sent from many tasks at once, in any order.
///
/// # Failure handling
/// Rust has no async drop, so nothing aborts an upload implicitly. Either
/// - use [`MultipartUpload::run`], which completes the upload when the closure returns the
///   parts and aborts it when the closure or the completion fails; or
/// - call [`MultipartUpload::abort`] yourself on every error path (as [`super::S3Writer`]
///   does).
///
/// An upload that is neither completed nor aborted keeps its parts' storage on the server;
/// [`S3Store::list_multipart_uploads`] finds such leftovers.
#[derive(Debug, Clone)]
pub struct MultipartUpload {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    store: S3Store,
    bucket: String,
    key: String,
    upload_id: String,
    /// Send `If-None-Match: *` on completion.
    no_overwrite: bool,
}

impl MultipartUpload {
    /// CreateMultipartUpload with the metadata and content type of `opts`. Without
    /// `opts.overwrite`, completion sends `If-None-Match: *`, which AWS S3 honours but RGW
    /// 16.2.15 ignores on CompleteMultipartUpload (seen here: the object was replaced); the
    /// existence check before completion is the caller's ([`super::S3Writer`] does one).
    ///
    /// The request runs in a task of its own: if the caller is cancelled (its future
    /// dropped) while the request is in flight, the server may still create the upload,
    /// and only that task learns its id, so the task aborts it.
    pub async fn create(
        store: &S3Store,
        bucket: &str,
        key: &str,
        opts: &PutOptions,
    ) -> Result<Self> {
        let (store, bucket, key, opts) = (
            store.clone(),
            bucket.to_owned(),
            key.to_owned(),
            opts.clone(),
        );
        let what = Target {
            bucket: &bucket,
            key: Some(&key),
        }
        .describe();
        let (tx, rx) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            let created = Self::create_now(&store, &bucket, &key, &opts).await;
            if let Err(Ok(orphan)) = tx.send(created) {
                if let Err(e) = orphan.abort().await {
                    tracing::warn!(upload_id = orphan.upload_id(), error = %e,
                        "could not abort a multipart upload whose creator was cancelled");
                }
            }
        });
        rx.await.map_err(|_| Error::S3 {
            op: "CreateMultipartUpload",
            what,
            detail: "the request's task ended without an answer".into(),
            source: "task dropped".into(),
        })?
    }

    async fn create_now(
        store: &S3Store,
        bucket: &str,
        key: &str,
        opts: &PutOptions,
    ) -> Result<Self> {
        let t = Target {
            bucket,
            key: Some(key),
        };
        let out = store
            .retry()
            .run(|| async {
                store
                    .client()
                    .create_multipart_upload()
                    .bucket(bucket)
                    .key(key)
                    .set_metadata(Some(opts.metadata.clone()))
                    .set_content_type(opts.content_type.clone())
                    .send()
                    .await
                    .map_err(|e| map_sdk_error("CreateMultipartUpload", t, e))
            })
            .await?;
        let upload_id = out
            .upload_id()
            .filter(|s| !s.is_empty())
            .ok_or_else(|| Error::S3 {
                op: "CreateMultipartUpload",
                what: t.describe(),
                detail: "the server returned no upload id".into(),
                source: "missing UploadId".into(),
            })?;
        let upload = Self {
            inner: Arc::new(Inner {
                store: store.clone(),
                bucket: bucket.to_owned(),
                key: key.to_owned(),
                upload_id: upload_id.to_owned(),
                no_overwrite: !opts.overwrite,
            }),
        };
        // Recorded so that, if this process is killed, what it left can be proven abandoned.
        UploadJournal::default_location().record(&upload.journal_record());
        Ok(upload)
    }

    /// This upload as the journal records it.
    fn journal_record(&self) -> UploadRecord {
        UploadRecord {
            writer: Writer::current(),
            endpoint: self
                .inner
                .store
                .endpoint
                .as_deref()
                .unwrap_or_default()
                .to_owned(),
            bucket: self.inner.bucket.clone(),
            key: self.inner.key.clone(),
            upload_id: self.inner.upload_id.clone(),
        }
    }

    /// The upload id.
    pub fn upload_id(&self) -> &str {
        &self.inner.upload_id
    }

    /// The upload `upload_id` of `s3://bucket/key`, started elsewhere (tests of cleanup).
    #[cfg(test)]
    pub(crate) fn existing(store: &S3Store, bucket: &str, key: &str, upload_id: &str) -> Self {
        Self {
            inner: Arc::new(Inner {
                store: store.clone(),
                bucket: bucket.to_owned(),
                key: key.to_owned(),
                upload_id: upload_id.to_owned(),
                no_overwrite: true,
            }),
        }
    }

    /// The store, bucket and key of the upload.
    pub(crate) fn parts(&self) -> (&S3Store, &str, &str) {
        (&self.inner.store, &self.inner.bucket, &self.inner.key)
    }

    /// `s3://bucket/key`.
    pub fn describe(&self) -> String {
        format!("s3://{}/{}", self.inner.bucket, self.inner.key)
    }

    fn target(&self) -> Target<'_> {
        Target {
            bucket: &self.inner.bucket,
            key: Some(&self.inner.key),
        }
    }

    /// Uploads one part (an in-memory body: RGW verifies its signed SHA-256, and a retry
    /// resends the same bytes). Transient failures are retried with backoff; others fail at
    /// once. Sizes below [`MIN_PART_SIZE`] are checked at [`MultipartUpload::complete`],
    /// since only then is it known which part is last.
    pub async fn upload_part(&self, part_number: u32, data: Bytes) -> Result<UploadedPart> {
        if !(MIN_PART_NUMBER..=MAX_PART_NUMBER).contains(&part_number) {
            return Err(Error::invalid_write(
                self.describe(),
                format!(
                    "part number {part_number} is outside {MIN_PART_NUMBER}..={MAX_PART_NUMBER}"
                ),
            ));
        }
        if data.len() > MAX_PART_SIZE {
            return Err(Error::invalid_write(
                self.describe(),
                format!(
                    "part {part_number} is {} bytes, the limit is {MAX_PART_SIZE}",
                    data.len()
                ),
            ));
        }
        let t = self.target();
        let out = self
            .inner
            .store
            .retry()
            .run(|| async {
                let store = &self.inner.store;
                let req = store
                    .client()
                    .upload_part()
                    .bucket(&self.inner.bucket)
                    .key(&self.inner.key)
                    .upload_id(&self.inner.upload_id)
                    .part_number(part_number as i32)
                    .content_length(data.len() as i64)
                    .body(ByteStream::from(data.clone()));
                let sent = if store.unsigned_payloads() {
                    req.customize().disable_payload_signing().send().await
                } else {
                    req.send().await
                };
                sent.map_err(|e| map_sdk_error("UploadPart", t, e))
            })
            .await?;
        let etag = out
            .e_tag()
            .filter(|s| !s.is_empty())
            .ok_or_else(|| Error::S3 {
                op: "UploadPart",
                what: format!("{} part {part_number}", self.describe()),
                detail: "the server returned no ETag".into(),
                source: "missing ETag".into(),
            })?;
        Ok(UploadedPart {
            part_number,
            etag: etag.to_owned(),
            size: data.len() as u64,
        })
    }

    /// Completes the upload with `parts` (any order; they are sorted by number), then
    /// HeadObject for the real size and ETag (RGW answers CompleteMultipartUpload with an
    /// empty ETag). Checks the limits first: at least one part, no duplicate numbers, every
    /// part but the last at least [`MIN_PART_SIZE`], and the stored size equal to the sum.
    pub async fn complete(&self, mut parts: Vec<UploadedPart>) -> Result<WrittenObject> {
        parts.sort_by_key(|p| p.part_number);
        check_parts(&self.describe(), &parts)?;
        let expected: u64 = parts.iter().map(|p| p.size).sum();
        let body = CompletedMultipartUpload::builder()
            .set_parts(Some(
                parts
                    .iter()
                    .map(|p| {
                        CompletedPart::builder()
                            .part_number(p.part_number as i32)
                            .e_tag(&p.etag)
                            .build()
                    })
                    .collect(),
            ))
            .build();
        let t = self.target();
        let store = &self.inner.store;
        let attempts = std::sync::atomic::AtomicU32::new(0);
        let res = store
            .retry()
            .run(|| async {
                attempts.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                store
                    .client()
                    .complete_multipart_upload()
                    .bucket(&self.inner.bucket)
                    .key(&self.inner.key)
                    .upload_id(&self.inner.upload_id)
                    .multipart_upload(body.clone())
                    .set_if_none_match(self.inner.no_overwrite.then(|| "*".to_owned()))
                    .send()
                    .await
                    .map_err(|e| map_sdk_error("CompleteMultipartUpload", t, e))
            })
            .await;
        match res {
            Ok(_) => {}
            // A retry after a lost response finds the upload gone (NoSuchUpload) because the
            // first attempt completed it: then the object is there with the parts' size.
            Err(e)
                if e.is_not_found() && attempts.load(std::sync::atomic::Ordering::Relaxed) > 1 =>
            {
                match store.head(&self.inner.bucket, &self.inner.key).await {
                    Ok(info) if info.size == expected => {
                        tracing::info!(object = %self.describe(), "completion confirmed after a retry")
                    }
                    _ => return Err(e),
                }
            }
            Err(Error::Http { status, .. }) if status == STATUS_PRECONDITION_FAILED => {
                return Err(Error::AlreadyExists {
                    what: self.describe(),
                })
            }
            Err(e) => return Err(e),
        }
        UploadJournal::default_location().forget(&self.journal_record());
        let info = store.head(&self.inner.bucket, &self.inner.key).await?;
        if info.size != expected {
            return Err(Error::S3 {
                op: "CompleteMultipartUpload",
                what: self.describe(),
                detail: format!(
                    "the object is {} bytes after completion, the parts add up to {expected}",
                    info.size
                ),
                source: "size mismatch".into(),
            });
        }
        Ok(WrittenObject {
            location: self.describe(),
            size: info.size,
            etag: info.etag,
        })
    }

    /// AbortMultipartUpload: the server drops the parts. Aborting an upload that is already
    /// gone succeeds.
    pub async fn abort(&self) -> Result<()> {
        match self
            .inner
            .store
            .abort_upload(&self.inner.bucket, &self.inner.key, &self.inner.upload_id)
            .await
        {
            Err(e) if !e.is_not_found() => Err(e),
            _ => {
                UploadJournal::default_location().forget(&self.journal_record());
                Ok(())
            }
        }
    }

    /// Runs `f` with this upload, then completes it with the parts `f` returns. If `f` or the
    /// completion fails, the upload is aborted and the first error is returned (an abort
    /// failure is only logged).
    pub async fn run<F, Fut>(self, f: F) -> Result<WrittenObject>
    where
        F: FnOnce(MultipartUpload) -> Fut,
        Fut: Future<Output = Result<Vec<UploadedPart>>>,
    {
        let res = match f(self.clone()).await {
            Ok(parts) => self.complete(parts).await,
            Err(e) => Err(e),
        };
        if res.is_err() {
            if let Err(abort) = self.abort().await {
                tracing::warn!(upload = %self.describe(), error = %abort, "could not abort multipart upload");
            }
        }
        res
    }
}

/// Validates sorted parts against the S3 limits.
fn check_parts(what: &str, parts: &[UploadedPart]) -> Result<()> {
    if parts.is_empty() {
        return Err(Error::invalid_write(what, "no parts to complete"));
    }
    if parts.len() > MAX_PARTS as usize {
        return Err(Error::invalid_write(
            what,
            format!("{} parts, the limit is {MAX_PARTS}", parts.len()),
        ));
    }
    for w in parts.windows(2) {
        if w[0].part_number == w[1].part_number {
            return Err(Error::invalid_write(
                what,
                format!("part {} given twice", w[0].part_number),
            ));
        }
    }
    if let Some(small) = parts[..parts.len() - 1]
        .iter()
        .find(|p| p.size < MIN_PART_SIZE as u64)
    {
        return Err(Error::invalid_write(
            what,
            format!(
                "part {} is {} bytes; every part but the last must be at least {MIN_PART_SIZE}",
                small.part_number, small.size
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn part(n: u32, size: u64) -> UploadedPart {
        UploadedPart {
            part_number: n,
            etag: format!("\"e{n}\""),
            size,
        }
    }

    #[test]
    fn part_limits_are_checked() {
        let big = MIN_PART_SIZE as u64;
        assert!(check_parts("s3://b/k", &[part(1, 1)]).is_ok());
        assert!(check_parts("s3://b/k", &[part(1, big), part(2, 1)]).is_ok());
        let e = check_parts("s3://b/k", &[]).unwrap_err().to_string();
        assert!(e.contains("no parts") && e.contains("s3://b/k"), "{e}");
        let e = check_parts("s3://b/k", &[part(1, 1), part(2, big)])
            .unwrap_err()
            .to_string();
        assert!(e.contains("part 1 is 1 bytes"), "{e}");
        let e = check_parts("s3://b/k", &[part(3, big), part(3, big)])
            .unwrap_err()
            .to_string();
        assert!(e.contains("twice"), "{e}");
    }
}
