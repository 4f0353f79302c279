//! The RBD sink: creates the image, writes only non-zero data with many asynchronous writes in
//! flight, records the digest and the source as image metadata.
//!
//! Nothing is lost and nothing half-done stays visible: the image is written under a
//! temporary name (`IMAGE.diskferry-new-PID-MILLIS-TAG`, [`WORKING_NAME_INFIX`]) and renamed to its
//! own name only after every write succeeded and its digest is recorded, so the name only
//! ever holds a complete image, even after the process was killed. A failed transfer
//! removes the working image (unless `keep_partial`); replacing an existing image (`replace`)
//! removes the old one only at the end, just before the rename.

use std::future::Future;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::future::BoxFuture;
use futures::stream::{FuturesUnordered, StreamExt};
use rbd::{CreateOptions, ErrorKind, Image, OpenMode};

use crate::context::blocking;
use crate::{Context, Error, Extent, RbdSpec, Result, Sink, SinkReport, Summary};

/// Image metadata key holding the content digest.
pub const METADATA_DIGEST: &str = "diskferry.digest";
/// Image metadata key naming the digest algorithm.
pub const METADATA_DIGEST_ALGORITHM: &str = "diskferry.digest-algorithm";
/// Image metadata key holding the source address.
pub const METADATA_SOURCE: &str = "diskferry.source";
/// Image metadata key holding the source format.
pub const METADATA_SOURCE_FORMAT: &str = "diskferry.source-format";
/// What a working image's name has between the final name and the writer's pid, start time
/// and place tag (`IMAGE.diskferry-new-PID-MILLIS-TAG`, [`objstore::Writer::place_tag`]; older
/// versions wrote no tag): images whose name contains it are unfinished (or left by a killed
/// process).
pub const WORKING_NAME_INFIX: &str = ".diskferry-new-";
/// Image metadata key of a working image kept on purpose (`--keep-partial`): no later run
/// takes it for a killed import's.
pub const METADATA_KEPT: &str = "diskferry.kept";
/// Image metadata key of a working image: `HOST PID` of the process writing it, so that a
/// later run on the same host can tell a leftover of a killed process from a running import.
pub const METADATA_WRITER: &str = "diskferry.writer";
/// Default number of writes in flight (as `rbd bench --io-threads 16`).
pub const DEFAULT_WRITES_IN_FLIGHT: usize = 16;
/// Largest single write; writes are also cut at object boundaries. 2 MiB, as
/// `qemu-img convert` writes: with 16 in flight, and librbd copying each buffer, 4 MiB
/// writes held 128 MiB and pushed an import's peak RSS past 256 MiB, for no more speed.
const MAX_WRITE: u64 = 2 << 20;
/// Granularity of zero skipping: runs of all-zero 64 KiB blocks inside a piece are not
/// written (a fresh image reads them as zeros); the non-zero runs between them are.
const ZERO_GRANULE: usize = 64 << 10;

/// How long writes may make no progress before the sink asks the monitors whether the pool
/// is full: writes to a full pool do not fail, they wait (until the OSD op timeout), so a
/// full pool is only seen by asking. A healthy write completes in milliseconds.
const STALL_CHECK: Duration = Duration::from_secs(10);

/// How to create and fill the image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RbdSinkOptions {
    /// Features, object size, data pool of the new image.
    pub create: CreateOptions,
    /// Writes in flight.
    pub in_flight: usize,
    /// Replace an existing image (`--force`).
    pub replace: bool,
    /// Keep a partial image when the transfer fails (`--keep-partial`).
    pub keep_partial: bool,
}

impl Default for RbdSinkOptions {
    fn default() -> Self {
        RbdSinkOptions {
            create: CreateOptions::default(),
            in_flight: DEFAULT_WRITES_IN_FLIGHT,
            replace: false,
            keep_partial: false,
        }
    }
}

/// Writes a disk into a new RBD image.
pub struct RbdSink {
    spec: RbdSpec,
    /// The name written to: the final name, or a temporary one when replacing.
    working_name: String,
    replacing: bool,
    keep_partial: bool,
    ioctx: rados::IoCtx,
    image: Image,
    object_size: u64,
    in_flight: usize,
    pending: FuturesUnordered<BoxFuture<'static, rbd::Result<()>>>,
    bytes_written: u64,
}

