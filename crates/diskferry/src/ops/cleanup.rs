//! `cleanup`: finds what diskferry runs left behind when they were killed (SIGKILL, a crash,
//! a lost host) and removes it, printing each thing with why.
//!
//! A job cleans up after itself on every exit it sees (success, error, SIGINT, SIGTERM). A
//! process that is killed sees none, and leaves what it had started. Each such thing carries
//! diskferry's name and a record of its writer, `HOST PID INSTANCE` ([`Writer`]: the instance
//! is the boot and pid namespace where that pid means the process; older records lack it):
//!
//! | leftover | name | writer recorded in |
//! |---|---|---|
//! | temporary snapshot of an export or a Longhorn backup | `diskferry-export-PID-MILLIS`, `diskferry-backup-PID-MILLIS` | image metadata [`SNAPSHOT_WRITER_KEY_PREFIX`]`SNAP` |
//! | working image of an import | `IMAGE.diskferry-new-PID-MILLIS-TAG` | its metadata `diskferry.writer`; before that is written, its name's pid and place tag ([`objstore::Writer::place_tag`]) |
//! | RBD group of an export-vm, its snapshot and its images' membership | `diskferry-export-vm-PID-MILLIS` | its images' metadata [`GROUP_WRITER_KEY_PREFIX`]`GROUP` |
//! | S3 multipart upload | any key | this host's upload journal ([`objstore::UploadJournal`]) |
//! | Longhorn in-progress backup cfg and its lock | `backup_NAME.cfg`, `lock-HEX.lck` | the cfg's labels [`longhorn::WRITER_LABEL`], [`longhorn::LOCK_LABEL`] |
//! | Longhorn lock of a backup, restore or deletion | `lock-HEX.lck` | the lock's own field [`longhorn::cfg::WRITER_FIELD`] |
//! | local temporary file | `.NAME.PID.NANOS.diskferry-tmp` | its name (this host) |
//!
//! # The rules: only what is provably ours and abandoned is removed
//! - A writer recorded on **this host** (and, when recorded, in this boot and pid namespace)
//!   that no longer runs: its leftovers are removed at once. One that still runs (or whose
//!   pid a new process took): kept. A writer of the same host name in another boot or pid
//!   namespace counts as another host's.
//! - A writer of **another host**, or none recorded where a name carries diskferry's time
//!   (older versions did not record writers): removed only when older than
//!   [`CleanupOptions::min_age`] ([`DEFAULT_MIN_AGE`], 24 h, by default; `None` never).
//! - A multipart upload that no journal on this host records is removed only when its key is
//!   one diskferry writes (a disk image extension: `.qcow2`, `.raw`, `.img`, `.raw.zst`,
//!   `.zst`) and it has been idle, neither started nor given a part, for longer than
//!   `min_age`: a live upload of another process adds a part every few seconds, and a copy
//!   that makes no progress for that long has failed its own timeouts long before.
//! - Longhorn: an in-progress cfg is ours only if it records a writer; it goes with the lock
//!   it names. A lock that names its writer goes by the first rule (a killed restore leaves
//!   nothing else). A lock nobody refreshed for Longhorn's
//!   [`LOCK_DURATION`](longhorn::lock::LOCK_DURATION) (150 s; a holder rewrites it every
//!   60 s) is ignored by every Longhorn process already, and is removed. Blocks no completed
//!   backup references are removed by Longhorn's own sweep ([`BackupStore::collect_garbage`]:
//!   under the deletion lock, and only when no backup is in progress).
//! - An export-vm's group goes as a whole: its group snapshots (with each image's snapshot
//!   of them), then its images out of the group, then the group; the images themselves stay.
//!   Its age is the cluster's record of its snapshot's creation (unknown without one).
//! - Snapshots that are protected, images kept on purpose (`--keep-partial` marks them
//!   `diskferry.kept` and removes their writer record; older versions only removed it) and
//!   anything under another name are never touched.
//!
//! The next run of the same job applies the first rule to its own scope before it starts
//! (`clean_before_run`): an export, the source image's snapshots and the destination's
//! uploads; an export-vm, the groups its disks are in (`clear_vm_group`) and its objects'
//! uploads; a Longhorn backup, the volume's stubs and locks; a Longhorn restore or deletion,
//! the volume's locks (`clean_volume_locks`).

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use longhorn::{BackupStore, InProgressBackup, LockEntry, VolumeName};
use objstore::{S3Address, S3Prefix, UploadJournal, Writer, WriterState};
use rbd::group_cleanup::PoolName;
use rbd::{ErrorKind, Image, OpenMode};
use serde::Serialize;

use crate::longhorn::{open_store, BackupTarget};
use crate::ops::export::EXPORT_SNAPSHOT_PREFIX;
use crate::ops::longhorn::BACKUP_SNAPSHOT_PREFIX;
use crate::ops::vm::VM_SNAPSHOT_PREFIX;
use crate::sinks::{working_image_writer, WorkingTail, WorkingWriter, WORKING_NAME_INFIX};
use crate::{blocking, Context, Error, ObjectFormat, Result};

/// Default [`CleanupOptions::min_age`]: what a writer of another host (or an unrecorded one)
/// must have left untouched for this long before its leftovers are removed.
pub const DEFAULT_MIN_AGE: Duration = Duration::from_secs(24 * 3600);

/// Image metadata key prefix recording who took a temporary snapshot: the key is this
/// followed by the snapshot's name, the value `HOST PID`.
pub const SNAPSHOT_WRITER_KEY_PREFIX: &str = "diskferry.snapshot-writer.";

/// Image metadata key prefix recording who made an export-vm's temporary group: the key is
/// this followed by the group's name, the value `HOST PID`. Each disk records it before it
/// joins the group (the first disk, in the group's pool, before the group is created).
pub const GROUP_WRITER_KEY_PREFIX: &str = "diskferry.group-writer.";

/// The prefixes of the temporary snapshots jobs take.
const TEMPORARY_SNAPSHOT_PREFIXES: [&str; 2] = [EXPORT_SNAPSHOT_PREFIX, BACKUP_SNAPSHOT_PREFIX];

/// Suffix of the temporary files a local write renames into place.
const LOCAL_TEMP_SUFFIX: &str = objstore::TEMP_SUFFIX;

