//! A positional writer onto one S3 object: streamed parts in parallel, the first part last.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use aws_sdk_s3::types::MetadataDirective;
use bytes::{Bytes, BytesMut};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use super::multipart::{MultipartUpload, UploadedPart, MAX_PARTS, MAX_PART_SIZE, MIN_PART_SIZE};
use super::{PutOptions, S3Store, Target, STATUS_PRECONDITION_FAILED};
use crate::coverage::Coverage;
use crate::error::{Error, Result};
use crate::store::DEFAULT_CLEANUP_PATIENCE;
use crate::write::{ObjectWriter, WrittenObject};

/// Default part size: 16 MiB.
///
/// Large enough that request overhead is small against RGW's ≈ 550 MiB/s here and that the
/// default allows objects up to 10 000 × 16 MiB ≈ 156 GiB; small enough that the default
/// memory bound, (`DEFAULT_PARTS_IN_FLIGHT` + 2) × 16 MiB = 96 MiB, stays modest. Use
/// [`S3WriterOptions::for_expected_size`] for larger objects.
pub const DEFAULT_PART_SIZE: usize = 16 * 1024 * 1024;
/// Default number of part uploads in flight at once.
pub const DEFAULT_PARTS_IN_FLIGHT: usize = 4;
/// Part-size granularity used when sizing parts for an expected object size.
const PART_SIZE_ALIGN: usize = 1024 * 1024;
/// Head-room kept when sizing parts for an expected size (estimates can be low).
const SIZE_ESTIMATE_MARGIN_PERCENT: u64 = 10;
/// Wait between two attempts to abort an upload while the store cannot be reached.
const CLEANUP_RETRY_WAIT: Duration = Duration::from_secs(2);
/// Piece size of the zeros a sparse writer uploads for the ranges never written.
const ZERO_PIECE: usize = 1 << 20;

/// How an [`S3Writer`] cuts and sends parts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3WriterOptions {
    /// Size of every part but the last; [`MIN_PART_SIZE`]..=[`MAX_PART_SIZE`].
    pub part_size: usize,
    /// Most part uploads in flight; `write_at` waits when that many are running.
    pub max_in_flight: usize,
    /// Metadata, content type and overwrite policy of the object.
    pub put: PutOptions,
    /// The object is this many bytes, and the ranges never written are zeros (uploaded as
    /// such): writes beyond part 1 may then leave gaps, still in increasing order.
    pub sparse_size: Option<u64>,
    /// How long to keep trying to abort the upload after a failure while the store cannot
    /// be reached, before the error names the upload left behind.
    pub cleanup_patience: Duration,
}

impl Default for S3WriterOptions {
    fn default() -> Self {
        Self {
            part_size: DEFAULT_PART_SIZE,
            max_in_flight: DEFAULT_PARTS_IN_FLIGHT,
            put: PutOptions::default(),
            sparse_size: None,
            cleanup_patience: DEFAULT_CLEANUP_PATIENCE,
        }
    }
}

impl S3WriterOptions {
    /// Raises the part size (in whole MiB) so that an object of about `size` bytes, plus a
    /// margin, fits in [`MAX_PARTS`] parts.
    pub fn for_expected_size(mut self, size: u64) -> Self {
        let padded = size.saturating_add(size / 100 * SIZE_ESTIMATE_MARGIN_PERCENT);
        let needed = padded.div_ceil(u64::from(MAX_PARTS));
        let needed = usize::try_from(needed).unwrap_or(MAX_PART_SIZE);
        let aligned = needed
            .div_ceil(PART_SIZE_ALIGN)
            .saturating_mul(PART_SIZE_ALIGN);
        self.part_size = self.part_size.max(aligned).min(MAX_PART_SIZE);
        self
    }

