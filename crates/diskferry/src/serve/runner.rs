//! Running one job once over its images: what `diskferry run --config FILE JOB` does, and
//! what the scheduler of `diskferry serve` does at each tick.
//!
//! A job's units of work are its images, or, for an `export` job over `vms`, its VMs. Per
//! unit, with at most `concurrency` units at once in steps 3–6 (a `longhorn-backup` job
//! takes up to [`LONGHORN_UNITS_AHEAD`] more through steps 1–2 meanwhile, each starting its
//! Longhorn lock, and through step 7, whose removals each wait for Longhorn's deletion lock):
//! 1. take the RADOS exclusive lock of (job, unit) ([`lock_object`], in the `[locks]` pool,
//!    cookie `HOST:PID`, the configured lease, renewed every third of it while working); a
//!    lock held by another instance skips the unit and counts it
//!    ([`Metrics::skipped_locked`]), which is not a failure;
//! 2. if what this run would make already exists (the snapshot [`Job::snapshot_name`] of
//!    the run's time for a snapshot job; the stored object, bundle or backup of that time for
//!    the others), another instance has done it at this very tick: the unit is
//!    [`ImageOutcome::DoneElsewhere`], and nothing is made twice. (A snapshot of the run's
//!    time without its stored result is the leftover of a failed attempt: it is stored now.)
//! 3. run the `pre` hook; when it fails (non-zero exit, killed at its timeout, cannot start)
//!    the unit fails and no snapshot is taken;
//! 4. create the snapshot of the run's time (a VM: one RBD group snapshot of all its disks);
//! 5. run the `post` hook, always once `pre` succeeded, also when the snapshot failed;
//! 6. store it: `export` writes the snapshot to the target ([`super::export_job`] has the
//!    layout), `longhorn-backup` backs it up, incremental from the job's previous snapshot
//!    ([`super::longhorn_job`]). When this fails or is cancelled, the op leaves nothing
//!    partial and the run's snapshot is removed again;
//! 7. apply the job's retention, per (job, unit), separately to the job's own snapshots
//!    (names parsed back by [`Job::snapshot_time`]) and to what it stored (names parsed back
//!    from its layout or labels); nothing else is ever considered. A Longhorn job pins the
//!    newest backup and its snapshot, the base of the next incremental. A snapshot retention
//!    would remove that is protected or has clones is left with a warning.
//!
//! The run's time is a parameter (`now`), so tests run on a fixed clock and names are the
//! same across every unit of one run. [`Runner::cancel`] stops a run cleanly.

use std::collections::BTreeSet;
use std::fmt;
use std::os::unix::process::CommandExt;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use futures::stream::{self, StreamExt};
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use rados::{Lock, LockError};
use rbd::{Image, OpenMode};
use schedule::{Item, Pin};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::context::blocking;
use crate::ops::VmSnapshot;
use crate::serve::config::{Action, Config, Hook, ImageSet, Job, JobKind, Selector, VmGroup};
use crate::serve::export_job::{self, Place, StoredItem};
use crate::serve::longhorn_job::{self, JobBackup, Volume};
use crate::serve::metrics::{ArtifactKind, Metrics, RunBytes, RunResult};
use crate::{Context, Progress, RbdSpec};
use longhorn::PendingLock;

/// The first component of the lock objects: `diskferry.lock.JOB.POOL/IMAGE`.
pub const LOCK_OBJECT_PREFIX: &str = "diskferry.lock";
/// The name of the lock on each lock object (one lock per object).
pub const LOCK_NAME: &str = "diskferry";
/// How many times per lease the lock is renewed while an image is worked on.
pub const RENEWALS_PER_LEASE: u32 = 3;
/// How many units of a `longhorn-backup` job beyond its `concurrency` may hold their RADOS
/// lock and take Longhorn's backup lock while others work. Each Longhorn lock costs the
/// protocol's 2 s wait (`longhorn::LOCK_CHECK_WAIT_TIME`) however little the backup has to
/// do; taken ahead, the waits of the next units pass during this one's work, so a run in
/// which nothing changed costs one wait, not one per image. Kept small: a unit taken ahead
/// is one another instance of the service cannot take.
pub const LONGHORN_UNITS_AHEAD: usize = 8;
/// How often a running hook is checked for having exited (it runs on a blocking thread).
const HOOK_POLL_INTERVAL: Duration = Duration::from_millis(20);
/// Where the host name is read for the lock cookie (no libc call needed).
const HOSTNAME_FILE: &str = "/proc/sys/kernel/hostname";

/// The time of a run: names its snapshots and is retention's "now" (UTC).
pub type RunTime = DateTime<Utc>;

/// The clock's time, for a run that is not given one.
pub fn clock_now() -> RunTime {
    DateTime::<Utc>::from(std::time::SystemTime::now())
}

/// Parses an RFC 3339 time (`2026-12-06T02:00:00Z`, or with an offset) as a run's time.
pub fn parse_run_time(text: &str) -> Result<RunTime, String> {
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&Utc))
        // chrono's reason ("premature end of input") says less than the example does.
        .map_err(|_| format!("{text:?} is not an RFC 3339 time such as 2026-12-06T02:00:00Z"))
}

/// Why a job could not be run at all (per-image failures are in the [`RunReport`]).
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The job's kind cannot run over its image set.
    #[error("job {job}: a {kind} job cannot run over VM groups; list the images instead")]
    UnsupportedKind {
        /// The job.
        job: String,
        /// Its kind.
        kind: JobKind,
    },
    /// The images of the job could not be found (a pool cannot be listed, …).
    #[error("job {job}: cannot find its images ({what}): {source}")]
    Resolve {
        /// The job.
        job: String,
        /// Which image set or selector.
        what: String,
        /// Why.
        #[source]
        source: crate::Error,
    },
    /// Two images of a `longhorn-backup` job would be backed up into one Longhorn volume
    /// (`POOL-IMAGE`: pool `a-b` image `c` and pool `a` image `b-c`), whose backups the
    /// job's retention could then not tell apart.
    #[error(
        "job {job}: images {first} and {second} would share the Longhorn backup volume \
         {volume}; back them up in separate jobs with separate targets"
    )]
    SharedVolume {
        /// The job.
        job: String,
        /// One image.
        first: String,
        /// The other.
        second: String,
        /// The volume name both map to.
        volume: String,
    },
    /// The worker process of the run (`diskferry serve` runs each job in one) failed before
    /// it reported, or could not be started.
    #[error("job {job}: {reason}")]
    Worker {
        /// The job.
        job: String,
        /// What happened to the worker.
        reason: String,
    },
    /// What a unit's retention would keep and remove could not be worked out.
    #[error("job {job}: cannot plan the retention of {unit}: {reason}")]
    Plan {
        /// The job.
        job: String,
        /// The image or VM.
        unit: String,
        /// Why.
        reason: String,
    },
}

/// A hook that did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum HookError {
    /// The program could not be started.
    #[error("{which} hook {command:?} could not be started: {source}")]
    Spawn {
        /// `pre` or `post`.
        which: &'static str,
        /// The command as configured.
        command: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// It exited unsuccessfully.
    #[error("{which} hook {command:?} failed: {status}")]
    Failed {
        /// `pre` or `post`.
        which: &'static str,
        /// The command as configured.
        command: String,
        /// How it ended.
        status: ExitStatus,
    },
    /// It ran longer than its timeout and was killed.
    #[error("{which} hook {command:?} was killed after its timeout of {} s", timeout.as_secs_f64())]
    TimedOut {
        /// `pre` or `post`.
        which: &'static str,
        /// The command as configured.
        command: String,
        /// Its timeout.
        timeout: Duration,
    },
    /// The run was stopped (SIGTERM, cancellation) while it ran, so it was killed.
    #[error("{which} hook {command:?} was killed: the run was stopped")]
    Stopped {
        /// `pre` or `post`.
        which: &'static str,
        /// The command as configured.
        command: String,
    },
    /// Waiting for it failed.
    #[error("{which} hook {command:?}: waiting for it failed: {source}")]
    Wait {
        /// `pre` or `post`.
        which: &'static str,
        /// The command as configured.
        command: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// How the work on one image ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ImageOutcome {
    /// Snapshot taken, hooks and retention done (retention warnings do not fail it).
    Success,
    /// Something failed: see the image's `error`.
    Failed,
    /// Another instance holds the lock of (job, image): nothing was done here. Not a failure.
    SkippedLocked,
    /// What this run would make already exists (another instance did this (job, image) at
    /// this very run time and released its lock before we took it): nothing was done here, no
    /// second copy. Not a failure.
    DoneElsewhere,
    /// The run was cancelled ([`Runner::cancel`]) before or while this image was worked on;
    /// nothing partial is left of it (a copy that was running was aborted, its snapshot
    /// removed). Not a success: the image has no new backup.
    Cancelled,
}

/// One snapshot (or stored item) retention kept, with every rule that keeps it (restic's
/// wording).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Kept {
    /// The snapshot's name, or the stored item's (object or bundle address, backup name).
    pub snapshot: String,
    /// Why it is kept, e.g. `last snapshot`, `daily snapshot`.
    pub reasons: Vec<String>,
}

