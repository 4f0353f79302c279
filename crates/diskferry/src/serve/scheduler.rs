//! The scheduler of `diskferry serve`: runs each job at the ticks of its schedule.
//!
//! - Each job has its own loop: it computes the job's next tick after the clock's time with
//!   [`Schedule::next_after`] (in the job's time zone, with its DST rule), sleeps until it and
//!   starts a run **as of the tick**, not as of the moment it woke: every instance that shares
//!   the configuration names its snapshots after the same time, so the work per tick is the
//!   same across instances and the RADOS locks decide who does it.
//! - Jobs are independent: a long run of one job delays no other.
//! - A job never runs twice at once in one instance. A tick that comes while the job's previous
//!   run is still going is skipped, logged and counted
//!   ([`Metrics::skipped_overlap`], `diskferry_runs_skipped_overlap_total`), as cron tools
//!   do; a manual run ([`Scheduler::run_now`]) is refused the same way.
//! - Ticks missed while the process could not run (a suspended machine, a stopped container)
//!   are not replayed: a loop that wakes late runs once, as of the latest tick that has
//!   passed ([`latest_due`]), and then waits for the next one.
//! - [`Scheduler::shutdown`] stops the loops (no new run starts), asks the runs in progress to
//!   stop ([`Execute::cancel`]) and waits for them up to a deadline.
//!
//! Runs go through the [`Execute`] trait ([`Runner`] in the service) and time through the
//! [`Clock`] trait, so the scheduling logic is unit-tested on a manual clock with an in-memory
//! executor.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use futures::FutureExt;
use schedule::Schedule;
use serde::Serialize;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::serve::config::Job;
use crate::serve::http::LastRun;
use crate::serve::metrics::{Metrics, RunResult};
use crate::serve::runner::{clock_now, ImageOutcome, RunError, RunReport, RunTime, Runner};

/// The longest single sleep of a waiting loop: the wall clock is read again at least this
/// often, so a clock that is stepped (NTP, a resumed machine) delays a tick by at most this.
pub const MAX_SLEEP: Duration = Duration::from_secs(30);

/// At most this many ticks are stepped over when a loop wakes late ([`latest_due`]): a
/// per-second schedule after almost three hours asleep. Beyond it the run is as of the tick
/// reached, still a scheduled one.
pub const MAX_CATCH_UP_STEPS: usize = 10_000;

/// How late (after its tick) a run may start before the scheduler warns about it.
pub const LATE_WARNING: Duration = Duration::from_secs(60);

/// Where the scheduler reads the time and waits for it.
pub trait Clock: Send + Sync + 'static {
    /// The time now.
    fn now(&self) -> DateTime<Utc>;

    /// Returns once [`Clock::now`] has reached `at` (at once if it has).
    fn sleep_until(&self, at: DateTime<Utc>) -> BoxFuture<'static, ()>;
}

/// The system's clock, slept on with Tokio's timer in steps of at most [`MAX_SLEEP`].
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        clock_now()
    }

    fn sleep_until(&self, at: DateTime<Utc>) -> BoxFuture<'static, ()> {
        async move {
            loop {
                match (at - clock_now()).to_std() {
                    Ok(left) if !left.is_zero() => tokio::time::sleep(left.min(MAX_SLEEP)).await,
                    // Reached (a negative difference does not convert).
                    _ => return,
                }
            }
        }
        .boxed()
    }
}

/// What runs a job: [`Runner`] in the service, a double in tests.
pub trait Execute: Send + Sync + 'static {
    /// Runs `job` once, as of `at` (its snapshots are named after it).
    fn run<'a>(&'a self, job: &'a Job, at: RunTime) -> BoxFuture<'a, Result<RunReport, RunError>>;

    /// Asks every run in progress to stop as soon as it safely can (shutdown). Runs that
    /// cannot be interrupted finish.
    fn cancel(&self) {}
}