    fn validate(&self, what: &str) -> Result<()> {
        if !(MIN_PART_SIZE..=MAX_PART_SIZE).contains(&self.part_size) {
            return Err(Error::Config {
                reason: format!(
                    "{what}: part size {} is outside {MIN_PART_SIZE}..={MAX_PART_SIZE}",
                    self.part_size
                ),
            });
        }
        if self.max_in_flight == 0 {
            return Err(Error::Config {
                reason: format!("{what}: max_in_flight must be at least 1"),
            });
        }
        Ok(())
    }
}

/// Writes one S3 object through a multipart upload, taking the first part last.
///
/// # Write contract
/// With `P` = `part_size`:
/// - Every byte of `[0, size)` is written exactly once; `size` is the end of the furthest
///   write. Overlaps are rejected at once, gaps at `finish`.
/// - Writes inside `[0, P)` (part 1) may come in any order, at any time before `finish`.
///   Part 1 is kept in memory and uploaded last.
/// - Bytes from `P` on must come in increasing offset order without gaps: a write reaching
///   past `P` must start where the previous such write ended (at first, `P` itself, or
///   anywhere below `P` for a write that straddles the boundary).
/// - With [`S3WriterOptions::sparse_size`], `size` is that size, and gaps are allowed: the
///   writer uploads zeros for them (writes from `P` on still come in increasing order).
///
/// That is how the qcow2 streaming writer emits an image: data clusters from one cluster on,
/// the metadata tail, and the header at offset 0 last.
///
/// # Memory and concurrency
/// Part 1 (up to `P` bytes), one part being filled, and up to `max_in_flight` parts being
/// uploaded: at most `(max_in_flight + 2) × P` bytes. `write_at` waits for a free upload
/// slot when a part is full (backpressure).
///
/// # Metadata
/// S3 takes metadata when an upload is *created*, and the upload starts with the first part
/// beyond part 1, long before a digest of the whole object is known. Metadata given by
/// [`ObjectWriter::set_metadata`] after that is added when the upload is complete: the object
/// is copied onto itself (`CopyObject`, `x-amz-metadata-directive: REPLACE`,
/// `x-amz-copy-source-if-match` its ETag), a server-side metadata update that copies no data.
/// Between the two requests the object exists without the late metadata. If the update
/// fails, the object is deleted and `finish` fails. RGW (16.2.15, measured) takes this copy
/// above S3's 5 GiB `CopyObject` limit, copying no data; AWS S3 itself refuses `CopyObject`
/// above 5 GiB, so there such a `finish` fails (and removes its object). An object that fits
/// in part 1, or whose metadata was all set before its upload started, needs no copy.
///
/// # Failure
/// Any error from `write_at` or `finish` aborts the multipart upload before it is returned;
/// the writer is then dead. `abort` aborts explicitly. When the abort fails (the store cannot
/// be reached), it is retried for [`S3WriterOptions::cleanup_patience`], with a warning logged
/// at the first failure; then the error says which upload is left behind
/// ([`Error::CleanupFailed`]). Dropping a writer whose upload was not completed or aborted
/// (also one whose cleanup was interrupted) aborts it from a spawned task on the current
/// Tokio runtime (best effort; a warning is logged).
///
/// Objects that fit in part 1 go up with one PutObject at `finish`; no multipart upload is
/// created for them. Without `put.overwrite`, an existing object is refused at creation, again
/// just before completion, and by `If-None-Match: *` on the final request (honoured by RGW
/// 16.2.15 for PutObject, ignored for CompleteMultipartUpload: there a writer racing in
/// between our last check and the completion is overwritten).
#[derive(Debug)]
pub struct S3Writer {
    store: S3Store,
    bucket: String,
    key: String,
    opts: S3WriterOptions,
    /// Created when the first part beyond part 1 is ready; cleared only once the upload is
    /// completed or known to be aborted.
    upload: Option<MultipartUpload>,
    /// The metadata the upload was created with.
    upload_metadata: HashMap<String, String>,
    /// Part 1's bytes, grown as writes land in it.
    first: Vec<u8>,
    first_written: Coverage,
    /// Next offset expected at or beyond `part_size`.
    cursor: u64,
    /// Bytes beyond part 1 not yet sent: a part being filled.
    pending: BytesMut,
    /// Number of the next part beyond part 1.
    next_part: u32,
    slots: Arc<Semaphore>,
    tasks: JoinSet<Result<UploadedPart>>,
    done: Vec<UploadedPart>,
    /// False once finished, aborted or failed.
    live: bool,
}