/// What happened to one image.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ImageReport {
    /// The image, `POOL/IMAGE`.
    pub image: String,
    /// How it ended.
    pub outcome: ImageOutcome,
    /// The snapshot created, if one was.
    pub snapshot: Option<String>,
    /// The job's snapshots retention removed.
    pub pruned: Vec<String>,
    /// The job's snapshots retention kept, and why.
    pub kept: Vec<Kept>,
    /// What this run stored: the object's or bundle's address, or the Longhorn backup's URL.
    pub stored: Option<String>,
    /// The Longhorn backup this run's backup is incremental from (`None`: full, or no
    /// Longhorn job).
    pub incremental_from: Option<String>,
    /// What the job had stored that retention removed (addresses or backup names).
    pub stored_pruned: Vec<String>,
    /// What the job has stored that retention kept, and why.
    pub stored_kept: Vec<Kept>,
    /// Bytes read from the snapshot (allocated or changed data only).
    pub bytes_read: u64,
    /// Bytes written to the target (after compression).
    pub bytes_written: u64,
    /// Bytes of the disk that cost nothing: holes, zeros, blocks unchanged since the base.
    pub bytes_skipped: u64,
    /// Things that did not fail the image (a snapshot retention would remove is protected,
    /// has clones, or could not be removed).
    pub warnings: Vec<String>,
    /// Why it failed (several causes joined: e.g. the snapshot and the `post` hook).
    pub error: Option<String>,
}

impl ImageReport {
    pub(crate) fn new(image: String) -> Self {
        Self {
            image,
            outcome: ImageOutcome::Success,
            snapshot: None,
            pruned: Vec::new(),
            kept: Vec::new(),
            stored: None,
            incremental_from: None,
            stored_pruned: Vec::new(),
            stored_kept: Vec::new(),
            bytes_read: 0,
            bytes_written: 0,
            bytes_skipped: 0,
            warnings: Vec::new(),
            error: None,
        }
    }

    /// The image ends cancelled, unless it already failed (a failure says more).
    fn cancelled(&mut self) {
        if self.outcome != ImageOutcome::Failed {
            self.outcome = ImageOutcome::Cancelled;
        }
    }

    /// [`ImageReport::cancelled`] when `cancelled`.
    fn cancelled_if(&mut self, cancelled: bool) {
        if cancelled {
            self.cancelled();
        }
    }

    fn fail(&mut self, error: impl fmt::Display) {
        self.outcome = ImageOutcome::Failed;
        let error = error.to_string();
        self.error = Some(match self.error.take() {
            Some(before) => format!("{before}; {error}"),
            None => error,
        });
    }
}

/// What one run of a job did, image by image (`diskferry run --json` prints it).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunReport {
    /// The job.
    pub job: String,
    /// The run's time (the snapshots are named after it), RFC 3339.
    pub time: String,
    /// Every image, in the order the job names or finds them.
    pub images: Vec<ImageReport>,
}

impl RunReport {
    /// Whether no image failed and the run was not cancelled (images skipped because another
    /// instance holds their lock or already did them are no failure).
    pub fn success(&self) -> bool {
        self.images
            .iter()
            .all(|i| !matches!(i.outcome, ImageOutcome::Failed | ImageOutcome::Cancelled))
    }

    /// How many images ended with `outcome`.
    pub fn count(&self, outcome: ImageOutcome) -> usize {
        self.images.iter().filter(|i| i.outcome == outcome).count()
    }
}

/// Runs jobs on one context (its cluster connection made when a run needs it and let go when
/// none is in flight), with the lock settings of the configuration and the cookie that names
/// this instance as the locks' owner.
#[derive(Debug)]
pub struct Runner {
    /// The context: settings, and the connections runs make through it.
    pub ctx: Context,
    /// The metrics updated by runs.
    pub metrics: Arc<Metrics>,
    /// The pool of the lock objects (`locks.pool`).
    pub lock_pool: String,
    /// The lock lease (`locks.lease-seconds`).
    pub lease: Duration,
    /// The lock cookie: [`default_cookie`] unless a test sets its own.
    pub cookie: String,
    /// Cancels every run of this runner (SIGTERM, service shutdown): copies in progress are
    /// aborted through the ops' own cancellation (no object, upload or file is left), their
    /// snapshots removed, hooks already started run to their end (a `post` after a `pre`
    /// always runs, so a frozen guest is thawed), and images not started yet are reported
    /// [`ImageOutcome::Cancelled`]. A fresh token by default; [`Runner::with_cancel`] sets one.
    pub cancel: CancellationToken,
    /// Whether a unit's failure is also logged as a warning (a service's log); off when the
    /// caller prints the run's report itself ([`Runner::reporting_failures_itself`]).
    log_failures: bool,
    /// Runs of [`Runner::run_job`] in progress: the last one to end lets go of the cluster
    /// connection and hands freed memory back, so that an idle service holds neither.
    runs_in_flight: std::sync::Mutex<usize>,
}

/// A run of [`Runner::run_job`] in progress; when the last one ends (or is dropped half-way),
/// the runner goes idle.
struct RunInFlight<'a>(&'a Runner);

impl<'a> RunInFlight<'a> {
    fn enter(runner: &'a Runner) -> Self {
        *runner.in_flight() += 1;
        Self(runner)
    }
}

impl Drop for RunInFlight<'_> {
    fn drop(&mut self) {
        let mut runs = self.0.in_flight();
        *runs -= 1;
        drop(runs);
        self.0.release_if_idle();
    }
}

/// Shuts the released connection down and hands the memory freed by the runs back to the
/// kernel, off the async runtime (both block: librados joins its threads).
fn go_idle(released: crate::ReleasedCluster) {
    let idle = move || {
        drop(released);
        crate::allocator::release_free_memory();
    };
    match tokio::runtime::Handle::try_current() {
        Ok(runtime) => drop(runtime.spawn_blocking(idle)),
        Err(_) => idle(),
    }
}

/// `HOST:PID`: one cookie per process, so the lock's owner says who holds it.
pub fn default_cookie() -> String {
    let host = std::fs::read_to_string(HOSTNAME_FILE)
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown-host".to_string());
    format!("{host}:{}", std::process::id())
}

/// The name of the lock object of (`job`, `image`): `diskferry.lock.JOB.POOL/IMAGE`. The
/// pool is part of it so that images of the same name in two pools do not share a lock.
pub fn lock_object(job: &str, image: &RbdSpec) -> String {
    unit_lock_object(job, &image_label(image))
}

/// The name of the lock object of (`job`, unit), the unit named as reports name it
/// (`POOL/IMAGE`, or a VM's name: a job has images or VMs, never both).
fn unit_lock_object(job: &str, unit: &str) -> String {
    format!("{LOCK_OBJECT_PREFIX}.{job}.{unit}")
}

/// One unit of work of a job: an image, or a VM of an `export` job over `vms`.
#[derive(Debug, Clone)]
pub enum Unit {
    /// An image (its head).
    Image(RbdSpec),
    /// A VM: its disks snapshotted together, exported as one bundle.
    Vm(VmGroup),
}

impl Unit {
    /// How reports, metrics and locks name it: `POOL/IMAGE`, or the VM's name.
    pub fn label(&self) -> String {
        match self {
            Unit::Image(image) => image_label(image),
            Unit::Vm(vm) => vm.name.clone(),
        }
    }
}

