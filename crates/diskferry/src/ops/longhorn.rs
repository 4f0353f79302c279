//! The Longhorn jobs: `backup` (any disk into a backup volume) and `restore` (a backup into
//! an RBD image, an object or a file) over [`pipeline::run`], and thin calls of the
//! [`BackupStore`] catalog: [`list`], [`inspect`], [`remove`].
//!
//! How the pieces plug into the pipeline (the store driver, the block sink, the restore
//! source, the digest check) is in [`crate::longhorn`].

use std::collections::BTreeMap;

use longhorn::{
    BackupName, BackupOptions, BackupStore, BlockSize, Compression, LockType, MergeWith,
    PendingLock, RestoreOptions, VolumeName,
};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

pub use longhorn::{BackupSummary, InspectReport, RemoveReport, VolumeListing, LATEST};

use crate::longhorn::check::{DigestCheck, RecordedDigest};
use crate::longhorn::{
    BackupTarget, LonghornSink, LonghornSource, DIGEST_ALGORITHM_LABEL, DIGEST_LABEL,
    DISK_SIZE_LABEL, SOURCE_SNAPSHOT_LABEL,
};
use crate::ops::cleanup::{
    clean_before_run, clean_volume_before_backup, clean_volume_locks, Scope,
};
use crate::ops::export::TemporarySnapshot;
use crate::ops::hooks::snapshot_with_hooks;
use crate::serve::config::Hooks;
use crate::sinks::{check_sink, open_sink, ObjectFormat, ObjectSinkOptions, SinkOptions};
use crate::sources::{open_source_as, RbdSource, RbdSourceOptions};
use crate::{
    blocking, pipeline, Address, Context, Error, FormatOrigin, Progress, RbdSpec, Result, Source,
};
use rbd::{Image, OpenMode};

/// Blocks compressed and uploaded at once during a backup by default (memory: about three
/// times this many blocks).
pub const DEFAULT_BACKUP_IN_FLIGHT: usize = 16;
/// Blocks fetched and decoded ahead during a restore.
pub const DEFAULT_RESTORE_IN_FLIGHT: usize = 8;

/// What to back up and how.
#[derive(Debug, Clone)]
pub struct BackupJob {
    /// Backup volume name.
    pub volume: String,
    /// Backup name; `None` generates Longhorn's `backup-<16 hex>`.
    pub backup: Option<String>,
    /// Incremental: read only what changed since this snapshot of the RBD source and merge
    /// with the backup taken from that snapshot.
    pub since: Option<String>,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Block size.
    pub block_size: BlockSize,
    /// Compression (sticky per volume: a volume's first backup fixes it).
    pub compression: Compression,
    /// Blocks accepted but not yet uploaded, at most (memory bound).
    pub max_in_flight_blocks: usize,
    /// The source's format, for a file or object source (`None`: as recorded, else guessed).
    pub format: Option<ObjectFormat>,
    /// Commands run right around the temporary snapshot of an RBD image's head
    /// ([`crate::ops::hooks`]); refused for any other source.
    pub hooks: Hooks,
    /// With `since`: the backup taken from that snapshot, when the caller knows it (else it
    /// is found by reading every backup cfg of the volume). It is checked either way.
    pub base: Option<String>,
    /// Whether to look first for what killed backups of this volume left (their in-progress
    /// cfgs and locks, `clean_volume_before_backup`): a scan of every cfg and stored block.
    /// A caller that has just read every backup cfg of the volume and found none in progress
    /// turns it off: there is nothing to find.
    pub clean_leftovers: bool,
}

impl BackupJob {
    /// A full backup of `volume` with Longhorn's defaults (2 MiB lz4 blocks).
    pub fn new(volume: impl Into<String>) -> Self {
        Self {
            volume: volume.into(),
            backup: None,
            since: None,
            labels: BTreeMap::new(),
            block_size: BlockSize::default(),
            compression: Compression::Lz4,
            max_in_flight_blocks: DEFAULT_BACKUP_IN_FLIGHT,
            format: None,
            hooks: Hooks::default(),
            base: None,
            clean_leftovers: true,
        }
    }
}