impl S3Writer {
    /// Prepares a writer for `s3://bucket/key`. Checks the options and, without
    /// `put.overwrite`, that the object does not exist yet (which also checks the bucket).
    pub async fn create(
        store: &S3Store,
        bucket: &str,
        key: &str,
        opts: S3WriterOptions,
    ) -> Result<Self> {
        let what = Target {
            bucket,
            key: Some(key),
        }
        .describe();
        opts.validate(&what)?;
        if !opts.put.overwrite {
            if store.exists(bucket, key).await? {
                return Err(Error::AlreadyExists { what });
            }
        } else if !store.bucket_exists(bucket).await? {
            return Err(Error::NotFound {
                what: format!("bucket {bucket:?} (for {what})"),
            });
        }
        Ok(Self {
            store: store.clone(),
            bucket: bucket.to_owned(),
            key: key.to_owned(),
            cursor: opts.part_size as u64,
            slots: Arc::new(Semaphore::new(opts.max_in_flight)),
            opts,
            upload: None,
            upload_metadata: HashMap::new(),
            first: Vec::new(),
            first_written: Coverage::default(),
            pending: BytesMut::new(),
            next_part: 2,
            tasks: JoinSet::new(),
            done: Vec::new(),
            live: true,
        })
    }

    /// The part size in use.
    pub fn part_size(&self) -> usize {
        self.opts.part_size
    }

    /// The multipart upload id, once the first streamed part has started one.
    pub fn upload_id(&self) -> Option<&str> {
        self.upload.as_ref().map(|u| u.upload_id())
    }

    fn what(&self) -> String {
        format!("s3://{}/{}", self.bucket, self.key)
    }

    /// Checks the write against the contract and stores it (no abort on error here).
    async fn write_inner(&mut self, offset: u64, data: Bytes) -> Result<()> {
        let p = self.opts.part_size as u64;
        let end = offset
            .checked_add(data.len() as u64)
            .ok_or_else(|| Error::invalid_write(self.what(), "offset + length overflows"))?;
        if let Some(size) = self.opts.sparse_size.filter(|&size| end > size) {
            return Err(Error::invalid_write(
                self.what(),
                format!("write {offset}..{end} goes past the object's size {size}"),
            ));
        }
        // Validate both halves before changing anything.
        if end > p {
            let tail_start = offset.max(p);
            let in_order = match self.opts.sparse_size {
                Some(_) => tail_start >= self.cursor,
                None => tail_start == self.cursor,
            };
            if !in_order {
                return Err(Error::invalid_write(
                    self.what(),
                    format!(
                        "write {offset}..{end}: bytes from {p} on must be written in order \
                         without gaps or overlaps; the next expected offset is {}",
                        self.cursor
                    ),
                ));
            }
        }
        if offset < p {
            let head_end = end.min(p);
            self.first_written
                .insert(offset, head_end)
                .map_err(|(a, b)| {
                    Error::invalid_write(
                        self.what(),
                        format!("write {offset}..{end} overlaps bytes {a}..{b} written before"),
                    )
                })?;
            let (lo, hi) = (offset as usize, head_end as usize);
            self.grow_first(hi);
            self.first[lo..hi].copy_from_slice(&data[..hi - lo]);
        }
        if end > p {
            let tail_start = offset.max(p);
            self.zeros_until(tail_start).await?;
            self.push_tail(data.slice((tail_start - offset) as usize..))
                .await?;
        }
        Ok(())
    }

