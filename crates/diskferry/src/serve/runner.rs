//! Running one job once over its images: what `diskferry run --config FILE JOB` does, and
//! what the scheduler of `diskferry serve` will do at each tick.
//!
//! Per image, with at most `concurrency` images at once:
//! 1. take the RADOS exclusive lock of (job, image) ([`lock_object`], in the `[locks]` pool,
//!    cookie `HOST:PID`, the configured lease, renewed every third of it while working); a
//!    lock held by another instance skips the image and counts it
//!    ([`Metrics::skipped_locked`]), which is not a failure;
//! 2. run the `pre` hook; when it fails (non-zero exit, killed at its timeout, cannot start)
//!    the image fails and no snapshot is taken;
//! 3. create the snapshot [`Job::snapshot_name`] of the run's time;
//! 4. run the `post` hook, always once `pre` succeeded, also when the snapshot failed;
//! 5. apply the job's retention to the job's own snapshots of that image only (names parsed
//!    back by [`Job::snapshot_time`]; nothing else is ever considered). A snapshot retention
//!    would remove that is protected or has clones is left with a warning.
//!
//! The run's time is a parameter (`now`), so tests run on a fixed clock and snapshot names
//! are the same across every image of one run. Only `snapshot` jobs are run for now; the other
//! kinds are refused with [`RunError::UnsupportedKind`].

use std::collections::BTreeSet;
use std::fmt;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use futures::stream::{self, StreamExt};
use rados::{Lock, LockError};
use rbd::{Image, OpenMode};
use schedule::{Item, Pin, Policy};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::context::blocking;
use crate::serve::config::{Config, Hook, ImageSet, Job, JobKind, Selector};
use crate::serve::metrics::{ArtifactKind, Metrics, RunBytes, RunResult};
use crate::{Context, RbdSpec};

/// The first component of the lock objects: `diskferry.lock.JOB.POOL/IMAGE`.
pub const LOCK_OBJECT_PREFIX: &str = "diskferry.lock";
/// The name of the lock on each lock object (one lock per object).
pub const LOCK_NAME: &str = "diskferry";
/// How many times per lease the lock is renewed while an image is worked on.
pub const RENEWALS_PER_LEASE: u32 = 3;
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
        .map_err(|e| format!("{text:?} is not an RFC 3339 time such as 2026-12-06T02:00:00Z: {e}"))
}

/// Why a job could not be run at all (per-image failures are in the [`RunReport`]).
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The job's kind is not run by this runner yet.
    #[error("job {job}: running {kind} jobs is not implemented yet (only snapshot jobs run)")]
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
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

/// One snapshot retention kept, with every rule that keeps it (restic's wording).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Kept {
    /// The snapshot's name.
    pub snapshot: String,
    /// Why it is kept, e.g. `last snapshot`, `daily snapshot`.
    pub reasons: Vec<String>,
}

/// What happened to one image.
#[derive(Debug, Clone, Serialize)]
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
    /// Things that did not fail the image (a snapshot retention would remove is protected,
    /// has clones, or could not be removed).
    pub warnings: Vec<String>,
    /// Why it failed (several causes joined: e.g. the snapshot and the `post` hook).
    pub error: Option<String>,
}

