//! `export`: an RBD image or snapshot into one object (an S3/RGW object or a local file), as
//! qcow2, raw or zstd-compressed raw, in one streaming pass with no scratch file.
//!
//! Exporting an image's head takes a temporary snapshot (`diskferry-export-<pid>-<time>`) so
//! the object is one consistent point in time even while the VM writes; the snapshot is
//! removed afterwards, also when the export fails or is interrupted; what a killed run left
//! (its snapshot, its multipart upload) the next run of the same export removes first, as
//! `diskferry cleanup` does ([`crate::ops::cleanup`]). Only allocated extents
//! are read (`diff_iterate2`), many reads in flight; the [`ObjectSink`] uploads parts in
//! parallel and aborts the upload on any failure.

use std::time::{SystemTime, UNIX_EPOCH};

use rbd::{Image, OpenMode};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::context::blocking;
use crate::ops::cleanup::{
    clean_before_run, forget_snapshot_writer, record_snapshot_writer, Scope,
};
use crate::pipeline::{self, Transfer};
use crate::sinks::{check_object_destination, ObjectFormat, ObjectSink, ObjectSinkOptions};
use crate::sources::{RbdSource, RbdSourceOptions};
use crate::{Address, Context, Error, Progress, RbdSpec, Result};

/// Prefix of the temporary snapshots an export of an image's head takes.
pub const EXPORT_SNAPSHOT_PREFIX: &str = "diskferry-export-";

/// RBD reads in flight by default for exports: 4 × 4 MiB. librbd holds its own copy of each
/// read while it completes, so every read in flight costs about twice its size; 8 were no
/// faster here and cost ~40 MiB more.
pub const DEFAULT_EXPORT_READS_IN_FLIGHT: usize = 4;

/// Options of [`export`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportOptions {
    /// Format, compression, part size, parallel uploads, overwrite.
    pub sink: ObjectSinkOptions,
    /// Read size and reads in flight (its `since` must be unset: an export is a full copy).
    pub source: RbdSourceOptions,
}

impl Default for ExportOptions {
    fn default() -> Self {
        ExportOptions {
            sink: ObjectSinkOptions::default(),
            source: RbdSourceOptions {
                in_flight: DEFAULT_EXPORT_READS_IN_FLIGHT,
                ..RbdSourceOptions::default()
            },
        }
    }
}

/// What an export did (the `--json` output).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ExportReport {
    /// The source as given, `rbd:POOL/IMAGE[@SNAP]`.
    pub source: String,
    /// The snapshot read: the one given, or the temporary one (removed since).
    pub snapshot: String,
    /// Whether `snapshot` was a temporary snapshot taken for this export.
    pub temporary_snapshot: bool,
    /// The object written.
    pub destination: String,
    /// `qcow2`, `raw` or `raw.zst`.
    pub format: String,
    /// `none`, `deflate` or `zstd`.
    pub compression: String,
    /// Virtual size in bytes.
    pub size: u64,
    /// Data bytes read from RBD (allocated extents only).
    pub bytes_read: u64,
    /// Bytes of the object.
    pub object_size: u64,
    /// The S3 part size used (absent for local files).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub part_size: Option<usize>,
    /// Content digest of the disk, recorded in the object's metadata.
    pub digest: String,
    /// The digest's algorithm.
    pub digest_algorithm: String,
    /// Wall time in seconds.
    pub seconds: f64,
    /// Problems that did not fail the export (e.g. a temporary snapshot that could not be
    /// removed).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

/// A name for a temporary snapshot (or group) no other run uses.
pub(crate) fn temporary_name(prefix: &str) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    format!(
        "{prefix}{}-{}{:03}",
        std::process::id(),
        now.as_secs(),
        now.subsec_millis()
    )
}

/// A snapshot a job takes of an image's head so that it reads one point in time while the VM
/// writes; [`TemporarySnapshot::remove`] removes it (jobs do, also when they fail).
#[derive(Debug)]
pub(crate) struct TemporarySnapshot {
    ioctx: rados::IoCtx,
    image: String,
    /// The snapshot's name: `PREFIX<pid>-<time>`.
    pub(crate) name: String,
}

impl TemporarySnapshot {
    /// Snapshots the head of `image` under a new name starting with `prefix`, its writer
    /// (this process) recorded first, so that a kill never leaves a snapshot nothing can
    /// prove abandoned ([`cleanup`](crate::ops::cleanup)).
    pub(crate) async fn take(ctx: &Context, image: &RbdSpec, prefix: &str) -> Result<Self> {
        let ioctx = ctx.pool(&image.pool).await?;
        let name = temporary_name(prefix);
        let (io, img, snap) = (ioctx.clone(), image.image.clone(), name.clone());
        blocking(move || {
            let image = Image::open(&io, &img, OpenMode::ReadWrite)?;
            record_snapshot_writer(&image, &snap)?;
            if let Err(e) = image.snap_create(&snap) {
                let _ = forget_snapshot_writer(&image, &snap);
                return Err(e);
            }
            Ok(())
        })
        .await?;
        Ok(TemporarySnapshot {
            ioctx,
            image: image.image.clone(),
            name,
        })
    }