impl std::fmt::Debug for RbdSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RbdSink")
            .field("spec", &self.spec)
            .field("working_name", &self.working_name)
            .finish()
    }
}

impl RbdSink {
    /// Creates the image for a disk of `size` bytes. Refuses an existing image unless
    /// `options.replace`, and refuses to replace an image that has snapshots.
    pub async fn create(
        ctx: &Context,
        spec: &RbdSpec,
        size: u64,
        options: RbdSinkOptions,
    ) -> Result<RbdSink> {
        if let Some(snap) = &spec.snap {
            return Err(Error::InvalidAddress {
                address: spec.to_string(),
                reason: format!("cannot write into snapshot @{snap}; name an image"),
            });
        }
        refuse_working_name(spec)?;
        let ioctx = ctx.pool(&spec.pool).await?;
        let existing = {
            let (io, name) = (ioctx.clone(), spec.image.clone());
            blocking(move || match Image::open(&io, &name, OpenMode::ReadOnly) {
                Ok(image) => image.snap_list().map(|snaps| Some(snaps.len())),
                Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
                Err(e) => Err(e),
            })
            .await?
        };
        match existing {
            Some(_) if !options.replace => return Err(Error::AlreadyExists(spec.to_string())),
            Some(snaps) if snaps > 0 => {
                return Err(Error::InvalidOption(format!(
                    "{spec} has {snaps} snapshot(s); --force does not remove snapshots: remove them first"
                )))
            }
            _ => {}
        }
        let started = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis();
        // The tag says where the pid lives: a process killed between creating the image and
        // recording its writer (a moment) leaves an image the next run can still judge.
        let me = objstore::Writer::current();
        let working_name = format!(
            "{}{WORKING_NAME_INFIX}{}-{started}-{}",
            spec.image,
            me.pid,
            me.place_tag()
        );
        let (io, name, create) = (ioctx.clone(), working_name.clone(), options.create.clone());
        let target = spec.image.clone();
        let image = blocking(move || {
            // A full pool would make the create wait for the whole OSD op timeout, silently.
            check_pool_has_room(&io)?;
            remove_stale_working_images(&io, &target);
            rbd::create(&io, &name, size, &create)?;
            let opened = Image::open(&io, &name, OpenMode::ReadWrite).and_then(|image| {
                image
                    .metadata_set(METADATA_WRITER, &writer_id())
                    .map(|()| image)
            });
            match opened {
                Ok(image) => Ok(image),
                Err(e) => {
                    let _ = rbd::remove(&io, &name);
                    Err(e)
                }
            }
        })
        .await?;
        Ok(RbdSink {
            spec: spec.clone(),
            replacing: existing.is_some(),
            working_name,
            keep_partial: options.keep_partial,
            ioctx,
            image,
            object_size: 1 << options.create.object_order,
            in_flight: options.in_flight.max(1),
            pending: FuturesUnordered::new(),
            bytes_written: 0,
        })
    }

    fn working_spec(&self) -> String {
        working_spec_of(&self.spec, &self.working_name)
    }

    async fn drain(&mut self) -> Result<()> {
        while let Some(result) = self.next_completion().await? {
            result?;
        }
        Ok(())
    }

    /// The next write to complete (`None` when none is pending), watched for stalls.
    async fn next_completion(&mut self) -> Result<Option<rbd::Result<()>>> {
        let ioctx = self.ioctx.clone();
        watch_for_full_pool(&ioctx, self.pending.next()).await
    }

    fn submit(&mut self, offset: u64, data: Bytes) {
        self.bytes_written += data.len() as u64;
        self.pending.push(Box::pin(self.image.write(offset, data)));
    }

    async fn remove_working_image(self) -> Result<()> {
        let RbdSink {
            ioctx,
            image,
            working_name,
            pending,
            ..
        } = self;
        drop(pending);
        // Closing waits for writes still in flight.
        blocking(move || {
            drop(image);
            rbd::remove(&ioctx, &working_name)
        })
        .await
    }
}

#[async_trait]
impl Sink for RbdSink {
    fn describe(&self) -> String {
        self.working_spec()
    }