/// The units of work of `job`, found now: one per VM for an `export` job over `vms`, else
/// one per image ([`resolve_images`]). A `longhorn-backup` job over `vms` is refused: a
/// Longhorn backup is of one volume, and its incremental base is an image's own snapshot.
pub async fn resolve_units(ctx: &Context, job: &Job) -> Result<Vec<Unit>, RunError> {
    match (&job.images, job.kind()) {
        (ImageSet::Vms(vms), JobKind::Export) => Ok(vms.iter().cloned().map(Unit::Vm).collect()),
        (ImageSet::Vms(_), JobKind::LonghornBackup) => Err(RunError::UnsupportedKind {
            job: job.name.clone(),
            kind: job.kind(),
        }),
        (_, kind) => {
            let images = resolve_images(ctx, job).await?;
            if kind == JobKind::LonghornBackup {
                refuse_shared_volumes(ctx, job, &images).await?;
            }
            Ok(images.into_iter().map(Unit::Image).collect())
        }
    }
}

/// Refuses two images that map to one Longhorn volume name ([`RunError::SharedVolume`]).
async fn refuse_shared_volumes(
    ctx: &Context,
    job: &Job,
    images: &[RbdSpec],
) -> Result<(), RunError> {
    let mut named = Vec::with_capacity(images.len());
    for image in images {
        let pool = pool_name(ctx, image)
            .await
            .map_err(|source| RunError::Resolve {
                job: job.name.clone(),
                what: format!("the pool of {}", image_label(image)),
                source,
            })?;
        named.push((pool, image.image.clone()));
    }
    match first_shared_volume(&named) {
        Some((first, second, volume)) => Err(RunError::SharedVolume {
            job: job.name.clone(),
            first,
            second,
            volume,
        }),
        None => Ok(()),
    }
}

/// The first two distinct images among `(pool, image)` pairs whose Longhorn volume names are
/// the same, as `(POOL/IMAGE, POOL/IMAGE, VOLUME)`. An image whose volume name is invalid is
/// left out: its own unit fails, naming the reason.
fn first_shared_volume(images: &[(String, String)]) -> Option<(String, String, String)> {
    let mut seen: std::collections::BTreeMap<String, String> = Default::default();
    for (pool, image) in images {
        let spec = RbdSpec {
            pool: pool.clone(),
            image: image.clone(),
            snap: None,
        };
        let Ok(volume) = longhorn_job::volume_name(pool, &spec) else {
            continue;
        };
        let label = format!("{pool}/{image}");
        match seen.get(&volume) {
            Some(first) if *first != label => return Some((first.clone(), label, volume)),
            Some(_) => {}
            None => {
                seen.insert(volume, label);
            }
        }
    }
    None
}

/// How the units of `job` are named in reports and metrics ([`Unit::label`]).
pub async fn unit_labels(ctx: &Context, job: &Job) -> Result<Vec<String>, RunError> {
    Ok(resolve_units(ctx, job)
        .await?
        .iter()
        .map(Unit::label)
        .collect())
}

/// `POOL/IMAGE` (or `IMAGE` in the default pool): how metrics and reports name an image.
pub fn image_label(image: &RbdSpec) -> String {
    if image.pool.is_empty() {
        image.image.clone()
    } else {
        format!("{}/{}", image.pool, image.image)
    }
}

/// The images of `job`, found now: the explicit list, every VM's disks, or what the
/// selectors pick (each image once, in the order found).
pub async fn resolve_images(ctx: &Context, job: &Job) -> Result<Vec<RbdSpec>, RunError> {
    let mut images: Vec<RbdSpec> = Vec::new();
    match &job.images {
        ImageSet::List(list) => images.extend(list.iter().map(head)),
        ImageSet::Vms(vms) => images.extend(
            vms.iter()
                .flat_map(|vm| vm.disks.iter().map(|d| head(&d.image))),
        ),
        ImageSet::Select(selectors) => {
            for selector in selectors {
                let found =
                    select(ctx, &job.name, selector)
                        .await
                        .map_err(|source| RunError::Resolve {
                            job: job.name.clone(),
                            what: selector.to_string(),
                            source,
                        })?;
                images.extend(found);
            }
        }
    }
    let mut seen = BTreeSet::new();
    images.retain(|i| seen.insert((i.pool.clone(), i.image.clone())));
    Ok(images)
}

/// The image itself, without a snapshot.
fn head(spec: &RbdSpec) -> RbdSpec {
    RbdSpec {
        snap: None,
        ..spec.clone()
    }
}

/// The images of the selector's pool it picks for `job`.
async fn select(ctx: &Context, job: &str, selector: &Selector) -> crate::Result<Vec<RbdSpec>> {
    let ioctx = ctx.pool(&selector.pool).await?;
    let selector = selector.clone();
    let job = job.to_string();
    let names = blocking(move || {
        let mut picked = Vec::new();
        for name in rbd::list(&ioctx)? {
            if !selector.matches_name(&name) {
                continue;
            }
            if let Some(key) = &selector.metadata_key {
                let value = match Image::open(&ioctx, &name, OpenMode::ReadOnly) {
                    Ok(image) => image.metadata_get(key)?,
                    // Removed since it was listed: not ours to work on.
                    Err(e) if e.kind() == rados::ErrorKind::NotFound => continue,
                    Err(e) => return Err(e),
                };
                if !selector.lists_job(value.as_deref(), &job) {
                    continue;
                }
            }
            picked.push(name);
        }
        Ok((selector.pool, picked))
    })
    .await?;
    let (pool, picked) = names;
    Ok(picked
        .into_iter()
        .map(|image| RbdSpec {
            pool: pool.clone(),
            image,
            snap: None,
        })
        .collect())
}

/// The job's own snapshots of `image` with their times; everything else is left out.
async fn own_snapshots(
    ctx: &Context,
    job: &Job,
    image: &RbdSpec,
) -> crate::Result<Vec<(crate::ops::snap::SnapRow, DateTime<Utc>)>> {
    let rows = crate::ops::snap::list(ctx, image).await?;
    Ok(rows
        .into_iter()
        .filter_map(|row| job.snapshot_time(&row.name).map(|t| (row, t)))
        .collect())
}

/// The pool of `image` as the cluster names it (the default pool resolved): stored names
/// carry it, so they do not change when the default does.
async fn pool_name(ctx: &Context, image: &RbdSpec) -> crate::Result<String> {
    if image.pool != crate::address::DEFAULT_POOL {
        return Ok(image.pool.clone());
    }
    Ok(ctx.pool(&image.pool).await?.pool().to_string())
}

/// Where a unit's stored results are.
#[derive(Debug)]
enum Destination {
    /// A snapshot job stores nothing beyond its snapshots.
    Nothing,
    /// An export job's directory of one image.
    Objects(Place, crate::serve::config::ExportSettings),
    /// An export job's directory of one VM.
    Bundles(Place, crate::serve::config::ExportSettings),
    /// A Longhorn job's backup volume of one image.
    Longhorn(Volume),
}

impl Destination {
    async fn open(ctx: &Context, job: &Job, unit: &Unit) -> Result<Destination, String> {
        let pool = |image: &RbdSpec| {
            let image = image.clone();
            async move {
                pool_name(ctx, &image)
                    .await
                    .map_err(|e| format!("cannot open the pool of {image}: {e}"))
            }
        };
        Ok(match (&job.action, unit) {
            (Action::Snapshot, _) => Destination::Nothing,
            (Action::Export(s), Unit::Image(image)) => {
                let pool = pool(image).await?;
                let place = Place::of_image(ctx, job, s, &pool, image).await?;
                Destination::Objects(place, s.clone())
            }
            (Action::Export(s), Unit::Vm(vm)) => {
                Destination::Bundles(Place::of_vm(ctx, job, s, vm).await?, s.clone())
            }
            (Action::LonghornBackup(s), Unit::Image(image)) => {
                let pool = pool(image).await?;
                Destination::Longhorn(Volume::open(ctx, s, &pool, image).await?)
            }
            (Action::LonghornBackup(_), Unit::Vm(vm)) => {
                return Err(format!(
                    "vm {}: a longhorn-backup job backs up images, not VM groups",
                    vm.name
                ))
            }
        })
    }

    /// Everything the job stored for the unit, with times (nothing it did not make).
    async fn items(&self, job: &Job) -> crate::Result<Vec<StoredItem>> {
        match self {
            Destination::Nothing => Ok(Vec::new()),
            Destination::Objects(place, _) => place.objects().await,
            Destination::Bundles(place, _) => place.bundles().await,
            Destination::Longhorn(volume) => Ok(volume
                .backups(job)
                .await?
                .into_iter()
                .map(|b| b.item)
                .collect()),
        }
    }