/// What to look at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// Every image of an RBD pool: temporary snapshots and working images.
    RbdPool {
        /// The pool.
        pool: String,
    },
    /// One RBD image: its temporary snapshots and its working images (`IMAGE.diskferry-new-*`).
    RbdImage {
        /// The pool.
        pool: String,
        /// The image.
        image: String,
    },
    /// Multipart uploads in a bucket whose keys start with `prefix` (empty: the whole bucket).
    S3 {
        /// The bucket.
        bucket: String,
        /// The key prefix.
        prefix: String,
    },
    /// Temporary files in a local directory (not below it).
    Dir {
        /// The directory.
        path: std::path::PathBuf,
    },
    /// A Longhorn backup target, one volume or all of them: in-progress cfgs, locks and
    /// blocks no backup references.
    Longhorn {
        /// The target (`s3://BUCKET@REGION/PATH/`, `vfs:///DIR/`).
        target: BackupTarget,
        /// One backup volume, or `None` for every one.
        volume: Option<String>,
    },
}

impl Scope {
    /// Parses `rbd:POOL`, `rbd:POOL/IMAGE`, `s3://BUCKET[/PREFIX]` or a directory path. A
    /// Longhorn target is given with [`Scope::longhorn`] (its `s3://` URL reads like a
    /// prefix).
    pub fn parse(text: &str) -> Result<Scope> {
        let invalid = |reason: &str| Error::InvalidAddress {
            address: text.to_owned(),
            reason: reason.to_owned(),
        };
        if let Some(rest) = text.strip_prefix(crate::RBD_SCHEME) {
            if rest.contains('@') {
                return Err(invalid(
                    "a cleanup scope is a pool or an image, not a snapshot",
                ));
            }
            return match rest.split_once('/') {
                None if !rest.is_empty() => Ok(Scope::RbdPool {
                    pool: rest.to_owned(),
                }),
                Some((pool, image)) if !pool.is_empty() && !image.is_empty() => {
                    Ok(Scope::RbdImage {
                        pool: pool.to_owned(),
                        image: image.to_owned(),
                    })
                }
                _ => Err(invalid("expected rbd:POOL or rbd:POOL/IMAGE")),
            };
        }
        if text.starts_with("s3://") {
            // A key is a prefix of itself: `s3://b/dir/disk.qcow2` is that object's uploads.
            if let Ok(object) = S3Address::parse(text) {
                return Ok(Scope::S3 {
                    bucket: object.bucket,
                    prefix: object.key,
                });
            }
            let p = S3Prefix::parse(text).map_err(Error::from_address_error)?;
            return Ok(Scope::S3 {
                bucket: p.bucket,
                prefix: p.prefix,
            });
        }
        if text.contains("://") {
            return Err(invalid(
                "expected rbd:POOL[/IMAGE], s3://BUCKET[/PREFIX] or a directory (a Longhorn \
                 target goes with --longhorn)",
            ));
        }
        Ok(Scope::Dir { path: text.into() })
    }

    /// A Longhorn target (and optionally one volume of it).
    pub fn longhorn(target: &str, volume: Option<&str>) -> Result<Scope> {
        if let Some(v) = volume {
            VolumeName::new(v)?;
        }
        Ok(Scope::Longhorn {
            target: BackupTarget::parse(target)?,
            volume: volume.map(str::to_owned),
        })
    }
}

impl std::fmt::Display for Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Scope::RbdPool { pool } => write!(f, "rbd:{pool}"),
            Scope::RbdImage { pool, image } => write!(f, "rbd:{pool}/{image}"),
            Scope::S3 { bucket, prefix } => write!(f, "s3://{bucket}/{prefix}"),
            Scope::Dir { path } => write!(f, "{}", path.display()),
            Scope::Longhorn { target, volume } => match volume {
                Some(v) => write!(f, "{} volume {v}", target.url),
                None => write!(f, "{}", target.url),
            },
        }
    }
}

/// How to clean up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CleanupOptions {
    /// Only report what would be removed.
    pub dry_run: bool,
    /// How long what a writer of another host (or an unrecorded writer) left must have been
    /// untouched before it is removed; `None` removes only what a writer of this host that no
    /// longer runs left.
    pub min_age: Option<Duration>,
}

impl Default for CleanupOptions {
    fn default() -> Self {
        Self {
            dry_run: false,
            min_age: Some(DEFAULT_MIN_AGE),
        }
    }
}

impl CleanupOptions {
    /// Only what a dead writer of this host provably left (what the next run of a job
    /// removes before it starts).
    pub fn proven_only() -> Self {
        Self {
            dry_run: false,
            min_age: None,
        }
    }
}

/// What kind of leftover an item is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum LeftoverKind {
    /// A temporary RBD snapshot of an export or a backup.
    TemporarySnapshot,
    /// An import's working image.
    WorkingImage,
    /// An export-vm's RBD group (with its snapshot and its images' membership).
    TemporaryGroup,
    /// An S3 multipart upload.
    MultipartUpload,
    /// A local temporary file.
    TemporaryFile,
    /// A Longhorn in-progress backup cfg.
    InProgressBackup,
    /// A Longhorn lock file.
    Lock,
    /// Longhorn blocks no backup references.
    UnreferencedBlocks,
}

/// What was done with an item.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    /// Removed.
    Removed,
    /// Would be removed (`--dry-run`).
    WouldRemove,
    /// Kept: not provably abandoned (see the reason).
    Kept,
    /// Removal failed (see `error`).
    Failed,
}

/// One thing found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CleanupItem {
    /// What it is.
    pub kind: LeftoverKind,
    /// Where: `rbd:POOL/IMAGE@SNAP`, `s3://BUCKET/KEY (upload ID)`, a path, a Longhorn path.
    pub location: String,
    /// Why it is removed or kept.
    pub reason: String,
    /// What was done.
    pub action: Action,
    /// Why the removal failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// What a cleanup found and did (the `--json` output).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CleanupReport {
    /// The scope.
    pub scope: String,
    /// Whether nothing was removed on purpose.
    pub dry_run: bool,
    /// Every leftover found, removed or kept.
    pub items: Vec<CleanupItem>,
}

impl CleanupReport {
    /// Items removed (or, in a dry run, that would be).
    pub fn removed(&self) -> usize {
        self.items
            .iter()
            .filter(|i| matches!(i.action, Action::Removed | Action::WouldRemove))
            .count()
    }

    /// Items whose removal failed.
    pub fn failed(&self) -> usize {
        self.items
            .iter()
            .filter(|i| i.action == Action::Failed)
            .count()
    }
}