    async fn write(&mut self, extent: Extent) -> Result<()> {
        // A fresh image reads as zeros: explicit zero ranges need no write.
        let Extent::Data { offset, data } = extent else {
            return Ok(());
        };
        let end = offset + data.len() as u64;
        let mut at = offset;
        while at < end {
            let object_end = (at / self.object_size + 1) * self.object_size;
            let piece_end = end.min(object_end).min(at + MAX_WRITE);
            let piece = data.slice((at - offset) as usize..(piece_end - offset) as usize);
            for (start, end) in nonzero_runs(&piece) {
                self.submit(at + start as u64, piece.slice(start..end));
                while self.pending.len() >= self.in_flight {
                    if let Some(result) = self.next_completion().await? {
                        result?;
                    }
                }
            }
            at = piece_end;
        }
        Ok(())
    }

    async fn finish(mut self: Box<Self>, summary: &Summary) -> Result<SinkReport> {
        let completed = async {
            self.drain().await?;
            watch_for_full_pool(&self.ioctx, self.image.flush()).await??;
            let image = self.image.clone();
            let metadata = [
                (METADATA_DIGEST, summary.digest.clone()),
                (
                    METADATA_DIGEST_ALGORITHM,
                    summary.digest_algorithm.name().to_string(),
                ),
                (METADATA_SOURCE, summary.source.clone()),
                (METADATA_SOURCE_FORMAT, summary.source_format.to_string()),
            ];
            blocking(move || {
                for (key, value) in &metadata {
                    image.metadata_set(key, value)?;
                }
                // A finished image has no writer: nothing may take it for a killed run's.
                image.metadata_remove(METADATA_WRITER)
            })
            .await
        }
        .await;
        if let Err(error) = completed {
            let left = self.working_spec();
            return Err(error.after_cleanup((*self).abort_inner().await, left));
        }
        let report = SinkReport {
            location: self.spec.to_string(),
            bytes_written: self.bytes_written,
        };
        let RbdSink {
            ioctx,
            image,
            working_name,
            spec,
            replacing,
            ..
        } = *self;
        let left = working_spec_of(&spec, &working_name);
        let target = spec.to_string();
        let renamed = blocking(move || {
            drop(image);
            let removed = if replacing {
                rbd::remove(&ioctx, &spec.image)
            } else {
                Ok(())
            };
            // rename() refuses an existing name: an image made meanwhile under the final name
            // survives, and this one is removed instead.
            let renamed = removed.and_then(|()| rbd::rename(&ioctx, &working_name, &spec.image));
            // On failure, remove the new image rather than leave it under its temporary name.
            Ok(renamed.map_err(|error| (error, rbd::remove(&ioctx, &working_name).err())))
        })
        .await?;
        if let Err((error, cleanup)) = renamed {
            let cleanup = cleanup.map_or(Ok(()), Err);
            let error = match error.kind() {
                ErrorKind::AlreadyExists => Error::AlreadyExists(target),
                _ => Error::from(error),
            };
            return Err(error.after_cleanup(cleanup, left));
        }
        Ok(report)
    }

    async fn abort(self: Box<Self>) -> Result<()> {
        (*self).abort_inner().await
    }
}

/// Fails with the cause in words when the monitors flag the pool as full. Only a full pool
/// fails it: if the monitors cannot be asked (a client without the caps, a slow mon), the
/// write goes ahead and says itself what went wrong.
fn check_pool_has_room(ioctx: &rados::IoCtx) -> rbd::Result<()> {
    match ioctx.check_not_full() {
        Err(e) if e.kind() == ErrorKind::NoSpace => Err(e),
        Err(e) => {
            tracing::debug!(pool = ioctx.pool(), error = %e, "could not ask whether the pool is full");
            Ok(())
        }
        Ok(()) => Ok(()),
    }
}