    /// Whether the result of the run at `now` is stored (finished).
    async fn has(&self, job: &Job, now: DateTime<Utc>) -> crate::Result<bool> {
        match self {
            Destination::Nothing => Ok(false),
            Destination::Objects(place, _) => place.has_object(now).await,
            Destination::Bundles(place, _) => place.has_bundle(now).await,
            Destination::Longhorn(volume) => {
                let name = longhorn_job::backup_name(job, now);
                Ok(volume.backups(job).await?.iter().any(|b| b.item.id == name))
            }
        }
    }

    /// Removes one stored item.
    async fn remove(&self, ctx: &Context, item: &StoredItem) -> crate::Result<()> {
        match self {
            Destination::Nothing => Ok(()),
            Destination::Objects(place, _) => place.remove_object(item.time).await,
            Destination::Bundles(place, _) => place.remove_bundle(ctx, item.time).await,
            Destination::Longhorn(volume) => volume.remove(&item.id).await,
        }
    }
}

/// Gives up a Longhorn lock started for a backup that does not happen, once its file is gone.
async fn abandon(lock: Option<PendingLock>) {
    if let Some(lock) = lock {
        lock.abandon().await;
    }
}

/// Sets the last-success gauge of every unit of `job` from the newest thing the job made of
/// it (its newest snapshot for a snapshot job, else its newest stored object, bundle or
/// backup): how a restarted service knows when each image last succeeded, with no database.
/// Returns how many units had one. A unit that cannot be read is skipped with a warning.
pub async fn rebuild_last_success(
    ctx: &Context,
    job: &Job,
    metrics: &Metrics,
) -> Result<usize, RunError> {
    let mut restored = 0;
    for unit in resolve_units(ctx, job).await? {
        let label = unit.label();
        metrics.register_image(&job.name, &label);
        let newest = match (&unit, job.kind()) {
            (Unit::Image(image), JobKind::Snapshot) => own_snapshots(ctx, job, image)
                .await
                .map(|snaps| snaps.iter().map(|(_, t)| *t).max())
                .map_err(|e| e.to_string()),
            _ => match Destination::open(ctx, job, &unit).await {
                Ok(dest) => dest
                    .items(job)
                    .await
                    .map(|items| items.iter().map(|i| i.time).max())
                    .map_err(|e| e.to_string()),
                Err(e) => Err(e),
            },
        };
        match newest {
            Ok(Some(newest)) => {
                metrics.set_last_success(&job.name, &label, newest.timestamp() as f64);
                restored += 1;
            }
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(job = %job.name, image = %label, "cannot read what the job made: {e}")
            }
        }
    }
    Ok(restored)
}

/// What retention would do to what the job made of one unit.
#[derive(Debug, Clone, Serialize)]
pub struct PrunePlan {
    /// The unit: `POOL/IMAGE`, or a VM's name.
    pub image: String,
    /// The snapshots kept, each with the rules that keep it, newest first.
    pub keep: Vec<Kept>,
    /// The snapshots retention removes, newest first.
    pub remove: Vec<String>,
    /// The stored objects, bundles or backups kept, each with the rules that keep it.
    pub stored_keep: Vec<Kept>,
    /// The stored objects, bundles or backups retention removes.
    pub stored_remove: Vec<String>,
}

/// What the job's retention decides at `now` for what the job made of `image` (pure apart
/// from listing): the plan `prune --dry-run` prints and the run carries out.
pub async fn prune_plan(
    ctx: &Context,
    job: &Job,
    image: &RbdSpec,
    now: DateTime<Utc>,
) -> Result<PrunePlan, String> {
    prune_unit_plan(ctx, job, &Unit::Image(image.clone()), now).await
}

/// [`prune_plan`] of any unit (an image, or a VM of an export job).
pub async fn prune_unit_plan(
    ctx: &Context,
    job: &Job,
    unit: &Unit,
    now: DateTime<Utc>,
) -> Result<PrunePlan, String> {
    let dest = Destination::open(ctx, job, unit).await?;
    Ok(unit_plan(ctx, job, unit, &dest, now).await?.plan)
}

/// The plan of every unit of `job` at `now`, in the order the job names or finds them.
pub async fn prune_plans(
    ctx: &Context,
    job: &Job,
    now: DateTime<Utc>,
) -> Result<Vec<PrunePlan>, RunError> {
    let mut plans = Vec::new();
    for unit in resolve_units(ctx, job).await? {
        let plan = prune_unit_plan(ctx, job, &unit, now)
            .await
            .map_err(|reason| RunError::Plan {
                job: job.name.clone(),
                unit: unit.label(),
                reason,
            })?;
        plans.push(plan);
    }
    Ok(plans)
}

/// A plan with what it was made from.
struct UnitPlan {
    plan: PrunePlan,
    snapshots: Vec<(crate::ops::snap::SnapRow, DateTime<Utc>)>,
    stored: Vec<StoredItem>,
}

/// Why a Longhorn job keeps its newest backup and that backup's snapshot.
const INCREMENTAL_BASE: &str = "the base of the next incremental backup";

async fn unit_plan(
    ctx: &Context,
    job: &Job,
    unit: &Unit,
    dest: &Destination,
    now: DateTime<Utc>,
) -> Result<UnitPlan, String> {
    let snapshots = match unit {
        Unit::Image(image) => own_snapshots(ctx, job, image)
            .await
            .map_err(|e| format!("cannot list the snapshots of {image}: {e}"))?,
        // A VM's group snapshot is temporary: the bundle is what the job keeps.
        Unit::Vm(_) => Vec::new(),
    };
    let (stored, base) = match dest {
        Destination::Longhorn(volume) => {
            let backups = volume
                .backups(job)
                .await
                .map_err(|e| format!("cannot list the backups of volume {}: {e}", volume.volume))?;
            let base = backups
                .last()
                .map(|b| (b.item.id.clone(), b.snapshot.clone()));
            (backups.into_iter().map(|b| b.item).collect(), base)
        }
        other => (
            other
                .items(job)
                .await
                .map_err(|e| format!("cannot list what the job stored: {e}"))?,
            None,
        ),
    };
    let items = |list: &mut dyn Iterator<Item = (String, DateTime<Utc>)>| -> Vec<Item<String>> {
        list.map(|(id, time)| Item { id, time }).collect()
    };
    let snapshot_items = items(&mut snapshots.iter().map(|(r, t)| (r.name.clone(), *t)));
    let stored_items = items(&mut stored.iter().map(|i| (i.id.clone(), i.time)));
    let (snapshot_pins, stored_pins) = match &base {
        Some((backup, snapshot)) => (
            vec![Pin::new(snapshot.clone(), INCREMENTAL_BASE)],
            vec![Pin::new(backup.clone(), INCREMENTAL_BASE)],
        ),
        None => (Vec::new(), Vec::new()),
    };
    let (mut keep, mut remove) = decide(job, &snapshot_items, &snapshot_pins, now);
    if !matches!(dest, Destination::Nothing) {
        // A snapshot of a tick before this run with nothing stored for it was left by a run
        // that did not finish (killed, or its copy failed): it is no backup, so it neither
        // takes a retention slot from one nor stays. Holding the unit's lock, no other
        // instance is still working on it.
        let stored_times: BTreeSet<DateTime<Utc>> = stored.iter().map(|i| i.time).collect();
        let orphans: BTreeSet<&String> = snapshot_items
            .iter()
            .filter(|s| s.time < now && !stored_times.contains(&s.time))
            .map(|s| &s.id)
            .collect();
        keep.retain(|k| !orphans.contains(&k.snapshot));
        for orphan in orphans {
            if !remove.contains(orphan) {
                remove.push(orphan.clone());
            }
        }
    }
    let (stored_keep, stored_remove) = decide(job, &stored_items, &stored_pins, now);
    Ok(UnitPlan {
        plan: PrunePlan {
            image: unit.label(),
            keep,
            remove,
            stored_keep,
            stored_remove,
        },
        snapshots,
        stored,
    })
}

/// Why what a run made at `now` is kept whatever the policy says.
const MADE_BY_THIS_RUN: &str = "made by this run";
/// Why an item dated after the run's time is kept and not counted.
const DATED_LATER: &str =
    "dated after this run's time (a clock ahead, or a run given a later --now): not counted, left";