/// What a backup did (the `--json` output).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BackupReport {
    /// The source.
    pub source: String,
    /// Its format.
    pub source_format: String,
    /// How the format was decided: `given`, `recorded` or `guessed` (from the first bytes).
    pub source_format_origin: FormatOrigin,
    /// Backup volume.
    pub volume: String,
    /// Backup name.
    pub backup: String,
    /// Longhorn's backup URL for it.
    pub url: String,
    /// Volume size recorded in `volume.cfg`: the disk size rounded up to a block, or the
    /// volume's earlier size if that was larger (every backup of the volume restores at it).
    pub size: u64,
    /// Virtual size of the disk backed up (what the digest covers).
    pub disk_size: u64,
    /// Whether the block list was merged with an earlier backup's.
    pub incremental: bool,
    /// The backup the list was merged with.
    pub merged_with: Option<String>,
    /// Compression used.
    pub compression: String,
    /// Block size.
    pub block_size: u64,
    /// Data bytes read from the source.
    pub bytes_read: u64,
    /// Blocks given to the writer.
    pub blocks_in: u64,
    /// Blocks uploaded that were not stored before.
    pub new_blocks: u64,
    /// Blocks found already stored (dedup).
    pub reused_blocks: u64,
    /// All-zero blocks skipped.
    pub zero_blocks: u64,
    /// Blocks kept from the merged backup.
    pub kept_from_previous: u64,
    /// Blocks in the backup.
    pub blocks_total: u64,
    /// Compressed bytes uploaded.
    pub bytes_uploaded: u64,
    /// Content digest (full backups only), also recorded as a label.
    pub digest: Option<String>,
    /// Wall time in seconds.
    pub seconds: f64,
    /// Problems that did not fail the backup (a temporary snapshot that could not be removed).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

/// The backup an incremental backup `--since snap` merges with: the latest completed one
/// taken from `snap`.
async fn backup_of_snapshot(
    store: &BackupStore,
    volume: &VolumeName,
    snap: &str,
) -> Result<BackupName> {
    store
        .backup_of_snapshot(volume, snap)
        .await?
        .ok_or_else(|| {
            Error::InvalidOption(format!(
            "--since {snap}: volume {volume} has no completed backup taken from snapshot {snap}; \
             take a full backup of that snapshot first"
        ))
        })
}

/// `POOL@SNAPSHOT_ID` of snapshot `snap` of the image `spec` ([`SOURCE_SNAPSHOT_LABEL`]).
async fn snapshot_identity(ctx: &Context, spec: &RbdSpec, snap: &str) -> Result<String> {
    let ioctx = ctx.pool(&spec.pool).await?;
    let pool = ioctx.pool().to_string();
    let (image, name) = (spec.image.clone(), snap.to_string());
    let id = blocking(move || {
        let image = Image::open(&ioctx, &image, OpenMode::ReadOnly)?;
        Ok(image
            .snap_list()?
            .into_iter()
            .find(|s| s.name == name)
            .map(|s| s.id))
    })
    .await?;
    let id = id.ok_or_else(|| Error::NotFound(format!("snapshot {}", spec.at(Some(snap)))))?;
    Ok(format!("{pool}@{id}"))
}

/// Refuses to merge with `base` unless it was read from the very snapshot `since` of `spec`
/// is now: a snapshot recreated under the same name, or another image's of that name, would
/// make the incremental backup store a wrong disk without any error.
async fn check_base_snapshot(
    ctx: &Context,
    store: &BackupStore,
    volume: &VolumeName,
    base: &BackupName,
    spec: &RbdSpec,
    since: &str,
) -> Result<()> {
    let now = snapshot_identity(ctx, spec, since).await?;
    let cfg = store.load_backup(volume, base).await?;
    let recorded = cfg
        .labels
        .as_ref()
        .and_then(|labels| labels.get(SOURCE_SNAPSHOT_LABEL));
    let snapshot = spec.at(Some(since));
    match recorded {
        Some(recorded) if *recorded == now => Ok(()),
        Some(recorded) => Err(Error::InvalidOption(format!(
            "--since {since}: backup {base} of volume {volume} was read from snapshot {recorded}, \
             but {snapshot} is now {now} (recreated since, or another image's): an incremental \
             backup from it would store a wrong disk; take a full backup"
        ))),
        None => Err(Error::InvalidOption(format!(
            "--since {since}: backup {base} of volume {volume} does not record which RBD snapshot \
             it was read from (it was written by an older diskferry, or not from an RBD \
             snapshot), so it cannot be shown to be {snapshot}; take a full backup"
        ))),
    }
}