/// Finds diskferry's leftovers in `scope` and removes those provably abandoned (see the
/// module's rules). Errors reaching the scope (a missing pool, bucket or target) fail the
/// call; a leftover that cannot be removed is reported as [`Action::Failed`].
pub async fn cleanup(
    ctx: &Context,
    scope: &Scope,
    options: &CleanupOptions,
) -> Result<CleanupReport> {
    let mut run = Run::new(options.clone());
    match scope {
        Scope::RbdPool { pool } => run.rbd(ctx, pool, None).await?,
        Scope::RbdImage { pool, image } => run.rbd(ctx, pool, Some(image)).await?,
        Scope::S3 { bucket, prefix } => run.uploads(ctx, bucket, prefix, false).await?,
        Scope::Dir { path } => run.dir(path).await?,
        Scope::Longhorn { target, volume } => {
            let store = open_store(ctx, target).await?;
            run.longhorn(&store, volume.as_deref(), true).await?;
        }
    }
    Ok(CleanupReport {
        scope: scope.to_string(),
        dry_run: options.dry_run,
        items: run.items,
    })
}

/// What the next run of a job removes before it starts: what a dead writer of this host
/// left in `scope` (no age rule), with only `exact_key` of an S3 scope's uploads when given.
/// Best effort: failures are logged, never returned, so a job is not stopped by them.
pub(crate) async fn clean_before_run(ctx: &Context, scope: &Scope) {
    let mut run = Run::new(CleanupOptions::proven_only());
    let done = match scope {
        Scope::RbdImage { pool, image } => run.rbd(ctx, pool, Some(image)).await,
        Scope::S3 { bucket, prefix } => run.uploads(ctx, bucket, prefix, true).await,
        Scope::Longhorn { target, volume } => match open_store(ctx, target).await {
            Ok(store) => run.longhorn(&store, volume.as_deref(), false).await,
            Err(e) => Err(e),
        },
        Scope::RbdPool { .. } | Scope::Dir { .. } => Ok(()),
    };
    run.log(scope, done);
}

/// [`clean_before_run`] of one Longhorn backup volume of an open store: the in-progress cfgs
/// and locks dead writers of this host left (their blocks stay: the backup reuses them).
pub(crate) async fn clean_volume_before_backup(store: &BackupStore, volume: &str) {
    let mut run = Run::new(CleanupOptions::proven_only());
    let done = run.longhorn(store, Some(volume), false).await;
    run.log(&format!("Longhorn volume {volume}"), done);
}

/// Before a restore or a deletion of a backup of `volume`: the locks dead writers of this
/// host left (a killed restore leaves its lock and nothing else; an acquired one keeps every
/// deletion out until it expires). Reads only the volume's lock files. Best effort, as
/// [`clean_before_run`].
pub(crate) async fn clean_volume_locks(store: &BackupStore, volume: &str) {
    let mut run = Run::new(CleanupOptions::proven_only());
    let done = match VolumeName::new(volume) {
        Ok(v) => run.longhorn_dead_locks(store, &v).await,
        Err(e) => Err(e.into()),
    };
    run.log(&format!("Longhorn volume {volume}"), done);
}

/// `HOST PID` of a lock's writer, when it is a process of this host that no longer runs.
fn dead_lock_writer(lock: &LockEntry) -> Option<Writer> {
    lock.writer
        .as_ref()
        .and_then(|w| w.parse::<Writer>().ok())
        .filter(|w| w.state() == WriterState::Gone)
}

/// Before an export-vm puts `disk` in its group: the group `disk` is already in, if any,
/// must go first (an image is in one group at most). An export-vm group whose writer is a
/// dead process of this host is removed, as `diskferry cleanup` would, and `Ok(Some(what))`
/// says so; any other group (a running export-vm's, another host's, not diskferry's) fails
/// the export with an error that names it and what removes it.
pub(crate) async fn clear_vm_group(ctx: &Context, disk: &crate::RbdSpec) -> Result<Option<String>> {
    let ioctx = ctx.pool(&disk.pool).await?;
    let Some(group) = image_group_of(&ioctx, &disk.image).await? else {
        return Ok(None);
    };
    let in_group = |reason: String| {
        Error::Ceph(
            rados::Error::new(
                ErrorKind::Busy,
                "put in a group for export-vm",
                disk.to_string(),
            )
            .with_reason(reason),
        )
    };
    if !is_vm_group(&group.name) {
        return Err(in_group(format!(
            "it belongs to RBD group {}/{}, which is not diskferry's, and an image is in one \
             group at most; remove it from that group (rbd group image remove) to export it \
             with export-vm",
            group.pool, group.name
        )));
    }
    let mut run = Run::new(CleanupOptions::proven_only());
    run.vm_group(ctx, &group.pool, &group.name).await?;
    let cleanup_hint = format!(
        "`diskferry cleanup rbd:{}` removes it once its export-vm no longer runs (left by \
         another host: once untouched for --older-than)",
        group.pool
    );
    // No item: the group went meanwhile.
    let Some(item) = run.items.pop() else {
        return Ok(None);
    };
    match item.action {
        Action::Removed | Action::WouldRemove => Ok(Some(format!(
            "removed {} left by a killed export-vm ({})",
            item.location, item.reason
        ))),
        Action::Kept => Err(in_group(format!(
            "it is in {}, the group of another export-vm, kept: {}; {cleanup_hint}",
            item.location, item.reason
        ))),
        Action::Failed => Err(in_group(format!(
            "it is in {}, left by a killed export-vm ({}), which could not be removed: {}; \
             {cleanup_hint}",
            item.location,
            item.reason,
            item.error.unwrap_or_default()
        ))),
    }
}

impl Run {
    /// Logs what a [`clean_before_run`] did.
    fn log(self, scope: &dyn std::fmt::Display, done: Result<()>) {
        if let Err(e) = done {
            tracing::warn!(scope = %scope, error = %e, "could not look for what killed runs left");
        }
        for item in self.items {
            match item.action {
                Action::Removed => {
                    tracing::info!(what = %item.location, why = %item.reason, "removed what a killed run left")
                }
                Action::Failed => tracing::warn!(
                    what = %item.location,
                    error = item.error.as_deref().unwrap_or_default(),
                    "could not remove what a killed run left"
                ),
                _ => {}
            }
        }
    }
}

/// Records `HOST PID` of this process as the writer of the temporary snapshot `snap` of
/// `image` (before the snapshot is taken, so a kill never leaves an unrecorded one).
pub(crate) fn record_snapshot_writer(image: &Image, snap: &str) -> rbd::Result<()> {
    record_writer(image, SNAPSHOT_WRITER_KEY_PREFIX, snap)
}

/// Forgets the writer of the temporary snapshot `snap` (removed). A missing record is fine.
pub(crate) fn forget_snapshot_writer(image: &Image, snap: &str) -> rbd::Result<()> {
    forget_writer(image, SNAPSHOT_WRITER_KEY_PREFIX, snap)
}