/// The job's retention over `items` at `now`. What this run made (dated `now`) is never
/// removed, and items dated after `now` are neither removed nor counted: otherwise one item
/// from a clock running ahead would take `keep-last` slots and retention would remove the
/// backup a run just made.
fn decide(
    job: &Job,
    items: &[Item<String>],
    pins: &[Pin<String>],
    now: DateTime<Utc>,
) -> (Vec<Kept>, Vec<String>) {
    let (later, counted): (Vec<Item<String>>, Vec<Item<String>>) =
        items.iter().cloned().partition(|i| i.time > now);
    let mut pins = pins.to_vec();
    pins.extend(
        counted
            .iter()
            .filter(|i| i.time == now)
            .map(|i| Pin::new(i.id.clone(), MADE_BY_THIS_RUN)),
    );
    let decision = job.retention.apply(&counted, &pins, job.time_zone(), now);
    let mut keep: Vec<Kept> = decision
        .keep
        .into_iter()
        .map(|(snapshot, reasons)| Kept {
            snapshot,
            reasons: reasons.iter().map(ToString::to_string).collect(),
        })
        .collect();
    if !later.is_empty() {
        tracing::warn!(
            job = %job.name,
            count = later.len(),
            "items dated after the run's time are left and not counted by retention"
        );
    }
    keep.extend(later.into_iter().map(|i| Kept {
        snapshot: i.id,
        reasons: vec![DATED_LATER.to_string()],
    }));
    (keep, decision.remove)
}

/// Reports a running copy's position as the unit's progress ratio.
struct MetricsProgress<'a> {
    metrics: &'a Metrics,
    job: &'a str,
    unit: &'a str,
    size: AtomicU64,
}

impl Progress for MetricsProgress<'_> {
    fn start(&self, _what: &str, size: u64) {
        self.size.store(size, Ordering::Relaxed);
    }

    fn position(&self, offset: u64) {
        let size = self.size.load(Ordering::Relaxed);
        if size > 0 {
            self.metrics
                .progress(self.job, self.unit, offset as f64 / size as f64);
        }
    }
}

/// The bytes of `report`'s copy, for the metrics.
fn run_bytes(report: &ImageReport) -> RunBytes {
    RunBytes {
        read: report.bytes_read,
        written: report.bytes_written,
        skipped: report.bytes_skipped,
    }
}

impl Runner {
    /// A runner on `ctx` with the lock settings of the configuration and this process's
    /// cookie.
    pub fn new(ctx: Context, metrics: Arc<Metrics>, lock_pool: String, lease: Duration) -> Self {
        Self {
            ctx,
            metrics,
            lock_pool,
            lease,
            cookie: default_cookie(),
            cancel: CancellationToken::new(),
            runs_in_flight: std::sync::Mutex::new(0),
            log_failures: true,
        }
    }

    /// The same runner for a caller that prints each run's report, failures included (the
    /// foreground `diskferry run`): failures are not logged a second time.
    pub fn reporting_failures_itself(mut self) -> Self {
        self.log_failures = false;
        self
    }

    /// When no run is in flight: lets go of the cluster connection and hands freed memory
    /// back to the kernel (the service calls it after its start-up work, runs call it as
    /// they end).
    pub fn release_if_idle(&self) {
        let runs = self.in_flight();
        if *runs == 0 {
            // Under the count's lock: a run that starts after this connects afresh.
            let released = self.ctx.release_cluster();
            drop(runs);
            go_idle(released);
        }
    }