    /// Removes the snapshot.
    pub(crate) async fn remove(self) -> Result<()> {
        let TemporarySnapshot { ioctx, image, name } = self;
        blocking(move || {
            let image = Image::open(&ioctx, &image, OpenMode::ReadWrite)?;
            image.snap_remove(&name)?;
            forget_snapshot_writer(&image, &name)
        })
        .await
    }
}

/// Exports `source` (an image's head, through a temporary snapshot, or a snapshot) into
/// `destination` (`s3://BUCKET/KEY` or a path).
///
/// An existing destination is refused unless `options.sink.force`, before anything else is
/// done. On failure or cancellation the upload is aborted (or the temporary file removed),
/// so no partial object becomes visible, and the temporary snapshot is removed.
pub async fn export(
    ctx: &Context,
    source: &RbdSpec,
    destination: &Address,
    options: &ExportOptions,
    progress: &dyn Progress,
    cancel: &CancellationToken,
) -> Result<ExportReport> {
    if options.source.since.is_some() {
        return Err(Error::InvalidOption(
            "an export is a full copy; `since` is not supported".into(),
        ));
    }
    options.sink.validate()?;
    check_object_destination(ctx, destination, options.sink.force).await?;
    let ioctx = ctx.pool(&source.pool).await?;
    // What a killed run of this export left: its snapshots of the image, its uploads.
    clean_before_run(
        ctx,
        &Scope::RbdImage {
            pool: source.pool.clone(),
            image: source.image.clone(),
        },
    )
    .await;
    if let Address::S3(object) = destination {
        clean_before_run(
            ctx,
            &Scope::S3 {
                bucket: object.bucket.clone(),
                prefix: object.key.clone(),
            },
        )
        .await;
    }

    let temporary = match &source.snap {
        Some(_) => None,
        None => Some(TemporarySnapshot::take(ctx, source, EXPORT_SNAPSHOT_PREFIX).await?),
    };
    let snapshot = match (&source.snap, &temporary) {
        (Some(snap), _) => snap.clone(),
        (None, Some(t)) => t.name.clone(),
        (None, None) => unreachable!("a temporary snapshot is taken when none is named"),
    };

    let at_snapshot = source.at(Some(&snapshot));
    let exported = async {
        let (io, name, mode) = (
            ioctx.clone(),
            source.image.clone(),
            OpenMode::Snapshot(snapshot.clone()),
        );
        let image = blocking(move || Image::open(&io, &name, mode)).await?;
        export_image(
            ctx,
            &at_snapshot,
            image,
            &source.to_string(),
            destination,
            options,
            progress,
            cancel,
        )
        .await
    }
    .await;

    let mut warnings = Vec::new();
    let was_temporary = temporary.is_some();
    if let Some(temporary) = temporary {
        if let Err(cleanup) = temporary.remove().await {
            let left_behind = format!("temporary snapshot {at_snapshot}");
            match exported {
                Ok(_) => warnings.push(format!("could not remove the {left_behind}: {cleanup}")),
                Err(error) => return Err(error.after_cleanup(Err(cleanup), left_behind)),
            }
        }
    }
    let (transfer, part_size) = exported?;
    Ok(report(
        source.to_string(),
        at_snapshot.to_string(),
        was_temporary,
        destination,
        &options.sink,
        transfer,
        part_size,
        warnings,
    ))
}

/// Exports an already open image (e.g. opened at a group snapshot's id). `label` is what
/// the object's metadata records as its source; `spec` names what is read, for messages.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn export_image(
    ctx: &Context,
    spec: &RbdSpec,
    image: Image,
    label: &str,
    destination: &Address,
    options: &ExportOptions,
    progress: &dyn Progress,
    cancel: &CancellationToken,
) -> Result<(Transfer, Option<usize>)> {
    let mut source = RbdSource::from_image(spec.clone(), image, options.source.clone()).await?;
    let size = crate::Source::size(&source);
    let result = async {
        let sink = ObjectSink::create(ctx, destination, size, label, &options.sink).await?;
        let part_size = sink.part_size();
        let progress = crate::progress::Named::new(label, progress);
        let transfer = pipeline::run(&mut source, Box::new(sink), &progress, cancel).await?;
        Ok((transfer, part_size))
    }
    .await;
    // Closing the image waits for reads still in flight: not on an async worker.
    let _ = tokio::task::spawn_blocking(move || drop(source)).await;
    result
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn report(
    source: String,
    snapshot: String,
    temporary_snapshot: bool,
    destination: &Address,
    options: &ObjectSinkOptions,
    transfer: Transfer,
    part_size: Option<usize>,
    warnings: Vec<String>,
) -> ExportReport {
    ExportReport {
        source,
        snapshot,
        temporary_snapshot,
        destination: destination.to_string(),
        format: options.format.name().to_string(),
        compression: options.compression_name().to_string(),
        size: transfer.summary.size,
        bytes_read: transfer.bytes_read,
        object_size: transfer.sink.bytes_written,
        part_size,
        digest: transfer.summary.digest,
        digest_algorithm: transfer.summary.digest_algorithm.name().to_string(),
        seconds: transfer.elapsed.as_secs_f64(),
        warnings,
    }
}

/// The object format for `destination` when none is asked for: from its extension, else
/// qcow2.
pub fn default_format(destination: &Address) -> ObjectFormat {
    ObjectFormat::for_destination(destination)
}
