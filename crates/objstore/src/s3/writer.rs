//! A positional writer onto one S3 object: streamed parts in parallel, the first part last.

use std::sync::Arc;

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use super::multipart::{MultipartUpload, UploadedPart, MAX_PARTS, MAX_PART_SIZE, MIN_PART_SIZE};
use super::{PutOptions, S3Store, Target};
use crate::coverage::Coverage;
use crate::error::{Error, Result};
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

/// How an [`S3Writer`] cuts and sends parts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3WriterOptions {
    /// Size of every part but the last; [`MIN_PART_SIZE`]..=[`MAX_PART_SIZE`].
    pub part_size: usize,
    /// Most part uploads in flight; `write_at` waits when that many are running.
    pub max_in_flight: usize,
    /// Metadata, content type and overwrite policy of the object.
    pub put: PutOptions,
}

impl Default for S3WriterOptions {
    fn default() -> Self {
        Self {
            part_size: DEFAULT_PART_SIZE,
            max_in_flight: DEFAULT_PARTS_IN_FLIGHT,
            put: PutOptions::default(),
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
///
/// That is how the qcow2 streaming writer emits an image: data clusters from one cluster on,
/// the metadata tail, and the header at offset 0 last.
///
/// # Memory and concurrency
/// Part 1 (up to `P` bytes), one part being filled, and up to `max_in_flight` parts being
/// uploaded: at most `(max_in_flight + 2) × P` bytes. `write_at` waits for a free upload
/// slot when a part is full (backpressure).
///
/// # Failure
/// Any error from `write_at` or `finish` aborts the multipart upload before it is returned;
/// the writer is then dead. `abort` aborts explicitly. Dropping a live writer aborts from a
/// spawned task on the current Tokio runtime (best effort; a warning is logged).
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
    /// Created when the first part beyond part 1 is ready.
    upload: Option<MultipartUpload>,
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
        // Validate both halves before changing anything.
        if end > p {
            let tail_start = offset.max(p);
            if tail_start != self.cursor {
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
            if self.first.len() < hi {
                // One allocation of part 1, not a doubling Vec that could reach 2 × P.
                self.first.reserve_exact(p as usize - self.first.len());
                self.first.resize(hi, 0);
            }
            self.first[lo..hi].copy_from_slice(&data[..hi - lo]);
        }
        if end > p {
            let mut tail = data.slice((offset.max(p) - offset) as usize..);
            self.cursor = end;
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
        let streamed = self.cursor > p;
        let size = if streamed {
            self.cursor
        } else {
            self.first_written.end()
        };
        if let Some((a, b)) = self.first_written.first_gap(size.min(p)) {
            return Err(Error::invalid_write(
                self.what(),
                format!("bytes {a}..{b} were never written"),
            ));
        }
        let first = Bytes::from(std::mem::take(&mut self.first));
        if !streamed {
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
        if written.size != size {
            return Err(Error::invalid_write(
                self.what(),
                format!("stored {} bytes, wrote {size}", written.size),
            ));
        }
        Ok(written)
    }

    /// Stops the uploads in flight and aborts the multipart upload, if any.
    async fn abort_inner(&mut self) -> Result<()> {
        self.live = false;
        self.tasks.abort_all();
        while self.tasks.join_next().await.is_some() {}
        self.first = Vec::new();
        self.pending = BytesMut::new();
        match self.upload.take() {
            Some(u) => u.abort().await,
            None => Ok(()),
        }
    }

    /// Aborts after `err`, logging an abort failure, and returns `err`.
    async fn fail(&mut self, err: Error) -> Error {
        if let Err(abort) = self.abort_inner().await {
            tracing::warn!(object = %self.what(), error = %abort, "could not abort multipart upload");
        }
        err
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

    async fn finish(mut self: Box<Self>) -> Result<WrittenObject> {
        self.check_live()?;
        match self.finish_inner().await {
            Ok(w) => {
                self.live = false;
                self.upload = None;
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
        if !self.live {
            return;
        }
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