impl ImageReport {
    fn new(image: String) -> Self {
        Self {
            image,
            outcome: ImageOutcome::Success,
            snapshot: None,
            pruned: Vec::new(),
            kept: Vec::new(),
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
#[derive(Debug, Clone, Serialize)]
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

/// Runs jobs on one cluster connection, with the lock settings of the configuration and the
/// cookie that names this instance as the locks' owner.
#[derive(Debug)]
pub struct Runner {
    /// The context (cluster connection).
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
    format!("{LOCK_OBJECT_PREFIX}.{job}.{}", image_label(image))
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

/// Sets the last-success gauge of every image of `job` from the newest snapshot the job has
/// of it: how a restarted service knows when each image last succeeded, with no database.
/// Returns how many images had one. An image that cannot be read is skipped with a warning.
pub async fn rebuild_last_success(
    ctx: &Context,
    job: &Job,
    metrics: &Metrics,
) -> Result<usize, RunError> {
    let mut restored = 0;
    for image in resolve_images(ctx, job).await? {
        let label = image_label(&image);
        metrics.register_image(&job.name, &label);
        match own_snapshots(ctx, job, &image).await {
            Ok(snaps) => {
                if let Some(newest) = snaps.iter().map(|(_, t)| *t).max() {
                    metrics.set_last_success(&job.name, &label, newest.timestamp() as f64);
                    restored += 1;
                }
            }
            Err(e) => tracing::warn!(job = %job.name, image = %label, "cannot list snapshots: {e}"),
        }
    }
    Ok(restored)
}

/// What retention would do to the job's snapshots of one image.
#[derive(Debug, Clone, Serialize)]
pub struct PrunePlan {
    /// The image, `POOL/IMAGE`.
    pub image: String,
    /// The snapshots kept, each with the rules that keep it, newest first.
    pub keep: Vec<Kept>,
    /// The snapshots retention removes, newest first.
    pub remove: Vec<String>,
}

/// What the job's retention decides at `now` for the job's snapshots of `image` (pure apart
/// from listing the snapshots): the plan `prune --dry-run` prints and the run carries out.
pub async fn prune_plan(
    ctx: &Context,
    job: &Job,
    image: &RbdSpec,
    now: DateTime<Utc>,
) -> crate::Result<PrunePlan> {
    let snaps = own_snapshots(ctx, job, image).await?;
    Ok(plan(&job.retention, job, image, &snaps, now))
}

fn plan(
    policy: &Policy,
    job: &Job,
    image: &RbdSpec,
    snaps: &[(crate::ops::snap::SnapRow, DateTime<Utc>)],
    now: DateTime<Utc>,
) -> PrunePlan {
    let items: Vec<Item<String>> = snaps
        .iter()
        .map(|(row, time)| Item {
            id: row.name.clone(),
            time: *time,
        })
        .collect();
    let pins: [Pin<String>; 0] = [];
    let decision = policy.apply(&items, &pins, job.time_zone(), now);
    PrunePlan {
        image: image_label(image),
        keep: decision
            .keep
            .into_iter()
            .map(|(snapshot, reasons)| Kept {
                snapshot,
                reasons: reasons.iter().map(ToString::to_string).collect(),
            })
            .collect(),
        remove: decision.remove,
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
        }
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

    /// Runs `job` once over its images, as of `now` (the snapshots are named after it and
    /// retention is applied at it), to the second. Fails only when the job cannot run at all; what happened
    /// to each image is in the report.
    pub async fn run_job(&self, job: &Job, now: DateTime<Utc>) -> Result<RunReport, RunError> {
        // Snapshot names hold whole seconds: the report and retention use the same time.
        let now = DateTime::<Utc>::from_timestamp(now.timestamp(), 0).unwrap_or(now);
        if job.kind() != JobKind::Snapshot {
            return Err(RunError::UnsupportedKind {
                job: job.name.clone(),
                kind: job.kind(),
            });
        }
        let images = resolve_images(&self.ctx, job).await?;
        for image in &images {
            self.metrics.register_image(&job.name, &image_label(image));
        }
        let concurrency = job.concurrency.max(1);
        let mut reports: Vec<(usize, ImageReport)> = stream::iter(images.into_iter().enumerate())
            .map(|(i, image)| async move { (i, self.run_image(job, &image, now).await) })
            .buffer_unordered(concurrency)
            .collect()
            .await;
        reports.sort_by_key(|(i, _)| *i);
        Ok(RunReport {
            job: job.name.clone(),
            time: now.to_rfc3339(),
            images: reports.into_iter().map(|(_, r)| r).collect(),
        })
    }

    /// One image: lock, hooks and snapshot, retention, metrics.
    async fn run_image(&self, job: &Job, image: &RbdSpec, now: DateTime<Utc>) -> ImageReport {
        let label = image_label(image);
        let mut report = ImageReport::new(label.clone());
        if self.cancel.is_cancelled() {
            report.cancelled();
            return report;
        }
        let lock = match self.lock(job, image).await {
            Ok(lock) => lock,
            Err(LockFailure::HeldElsewhere) => {
                tracing::info!(job = %job.name, image = %label, "skipped: another instance holds the lock");
                self.metrics.skipped_locked(&job.name, &label);
                report.outcome = ImageOutcome::SkippedLocked;
                return report;
            }
            Err(LockFailure::Other(e)) => {
                report.fail(e);
                return report;
            }
        };
        let started = Instant::now();
        self.metrics.run_started(&job.name, &label);
        let renewal = Renewal::start(lock.clone(), self.lease);
        self.snapshot_with_hooks(job, image, now, &renewal, &mut report)
            .await;
        if report.outcome == ImageOutcome::Success && self.cancel.is_cancelled() {
            // The snapshot is whole; retention waits for the next run rather than delay the
            // shutdown.
            report
                .warnings
                .push("retention not applied: the run was cancelled".to_string());
        } else if report.outcome == ImageOutcome::Success {
            if renewal.lost() {
                report.fail(format!(
                    "the lock {} was lost; retention is left to whoever holds it now",
                    lock_object(&job.name, image)
                ));
            } else {
                self.retain(job, image, now, &mut report).await;
            }
        }
        // Once the renewal task has ended, this is the lock's only handle: release it now
        // (a blocking call) rather than leave it to the lease. A lost lock has nothing to
        // release, and unlock never touches another owner's.
        renewal.finish().await;
        if let Ok(lock) = Arc::try_unwrap(lock) {
            let _ = tokio::task::spawn_blocking(move || lock.unlock()).await;
        }
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
            RunBytes::default(),
        );
        if let Some(e) = &report.error {
            tracing::warn!(job = %job.name, image = %label, "failed: {e}");
        }
        report
    }

    /// Takes the lock of (job, image).
    async fn lock(&self, job: &Job, image: &RbdSpec) -> Result<Arc<Lock>, LockFailure> {
        let ioctx = self
            .ctx
            .pool(&self.lock_pool)
            .await
            .map_err(|e| LockFailure::Other(e.to_string()))?;
        let object = lock_object(&job.name, image);
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

    /// pre → snapshot → post.
    async fn snapshot_with_hooks(
        &self,
        job: &Job,
        image: &RbdSpec,
        now: DateTime<Utc>,
        renewal: &Renewal,
        report: &mut ImageReport,
    ) {
        if let Some(pre) = &job.hooks.pre {
            if let Err(e) = run_hook("pre", pre).await {
                report.fail(e);
                return;
            }
        }
        if self.cancel.is_cancelled() {
            report.cancelled();
        } else if renewal.lost() {
            report.fail(format!(
                "the lock {} was lost before the snapshot",
                lock_object(&job.name, image)
            ));
        } else {
            let snapshot = RbdSpec {
                snap: Some(job.snapshot_name(now)),
                ..image.clone()
            };
            match crate::ops::snap::create(&self.ctx, &snapshot).await {
                Ok(_) => {
                    report.snapshot = snapshot.snap.clone();
                    self.metrics.created(&job.name, ArtifactKind::Snapshot);
                }
                Err(e) => report.fail(format!("cannot create the snapshot {snapshot}: {e}")),
            }
        }
        if let Some(post) = &job.hooks.post {
            if let Err(e) = run_hook("post", post).await {
                report.fail(e);
            }
        }
    }

    /// Applies the job's retention to its own snapshots of `image`.
    async fn retain(
        &self,
        job: &Job,
        image: &RbdSpec,
        now: DateTime<Utc>,
        report: &mut ImageReport,
    ) {
        let snaps = match own_snapshots(&self.ctx, job, image).await {
            Ok(snaps) => snaps,
            Err(e) => {
                report.fail(format!(
                    "retention: cannot list the snapshots of {image}: {e}"
                ));
                return;
            }
        };
        let plan = plan(&job.retention, job, image, &snaps, now);
        report.kept = plan.keep;
        let mut pruned = 0u64;
        for name in plan.remove {
            let protected = snaps
                .iter()
                .any(|(row, _)| row.name == name && row.protected);
            let snapshot = RbdSpec {
                snap: Some(name.clone()),
                ..image.clone()
            };
            if protected {
                report
                    .warnings
                    .push(format!("{snapshot} is protected: retention leaves it"));
                continue;
            }
            match self.children(&snapshot).await {
                Ok(0) => {}
                Ok(n) => {
                    report.warnings.push(format!(
                        "{snapshot} has {n} clone{}: retention leaves it",
                        if n == 1 { "" } else { "s" }
                    ));
                    continue;
                }
                Err(e) => {
                    report
                        .warnings
                        .push(format!("{snapshot}: cannot list its clones, left: {e}"));
                    continue;
                }
            }
            match crate::ops::snap::remove(&self.ctx, &snapshot).await {
                Ok(_) => {
                    pruned += 1;
                    report.pruned.push(name);
                }
                Err(e) => report
                    .warnings
                    .push(format!("cannot remove {snapshot}: {e}")),
            }
        }
        if pruned > 0 {
            self.metrics
                .pruned(&job.name, ArtifactKind::Snapshot, pruned);
        }
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
    let hook = hook.clone();
    let command = hook.command.join(" ");
    tokio::task::spawn_blocking(move || wait_hook(which, &hook))
        .await
        .map_err(|e| HookError::Wait {
            which,
            command,
            source: std::io::Error::other(e),
        })?
}

fn wait_hook(which: &'static str, hook: &Hook) -> Result<(), HookError> {
    let command = hook.command.join(" ");
    let (program, args) = hook.command.split_first().ok_or_else(|| HookError::Spawn {
        which,
        command: command.clone(),
        source: std::io::Error::new(std::io::ErrorKind::InvalidInput, "empty command"),
    })?;
    // Hook output goes to stderr so that stdout stays the run's report.
    let mut child = Command::new(program)
        .args(args)
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
        if Instant::now() >= deadline {
            // Killed and reaped, so no zombie is left; an error here means it just exited.
            let _ = child.kill();
            let _ = child.wait();
            return Err(HookError::TimedOut {
                which,
                command,
                timeout: hook.timeout,
            });
        }
        std::thread::sleep(HOOK_POLL_INTERVAL);
    }
}