    /// Makes part 1's buffer `len` bytes long (zeros where nothing was written).
    fn grow_first(&mut self, len: usize) {
        if self.first.len() < len {
            // One allocation of part 1, not a doubling Vec that could reach 2 × P.
            self.first
                .reserve_exact(self.opts.part_size - self.first.len());
            self.first.resize(len, 0);
        }
    }

    /// Uploads zeros from the cursor up to `end` (the gaps of a sparse object).
    async fn zeros_until(&mut self, end: u64) -> Result<()> {
        while self.cursor < end {
            let n = (end - self.cursor).min(ZERO_PIECE as u64) as usize;
            self.push_tail(zero_piece().slice(..n)).await?;
        }
        Ok(())
    }

    /// Appends bytes at the cursor (beyond part 1), sending every part that fills up.
    async fn push_tail(&mut self, mut tail: Bytes) -> Result<()> {
        self.cursor += tail.len() as u64;
        let ps = self.opts.part_size;
        while !tail.is_empty() {
            if self.pending.is_empty() && tail.len() >= ps {
                // A whole part in one chunk: send it without copying.
                let part = tail.split_to(ps);
                self.send_streamed(part).await?;
                continue;
            }
            if self.pending.is_empty() && self.pending.capacity() < ps {
                // A fresh buffer per part: the previous one left with the part it became.
                self.pending = BytesMut::with_capacity(ps);
            }
            let take = (ps - self.pending.len()).min(tail.len());
            self.pending.extend_from_slice(&tail.split_to(take));
            if self.pending.len() == ps {
                let part = self.pending.split().freeze();
                self.send_streamed(part).await?;
            }
        }
        Ok(())
    }

    /// Sends the next part beyond part 1.
    async fn send_streamed(&mut self, data: Bytes) -> Result<()> {
        let n = self.next_part;
        if n > MAX_PARTS {
            return Err(Error::invalid_write(
                self.what(),
                format!(
                    "the object needs more than {MAX_PARTS} parts of {} bytes; \
                     use a larger part size (S3WriterOptions::for_expected_size)",
                    self.opts.part_size
                ),
            ));
        }
        self.next_part += 1;
        self.send(n, data).await
    }

    /// Starts uploading part `n` once an upload slot is free.
    async fn send(&mut self, n: u32, data: Bytes) -> Result<()> {
        self.reap()?;
        let upload = match &self.upload {
            Some(u) => u.clone(),
            None => {
                let u =
                    MultipartUpload::create(&self.store, &self.bucket, &self.key, &self.opts.put)
                        .await?;
                self.upload = Some(u.clone());
                self.upload_metadata = self.opts.put.metadata.clone();
                u
            }
        };
        let permit = Arc::clone(&self.slots)
            .acquire_owned()
            .await
            .map_err(|_| Error::invalid_write(self.what(), "upload slots closed"))?;
        // A slot freed up: maybe because an upload failed; report that before starting more.
        self.reap()?;
        self.tasks.spawn(async move {
            let _permit = permit;
            upload.upload_part(n, data).await
        });
        Ok(())
    }

    /// Collects finished uploads; the first failure is returned.
    fn reap(&mut self) -> Result<()> {
        while let Some(res) = self.tasks.try_join_next() {
            self.done.push(joined(res, &self.what())?);
        }
        Ok(())
    }