impl Execute for Runner {
    fn run<'a>(&'a self, job: &'a Job, at: RunTime) -> BoxFuture<'a, Result<RunReport, RunError>> {
        self.run_job(job, at).boxed()
    }

    fn cancel(&self) {
        self.cancel.cancel();
    }
}

/// Why a run was started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Trigger {
    /// A tick of the job's schedule.
    Schedule,
    /// `POST /jobs/NAME/run`.
    Manual,
}

/// A run in progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Running {
    /// The run's time (the tick, or the second a manual run was asked for).
    pub at: RunTime,
    /// When it started, by the clock.
    pub started: DateTime<Utc>,
    /// Why.
    pub trigger: Trigger,
}

/// A finished run of a job.
#[derive(Debug, Clone)]
pub struct FinishedRun {
    /// The run as it started.
    pub run: Running,
    /// When it ended, by the clock.
    pub finished: DateTime<Utc>,
    /// Its report, or why the job could not run at all (or that the run panicked).
    pub result: Result<RunReport, String>,
}

/// What the scheduler knows of one job.
#[derive(Debug, Clone, Default)]
pub struct JobStatus {
    /// The next tick the job's loop waits for; `None` before the loop starts, after it
    /// stops, or when the schedule has no future time.
    pub next_run: Option<RunTime>,
    /// The run in progress in this instance.
    pub running: Option<Running>,
    /// The last finished run in this instance.
    pub last: Option<Arc<FinishedRun>>,
    /// The job's images (`POOL/IMAGE`), as last resolved (at start-up, then by each run).
    pub images: Vec<String>,
    /// Per image, the last finished run in this instance that worked on it (an image skipped
    /// because another instance held its lock keeps its previous entry).
    pub last_by_image: BTreeMap<String, LastRun>,
    /// Ticks skipped because the previous run was still going.
    pub ticks_skipped: u64,
}

/// Why a run was not started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartRefused {
    /// No job has that name.
    UnknownJob,
    /// The job's previous run is still going.
    Running,
    /// The scheduler is shutting down.
    Stopping,
}

/// The scheduler of every configured job. Share it in an `Arc`: [`Scheduler::run`] drives
/// the loops, the HTTP API reads [`Scheduler::status`] and calls [`Scheduler::run_now`].
pub struct Scheduler {
    jobs: Vec<Arc<Job>>,
    executor: Arc<dyn Execute>,
    clock: Arc<dyn Clock>,
    metrics: Arc<Metrics>,
    status: Mutex<BTreeMap<String, JobStatus>>,
    /// How many runs are in progress; [`Scheduler::shutdown`] waits for 0.
    in_progress: watch::Sender<usize>,
    /// Cancelled once: no run starts after it.
    stop: CancellationToken,
    /// Why a job's loop died, if one did (the service is then unhealthy).
    failure: Mutex<Option<String>>,
}

impl std::fmt::Debug for Scheduler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scheduler")
            .field("jobs", &self.jobs.len())
            .field("stopping", &self.stop.is_cancelled())
            .finish_non_exhaustive()
    }
}