/// Runs `op`; each time it makes no progress for [`STALL_CHECK`], asks whether the pool is
/// full and fails at once if it is (rather than after the OSD op timeout, in silence).
async fn watch_for_full_pool<T>(ioctx: &rados::IoCtx, op: impl Future<Output = T>) -> Result<T> {
    tokio::pin!(op);
    loop {
        match tokio::time::timeout(STALL_CHECK, &mut op).await {
            Ok(done) => return Ok(done),
            Err(_) => {
                tracing::debug!(
                    pool = ioctx.pool(),
                    "writes made no progress for {STALL_CHECK:?}"
                );
                let io = ioctx.clone();
                blocking(move || check_pool_has_room(&io)).await?;
            }
        }
    }
}

/// This process as a writer record ([`objstore::Writer`]: `HOST PID INSTANCE`).
fn writer_id() -> String {
    objstore::Writer::current().to_string()
}

/// Removes the working images of `target` that a process on this host left when it was
/// killed (its pid no longer runs). Images of running imports, of other hosts, or without a
/// writer recorded are left alone: only what is certainly dead is removed. Best effort: a
/// failure here must not stop the new import.
fn remove_stale_working_images(ioctx: &rados::IoCtx, target: &str) {
    let prefix = format!("{target}{WORKING_NAME_INFIX}");
    let Ok(names) = rbd::list(ioctx) else { return };
    for name in names.iter().filter(|n| n.starts_with(&prefix)) {
        let Ok(image) = Image::open(ioctx, name, OpenMode::ReadOnly) else {
            continue;
        };
        let dead = match working_image_writer(&image, &name[prefix.len()..]) {
            Ok(WorkingWriter::Recorded(w)) | Ok(WorkingWriter::Named(w)) => {
                w.state() == objstore::WriterState::Gone
            }
            _ => false,
        };
        drop(image);
        if dead {
            match rbd::remove(ioctx, name) {
                Ok(()) => {
                    tracing::info!(image = %name, "removed the working image of a killed import")
                }
                Err(e) => {
                    tracing::warn!(image = %name, error = %e, "could not remove the working image of a killed import")
                }
            }
        }
    }
}

/// Refuses `spec` as a new image's name when it is shaped like a working image's (those are
/// removed once their writer is gone).
pub(crate) fn refuse_working_name(spec: &RbdSpec) -> Result<()> {
    if !spec.image.contains(WORKING_NAME_INFIX) {
        return Ok(());
    }
    Err(Error::InvalidAddress {
        address: spec.to_string(),
        reason: format!(
            "names with {WORKING_NAME_INFIX:?} in them are diskferry's working images \
             (removed once their writer is gone); choose another name"
        ),
    })
}

/// Who writes a working image, as far as can be told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum WorkingWriter {
    /// Its writer record ([`METADATA_WRITER`]).
    Recorded(objstore::Writer),
    /// No record, but its name's pid and tag are of a process of this place: one killed
    /// between creating the image and recording itself.
    Named(objstore::Writer),
    /// Kept on purpose (`--keep-partial`, [`METADATA_KEPT`]).
    Kept,
    /// A finished copy ([`METADATA_DIGEST`] recorded), whatever its name says: one killed
    /// between its last metadata and its rename, or an image someone named so.
    Completed,
    /// Nothing says: no record, and a name of another place or of an older version (whose
    /// partial images kept on purpose had no mark either).
    Unknown,
}

/// What a working image's name says after [`WORKING_NAME_INFIX`]: `PID-MILLIS-TAG`, or
/// `PID-MILLIS` from versions before the place tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct WorkingTail<'a> {
    /// The writer's pid.
    pub pid: u32,
    /// When its run started.
    pub started: std::time::SystemTime,
    /// Where that pid lives ([`objstore::Writer::place_tag`]: hex digits), when named.
    pub tag: Option<&'a str>,
}

impl<'a> WorkingTail<'a> {
    /// Reads `tail`; `None` for anything else (a name diskferry did not make).
    pub(crate) fn parse(tail: &'a str) -> Option<Self> {
        let mut parts = tail.split('-');
        let (pid, millis, tag) = (parts.next()?, parts.next()?, parts.next());
        let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        let hex = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_hexdigit());
        if parts.next().is_some() || !digits(pid) || !digits(millis) || !tag.is_none_or(hex) {
            return None;
        }
        Some(Self {
            pid: pid.parse().ok()?,
            started: std::time::UNIX_EPOCH + std::time::Duration::from_millis(millis.parse().ok()?),
            tag,
        })
    }
}