    async fn finish_inner(&mut self) -> Result<WrittenObject> {
        let p = self.opts.part_size as u64;
        let size = match self.opts.sparse_size {
            Some(size) => size,
            None if self.cursor > p => self.cursor,
            None => self.first_written.end(),
        };
        match self.opts.sparse_size {
            Some(_) => self.grow_first(size.min(p) as usize),
            None => {
                if let Some((a, b)) = self.first_written.first_gap(size.min(p)) {
                    return Err(Error::invalid_write(
                        self.what(),
                        format!("bytes {a}..{b} were never written"),
                    ));
                }
            }
        }
        self.zeros_until(size).await?;
        let first = Bytes::from(std::mem::take(&mut self.first));
        if size <= p {
            // Everything fits in one part: a single PUT, no multipart upload.
            return self
                .store
                .put_object(&self.bucket, &self.key, first, &self.opts.put)
                .await;
        }
        if !self.pending.is_empty() {
            let last = self.pending.split().freeze();
            self.send_streamed(last).await?;
        }
        self.send(1, first).await?;
        while let Some(res) = self.tasks.join_next().await {
            self.done.push(joined(res, &self.what())?);
        }
        if !self.opts.put.overwrite && self.store.exists(&self.bucket, &self.key).await? {
            return Err(Error::AlreadyExists { what: self.what() });
        }
        let upload = self
            .upload
            .clone()
            .ok_or_else(|| Error::invalid_write(self.what(), "no upload"))?;
        let written = upload.complete(std::mem::take(&mut self.done)).await?;
        // Complete: there is no upload to abort any more, only an object.
        self.upload = None;
        if written.size != size {
            return Err(self
                .remove_object(Error::invalid_write(
                    self.what(),
                    format!("stored {} bytes, wrote {size}", written.size),
                ))
                .await);
        }
        if self.opts.put.metadata != self.upload_metadata {
            let updated = replace_metadata(
                &self.store,
                &self.bucket,
                &self.key,
                written.etag.as_deref(),
                &self.opts.put,
            )
            .await;
            if let Err(error) = updated {
                return Err(self.remove_object(error).await);
            }
        }
        Ok(written)
    }

    /// Deletes the object after `error` (it was completed but is not what was asked for),
    /// and returns `error`, or both errors if the object could not be deleted.
    async fn remove_object(&self, error: Error) -> Error {
        match self.store.delete(&self.bucket, &self.key).await {
            Ok(()) => error,
            Err(cleanup) => {
                let mut late: Vec<&str> = self
                    .opts
                    .put
                    .metadata
                    .iter()
                    .filter(|(k, v)| self.upload_metadata.get(*k) != Some(*v))
                    .map(|(k, _)| k.as_str())
                    .collect();
                late.sort_unstable();
                Error::CleanupFailed {
                    error: Box::new(error),
                    cleanup: Box::new(cleanup),
                    left_behind: format!(
                        "{} (without its metadata {})",
                        self.what(),
                        late.join(", ")
                    ),
                }
            }
        }
    }

    /// Stops the uploads in flight and aborts the multipart upload, if any, patiently.
    async fn abort_inner(&mut self) -> Result<()> {
        self.live = false;
        self.tasks.abort_all();
        while self.tasks.join_next().await.is_some() {}
        self.first = Vec::new();
        self.pending = BytesMut::new();
        if let Some(upload) = self.upload.clone() {
            abort_patiently(&upload, self.opts.cleanup_patience).await?;
            self.upload = None;
        }
        Ok(())
    }

    /// Aborts after `err` and returns `err`, or both errors if the upload could not be
    /// aborted.
    async fn fail(&mut self, err: Error) -> Error {
        let upload = self.upload.as_ref().map(|u| u.upload_id().to_owned());
        match (self.abort_inner().await, upload) {
            (Err(cleanup), Some(id)) => Error::CleanupFailed {
                error: Box::new(err),
                cleanup: Box::new(cleanup),
                left_behind: format!("{} (multipart upload {id})", self.what()),
            },
            _ => err,
        }
    }

    fn check_live(&self) -> Result<()> {
        if self.live {
            Ok(())
        } else {
            Err(Error::invalid_write(
                self.what(),
                "writer already finished, aborted or failed",
            ))
        }
    }
}

/// One piece of zeros, shared by every sparse writer.
fn zero_piece() -> &'static Bytes {
    static ZEROS: OnceLock<Bytes> = OnceLock::new();
    // calloc'd: the pages are never touched, so they cost no memory.
    ZEROS.get_or_init(|| Bytes::from(vec![0u8; ZERO_PIECE]))
}