/// Locks a mutex whose data stays consistent even if a holder panicked (every critical
/// section here is a few assignments).
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Scheduler {
    /// A scheduler of `jobs`, running them with `executor` on `clock`'s time. Nothing runs
    /// before [`Scheduler::run`] (or [`Scheduler::run_now`]).
    pub fn new(
        jobs: impl IntoIterator<Item = Job>,
        executor: Arc<dyn Execute>,
        clock: Arc<dyn Clock>,
        metrics: Arc<Metrics>,
    ) -> Arc<Self> {
        let jobs: Vec<Arc<Job>> = jobs.into_iter().map(Arc::new).collect();
        let status = jobs
            .iter()
            .map(|job| (job.name.clone(), JobStatus::default()))
            .collect();
        for job in &jobs {
            metrics.register_job(&job.name);
        }
        Arc::new(Self {
            jobs,
            executor,
            clock,
            metrics,
            status: Mutex::new(status),
            in_progress: watch::Sender::new(0),
            stop: CancellationToken::new(),
            failure: Mutex::new(None),
        })
    }

    /// The jobs, in configuration order.
    pub fn jobs(&self) -> impl Iterator<Item = &Job> {
        self.jobs.iter().map(|job| &**job)
    }

    /// The clock's time.
    pub fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    /// What is known of the job named `job`.
    pub fn status(&self, job: &str) -> Option<JobStatus> {
        lock(&self.status).get(job).cloned()
    }

    /// Records the images of `job` as resolved elsewhere (at start-up).
    pub fn set_images(&self, job: &str, images: Vec<String>) {
        if let Some(status) = lock(&self.status).get_mut(job) {
            status.images = images;
        }
    }

    /// `Err(reason)` once a job's loop has died: that job is no longer scheduled.
    pub fn health(&self) -> Result<(), String> {
        match &*lock(&self.failure) {
            Some(reason) => Err(reason.clone()),
            None => Ok(()),
        }
    }

    /// Whether [`Scheduler::shutdown`] has begun.
    pub fn stopping(&self) -> bool {
        self.stop.is_cancelled()
    }

    /// How many runs are in progress.
    pub fn runs_in_progress(&self) -> usize {
        *self.in_progress.borrow()
    }

    /// Runs every job's loop until [`Scheduler::shutdown`]. A loop that panics is reported
    /// by [`Scheduler::health`]; the others go on.
    pub async fn run(self: Arc<Self>) {
        let mut loops = tokio::task::JoinSet::new();
        let mut names = BTreeMap::new();
        for job in &self.jobs {
            let id = loops
                .spawn(Arc::clone(&self).job_loop(Arc::clone(job)))
                .id();
            names.insert(id, job.name.clone());
        }
        while let Some(ended) = loops.join_next_with_id().await {
            if let Err(e) = ended {
                let job = names.get(&e.id()).cloned().unwrap_or_default();
                let reason = format!("the scheduler of job {job} stopped: {}", panic_text(e));
                tracing::error!("{reason}");
                *lock(&self.failure) = Some(reason);
            }
        }
    }

    /// One job's loop: sleep until each tick, start a run as of it unless one is going.
    async fn job_loop(self: Arc<Self>, job: Arc<Job>) {
        // The last tick acted on: never the same tick twice, even if the clock steps back.
        let mut last_tick: Option<RunTime> = None;
        loop {
            let now = self.clock.now();
            let from = last_tick.map_or(now, |t| t.max(now));
            let next = job.schedule.next_after(from);
            self.update(&job.name, |s| s.next_run = next);
            let Some(tick) = next else {
                tracing::warn!(job = %job.name, "the schedule {} has no future time: the job will not run again", job.schedule);
                return;
            };
            tokio::select! {
                _ = self.stop.cancelled() => break,
                _ = self.clock.sleep_until(tick) => {}
            }
            let now = self.clock.now();
            let tick = latest_due(&job.schedule, tick, now);
            last_tick = Some(tick);
            if let Ok(late) = (now - tick).to_std() {
                if late > LATE_WARNING {
                    tracing::warn!(job = %job.name, tick = %tick, "the run starts {} s after its tick (the process could not run on time)", late.as_secs());
                }
            }
            match self.start(&job, tick, Trigger::Schedule) {
                Ok(()) => {}
                Err(StartRefused::Running) => {
                    self.update(&job.name, |s| s.ticks_skipped += 1);
                    self.metrics.skipped_overlap(&job.name);
                    tracing::warn!(job = %job.name, tick = %tick, "tick skipped: the job's previous run is still going");
                }
                Err(StartRefused::Stopping) => break,
                Err(StartRefused::UnknownJob) => unreachable!("a loop runs a configured job"),
            }
        }
        self.update(&job.name, |s| s.next_run = None);
    }

    /// Starts a run of the job named `job` now, outside its schedule, as of the clock's
    /// second.
    pub fn run_now(self: &Arc<Self>, job: &str) -> Result<RunTime, StartRefused> {
        let job = self
            .jobs
            .iter()
            .find(|j| j.name == job)
            .ok_or(StartRefused::UnknownJob)?;
        let now = self.clock.now();
        let at = DateTime::<Utc>::from_timestamp(now.timestamp(), 0).unwrap_or(now);
        self.start(job, at, Trigger::Manual)?;
        Ok(at)
    }

    /// Starts a run of `job` as of `at` in its own task, unless one is going or the
    /// scheduler stops.
    fn start(
        self: &Arc<Self>,
        job: &Arc<Job>,
        at: RunTime,
        trigger: Trigger,
    ) -> Result<(), StartRefused> {
        let running = Running {
            at,
            started: self.clock.now(),
            trigger,
        };
        {
            let mut status = lock(&self.status);
            // Checked under the status lock, which shutdown's cancel does not need: a run
            // either starts before shutdown counts the runs in progress or not at all.
            if self.stop.is_cancelled() {
                return Err(StartRefused::Stopping);
            }
            let status = status.get_mut(&job.name).ok_or(StartRefused::UnknownJob)?;
            if status.running.is_some() {
                return Err(StartRefused::Running);
            }
            status.running = Some(running);
            self.in_progress.send_modify(|n| *n += 1);
        }
        tracing::info!(job = %job.name, at = %at, trigger = ?trigger, "run started");
        let guard = RunGuard {
            scheduler: Arc::clone(self),
            job: job.name.clone(),
            running,
            done: false,
        };
        let job = Arc::clone(job);
        tokio::spawn(async move {
            let mut guard = guard;
            let result = guard.scheduler.executor.run(&job, at).await;
            guard.finish(result.map_err(|e| e.to_string()));
        });
        Ok(())
    }

    /// Applies `change` to the status of `job`.
    fn update(&self, job: &str, change: impl FnOnce(&mut JobStatus)) {
        if let Some(status) = lock(&self.status).get_mut(job) {
            change(status);
        }
    }

    /// Records the end of a run and lets the job run again.
    fn finished(&self, job: &str, run: Running, result: Result<RunReport, String>) {
        let finished = self.clock.now();
        match &result {
            Ok(report) => tracing::info!(
                job = %job,
                at = %run.at,
                succeeded = report.count(ImageOutcome::Success),
                skipped_locked = report.count(ImageOutcome::SkippedLocked),
                done_elsewhere = report.count(ImageOutcome::DoneElsewhere),
                cancelled = report.count(ImageOutcome::Cancelled),
                failed = report.count(ImageOutcome::Failed),
                "run finished"
            ),
            Err(e) => tracing::warn!(job = %job, at = %run.at, "run failed: {e}"),
        }
        {
            let mut status = lock(&self.status);
            if let Some(status) = status.get_mut(job) {
                if result.is_err() {
                    // The run failed as a whole (its images cannot be found, its worker died):
                    // a failure of every image it had, as `/jobs` shows it, so that the
                    // failure alert fires.
                    let took = (finished - run.started).to_std().unwrap_or_default();
                    for image in &status.images {
                        self.metrics.run_failed(job, image, took);
                    }
                }
                record(status, run, finished, &result);
                status.last = Some(Arc::new(FinishedRun {
                    run,
                    finished,
                    result,
                }));
                status.running = None;
            }
        }
        self.in_progress.send_modify(|n| *n = n.saturating_sub(1));
    }

    /// Stops scheduling (no run starts after this returns), asks the runs in progress to stop
    /// and waits up to `deadline` for them to end. Returns how many are still going (0: all
    /// ended; they released their locks).
    pub async fn shutdown(&self, deadline: Duration) -> usize {
        {
            // Under the status lock, so no start is half-way (see `start`).
            let _status = lock(&self.status);
            self.stop.cancel();
        }
        self.executor.cancel();
        let mut in_progress = self.in_progress.subscribe();
        let _ = tokio::time::timeout(deadline, in_progress.wait_for(|n| *n == 0)).await;
        self.runs_in_progress()
    }
}