/// Who writes `image`, a working image whose name ends in `tail` (after
/// [`WORKING_NAME_INFIX`], [`WorkingTail`]).
pub(crate) fn working_image_writer(image: &Image, tail: &str) -> rbd::Result<WorkingWriter> {
    if image.metadata_get(METADATA_DIGEST)?.is_some() {
        return Ok(WorkingWriter::Completed);
    }
    if let Some(w) = image.metadata_get(METADATA_WRITER)? {
        return Ok(match w.parse() {
            Ok(w) => WorkingWriter::Recorded(w),
            Err(_) => WorkingWriter::Unknown,
        });
    }
    if image.metadata_get(METADATA_KEPT)?.is_some() {
        return Ok(WorkingWriter::Kept);
    }
    let named =
        WorkingTail::parse(tail).and_then(|t| objstore::Writer::of_this_place(t.pid, t.tag?));
    Ok(named.map_or(WorkingWriter::Unknown, WorkingWriter::Named))
}

/// The address of the working image of `spec`, for messages.
fn working_spec_of(spec: &RbdSpec, working_name: &str) -> String {
    RbdSpec {
        image: working_name.to_string(),
        snap: None,
        ..spec.clone()
    }
    .to_string()
}

/// The `[start, end)` runs of `data` made of [`ZERO_GRANULE`] blocks that are not all zero
/// (blocks counted from the start of `data`; the last may be shorter).
fn nonzero_runs(data: &[u8]) -> Vec<(usize, usize)> {
    let mut runs: Vec<(usize, usize)> = Vec::new();
    for (i, block) in data.chunks(ZERO_GRANULE).enumerate() {
        if crate::is_zero(block) {
            continue;
        }
        let (start, end) = (i * ZERO_GRANULE, i * ZERO_GRANULE + block.len());
        match runs.last_mut() {
            Some(last) if last.1 == start => last.1 = end,
            _ => runs.push((start, end)),
        }
    }
    runs
}

impl RbdSink {
    async fn abort_inner(self) -> Result<()> {
        if self.keep_partial {
            // Kept on purpose: marked so, and without a writer, no later import takes it for
            // a leftover.
            let image = self.image.clone();
            blocking(move || {
                image.metadata_set(METADATA_KEPT, "--keep-partial")?;
                image.metadata_remove(METADATA_WRITER)
            })
            .await?;
            tracing::warn!(
                "keeping the partial image under its working name {}",
                self.working_spec()
            );
            return Ok(());
        }
        self.remove_working_image().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn working_name_tails_give_pid_start_and_place_tag() {
        let start = std::time::UNIX_EPOCH + std::time::Duration::from_millis(1_700_000_000_123);
        assert_eq!(
            WorkingTail::parse("42-1700000000123-0a1b2c3d"),
            Some(WorkingTail {
                pid: 42,
                started: start,
                tag: Some("0a1b2c3d")
            })
        );
        // Names from before the place tag.
        assert_eq!(
            WorkingTail::parse("42-1700000000123"),
            Some(WorkingTail {
                pid: 42,
                started: start,
                tag: None
            })
        );
        for other in [
            "",
            "42",
            "42-",
            "-1700000000123",
            "x-1700000000123",
            "42-17x",
            "42-1700000000123-",
            "42-1700000000123-nothex",
            "42-1700000000123-0a1b2c3d-9",
            "99999999999-1",
        ] {
            assert_eq!(WorkingTail::parse(other), None, "{other}");
        }
    }

    #[test]
    fn only_nonzero_granules_are_written_and_neighbours_merge() {
        let mut data = vec![0u8; 4 * ZERO_GRANULE + 100];
        assert!(nonzero_runs(&data).is_empty());
        data[ZERO_GRANULE + 5] = 1;
        data[2 * ZERO_GRANULE] = 1;
        data[4 * ZERO_GRANULE + 99] = 1;
        assert_eq!(
            nonzero_runs(&data),
            vec![
                (ZERO_GRANULE, 3 * ZERO_GRANULE),
                (4 * ZERO_GRANULE, 4 * ZERO_GRANULE + 100)
            ]
        );
    }
}