    fn in_flight(&self) -> std::sync::MutexGuard<'_, usize> {
        // A count, never half-updated: a panic elsewhere leaves it usable.
        self.runs_in_flight
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The same runner, cancelled by `cancel` (e.g. a child of the service's shutdown token).
    pub fn with_cancel(mut self, cancel: CancellationToken) -> Self {
        self.cancel = cancel;
        self
    }

    /// A runner with the configuration's context and lock settings.
    pub fn from_config(config: &Config, metrics: Arc<Metrics>) -> Self {
        Self::new(
            config.context(),
            metrics,
            config.locks.pool.clone(),
            config.locks.lease,
        )
    }

    /// Runs `job` once over its units, as of `now` (names carry it and retention is applied
    /// at it), to the second. Fails only when the job cannot run at all; what happened to
    /// each unit is in the report.
    pub async fn run_job(&self, job: &Job, now: DateTime<Utc>) -> Result<RunReport, RunError> {
        // Snapshot names hold whole seconds: the report and retention use the same time.
        let now = DateTime::<Utc>::from_timestamp(now.timestamp(), 0).unwrap_or(now);
        let _in_flight = RunInFlight::enter(self);
        let units = resolve_units(&self.ctx, job).await?;
        for unit in &units {
            self.metrics.register_image(&job.name, &unit.label());
        }
        let concurrency = job.concurrency.max(1);
        // `concurrency` units do their work at once; a Longhorn job's next units take their
        // locks meanwhile (see [`LONGHORN_UNITS_AHEAD`]).
        let ahead = match job.kind() {
            JobKind::LonghornBackup => LONGHORN_UNITS_AHEAD,
            JobKind::Snapshot | JobKind::Export => 0,
        };
        let copies = tokio::sync::Semaphore::new(concurrency);
        let copies = &copies;
        let mut reports: Vec<(usize, ImageReport)> = stream::iter(units.into_iter().enumerate())
            .map(|(i, unit)| async move { (i, self.run_unit(job, &unit, now, copies).await) })
            .buffer_unordered(concurrency + ahead)
            .collect()
            .await;
        reports.sort_by_key(|(i, _)| *i);
        Ok(RunReport {
            job: job.name.clone(),
            time: now.to_rfc3339(),
            images: reports.into_iter().map(|(_, r)| r).collect(),
        })
    }

    /// One unit: lock, the work (once one of `copies` is free), metrics.
    async fn run_unit(
        &self,
        job: &Job,
        unit: &Unit,
        now: DateTime<Utc>,
        copies: &tokio::sync::Semaphore,
    ) -> ImageReport {
        let label = unit.label();
        let mut report = ImageReport::new(label.clone());
        if self.cancel.is_cancelled() {
            report.cancelled();
            return report;
        }
        let object = unit_lock_object(&job.name, &label);
        let lock = match self.lock(job, &object).await {
            Ok(lock) => lock,
            Err(LockFailure::HeldElsewhere) => {
                tracing::info!(job = %job.name, image = %label, "skipped: another instance holds the lock");
                self.metrics.skipped_locked(&job.name, &label);
                report.outcome = ImageOutcome::SkippedLocked;
                return report;
            }
            Err(LockFailure::Other(e)) => {
                report.fail(e);
                // A failure all the same (the lock pool is wrong, the cluster is down): the
                // failure alert must see it.
                self.metrics.run_failed(&job.name, &label, Duration::ZERO);
                return report;
            }
        };
        let renewal = Renewal::start(lock.clone(), self.lease);
        let started = Instant::now();
        let ran = self
            .work(job, unit, now, copies, &renewal, &object, &mut report)
            .await;
        // Once the renewal task has ended, this is the lock's only handle: release it now
        // (a blocking call) rather than leave it to the lease. A lost lock has nothing to
        // release, and unlock never touches another owner's.
        renewal.finish().await;
        if let Ok(lock) = Arc::try_unwrap(lock) {
            let _ = tokio::task::spawn_blocking(move || lock.unlock()).await;
        }
        if ran {
            let result = if report.outcome == ImageOutcome::Success {
                RunResult::Success
            } else {
                RunResult::Failure
            };
            self.metrics.run_finished(
                &job.name,
                &label,
                result,
                started.elapsed(),
                run_bytes(&report),
            );
        } else if report.outcome == ImageOutcome::DoneElsewhere {
            self.metrics.done_elsewhere(&job.name, &label);
            self.metrics
                .set_last_success(&job.name, &label, now.timestamp() as f64);
        } else if report.outcome == ImageOutcome::Failed {
            // Failed before its work started (the target cannot be opened or looked at).
            self.metrics
                .run_failed(&job.name, &label, started.elapsed());
        }
        if let Some(e) = report.error.as_ref().filter(|_| self.log_failures) {
            tracing::warn!(job = %job.name, image = %label, "failed: {e}");
        }
        report
    }

    /// The work on a locked unit, the part after the checks once one of `copies` is free;
    /// whether a run was started (counted in the metrics).
    #[allow(clippy::too_many_arguments)]
    async fn work(
        &self,
        job: &Job,
        unit: &Unit,
        now: DateTime<Utc>,
        copies: &tokio::sync::Semaphore,
        renewal: &Renewal,
        lock: &str,
        report: &mut ImageReport,
    ) -> bool {
        if self.cancel.is_cancelled() {
            report.cancelled();
            return false;
        }
        let dest = match Destination::open(&self.ctx, job, unit).await {
            Ok(dest) => dest,
            Err(e) => {
                report.fail(e);
                return false;
            }
        };
        // Longhorn's backup lock is started now: its 2 s wait passes while the unit waits
        // for its turn and takes its snapshot (given up below if the backup does not happen).
        let mut backup_lock = match &dest {
            Destination::Longhorn(volume) => volume.start_lock().ok(),
            _ => None,
        };
        let name = job.snapshot_name(now);
        let checked = async {
            // What exists of this run time: made by another instance (or an earlier attempt).
            let snapshot_exists = match unit {
                Unit::Image(image) => own_snapshots(&self.ctx, job, image)
                    .await
                    .map_err(|e| format!("cannot list the snapshots of {image}: {e}"))?
                    .iter()
                    .any(|(row, _)| row.name == name),
                Unit::Vm(_) => false,
            };
            let stored = dest
                .has(job, now)
                .await
                .map_err(|e| format!("cannot look for this run's result: {e}"))?;
            let done = match dest {
                Destination::Nothing => snapshot_exists,
                _ => stored,
            };
            Ok::<_, String>((snapshot_exists, done))
        }
        .await;
        let snapshot_exists = match checked {
            Ok((snapshot_exists, false)) => snapshot_exists,
            Ok((snapshot_exists, true)) => {
                tracing::info!(job = %job.name, image = %report.image, "done elsewhere at this run time");
                report.outcome = ImageOutcome::DoneElsewhere;
                report.snapshot = snapshot_exists.then(|| name.clone());
                abandon(backup_lock).await;
                return false;
            }
            Err(e) => {
                report.fail(e);
                abandon(backup_lock).await;
                return false;
            }
        };
        // The semaphore is never closed; an error would only mean no limit.
        let turn = copies.acquire().await.ok();
        if self.cancel.is_cancelled() {
            report.cancelled();
            abandon(backup_lock).await;
            return false;
        }
        self.metrics.run_started(&job.name, &report.image);
        let label = report.image.clone();
        let progress = MetricsProgress {
            metrics: &self.metrics,
            job: &job.name,
            unit: &label,
            size: AtomicU64::new(0),
        };
        match unit {
            Unit::Image(image) => {
                let snapshot = image.at(Some(&name));
                if snapshot_exists {
                    // An earlier attempt's snapshot of this very time: stored from it now.
                    report.snapshot = Some(name.clone());
                } else {
                    let ctx = &self.ctx;
                    let taken = self
                        .around_hooks(job, renewal, lock, report, || async {
                            crate::ops::snap::create(ctx, &snapshot)
                                .await
                                .map_err(|e| format!("cannot create the snapshot {snapshot}: {e}"))
                        })
                        .await;
                    if taken.is_some() {
                        report.snapshot = Some(name.clone());
                        self.metrics.created(&job.name, ArtifactKind::Snapshot);
                    }
                }
                if report.snapshot.is_some() && !matches!(dest, Destination::Nothing) {
                    if report.outcome == ImageOutcome::Success && !self.cancel.is_cancelled() {
                        let backup_lock = backup_lock.take();
                        self.store_image(
                            job,
                            &snapshot,
                            &dest,
                            now,
                            backup_lock,
                            &progress,
                            report,
                        )
                        .await;
                    } else {
                        report.cancelled_if(self.cancel.is_cancelled());
                    }
                    if report.outcome != ImageOutcome::Success {
                        // Nothing of a run that did not store its result is left.
                        self.remove_run_snapshot(&snapshot, report).await;
                    }
                }
                abandon(backup_lock.take()).await;
            }
            Unit::Vm(vm) => {
                let ctx = &self.ctx;
                let taken = self
                    .around_hooks(job, renewal, lock, report, || async {
                        VmSnapshot::take(ctx, &vm.disks).await.map_err(|e| {
                            format!("cannot take the group snapshot of vm {}: {e}", vm.name)
                        })
                    })
                    .await;
                if let Some(snapshot) = taken {
                    if report.outcome == ImageOutcome::Success && !self.cancel.is_cancelled() {
                        self.store_vm(job, vm, snapshot, &dest, now, &progress, report)
                            .await;
                    } else {
                        report.cancelled_if(self.cancel.is_cancelled());
                        if let Err(e) = snapshot.remove().await {
                            report.warnings.push(format!(
                                "could not remove the group snapshot of vm {}: {e}",
                                vm.name
                            ));
                        }
                    }
                }
            }
        }
        // Retention is no copy: the next unit's copy may start (a Longhorn removal waits 2 s
        // for its deletion lock, which then passes beside it).
        drop(turn);
        if report.outcome == ImageOutcome::Success {
            if self.cancel.is_cancelled() {
                // What was made is whole; retention waits for the next run rather than
                // delay the shutdown.
                report
                    .warnings
                    .push("retention not applied: the run was cancelled".to_string());
            } else if renewal.lost() {
                report.fail(format!(
                    "the lock {lock} was lost; retention is left to whoever holds it now"
                ));
            } else {
                self.retain(job, unit, &dest, now, report).await;
            }
        }
        true
    }

    /// pre → `take` → post: `post` runs whenever `pre` succeeded. What `take` made, if it
    /// succeeded (nothing when `pre` failed, the lock was lost, or the run was cancelled).
    async fn around_hooks<T, F, Fut>(
        &self,
        job: &Job,
        renewal: &Renewal,
        lock: &str,
        report: &mut ImageReport,
        take: F,
    ) -> Option<T>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<T, String>>,
    {
        if let Some(pre) = &job.hooks.pre {
            if let Err(e) = run_hook_until("pre", pre, Some(self.cancel.clone())).await {
                report.fail(e);
                return None;
            }
        }
        let taken = if self.cancel.is_cancelled() {
            report.cancelled();
            None
        } else if renewal.lost() {
            report.fail(format!("the lock {lock} was lost before the snapshot"));
            None
        } else {
            match take().await {
                Ok(taken) => Some(taken),
                Err(e) => {
                    report.fail(e);
                    None
                }
            }
        };
        if let Some(post) = &job.hooks.post {
            if let Err(e) = run_hook("post", post).await {
                report.fail(e);
            }
        }
        taken
    }

    /// Stores the image's snapshot: an export, or a Longhorn backup (incremental when it
    /// can be) under `lock`, the volume's backup lock if already started.
    #[allow(clippy::too_many_arguments)]
    async fn store_image(
        &self,
        job: &Job,
        snapshot: &RbdSpec,
        dest: &Destination,
        now: DateTime<Utc>,
        lock: Option<PendingLock>,
        progress: &dyn Progress,
        report: &mut ImageReport,
    ) {
        let stored = match dest {
            Destination::Objects(place, settings) => {
                // A killed run's upload (or temporary file) of this image goes first.
                self.remove_leftovers(place, &settings.target, report).await;
                let object = place.object(now);
                let exported = match place.prepare(&settings.target).await {
                    Ok(()) => {
                        export_job::export_snapshot(
                            &self.ctx,
                            settings,
                            snapshot,
                            &object,
                            progress,
                            &self.cancel,
                        )
                        .await
                    }
                    Err(e) => Err(e),
                };
                exported
                    .map(|r| {
                        report.stored = Some(r.destination.clone());
                        report.bytes_read = r.bytes_read;
                        report.bytes_written = r.object_size;
                        report.bytes_skipped = r.size.saturating_sub(r.bytes_read);
                        report.warnings.extend(r.warnings);
                    })
                    .map_err(|e| (format!("export of {snapshot} to {object}"), e))
            }
            Destination::Longhorn(volume) => {
                let base = self
                    .incremental_base(job, snapshot, volume, now, report)
                    .await;
                let lock = match lock {
                    Some(lock) => Ok(lock),
                    None => volume.start_lock(),
                };
                let backed_up = match lock {
                    Ok(lock) => {
                        volume
                            .backup(
                                &self.ctx,
                                job,
                                snapshot,
                                base.as_ref(),
                                now,
                                lock,
                                progress,
                                &self.cancel,
                            )
                            .await
                    }
                    Err(e) => Err(e),
                };
                backed_up
                    .map(|r| {
                        report.stored = Some(r.url.clone());
                        report.incremental_from = r.merged_with.clone();
                        report.bytes_read = r.bytes_read;
                        report.bytes_written = r.bytes_uploaded;
                        report.bytes_skipped = r.disk_size.saturating_sub(r.bytes_read);
                        report.warnings.extend(r.warnings);
                    })
                    .map_err(|e| {
                        (
                            format!("Longhorn backup of {snapshot} to volume {}", volume.volume),
                            e,
                        )
                    })
            }
            Destination::Nothing | Destination::Bundles(..) => Ok(()),
        };
        match stored {
            Ok(()) => self.metrics.created(&job.name, ArtifactKind::Backup),
            Err((_, e)) if e.is_cancelled() => report.cancelled(),
            Err((what, e)) => report.fail(format!("{what}: {e}")),
        }
    }

    /// The backup the image's backup can be incremental from: the job's newest earlier
    /// backup whose snapshot still exists as the very snapshot it recorded.
    async fn incremental_base(
        &self,
        job: &Job,
        snapshot: &RbdSpec,
        volume: &Volume,
        now: DateTime<Utc>,
        report: &mut ImageReport,
    ) -> Option<JobBackup> {
        let found = async {
            let backups = volume.backups(job).await?;
            let pool = pool_name(&self.ctx, snapshot).await?;
            let existing: Vec<(String, String)> = own_snapshots(&self.ctx, job, snapshot)
                .await?
                .into_iter()
                .map(|(row, _)| (row.name, format!("{pool}@{}", row.id)))
                .collect();
            Ok::<_, crate::Error>(longhorn_job::incremental_base(&backups, &existing, now).cloned())
        }
        .await;
        match found {
            Ok(since) => since,
            Err(e) => {
                report.warnings.push(format!(
                    "cannot find a base for an incremental backup, taking a full one: {e}"
                ));
                None
            }
        }
    }

    /// Removes what killed runs left in `place` ([`Place::remove_leftovers`]) before a new
    /// export there; not being able to look is a warning of the run, not its failure.
    async fn remove_leftovers(
        &self,
        place: &Place,
        target: &crate::ops::Bundle,
        report: &mut ImageReport,
    ) {
        if let Err(e) = place.remove_leftovers(&self.ctx).await {
            report.warnings.push(format!(
                "cannot look for what killed runs left in {target}: {e}"
            ));
        }
    }

    /// Exports a VM from its group snapshot as the bundle of the run.
    #[allow(clippy::too_many_arguments)]
    async fn store_vm(
        &self,
        job: &Job,
        vm: &VmGroup,
        snapshot: VmSnapshot,
        dest: &Destination,
        now: DateTime<Utc>,
        progress: &dyn Progress,
        report: &mut ImageReport,
    ) {
        let Destination::Bundles(place, settings) = dest else {
            let _ = snapshot.remove().await;
            report.fail(format!("vm {}: only an export job exports VMs", vm.name));
            return;
        };
        // Below the VM's directory: the uploads and temporary files of a killed run's bundle.
        self.remove_leftovers(place, &settings.target, report).await;
        let bundle = match place.vm_bundle(now) {
            Ok(bundle) => bundle,
            Err(e) => {
                let _ = snapshot.remove().await;
                report.fail(e);
                return;
            }
        };
        let exported = export_job::export_vm(
            &self.ctx,
            job,
            settings,
            vm,
            snapshot,
            &bundle,
            progress,
            &self.cancel,
        )
        .await;
        match exported {
            Ok(r) => {
                report.stored = Some(r.bundle.clone());
                for disk in &r.disks {
                    report.bytes_read += disk.bytes_read;
                    report.bytes_written += disk.object_size;
                    report.bytes_skipped += disk.size.saturating_sub(disk.bytes_read);
                }
                report.warnings.extend(r.warnings);
                self.metrics.created(&job.name, ArtifactKind::Backup);
            }
            Err(e) if e.is_cancelled() => report.cancelled(),
            Err(e) => report.fail(format!("export of vm {} to {bundle}: {e}", vm.name)),
        }
    }

    /// Removes the run's snapshot of an image whose result was not stored.
    async fn remove_run_snapshot(&self, snapshot: &RbdSpec, report: &mut ImageReport) {
        if report.snapshot.is_none() {
            return;
        }
        match crate::ops::snap::remove(&self.ctx, snapshot).await {
            Ok(_) => report.snapshot = None,
            Err(e) => report.warnings.push(format!(
                "could not remove the run's snapshot {snapshot}: {e}"
            )),
        }
    }

    /// Takes the lock object `object`.
    async fn lock(&self, job: &Job, object: &str) -> Result<Arc<Lock>, LockFailure> {
        let ioctx = self
            .ctx
            .pool(&self.lock_pool)
            .await
            .map_err(|e| LockFailure::Other(e.to_string()))?;
        let object = object.to_string();
        let cookie = self.cookie.clone();
        let lease = self.lease;
        let description = format!("diskferry run of job {}", job.name);
        let taken = tokio::task::spawn_blocking(move || {
            ioctx.lock_exclusive(&object, LOCK_NAME, &cookie, &description, lease)
        })
        .await
        .map_err(|e| LockFailure::Other(format!("taking the lock failed: {e}")))?;
        match taken {
            Ok(lock) => Ok(Arc::new(lock)),
            Err(LockError::HeldElsewhere { .. }) => Err(LockFailure::HeldElsewhere),
            Err(e) => Err(LockFailure::Other(e.to_string())),
        }
    }

    /// Applies the job's retention to its own snapshots of the unit and to what it stored.
    async fn retain(
        &self,
        job: &Job,
        unit: &Unit,
        dest: &Destination,
        now: DateTime<Utc>,
        report: &mut ImageReport,
    ) {
        let planned = match unit_plan(&self.ctx, job, unit, dest, now).await {
            Ok(planned) => planned,
            Err(e) => {
                report.fail(format!("retention: {e}"));
                return;
            }
        };
        let UnitPlan {
            plan,
            snapshots,
            stored,
        } = planned;
        report.kept = plan.keep;
        report.stored_kept = plan.stored_keep;
        // What was stored and the snapshots go at the same time: a Longhorn removal spends
        // most of its time in the deletion lock's wait, which needs nothing of the cluster.
        let stored_removals = async {
            let mut removed = Vec::new();
            let mut warnings = Vec::new();
            for id in plan.stored_remove {
                let Some(item) = stored.iter().find(|i| i.id == id) else {
                    continue;
                };
                match dest.remove(&self.ctx, item).await {
                    Ok(()) => removed.push(id),
                    Err(e) => warnings.push(format!("cannot remove {id}: {e}")),
                }
            }
            (removed, warnings)
        };
        let snapshot_removals = async {
            let mut removed = Vec::new();
            let mut warnings = Vec::new();
            let Unit::Image(image) = unit else {
                return (removed, warnings);
            };
            for name in plan.remove {
                let protected = snapshots
                    .iter()
                    .any(|(row, _)| row.name == name && row.protected);
                let snapshot = image.at(Some(&name));
                if protected {
                    warnings.push(format!("{snapshot} is protected: retention leaves it"));
                    continue;
                }
                match self.children(&snapshot).await {
                    Ok(0) => {}
                    Ok(n) => {
                        warnings.push(format!(
                            "{snapshot} has {n} clone{}: retention leaves it",
                            if n == 1 { "" } else { "s" }
                        ));
                        continue;
                    }
                    Err(e) => {
                        warnings.push(format!("{snapshot}: cannot list its clones, left: {e}"));
                        continue;
                    }
                }
                match crate::ops::snap::remove(&self.ctx, &snapshot).await {
                    Ok(_) => removed.push(name),
                    Err(e) => warnings.push(format!("cannot remove {snapshot}: {e}")),
                }
            }
            (removed, warnings)
        };
        let ((stored_pruned, stored_warnings), (pruned, snapshot_warnings)) =
            tokio::join!(stored_removals, snapshot_removals);
        if !stored_pruned.is_empty() {
            self.metrics
                .pruned(&job.name, ArtifactKind::Backup, stored_pruned.len() as u64);
        }
        if !pruned.is_empty() {
            self.metrics
                .pruned(&job.name, ArtifactKind::Snapshot, pruned.len() as u64);
        }
        report.stored_pruned.extend(stored_pruned);
        report.pruned.extend(pruned);
        report.warnings.extend(stored_warnings);
        report.warnings.extend(snapshot_warnings);
    }

    /// How many clones the snapshot has.
    async fn children(&self, snapshot: &RbdSpec) -> crate::Result<usize> {
        let ioctx = self.ctx.pool(&snapshot.pool).await?;
        let name = snapshot.image.clone();
        let snap = snapshot.snap.clone().unwrap_or_default();
        blocking(move || {
            let image = Image::open(&ioctx, &name, OpenMode::Snapshot(snap))?;
            Ok(image.children()?.len())
        })
        .await
    }
}

/// Why the lock was not taken.
enum LockFailure {
    /// Another owner holds it: skip, counted.
    HeldElsewhere,
    /// Anything else: the image fails.
    Other(String),
}

/// Renews a lock every third of its lease until stopped; remembers a lost lock.
struct Renewal {
    lost: Arc<AtomicBool>,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Renewal {
    fn start(lock: Arc<Lock>, lease: Duration) -> Self {
        let lost = Arc::new(AtomicBool::new(false));
        let stop = CancellationToken::new();
        let (task_lost, task_stop) = (lost.clone(), stop.clone());
        let every = lease / RENEWALS_PER_LEASE;
        let task = tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = task_stop.cancelled() => return,
                    _ = tokio::time::sleep(every) => {}
                }
                let lock = lock.clone();
                let renewed = tokio::task::spawn_blocking(move || lock.renew()).await;
                match renewed {
                    Ok(Ok(())) => {}
                    Ok(Err(LockError::Lost { .. })) => {
                        task_lost.store(true, Ordering::SeqCst);
                        return;
                    }
                    // A failed round trip is retried at the next period; the lease covers
                    // two more attempts.
                    Ok(Err(e)) => tracing::warn!("cannot renew a lock: {e}"),
                    Err(e) => tracing::warn!("cannot renew a lock: {e}"),
                }
            }
        });
        Self { lost, stop, task }
    }

    fn lost(&self) -> bool {
        self.lost.load(Ordering::SeqCst)
    }

    /// Stops renewing and waits for the task to end, so that it holds no handle on the lock.
    async fn finish(mut self) {
        self.stop.cancel();
        let _ = (&mut self.task).await;
    }
}