/// One image of a finished run, as the scheduler keeps it: the image, how it ended, why it
/// failed.
type ImageResult<'a> = (&'a str, ImageOutcome, Option<&'a str>);

/// Updates the per-image view of `status` with a finished run.
fn record(
    status: &mut JobStatus,
    run: Running,
    finished: DateTime<Utc>,
    result: &Result<RunReport, String>,
) {
    match result {
        Ok(report) => {
            let images: Vec<ImageResult<'_>> = report
                .images
                .iter()
                .map(|i| (i.image.as_str(), i.outcome, i.error.as_deref()))
                .collect();
            record_images(status, run, finished, &images);
        }
        // The job could not run at all (its images could not be found, its kind is not
        // run): every image it had fails with that reason.
        Err(e) => {
            let entry = LastRun {
                started: run.started,
                finished,
                result: RunResult::Failure,
                error: Some(e.clone()),
            };
            for image in &status.images {
                status.last_by_image.insert(image.clone(), entry.clone());
            }
        }
    }
}

/// Updates the images of `status` and their last runs with a run's `images`.
fn record_images(
    status: &mut JobStatus,
    run: Running,
    finished: DateTime<Utc>,
    images: &[ImageResult<'_>],
) {
    status.images = images.iter().map(|(image, ..)| image.to_string()).collect();
    for &(image, outcome, error) in images {
        let (result, error) = match outcome {
            ImageOutcome::Success => (RunResult::Success, None),
            ImageOutcome::Failed => (RunResult::Failure, error.map(str::to_string)),
            ImageOutcome::Cancelled => (
                RunResult::Failure,
                Some("the run was cancelled (the service stopped)".to_string()),
            ),
            // Another instance worked on it (or is working on it): this instance's last run
            // of the image stays what it was.
            ImageOutcome::SkippedLocked | ImageOutcome::DoneElsewhere => continue,
        };
        status.last_by_image.insert(
            image.to_string(),
            LastRun {
                started: run.started,
                finished,
                result,
                error,
            },
        );
    }
}

/// Ends a run's bookkeeping even if the run panics (or is dropped): the job can run again and
/// the panic is its result.
struct RunGuard {
    scheduler: Arc<Scheduler>,
    job: String,
    running: Running,
    done: bool,
}

impl RunGuard {
    fn finish(&mut self, result: Result<RunReport, String>) {
        self.done = true;
        self.scheduler.finished(&self.job, self.running, result);
    }
}

impl Drop for RunGuard {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        // Dropped half-way: by a panic, or with its task when a stopping service abandons
        // the runs still going at its deadline.
        let why = if std::thread::panicking() {
            tracing::error!(job = %self.job, "a run panicked");
            "the run panicked"
        } else {
            "the run was abandoned: the service stopped before it ended"
        };
        self.scheduler
            .finished(&self.job, self.running, Err(why.to_string()));
    }
}

/// The latest tick of `schedule` at or before `now`, starting from `tick` (which is due):
/// a loop that wakes late runs once, as of the newest tick it missed, not once per tick.
/// Steps over at most [`MAX_CATCH_UP_STEPS`] ticks.
pub fn latest_due(schedule: &Schedule, tick: RunTime, now: DateTime<Utc>) -> RunTime {
    let mut latest = tick;
    for _ in 0..MAX_CATCH_UP_STEPS {
        match schedule.next_after(latest) {
            Some(next) if next <= now => latest = next,
            _ => break,
        }
    }
    latest
}

/// The message of a task's panic.
fn panic_text(error: tokio::task::JoinError) -> String {
    if error.is_cancelled() {
        return "its task was cancelled".to_string();
    }
    let payload = error.into_panic();
    let text = payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic".to_string());
    format!("panicked: {text}")
}

#[cfg(test)]
#[path = "scheduler_tests.rs"]
mod tests;