/// Records `HOST PID` of this process as the writer of the export-vm group `group` on
/// `image` (before the image joins it, so a kill never leaves an unrecorded group).
pub(crate) fn record_group_writer(image: &Image, group: &str) -> rbd::Result<()> {
    record_writer(image, GROUP_WRITER_KEY_PREFIX, group)
}

/// Forgets the writer of the export-vm group `group` (removed). A missing record is fine.
pub(crate) fn forget_group_writer(image: &Image, group: &str) -> rbd::Result<()> {
    forget_writer(image, GROUP_WRITER_KEY_PREFIX, group)
}

/// Records this process as the writer of `name` under the metadata key `prefix``name`.
fn record_writer(image: &Image, prefix: &str, name: &str) -> rbd::Result<()> {
    image.metadata_set(&format!("{prefix}{name}"), &Writer::current().to_string())
}

/// Forgets the writer record `prefix``name`; a missing one is fine.
fn forget_writer(image: &Image, prefix: &str, name: &str) -> rbd::Result<()> {
    gone_is_fine(image.metadata_remove(&format!("{prefix}{name}")))
}

/// Whether `name` is one of export-vm's temporary groups, `diskferry-export-vm-PID-MILLIS`.
fn is_vm_group(name: &str) -> bool {
    name.strip_prefix(VM_SNAPSHOT_PREFIX)
        .and_then(pid_and_time)
        .is_some()
}