/// Prefix of the temporary snapshots a backup of an image's head takes.
pub const BACKUP_SNAPSHOT_PREFIX: &str = "diskferry-backup-";

/// Backs up `source` into the backup volume `job.volume` of `target`. An RBD image's head is
/// read through a temporary snapshot ([`BACKUP_SNAPSHOT_PREFIX`]), as `export` does, so the
/// backup is one point in time while the VM writes; the snapshot is removed afterwards.
pub async fn backup(
    ctx: &Context,
    store: &BackupStore,
    target: &BackupTarget,
    source: &Address,
    job: &BackupJob,
    progress: &dyn Progress,
    cancel: &CancellationToken,
) -> Result<BackupReport> {
    backup_with_lock(ctx, store, target, source, job, None, progress, cancel).await
}

/// [`backup`] under the backup lock `lock` of the volume if one was started earlier
/// ([`BackupStore::start_lock`]), so that Longhorn's lock wait passes while the caller took
/// its snapshot (else the backup starts its own). The lock is released (or given up) on
/// every path.
#[allow(clippy::too_many_arguments)]
pub async fn backup_with_lock(
    ctx: &Context,
    store: &BackupStore,
    target: &BackupTarget,
    source: &Address,
    job: &BackupJob,
    lock: Option<PendingLock>,
    progress: &dyn Progress,
    cancel: &CancellationToken,
) -> Result<BackupReport> {
    let run = BackupRun {
        ctx,
        store,
        target,
        job,
        progress,
        cancel,
    };
    backup_locked(&run, source, lock).await
}

/// Gives up a lock taken for nothing.
async fn give_up(lock: Option<PendingLock>) {
    if let Some(lock) = lock {
        lock.abandon().await;
    }
}

/// What one backup runs with, handed down its steps.
struct BackupRun<'a> {
    ctx: &'a Context,
    store: &'a BackupStore,
    target: &'a BackupTarget,
    job: &'a BackupJob,
    progress: &'a dyn Progress,
    cancel: &'a CancellationToken,
}

async fn backup_locked(
    run: &BackupRun<'_>,
    source: &Address,
    lock: Option<PendingLock>,
) -> Result<BackupReport> {
    let (ctx, job) = (run.ctx, run.job);
    let spec = match source {
        Address::Rbd(spec) if spec.snap.is_none() => spec,
        _ if !job.hooks.is_empty() => {
            give_up(lock).await;
            return Err(Error::InvalidOption(format!(
                "hooks run around the snapshot of an RBD image's head; {source} is read as it is, with no snapshot to take"
            )));
        }
        _ => return backup_of(run, source, lock).await,
    };
    // A killed backup of this image left its temporary snapshot: removed first.
    clean_before_run(
        ctx,
        &Scope::RbdImage {
            pool: spec.pool.clone(),
            image: spec.image.clone(),
        },
    )
    .await;
    let temporary = match snapshot_with_hooks(
        &job.hooks,
        TemporarySnapshot::take(ctx, spec, BACKUP_SNAPSHOT_PREFIX),
    )
    .await
    {
        Ok(taken) => taken,
        Err(e) => {
            give_up(lock).await;
            return Err(e);
        }
    };
    let at = Address::Rbd(spec.at(Some(&temporary.name)));
    let backed_up = backup_of(run, &at, lock).await;
    let removed = temporary.remove().await;
    let left_behind = format!("temporary snapshot {at}");
    match (backed_up, removed) {
        (Ok(mut report), removed) => {
            report.source = source.to_string();
            if let Err(e) = removed {
                report
                    .warnings
                    .push(format!("could not remove the {left_behind}: {e}"));
            }
            Ok(report)
        }
        (Err(error), removed) => Err(error.after_cleanup(removed, left_behind)),
    }
}