/// Makes sure `upload` is gone: aborts it, and while that fails (the store cannot be
/// reached), checks whether it is still listed and tries again, for up to `patience`. The
/// final error names the upload left behind.
async fn abort_patiently(upload: &MultipartUpload, patience: Duration) -> Result<()> {
    let deadline = Instant::now() + patience;
    let (store, bucket, key) = upload.parts();
    let id = upload.upload_id();
    let mut error = match upload.abort().await {
        Ok(()) => return Ok(()),
        Err(e) => e,
    };
    let mut warned = false;
    while Instant::now() < deadline {
        if !warned {
            warned = true;
            tracing::warn!(
                upload_id = id,
                object = %upload.describe(),
                error = %error,
                "cannot abort the multipart upload yet; retrying for up to {} s",
                patience.as_secs()
            );
        }
        tokio::time::sleep(CLEANUP_RETRY_WAIT).await;
        let attempt = async {
            let pending = store.list_multipart_uploads(bucket, key).await?;
            if !pending.iter().any(|u| u.upload_id == id) {
                return Ok(());
            }
            upload.abort().await
        };
        match attempt.await {
            Ok(()) => {
                tracing::warn!(upload_id = id, object = %upload.describe(), "multipart upload aborted");
                return Ok(());
            }
            Err(e) => error = e,
        }
    }
    Err(Error::S3 {
        op: "AbortMultipartUpload",
        what: upload.describe(),
        detail: format!(
            "multipart upload {id} is left behind (its parts use space until it is aborted; \
             list it with ListMultipartUploads): {error}"
        ),
        source: Box::new(error),
    })
}