impl Drop for Renewal {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Runs a hook (no shell: argv as configured, stdin closed, output to this process's
/// stderr), killing it at its timeout.
pub async fn run_hook(which: &'static str, hook: &Hook) -> Result<(), HookError> {
    run_hook_until(which, hook, None).await
}

/// [`run_hook`] that also kills the hook (its process group) when `stop` is cancelled. Only
/// for `pre`: a `post` hook (a thaw) always runs to its end or its timeout.
pub async fn run_hook_until(
    which: &'static str,
    hook: &Hook,
    stop: Option<CancellationToken>,
) -> Result<(), HookError> {
    let hook = hook.clone();
    let command = hook.command.join(" ");
    tokio::task::spawn_blocking(move || wait_hook(which, &hook, stop.as_ref()))
        .await
        .map_err(|e| HookError::Wait {
            which,
            command,
            source: std::io::Error::other(e),
        })?
}

fn wait_hook(
    which: &'static str,
    hook: &Hook,
    stop: Option<&CancellationToken>,
) -> Result<(), HookError> {
    let command = hook.command.join(" ");
    let (program, args) = hook.command.split_first().ok_or_else(|| HookError::Spawn {
        which,
        command: command.clone(),
        source: std::io::Error::new(std::io::ErrorKind::InvalidInput, "empty command"),
    })?;
    // Hook output goes to stderr so that stdout stays the run's report.
    // Its own process group, so that a timeout kills what it started too (`sh -c` runs the
    // command as a child, which would otherwise outlive the kill).
    let mut child = Command::new(program)
        .args(args)
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(std::io::stderr())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|source| HookError::Spawn {
            which,
            command: command.clone(),
            source,
        })?;
    let deadline = Instant::now() + hook.timeout;
    loop {
        let status = child.try_wait().map_err(|source| HookError::Wait {
            which,
            command: command.clone(),
            source,
        })?;
        if let Some(status) = status {
            return if status.success() {
                Ok(())
            } else {
                Err(HookError::Failed {
                    which,
                    command,
                    status,
                })
            };
        }
        let stopped = stop.is_some_and(CancellationToken::is_cancelled);
        if stopped || Instant::now() >= deadline {
            // The whole group killed and the hook reaped, so no zombie is left; an error
            // here means it just exited.
            if let Ok(pid) = i32::try_from(child.id()) {
                let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
            }
            let _ = child.kill();
            let _ = child.wait();
            if stopped {
                return Err(HookError::Stopped { which, command });
            }
            return Err(HookError::TimedOut {
                which,
                command,
                timeout: hook.timeout,
            });
        }
        std::thread::sleep(HOOK_POLL_INTERVAL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(retention: &str) -> Job {
        let text = format!(
            "time-zone = \"UTC\"\n[locks]\npool = \"rbd\"\n[[jobs]]\nname = \"j\"\nkind = \"snapshot\"\n\
             images = [\"rbd:rbd/a\"]\n[jobs.retention]\n{retention}\n"
        );
        Config::parse(&text, "test.toml").unwrap().jobs.remove(0)
    }

    fn at(text: &str) -> DateTime<Utc> {
        parse_run_time(text).unwrap()
    }

    fn item(id: &str, time: &str) -> Item<String> {
        Item {
            id: id.into(),
            time: at(time),
        }
    }

    #[test]
    fn two_images_with_one_longhorn_volume_name_are_found_and_the_same_image_twice_is_not() {
        let pairs = |list: &[(&str, &str)]| -> Vec<(String, String)> {
            list.iter()
                .map(|(p, i)| (p.to_string(), i.to_string()))
                .collect()
        };
        assert_eq!(
            first_shared_volume(&pairs(&[("rbd", "x"), ("a-b", "c"), ("a", "b-c")])),
            Some(("a-b/c".into(), "a/b-c".into(), "a-b-c".into()))
        );
        assert_eq!(
            first_shared_volume(&pairs(&[("rbd", "x"), ("rbd", "y"), ("rbd", "x")])),
            None
        );
        // An invalid volume name is its own unit's failure, not a shared volume.
        assert_eq!(
            first_shared_volume(&pairs(&[("rbd", "Bad_Name"), ("rbd", "Bad_Name2")])),
            None
        );
    }

    #[test]
    fn an_item_dated_later_is_neither_counted_nor_removed_and_this_runs_item_stays() {
        let items = [
            item("old", "2026-12-05T02:00:00Z"),
            item("now", "2026-12-06T02:00:00Z"),
            item("ahead", "2030-01-01T00:00:00Z"),
        ];
        let (keep, remove) = decide(
            &job("keep-last = 1"),
            &items,
            &[],
            at("2026-12-06T02:00:00Z"),
        );
        assert_eq!(remove, vec!["old".to_string()]);
        let kept: Vec<&str> = keep.iter().map(|k| k.snapshot.as_str()).collect();
        assert!(kept.contains(&"now") && kept.contains(&"ahead"), "{keep:?}");
        let ahead = keep.iter().find(|k| k.snapshot == "ahead").unwrap();
        assert_eq!(ahead.reasons, vec![DATED_LATER.to_string()]);
    }
}

#[cfg(test)]
mod hook_tests {
    use super::*;

    #[tokio::test]
    async fn a_pre_hook_is_killed_with_its_children_when_the_run_is_stopped() {
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("survived");
        // A child of the shell that would write the marker if it outlived the kill.
        let hook = Hook {
            command: vec![
                "/bin/sh".into(),
                "-c".into(),
                format!("(sleep 2; touch {}) & wait", marker.display()),
            ],
            timeout: Duration::from_secs(60),
        };
        let stop = CancellationToken::new();
        let stopper = stop.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            stopper.cancel();
        });
        let started = Instant::now();
        let result = run_hook_until("pre", &hook, Some(stop)).await;
        assert!(
            matches!(result, Err(HookError::Stopped { .. })),
            "{result:?}"
        );
        assert!(started.elapsed() < Duration::from_secs(2));
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert!(!marker.exists(), "a child of the hook outlived the stop");
    }
}