/// [`backup`] of a source that does not change while it is read. Longhorn's backup lock is
/// taken in the background from the start (unless `lock` was started earlier), so that its
/// wait passes while the source is opened and checked; the lock protocol is unchanged
/// (nothing is written to the store but the lock until it is acquired).
async fn backup_of(
    run: &BackupRun<'_>,
    source: &Address,
    lock: Option<PendingLock>,
) -> Result<BackupReport> {
    let (ctx, store, job) = (run.ctx, run.store, run.job);
    let names = VolumeName::new(job.volume.as_str()).and_then(|volume| {
        let backup = match &job.backup {
            Some(b) => BackupName::new(b.as_str())?,
            None => BackupName::generate(),
        };
        Ok((volume, backup))
    });
    let (volume, backup_name) = match names {
        Ok(names) => names,
        Err(e) => {
            give_up(lock).await;
            return Err(e.into());
        }
    };
    let lock = lock.unwrap_or_else(|| store.start_lock(&volume, LockType::BackupOrRestore));
    let prepared = prepare_backup(ctx, store, source, job, &volume, &backup_name).await;
    let (mut src, merge, size, opts) = match prepared {
        Ok(prepared) => prepared,
        Err(e) => {
            lock.abandon().await;
            return Err(e);
        }
    };
    let disk_size = src.size();
    let writer = store.begin_backup_with_lock(opts, lock).await?;
    let compression = writer.compression();
    let url = run.target.backup_url(&volume, Some(&backup_name));
    let full = job.since.is_none();
    let sink = LonghornSink::new(writer, size, url.clone(), !full, full);
    let transfer = pipeline::run(src.as_mut(), Box::new(sink), run.progress, run.cancel).await?;
    let outcome = transfer.sink;
    let s = outcome.stats;
    Ok(BackupReport {
        source: transfer.summary.source,
        source_format: transfer.summary.source_format.to_string(),
        source_format_origin: src.format_origin(),
        volume: volume.to_string(),
        backup: backup_name.to_string(),
        url,
        size: s.volume_size,
        disk_size,
        incremental: outcome.cfg.is_incremental,
        merged_with: match merge {
            MergeWith::Backup(b) => Some(b.to_string()),
            _ => None,
        },
        compression: compression.as_str().to_string(),
        block_size: job.block_size.bytes(),
        bytes_read: transfer.bytes_read,
        blocks_in: s.blocks_in,
        new_blocks: s.new_blocks,
        reused_blocks: s.reused_blocks,
        zero_blocks: s.zero_blocks,
        kept_from_previous: s.kept_from_previous,
        blocks_total: s.blocks_total,
        bytes_uploaded: s.bytes_uploaded + s.bytes_reuploaded,
        digest: full.then_some(transfer.summary.digest),
        seconds: transfer.elapsed.as_secs_f64(),
        warnings: Vec::new(),
    })
}