/// Ignores "not found" (already gone) from a removal.
fn gone_is_fine(result: rbd::Result<()>) -> rbd::Result<()> {
    match result {
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

/// Whether what `writer` left, `age` ago, is abandoned: `Ok(reason)` to remove it, `Err(reason)`
/// to keep it.
fn judge(
    writer: Option<&Writer>,
    age: Option<Duration>,
    min_age: Option<Duration>,
) -> std::result::Result<String, String> {
    let aged = |who: String| match (age, min_age) {
        (Some(age), Some(min)) if age > min => Ok(format!(
            "{who}; untouched for {}, more than {}",
            human(age),
            human(min)
        )),
        (Some(age), Some(min)) => Err(format!(
            "{who}; untouched for {}, not more than {}",
            human(age),
            human(min)
        )),
        (None, Some(_)) => Err(format!("{who}; its age is unknown")),
        (_, None) => Err(format!("{who}; only dead writers of this host are removed")),
    };
    match writer {
        Some(w) => match w.state() {
            WriterState::Gone => Ok(writer_gone(w)),
            WriterState::Running => Err(format!("its writer {w} still runs on this host")),
            WriterState::OtherHost => aged(format!("its writer {w} runs on another host")),
        },
        None => aged("no writer is recorded".to_owned()),
    }
}

/// The reason given for removing what a dead process of this host left.
fn writer_gone(writer: &impl std::fmt::Display) -> String {
    format!("its writer {writer} no longer runs on this host")
}

/// A duration for messages: `90s`, `12m`, `25h`.
fn human(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..=119 => format!("{s}s"),
        120..=7199 => format!("{}m", s / 60),
        _ => format!("{}h", s / 3600),
    }
}

/// Time since `t` (zero for a time in the future).
fn since(t: SystemTime) -> Duration {
    SystemTime::now().duration_since(t).unwrap_or_default()
}

/// `PID-MILLIS` at the end of a leftover's name: the pid and the time the run started.
fn pid_and_time(tail: &str) -> Option<(u32, SystemTime)> {
    // A working image's tail without its place tag has the same grammar.
    WorkingTail::parse(tail)
        .filter(|t| t.tag.is_none())
        .map(|t| (t.pid, t.started))
}

/// The start time of the job that took the temporary snapshot `name`, if it is one.
fn temporary_snapshot_time(name: &str) -> Option<SystemTime> {
    TEMPORARY_SNAPSHOT_PREFIXES
        .iter()
        .find_map(|p| name.strip_prefix(p))
        .and_then(pid_and_time)
        .map(|(_, t)| t)
}

/// The group `image` of `ioctx`'s pool is in, if any (`None` too for a missing image).
async fn image_group_of(ioctx: &rados::IoCtx, image: &str) -> Result<Option<PoolName>> {
    let (io, name) = (ioctx.clone(), image.to_owned());
    blocking(move || match Image::open(&io, &name, OpenMode::ReadOnly) {
        Ok(image) => image.group(),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    })
    .await
}

/// `rbd:POOL/GROUP (group of rbd:P/A, rbd:P/B; snapshot S)`, for a cleanup's list.
fn describe_group(pool: &str, group: &str, members: &[PoolName], snaps: &[String]) -> String {
    let images: Vec<String> = members
        .iter()
        .map(|m| format!("rbd:{}/{}", m.pool, m.name))
        .collect();
    let images = match images.is_empty() {
        true => "no images".to_owned(),
        false => images.join(", "),
    };
    let snaps = match snaps.is_empty() {
        true => "no snapshot".to_owned(),
        false => format!("snapshot {}", snaps.join(", ")),
    };
    format!("rbd:{pool}/{group} (RBD group of {images}; {snaps})")
}

/// One cleanup's state.
struct Run {
    options: CleanupOptions,
    items: Vec<CleanupItem>,
    /// Writer records of export-vm groups found on the images looked at: group name to
    /// (image, `HOST PID`).
    group_records: HashMap<String, Vec<(String, String)>>,
}

impl Run {
    fn new(options: CleanupOptions) -> Self {
        Self {
            options,
            items: Vec::new(),
            group_records: HashMap::new(),
        }
    }

    /// Records the verdict on one item, removing it with `remove` when it is abandoned (and
    /// this is no dry run).
    async fn settle<F, Fut>(
        &mut self,
        kind: LeftoverKind,
        location: String,
        verdict: std::result::Result<String, String>,
        remove: F,
    ) where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<()>>,
    {
        let (action, reason, error) = match verdict {
            Err(reason) => (Action::Kept, reason, None),
            Ok(reason) if self.options.dry_run => (Action::WouldRemove, reason, None),
            Ok(reason) => match remove().await {
                Ok(()) => (Action::Removed, reason, None),
                Err(e) => (Action::Failed, reason, Some(e.to_string())),
            },
        };
        self.items.push(CleanupItem {
            kind,
            location,
            reason,
            action,
            error,
        });
    }

    async fn rbd(&mut self, ctx: &Context, pool: &str, image: Option<&str>) -> Result<()> {
        let ioctx = ctx.pool(pool).await?;
        let io = ioctx.clone();
        let names = blocking(move || rbd::list(&io)).await?;
        let working_prefix = image.map(|i| format!("{i}{WORKING_NAME_INFIX}"));
        for name in &names {
            if let Some((target, tail)) = name.split_once(WORKING_NAME_INFIX) {
                let ours = working_prefix
                    .as_ref()
                    .is_none_or(|p| name.starts_with(p.as_str()));
                if let (true, Some(started)) = (ours, WorkingTail::parse(tail).map(|t| t.started)) {
                    self.working_image(&ioctx, pool, name, target, tail, started)
                        .await;
                }
                continue;
            }
            if image.is_none_or(|i| i == name) {
                self.snapshots(&ioctx, pool, name).await?;
            }
        }
        match image {
            None => self.vm_groups(ctx, &ioctx, pool).await,
            Some(image) => self.image_group(ctx, &ioctx, image).await,
        }
    }

    /// Every export-vm group of the pool; then the writer records of groups that are gone.
    async fn vm_groups(&mut self, ctx: &Context, ioctx: &rados::IoCtx, pool: &str) -> Result<()> {
        let io = ioctx.clone();
        let groups = blocking(move || rbd::group_cleanup::group_list(&io)).await?;
        for group in groups.iter().filter(|g| is_vm_group(g)) {
            self.vm_group(ctx, pool, group).await?;
        }
        // Records of groups that are gone (the writer was killed between recording and
        // creating the group, or between removing it and forgetting): dropped quietly once
        // their writer is gone. A group of another pool records its writer on its first
        // disk, in its own pool, too, so a record dropped here is never its only one.
        let stale: Vec<(String, String)> = std::mem::take(&mut self.group_records)
            .into_iter()
            .filter(|(group, _)| !groups.contains(group))
            .flat_map(|(group, records)| {
                records
                    .into_iter()
                    .filter(|(_, w)| {
                        w.parse::<Writer>()
                            .is_ok_and(|w| w.state() == WriterState::Gone)
                    })
                    .map(move |(image, _)| (image, group.clone()))
            })
            .collect();
        if !stale.is_empty() && !self.options.dry_run {
            let io = ioctx.clone();
            let _ = blocking(move || {
                for (image, group) in &stale {
                    forget_group_writer(&Image::open(&io, image, OpenMode::ReadWrite)?, group)?;
                }
                Ok(())
            })
            .await;
        }
        Ok(())
    }

    /// The export-vm group `image` is in, if it is in one.
    async fn image_group(
        &mut self,
        ctx: &Context,
        ioctx: &rados::IoCtx,
        image: &str,
    ) -> Result<()> {
        match image_group_of(ioctx, image).await? {
            Some(group) if is_vm_group(&group.name) => {
                self.vm_group(ctx, &group.pool, &group.name).await
            }
            _ => Ok(()),
        }
    }

    /// Judges one export-vm group of `pool` and removes it when abandoned: its snapshots,
    /// its images out of it, the group, then its writer records.
    async fn vm_group(&mut self, ctx: &Context, pool: &str, group: &str) -> Result<()> {
        let ioctx = ctx.pool(pool).await?;
        let (io, g) = (ioctx.clone(), group.to_owned());
        let listed = blocking(move || {
            let members = match rbd::group_cleanup::group_image_list(&io, &g) {
                Ok(m) => m,
                // Removed since the listing.
                Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(e),
            };
            let snaps: Vec<String> = rbd::group_snap_list(&io, &g)?
                .into_iter()
                .map(|s| s.name)
                .collect();
            Ok(Some((members, snaps)))
        })
        .await?;
        let Some((members, snaps)) = listed else {
            return Ok(());
        };
        let mut member_io = Vec::new();
        for m in &members {
            member_io.push((ctx.pool(&m.pool).await?, m.name.clone()));
        }
        // The writer and the age, from the members: their records, and the cluster's time of
        // their snapshot of the group's snapshot.
        let (m_io, g, s) = (member_io.clone(), group.to_owned(), snaps.clone());
        let (mut records, created) = blocking(move || {
            let mut records = Vec::new();
            let mut created: Option<SystemTime> = None;
            for (io, name) in &m_io {
                let image = match Image::open(io, name, OpenMode::ReadOnly) {
                    Ok(i) => i,
                    Err(e) if e.kind() == ErrorKind::NotFound => continue,
                    Err(e) => return Err(e),
                };
                if let Some(w) = image.metadata_get(&format!("{GROUP_WRITER_KEY_PREFIX}{g}"))? {
                    records.push(w);
                }
                for snap in &s {
                    if let Some(id) = image.group_snap_id(&g, snap)? {
                        if let Ok(t) = image.snap_timestamp(id) {
                            created = Some(created.map_or(t, |c| c.min(t)));
                        }
                    }
                }
            }
            Ok((records, created))
        })
        .await?;
        // A group killed before its first disk joined it: its record is on that disk only.
        let mut recorded_elsewhere = Vec::new();
        if let Some(found) = self.group_records.remove(group) {
            for (image, writer) in found {
                if !members.iter().any(|m| m.pool == pool && m.name == image) {
                    recorded_elsewhere.push(image);
                }
                records.push(writer);
            }
        }
        let verdict = match records.first().map(|w| w.parse::<Writer>()) {
            Some(Err(e)) => Err(e.to_string()),
            Some(Ok(w)) => judge(Some(&w), created.map(since), self.options.min_age),
            None => judge(None, created.map(since), self.options.min_age),
        };
        let location = describe_group(pool, group, &members, &snaps);
        let (io, g) = (ioctx.clone(), group.to_owned());
        self.settle(LeftoverKind::TemporaryGroup, location, verdict, || {
            blocking(move || {
                for snap in &snaps {
                    gone_is_fine(rbd::group_snap_remove(&io, &g, snap))?;
                }
                for (image_io, image) in &member_io {
                    gone_is_fine(rbd::group_image_remove(&io, &g, image_io, image))?;
                }
                gone_is_fine(rbd::group_remove(&io, &g))?;
                let elsewhere = recorded_elsewhere.iter().map(|i| (&io, i));
                for (image_io, image) in member_io.iter().map(|(i, n)| (i, n)).chain(elsewhere) {
                    match Image::open(image_io, image, OpenMode::ReadWrite) {
                        Ok(img) => forget_group_writer(&img, &g)?,
                        Err(e) if e.kind() == ErrorKind::NotFound => {}
                        Err(e) => return Err(e),
                    }
                }
                Ok(())
            })
        })
        .await;
        Ok(())
    }

    async fn working_image(
        &mut self,
        ioctx: &rados::IoCtx,
        pool: &str,
        name: &str,
        target: &str,
        tail: &str,
        started: SystemTime,
    ) {
        let (io, n, t) = (ioctx.clone(), name.to_owned(), tail.to_owned());
        let writer =
            blocking(move || working_image_writer(&Image::open(&io, &n, OpenMode::ReadOnly)?, &t))
                .await;
        let location = format!("rbd:{pool}/{name}");
        let age = Some(since(started));
        let verdict = match writer {
            // Removed meanwhile (its import finished or failed).
            Err(_) => return,
            Ok(WorkingWriter::Recorded(w)) => judge(Some(&w), age, self.options.min_age),
            Ok(WorkingWriter::Named(w)) => judge(Some(&w), age, self.options.min_age)
                .map(|why| format!("{why} (killed before it recorded itself; its name says so)")),
            Ok(WorkingWriter::Kept) => {
                Err(format!("kept on purpose (--keep-partial) for {target}"))
            }
            Ok(WorkingWriter::Completed) => Err(format!(
                "a finished copy (its digest is recorded) under a working image's name: \
                 left for {target}"
            )),
            Ok(WorkingWriter::Unknown) => Err(format!(
                "no writer is recorded (kept on purpose by an older version, or another \
                 host's): left for {target}"
            )),
        };
        let (io, n) = (ioctx.clone(), name.to_owned());
        self.settle(LeftoverKind::WorkingImage, location, verdict, || {
            blocking(move || rbd::remove(&io, &n))
        })
        .await;
    }

    async fn snapshots(&mut self, ioctx: &rados::IoCtx, pool: &str, image: &str) -> Result<()> {
        let (io, name) = (ioctx.clone(), image.to_owned());
        let found = blocking(move || {
            let img = match Image::open(&io, &name, OpenMode::ReadOnly) {
                Ok(img) => img,
                // Removed since the listing.
                Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(e),
            };
            let snaps = img.snap_list()?;
            let mut metadata: HashMap<String, String> = HashMap::new();
            let mut groups: Vec<(String, String)> = Vec::new();
            for (k, v) in img.metadata_list()? {
                if let Some(s) = k.strip_prefix(SNAPSHOT_WRITER_KEY_PREFIX) {
                    metadata.insert(s.to_owned(), v);
                } else if let Some(g) = k.strip_prefix(GROUP_WRITER_KEY_PREFIX) {
                    groups.push((g.to_owned(), v));
                }
            }
            let mut temporary = Vec::new();
            for s in snaps {
                if temporary_snapshot_time(&s.name).is_some() {
                    let protected = img.snap_is_protected(&s.name)?;
                    // The age is the cluster's record of the creation, never the number in
                    // the name, which anyone can write; unknown when it cannot be read.
                    let created = img.snap_timestamp(s.id).ok();
                    temporary.push((s.name, created, protected));
                }
            }
            Ok(Some((temporary, metadata, groups)))
        })
        .await?;
        let Some((temporary, mut records, groups)) = found else {
            return Ok(());
        };
        for (group, writer) in groups {
            self.group_records
                .entry(group)
                .or_default()
                .push((image.to_owned(), writer));
        }
        for (snap, created, protected) in temporary {
            let writer = records.remove(&snap).and_then(|w| w.parse::<Writer>().ok());
            let verdict = if protected {
                Err("protected: something depends on it".to_owned())
            } else {
                judge(writer.as_ref(), created.map(since), self.options.min_age)
            };
            let (io, img) = (ioctx.clone(), image.to_owned());
            let s = snap.clone();
            self.settle(
                LeftoverKind::TemporarySnapshot,
                format!("rbd:{pool}/{image}@{snap}"),
                verdict,
                || {
                    blocking(move || {
                        let image = Image::open(&io, &img, OpenMode::ReadWrite)?;
                        image.snap_remove(&s)?;
                        forget_snapshot_writer(&image, &s)?;
                        Ok(())
                    })
                },
            )
            .await;
        }
        // Records of snapshots that are gone (the writer was killed between recording and
        // taking it, or between removing it and forgetting it): dropped quietly once their
        // writer is gone.
        let stale: Vec<String> = records
            .into_iter()
            .filter(|(_, w)| {
                w.parse::<Writer>()
                    .is_ok_and(|w| w.state() == WriterState::Gone)
            })
            .map(|(snap, _)| snap)
            .collect();
        if !stale.is_empty() && !self.options.dry_run {
            let (io, img) = (ioctx.clone(), image.to_owned());
            let _ = blocking(move || {
                let image = Image::open(&io, &img, OpenMode::ReadWrite)?;
                for snap in &stale {
                    forget_snapshot_writer(&image, snap)?;
                }
                Ok(())
            })
            .await;
        }
        Ok(())
    }

    async fn uploads(
        &mut self,
        ctx: &Context,
        bucket: &str,
        prefix: &str,
        exact: bool,
    ) -> Result<()> {
        let store = ctx.s3().await?;
        let journal = UploadJournal::default_location();
        let endpoint = store.endpoint().unwrap_or_default().to_owned();
        let mut records: HashMap<(String, String), (std::path::PathBuf, Writer)> = journal
            .records()
            .into_iter()
            .filter(|(_, r)| {
                r.bucket == bucket && (r.endpoint.is_empty() || r.endpoint == endpoint)
            })
            .map(|(path, r)| ((r.key, r.upload_id), (path, r.writer)))
            .collect();
        let pending = store.list_multipart_uploads(bucket, prefix).await?;
        for upload in pending {
            if exact && upload.key != prefix {
                continue;
            }
            let id = (upload.key.clone(), upload.upload_id.clone());
            let record = records.remove(&id);
            let location = format!("s3://{bucket}/{} (upload {})", upload.key, upload.upload_id);
            let verdict = match &record {
                Some((_, writer)) if writer.state() != WriterState::OtherHost => {
                    judge(Some(writer), None, None)
                }
                _ if ObjectFormat::from_name(&upload.key).is_none() => Err(
                    "no writer is recorded on this host, and its key is not one diskferry writes"
                        .to_owned(),
                ),
                _ if self.options.min_age.is_none() => {
                    Err("no writer is recorded on this host".to_owned())
                }
                _ => {
                    let last_part = match store
                        .upload_last_part_time(bucket, &upload.key, &upload.upload_id)
                        .await
                    {
                        Ok(t) => t,
                        // Completed or aborted since the listing.
                        Err(e) if e.is_not_found() => continue,
                        Err(e) => return Err(e.into()),
                    };
                    let last = match (upload.initiated, last_part) {
                        (Some(a), Some(b)) => Some(a.max(b)),
                        (a, b) => a.or(b),
                    };
                    judge(
                        record.as_ref().map(|(_, w)| w),
                        last.map(since),
                        self.options.min_age,
                    )
                }
            };
            let (s, b, journal) = (store.clone(), bucket.to_owned(), journal.clone());
            let path = record.map(|(p, _)| p);
            self.settle(
                LeftoverKind::MultipartUpload,
                location,
                verdict,
                || async move {
                    match s.abort_upload(&b, &id.0, &id.1).await {
                        Err(e) if !e.is_not_found() => return Err(e.into()),
                        _ => {}
                    }
                    if let Some(p) = path {
                        let _ = journal.remove(&p);
                    }
                    Ok(())
                },
            )
            .await;
        }
        // Records of uploads that are no longer pending (completed or aborted by a process
        // killed before it forgot them): dropped once their writer is gone.
        if !self.options.dry_run {
            for ((key, _), (path, writer)) in records {
                let in_scope = if exact {
                    key == prefix
                } else {
                    key.starts_with(prefix)
                };
                if in_scope && writer.state() == WriterState::Gone {
                    let _ = journal.remove(&path);
                }
            }
        }
        Ok(())
    }

    async fn dir(&mut self, dir: &std::path::Path) -> Result<()> {
        let entries = std::fs::read_dir(dir).map_err(|source| Error::Io {
            what: format!("list {}", dir.display()),
            source,
        })?;
        let host = Writer::current().host;
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            // `.NAME.PID.NANOS.diskferry-tmp`
            let Some(stem) = name.strip_suffix(LOCAL_TEMP_SUFFIX) else {
                continue;
            };
            let mut parts = stem.rsplitn(3, '.');
            let (Some(nanos), Some(pid)) = (parts.next(), parts.next()) else {
                continue;
            };
            let (Ok(_), Ok(pid)) = (nanos.parse::<u128>(), pid.parse::<u32>()) else {
                continue;
            };
            // A local file is written by a process of this host; its name records no
            // instance, so it is judged by pid as a record of an older version is.
            let writer = Writer {
                host: host.clone(),
                pid,
                instance: None,
            };
            let path = entry.path();
            let verdict = judge(Some(&writer), None, self.options.min_age);
            let p = path.clone();
            self.settle(
                LeftoverKind::TemporaryFile,
                path.display().to_string(),
                verdict,
                || async move {
                    tokio::fs::remove_file(&p)
                        .await
                        .map_err(|source| Error::Io {
                            what: format!("remove {}", p.display()),
                            source,
                        })
                },
            )
            .await;
        }
        Ok(())
    }

    /// Longhorn leftovers of `volume` (or every volume). `sweep` also removes blocks no
    /// backup references and expired locks (`cleanup`); without it only the stubs and locks
    /// of dead writers go (the next backup, which reuses the blocks).
    async fn longhorn(
        &mut self,
        store: &BackupStore,
        volume: Option<&str>,
        sweep: bool,
    ) -> Result<()> {
        let volumes = match volume {
            Some(v) => vec![VolumeName::new(v)?],
            None => store.list_volumes().await?,
        };
        for volume in volumes {
            self.longhorn_volume(store, &volume, sweep).await?;
        }
        Ok(())
    }

    /// [`clean_volume_locks`]: the locks of `volume` whose writer is a dead process of this
    /// host.
    async fn longhorn_dead_locks(
        &mut self,
        store: &BackupStore,
        volume: &VolumeName,
    ) -> Result<()> {
        for lock in store.lock_entries(volume).await? {
            if let Some(w) = dead_lock_writer(&lock) {
                let verdict = Ok(writer_gone(&w));
                self.settle_lock(store, volume, &lock, verdict).await;
            }
        }
        Ok(())
    }

    /// Removes `lock` of `volume`, or reports it kept, as `verdict` says.
    async fn settle_lock(
        &mut self,
        store: &BackupStore,
        volume: &VolumeName,
        lock: &LockEntry,
        verdict: std::result::Result<String, String>,
    ) {
        let (s, v, name) = (store.clone(), volume.clone(), lock.name.clone());
        self.settle(
            LeftoverKind::Lock,
            format!("{volume}/locks/{}.lck", lock.name),
            verdict,
            || async move { Ok(s.remove_lock(&v, &name).await?) },
        )
        .await;
    }

    async fn longhorn_volume(
        &mut self,
        store: &BackupStore,
        volume: &VolumeName,
        sweep: bool,
    ) -> Result<()> {
        let left = store.leftovers(volume).await?;
        let expiry = store.lock_options().expiry;
        let lock_age: HashMap<&str, Duration> = left
            .locks
            .iter()
            .map(|l| (l.name.as_str(), since(l.modified)))
            .collect();
        let mut stubs_left = left.unreadable.len();
        let mut locks_gone: Vec<String> = Vec::new();
        for stub in &left.in_progress {
            let writer = stub.writer.as_ref().and_then(|w| w.parse::<Writer>().ok());
            let mut verdict = match &writer {
                None => Err("not written by diskferry (no writer recorded)".to_owned()),
                Some(w) => judge(Some(w), stub.modified.map(since), self.options.min_age),
            };
            // A writer of another host is gone only if its lock is no longer refreshed.
            if let (Ok(_), Some(w), Some(age)) = (
                &verdict,
                &writer,
                stub.lock.as_deref().and_then(|l| lock_age.get(l)),
            ) {
                if w.state() == WriterState::OtherHost && *age <= expiry {
                    verdict = Err(format!(
                        "its writer {w} runs on another host and refreshed its lock {}s ago",
                        age.as_secs()
                    ));
                }
            }
            let removing = verdict.is_ok();
            if !removing {
                stubs_left += 1;
            }
            let location = format!("{volume}/backup_{}.cfg", stub.name);
            let (s, v, st): (BackupStore, VolumeName, InProgressBackup) =
                (store.clone(), volume.clone(), stub.clone());
            let lock_note = stub
                .lock
                .as_deref()
                .map(|l| format!(" (with its lock {l})"))
                .unwrap_or_default();
            self.settle(
                LeftoverKind::InProgressBackup,
                format!("{location}{lock_note}"),
                verdict,
                || async move {
                    s.remove_in_progress(&v, &st).await?;
                    Ok(())
                },
            )
            .await;
            if removing {
                locks_gone.extend(stub.lock.clone());
            }
        }
        for lock in &left.locks {
            if locks_gone.contains(&lock.name) {
                continue;
            }
            // A lock that names a dead process of this host (a killed restore's: no stub
            // names it) goes at once; the others only with `sweep`, once expired.
            let dead_writer = dead_lock_writer(lock);
            if dead_writer.is_none() && !sweep {
                continue;
            }
            let age = since(lock.modified);
            let verdict = if let Some(w) = dead_writer {
                Ok(writer_gone(&w))
            } else if age > expiry {
                Ok(format!(
                    "expired: not refreshed for {}, more than Longhorn's {}s (every \
                     Longhorn process already ignores it)",
                    human(age),
                    expiry.as_secs()
                ))
            } else {
                Err(format!(
                    "held: refreshed {}s ago (a lock expires after {}s)",
                    age.as_secs(),
                    expiry.as_secs()
                ))
            };
            self.settle_lock(store, volume, lock, verdict).await;
        }
        if sweep && !left.unreferenced_blocks.is_empty() {
            let n = left.unreferenced_blocks.len();
            let verdict = if stubs_left > 0 {
                Err(format!(
                    "{n} blocks no completed backup references, but a backup is in \
                     progress or unreadable: Longhorn's sweep waits for it"
                ))
            } else {
                Ok(format!(
                    "{n} blocks no backup references (Longhorn's sweep, under its deletion \
                     lock)"
                ))
            };
            let (s, v) = (store.clone(), volume.clone());
            let location = format!("{volume}/blocks");
            self.settle(
                LeftoverKind::UnreferencedBlocks,
                location,
                verdict,
                || async move {
                    let report = s.collect_garbage(&v).await?;
                    match report.gc_skipped {
                        Some(reason) => Err(Error::InvalidOption(format!(
                            "Longhorn's sweep skipped: {reason}"
                        ))),
                        None => Ok(()),
                    }
                },
            )
            .await;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    #[test]
    fn scopes_parse_and_print() {
        for (text, scope) in [
            (
                "rbd:pool",
                Scope::RbdPool {
                    pool: "pool".into(),
                },
            ),
            (
                "rbd:pool/img",
                Scope::RbdImage {
                    pool: "pool".into(),
                    image: "img".into(),
                },
            ),
            (
                "s3://bkt/dir/disk.qcow2",
                Scope::S3 {
                    bucket: "bkt".into(),
                    prefix: "dir/disk.qcow2".into(),
                },
            ),
            (
                "s3://bkt/dir/",
                Scope::S3 {
                    bucket: "bkt".into(),
                    prefix: "dir/".into(),
                },
            ),
            (
                "s3://bkt",
                Scope::S3 {
                    bucket: "bkt".into(),
                    prefix: String::new(),
                },
            ),
            (
                "/tmp/x",
                Scope::Dir {
                    path: "/tmp/x".into(),
                },
            ),
        ] {
            assert_eq!(Scope::parse(text).unwrap(), scope, "{text}");
        }
        for bad in ["rbd:", "rbd:p/i@s", "rbd:/i", "http://x/y"] {
            assert!(Scope::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(
            Scope::parse("s3://bkt/dir/").unwrap().to_string(),
            "s3://bkt/dir/"
        );
    }

    #[test]
    fn leftover_names_give_their_writer_pid_and_start() {
        assert_eq!(
            temporary_snapshot_time("diskferry-export-123-1700000000123"),
            Some(UNIX_EPOCH + Duration::from_millis(1_700_000_000_123))
        );
        assert!(temporary_snapshot_time("diskferry-backup-1-2").is_some());
        // A VM bundle's group snapshot, a serve job's snapshot, a user's: not temporary ones.
        for other in [
            "diskferry-export-vm-1-2",
            "diskferry.job.20261206T020000Z",
            "diskferry-export-",
            "diskferry-export-1-",
            "mine",
        ] {
            assert_eq!(temporary_snapshot_time(other), None, "{other}");
        }
        assert_eq!(pid_and_time("42-1000").unwrap().0, 42);
        // export-vm's groups: only diskferry's own name, with a pid and a time.
        assert!(is_vm_group("diskferry-export-vm-123-1700000000123"));
        for other in [
            "diskferry-export-vm-",
            "diskferry-export-vm-123",
            "diskferry-export-vm-x-1",
            "diskferry-export-123-1",
            "web1-consistency-group",
        ] {
            assert!(!is_vm_group(other), "{other}");
        }
    }

    #[test]
    fn only_dead_writers_of_this_host_or_old_leftovers_of_others_are_removed() {
        let me = Writer::current();
        let other = Writer {
            host: format!("{}-other", me.host),
            pid: 1,
            instance: None,
        };
        let hour = Duration::from_secs(3600);
        let day = Some(DEFAULT_MIN_AGE);
        assert!(judge(Some(&me), Some(hour), day).is_err());
        assert!(judge(Some(&other), Some(hour), day).is_err());
        assert!(judge(Some(&other), Some(DEFAULT_MIN_AGE + hour), day).is_ok());
        assert!(judge(Some(&other), Some(DEFAULT_MIN_AGE + hour), None).is_err());
        assert!(judge(None, Some(DEFAULT_MIN_AGE + hour), day).is_ok());
        assert!(judge(None, None, day).is_err());
        // A pid no process has (the kernel's default pid_max is below it).
        let dead = Writer {
            pid: u32::MAX - 1,
            ..me.clone()
        };
        assert!(judge(Some(&dead), None, None).is_ok());
    }

    #[tokio::test]
    async fn a_directorys_temporary_files_of_dead_writers_go_and_others_stay() {
        let dir = tempfile::tempdir().unwrap();
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let dead = child.id();
        child.wait().unwrap();
        let me = std::process::id();
        let names = [
            format!(".disk.qcow2.{dead}.1700000000000000000{LOCAL_TEMP_SUFFIX}"),
            format!(".disk.raw.{me}.1700000000000000001{LOCAL_TEMP_SUFFIX}"),
            format!("disk.qcow2.{dead}"),
            format!(".odd.x.y{LOCAL_TEMP_SUFFIX}"),
        ];
        for n in &names {
            std::fs::write(dir.path().join(n), b"x").unwrap();
        }
        let scope = Scope::Dir {
            path: dir.path().to_path_buf(),
        };
        let report = cleanup(&Context::from_env(), &scope, &CleanupOptions::default())
            .await
            .unwrap();
        let actions: Vec<(String, Action)> = report
            .items
            .iter()
            .map(|i| (i.location.rsplit('/').next().unwrap().to_owned(), i.action))
            .collect::<std::collections::BTreeMap<_, _>>()
            .into_iter()
            .collect();
        assert_eq!(
            actions,
            vec![
                (names[0].clone(), Action::Removed),
                (names[1].clone(), Action::Kept),
            ]
        );
        let mut left: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        let mut expected = names[1..].to_vec();
        expected.sort();
        assert_eq!(left, expected);
    }
}