/// A key as `x-amz-copy-source` wants it: URL-encoded, `/` kept.
fn encode_key(key: &str) -> String {
    let mut out = String::with_capacity(key.len());
    for byte in key.bytes() {
        if byte.is_ascii_alphanumeric() || b"-_.~/".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// Replaces the metadata (and content type) of a stored object by copying it onto itself,
/// if its ETag is still `etag` (no data is copied).
async fn replace_metadata(
    store: &S3Store,
    bucket: &str,
    key: &str,
    etag: Option<&str>,
    put: &PutOptions,
) -> Result<()> {
    let t = Target {
        bucket,
        key: Some(key),
    };
    let source = format!("{bucket}/{}", encode_key(key));
    let result = store
        .send("CopyObject", t, || {
            store
                .client
                .copy_object()
                .bucket(bucket)
                .key(key)
                .copy_source(&source)
                .metadata_directive(MetadataDirective::Replace)
                .set_metadata(Some(put.metadata.clone()))
                .set_content_type(put.content_type.clone())
                .set_copy_source_if_match(etag.map(str::to_owned))
                .send()
        })
        .await;
    match result {
        Ok(_) => Ok(()),
        // A retry after a lost response finds a new ETag: check the metadata instead.
        Err(Error::Http { status, what, .. }) if status == STATUS_PRECONDITION_FAILED => {
            let info = store.head(bucket, key).await?;
            if put
                .metadata
                .iter()
                .all(|(k, v)| info.metadata.get(k) == Some(v))
            {
                Ok(())
            } else {
                Err(Error::Http {
                    status,
                    what,
                    detail: "the object changed before its metadata could be set (ETag mismatch)"
                        .into(),
                })
            }
        }
        Err(e) => Err(e),
    }
}

fn joined(
    res: std::result::Result<Result<UploadedPart>, tokio::task::JoinError>,
    what: &str,
) -> Result<UploadedPart> {
    res.map_err(|e| Error::invalid_write(what, format!("part upload task failed: {e}")))?
}

#[async_trait]
impl ObjectWriter for S3Writer {
    fn describe(&self) -> String {
        self.what()
    }

    async fn write_at(&mut self, offset: u64, data: Bytes) -> Result<()> {
        self.check_live()?;
        match self.write_inner(offset, data).await {
            Ok(()) => Ok(()),
            Err(e) => Err(self.fail(e).await),
        }
    }

    fn set_metadata(&mut self, key: &str, value: &str) {
        self.opts
            .put
            .metadata
            .insert(key.to_owned(), value.to_owned());
    }

    fn part_size(&self) -> Option<usize> {
        Some(self.opts.part_size)
    }

    async fn finish(mut self: Box<Self>) -> Result<WrittenObject> {
        self.check_live()?;
        match self.finish_inner().await {
            Ok(w) => {
                self.live = false;
                Ok(w)
            }
            Err(e) => Err(self.fail(e).await),
        }
    }

    async fn abort(mut self: Box<Self>) -> Result<()> {
        self.abort_inner().await
    }
}

impl Drop for S3Writer {
    fn drop(&mut self) {
        let Some(upload) = self.upload.take() else {
            return;
        };
        tracing::warn!(object = %self.what(), "S3 writer dropped unfinished; aborting its upload");
        match tokio::runtime::Handle::try_current() {
            Ok(h) => {
                h.spawn(async move {
                    if let Err(e) = upload.abort().await {
                        tracing::warn!(error = %e, "could not abort multipart upload");
                    }
                });
            }
            Err(_) => tracing::warn!(
                upload_id = upload.upload_id(),
                "no Tokio runtime: multipart upload left behind"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn part_size_grows_for_large_objects() {
        let o = S3WriterOptions::default();
        assert_eq!(
            o.clone().for_expected_size(10 << 30).part_size,
            DEFAULT_PART_SIZE
        );
        let big = o.clone().for_expected_size(1 << 40); // 1 TiB
        assert!(big.part_size as u64 * u64::from(MAX_PARTS) >= (1u64 << 40) * 11 / 10);
        assert_eq!(big.part_size % PART_SIZE_ALIGN, 0);
        assert_eq!(o.for_expected_size(u64::MAX).part_size, MAX_PART_SIZE);
    }

    #[tokio::test]
    async fn an_abort_that_cannot_reach_the_store_is_retried_then_names_the_upload() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let config = crate::S3Config::default()
            .with_endpoint(Some(format!("http://127.0.0.1:{port}")))
            .with_keys(Some("k".into()), Some("s".into()));
        let store = S3Store::new(config.client().unwrap(), crate::RetryPolicy::none());
        let upload = MultipartUpload::existing(&store, "bucket", "disk.qcow2", "UPLOAD-1");
        let started = Instant::now();
        let err = abort_patiently(&upload, CLEANUP_RETRY_WAIT)
            .await
            .unwrap_err()
            .to_string();
        // The first attempt, one wait, one more attempt: then the upload is named.
        assert!(started.elapsed() >= CLEANUP_RETRY_WAIT, "gave up early");
        assert!(
            err.contains("AbortMultipartUpload")
                && err.contains("s3://bucket/disk.qcow2")
                && err.contains("multipart upload UPLOAD-1 is left behind"),
            "{err}"
        );
        let err = abort_patiently(&upload, Duration::ZERO).await.unwrap_err();
        assert!(err.to_string().contains("UPLOAD-1"), "{err}");
    }

    #[test]
    fn metadata_copy_source_keys_are_url_encoded() {
        assert_eq!(encode_key("a b/c+d.qcow2"), "a%20b/c%2Bd.qcow2");
    }

    #[test]
    fn options_are_validated() {
        let mut o = S3WriterOptions {
            part_size: MIN_PART_SIZE - 1,
            ..Default::default()
        };
        assert!(o
            .validate("s3://b/k")
            .unwrap_err()
            .to_string()
            .contains("s3://b/k"));
        o.part_size = MIN_PART_SIZE;
        o.max_in_flight = 0;
        assert!(o.validate("s3://b/k").is_err());
    }
}