/// What [`backup_of`] does before it needs the lock: opens the source (only what changed
/// since `job.since`, after proving the base), and settles the backup's options and labels.
async fn prepare_backup(
    ctx: &Context,
    store: &BackupStore,
    source: &Address,
    job: &BackupJob,
    volume: &VolumeName,
    backup_name: &BackupName,
) -> Result<(Box<dyn Source>, MergeWith, u64, BackupOptions)> {
    let volume = volume.clone();
    let backup_name = backup_name.clone();
    let (src, merge): (Box<dyn Source>, MergeWith) = match &job.since {
        None => (
            open_source_as(ctx, source, job.format).await?,
            MergeWith::Nothing,
        ),
        Some(since) => {
            let spec = source.rbd().map_err(|_| {
                Error::InvalidOption(format!(
                    "--since needs an RBD source (rbd:POOL/IMAGE@SNAP), not {source}"
                ))
            })?;
            let base = match &job.base {
                Some(base) => BackupName::new(base.as_str())?,
                None => backup_of_snapshot(store, &volume, since).await?,
            };
            check_base_snapshot(ctx, store, &volume, &base, spec, since).await?;
            // Whole blocks: the sink stores blocks, and a partly changed block's unchanged
            // bytes are in the snapshot, not zero.
            let options = RbdSourceOptions {
                since: Some(since.clone()),
                align: Some(job.block_size.bytes()),
                ..RbdSourceOptions::default()
            };
            let src = RbdSource::open(ctx, spec, options).await?;
            (Box::new(src), MergeWith::Backup(base))
        }
    };
    let disk_size = src.size();
    // Longhorn restores only volume sizes that are block multiples.
    let size = job.block_size.round_up(disk_size);
    let mut opts = BackupOptions::new(volume.clone(), backup_name.clone(), size);
    opts.snapshot_name = match source {
        Address::Rbd(spec) => spec.snap.clone().unwrap_or_else(|| backup_name.to_string()),
        _ => backup_name.to_string(),
    };
    opts.block_size = job.block_size;
    opts.compression = job.compression;
    opts.merge = merge.clone();
    opts.max_in_flight_blocks = job.max_in_flight_blocks.max(1);
    let mut labels = job.labels.clone();
    // A digest left from an earlier label set would be wrong for this content.
    labels.remove(DIGEST_LABEL);
    labels.remove(DIGEST_ALGORITHM_LABEL);
    labels.remove(DISK_SIZE_LABEL);
    labels.remove(SOURCE_SNAPSHOT_LABEL);
    // Which snapshot this is, for the next `--since` to prove its base.
    if let Address::Rbd(spec) = source {
        if let Some(snap) = &spec.snap {
            labels.insert(
                SOURCE_SNAPSHOT_LABEL.to_string(),
                snapshot_identity(ctx, spec, snap).await?,
            );
        }
    }
    opts.labels = (!labels.is_empty()).then_some(labels);
    // Recorded in the in-progress cfg: a killed run's stub and lock can be proven abandoned.
    opts.writer = Some(objstore::Writer::current().to_string());
    // What a killed backup of this volume left (its stub, its lock) goes first; its blocks
    // stay, for this backup to reuse.
    if job.clean_leftovers {
        clean_volume_before_backup(store, volume.as_str()).await;
    }
    Ok((src, merge, size, opts))
}

/// How to restore.
#[derive(Debug, Clone)]
pub struct RestoreJob {
    /// Backup volume name.
    pub volume: String,
    /// Backup name, or [`LATEST`] / `None` for the volume's last backup.
    pub backup: Option<String>,
    /// Replace an existing destination.
    pub replace: bool,
    /// Blocks fetched and decoded ahead.
    pub in_flight: usize,
    /// Take Longhorn's restore lock (off for read-only stores).
    pub lock: bool,
    /// Format of an object or file destination; `None` takes it from the extension (see
    /// [`restore_format`]). Refused for RBD destinations.
    pub format: Option<ObjectFormat>,
}

impl RestoreJob {
    /// Restores the last backup of `volume`.
    pub fn new(volume: impl Into<String>) -> Self {
        Self {
            volume: volume.into(),
            backup: None,
            replace: false,
            in_flight: DEFAULT_RESTORE_IN_FLIGHT,
            lock: true,
            format: None,
        }
    }
}

/// What a restore did (the `--json` output).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RestoreReport {
    /// Backup volume.
    pub volume: String,
    /// Backup restored.
    pub backup: String,
    /// Where it went.
    pub destination: String,
    /// What was written: `rbd`, or the object format (`qcow2`, `raw`, `raw.zst`).
    pub format: String,
    /// Disk size: the volume's size in `volume.cfg`, as Longhorn restores it.
    pub size: u64,
    /// Virtual size of the disk backed up, when the backup recorded it: the restored disk is
    /// that disk, zero-padded to `size`.
    pub disk_size: Option<u64>,
    /// Bytes written (holes skipped).
    pub bytes_written: u64,
    /// Content digest of what was restored (all `size` bytes).
    pub digest: String,
    /// The algorithm of `digest`: that of the digest the backup recorded, if any, so the two
    /// compare when the sizes agree.
    pub digest_algorithm: String,
    /// The digest the backup recorded, of the disk backed up (its `disk_size` bytes).
    pub recorded_digest: Option<String>,
    /// Whether the restore matches what the backup recorded: the recorded digest over the
    /// first `disk_size` bytes and zeros after them (`None`: nothing recorded, or see
    /// `warnings`).
    pub digest_verified: Option<bool>,
    /// What could not be checked.
    pub warnings: Vec<String>,
    /// Wall time in seconds.
    pub seconds: f64,
}

/// The format a restore writes to an object or file `destination` when none is asked for:
/// from the extension (`.qcow2`, `.raw`, `.img`, `.raw.zst`, `.zst`, as `export`); without
/// one, qcow2 for an `s3://` object (as `export`) and raw for a local path (a plain disk
/// image, as restores wrote before objects were supported).
pub fn restore_format(destination: &Address) -> ObjectFormat {
    match destination {
        Address::File(path) => {
            ObjectFormat::from_name(&path.to_string_lossy()).unwrap_or(ObjectFormat::Raw)
        }
        other => ObjectFormat::for_destination(other),
    }
}

/// The sink options of a restore into `destination`, and the format written (`rbd`, or the
/// object format), after refusing what cannot be restored into: an option or address that
/// does not fit, an existing image, object or file unless `job.replace`, a missing bucket
/// ([`check_sink`]). Nothing is created.
async fn plan_destination(
    ctx: &Context,
    destination: &Address,
    job: &RestoreJob,
) -> Result<(SinkOptions, &'static str)> {
    let (format, name) = match destination {
        Address::Rbd(_) => {
            if let Some(f) = job.format {
                return Err(Error::InvalidOption(format!(
                    "a format ({f}) is for object or file destinations; {destination} is an RBD \
                     image"
                )));
            }
            (ObjectFormat::Raw, "rbd")
        }
        Address::S3(_) | Address::File(_) => {
            let format = job.format.unwrap_or_else(|| restore_format(destination));
            (format, format.name())
        }
        other => {
            return Err(Error::InvalidAddress {
                address: other.to_string(),
                reason: "a Longhorn restore writes to rbd:POOL/IMAGE, s3://BUCKET/KEY or a local \
                         path"
                    .into(),
            })
        }
    };
    let options = SinkOptions::object(ObjectSinkOptions {
        format,
        force: job.replace,
        ..ObjectSinkOptions::default()
    });
    // Refused before the backup is opened (and its restore lock taken); the sinks check
    // again when they create the image, object or file.
    check_sink(ctx, destination, &options).await?;
    Ok((options, name))
}

/// Restores a backup into `destination`: an RBD image, an `s3://BUCKET/KEY` object or a
/// local file, as qcow2, raw or raw.zst ([`RestoreJob::format`], else [`restore_format`]).
///
/// The destination is a disk of the volume's size (`volume.cfg`), as Longhorn restores
/// every backup of a volume: the backed-up disk, zero-padded. Every block is checked against
/// its checksum as it is read, and the restored content against the digest the backup
/// recorded, if any ([`DIGEST_LABEL`], over [`DISK_SIZE_LABEL`] bytes).
///
/// An existing destination is refused unless `job.replace`, before the backup is opened; on
/// failure or cancellation the sink is aborted (no image, object, multipart upload or file is
/// left behind).
pub async fn restore(
    ctx: &Context,
    store: &BackupStore,
    job: &RestoreJob,
    destination: &Address,
    progress: &dyn Progress,
    cancel: &CancellationToken,
) -> Result<RestoreReport> {
    let volume = VolumeName::new(job.volume.as_str())?;
    // The lock of a killed restore of this volume (nothing else names it) goes first.
    clean_volume_locks(store, volume.as_str()).await;
    let backup = store.resolve_backup(&volume, job.backup.as_deref()).await?;
    let (sink_options, format) = plan_destination(ctx, destination, job).await?;
    let options = RestoreOptions {
        concurrency: job.in_flight.max(1),
        lock: job.lock,
    };
    let reader = store.open_restore(&volume, &backup, options).await?;
    let what = format!("{volume}/{backup}");
    let recorded = RecordedDigest::from_labels(reader.backup().labels.as_ref(), &what);
    let mut source = LonghornSource::new(reader, format!("longhorn {what}"));
    let recorded = match recorded {
        Ok(r) => r,
        Err(e) => {
            let _ = source.close().await;
            return Err(e);
        }
    };
    if let Some(r) = &recorded {
        source = source.digest_with(r.algorithm);
    }
    let size = source.size();
    let sink = open_sink(ctx, destination, size, &source.describe(), &sink_options).await;
    let sink = match sink {
        Ok(s) => s,
        Err(e) => {
            let _ = source.close().await;
            return Err(e);
        }
    };
    let pipeline_algorithm = source
        .digest_algorithm()
        .unwrap_or(crate::digest::DigestAlgorithm::DEFAULT);
    let check = DigestCheck::new(sink, recorded.clone(), size, pipeline_algorithm, what);
    let transfer = pipeline::run(&mut source, Box::new(check), progress, cancel).await;
    let closed = source.close().await;
    let transfer = transfer?;
    closed?;
    let (restored, verification) = (transfer.sink.sink, transfer.sink.verification);
    // A local raw file keeps the holes as holes, so what was written is the blocks the source
    // delivered; the object sink reports the file's size (what export and convert show).
    let holes_kept =
        matches!(destination, Address::File(_)) && sink_options.object.format == ObjectFormat::Raw;
    let bytes_written = if holes_kept {
        transfer.bytes_read
    } else {
        restored.bytes_written
    };
    Ok(RestoreReport {
        volume: volume.to_string(),
        backup: backup.to_string(),
        destination: restored.location,
        format: format.to_string(),
        size,
        disk_size: recorded.as_ref().and_then(|r| r.disk_size),
        bytes_written,
        digest: transfer.summary.digest,
        digest_algorithm: transfer.summary.digest_algorithm.name().to_string(),
        recorded_digest: recorded.map(|r| r.digest),
        digest_verified: verification.verified,
        warnings: verification.warning.into_iter().collect(),
        seconds: transfer.elapsed.as_secs_f64(),
    })
}

/// Lists the backup volumes of the store (or just `volume`) with their backups
/// ([`BackupStore::list`]).
pub async fn list(store: &BackupStore, volume: Option<&str>) -> Result<Vec<VolumeListing>> {
    let volume = volume.map(VolumeName::new).transpose()?;
    Ok(store.list(volume.as_ref()).await?)
}

/// Reads `volume.cfg`, or a backup's cfg when `backup` is given ([`LATEST`] allowed; a backup
/// still in progress is refused) ([`BackupStore::inspect`]).
pub async fn inspect(
    store: &BackupStore,
    target: &BackupTarget,
    volume: &str,
    backup: Option<&str>,
) -> Result<InspectReport> {
    Ok(store
        .inspect(target, &VolumeName::new(volume)?, backup)
        .await?)
}

/// Deletes a backup ([`LATEST`] allowed) with Longhorn's rules: the deletion lock, then GC of
/// unreferenced blocks ([`BackupStore::remove`]).
pub async fn remove(store: &BackupStore, volume: &str, backup: &str) -> Result<RemoveReport> {
    let volume = VolumeName::new(volume)?;
    // A lock a killed backup or restore of this host left would keep the deletion out.
    clean_volume_locks(store, volume.as_str()).await;
    Ok(store.remove(&volume, backup).await?)
}
