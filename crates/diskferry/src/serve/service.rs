//! The service behind `diskferry serve`: the scheduler, the runner and the HTTP API put
//! together, and the [`JobControl`] the API asks.
//!
//! Each run, and the start-up work on the cluster, happens in a worker process
//! ([`crate::serve::worker`]), so the service itself never loads Ceph's libraries and a run
//! that crashes fails alone ([`Daemon::start_with`] takes any other [`Execute`]).
//!
//! [`Daemon::start`] prepares everything before the first tick:
//! 1. the metrics, with every job's series at 0;
//! 2. the leftovers of runs of this host that were killed (temporary snapshots, working
//!    images) removed from every image of every job, by [`crate::ops::cleanup`] with
//!    [`CleanupOptions::proven_only`]: only what a writer that provably no longer runs left
//!    (what export and Longhorn runs left in their targets, the next run of the op removes
//!    first);
//! 3. the last-success gauge of every (job, image), read back from the snapshots each job has
//!    stored ([`rebuild_last_success`]): no database, a restart forgets nothing alerts need;
//! 4. the HTTP API on `http.listen` (`/healthz`, `/metrics`, `/jobs`, `POST /jobs/NAME/run`),
//!    with the token of `http.token-file` (none configured: only `/healthz` and `/metrics`).
//!
//! [`Daemon::run`] then serves and schedules until its stop token fires (SIGTERM or SIGINT in
//! the CLI), and stops in this order: no new run starts (ticks and `POST …/run` are
//! refused), the runs in progress are asked to stop, and they are waited for at most the
//! stop deadline ([`DEFAULT_STOP_DEADLINE`]). A run that ends releases its locks; one still
//! going when the deadline passes is abandoned with the process (its worker is killed), and
//! its locks lapse after their lease.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::ops::cleanup::{cleanup, CleanupOptions, Scope};
use crate::serve::config::Config;
use crate::serve::http::{
    ApiToken, HttpError, HttpLimits, HttpServer, ImageView, InFlight, JobControl, JobView,
    JobsView, RunNow,
};
use crate::serve::metrics::Metrics;
use crate::serve::runner::{
    image_label, rebuild_last_success, resolve_images, unit_labels, RunTime, Runner,
};
use crate::serve::scheduler::{Clock, Execute, Scheduler, StartRefused, SystemClock};
use crate::serve::worker::{WorkerCommand, Workers};

/// How long a stopping service waits for its runs in progress, by default: less than the 30 s
/// a Kubernetes pod (and systemd, with its 90 s) grants between SIGTERM and SIGKILL, so the
/// service exits by itself.
pub const DEFAULT_STOP_DEADLINE: Duration = Duration::from_secs(25);

/// The [`JobControl`] of the HTTP API: the scheduler's state, the metrics' progress.
#[derive(Debug)]
pub struct Service {
    scheduler: Arc<Scheduler>,
    metrics: Arc<Metrics>,
}

impl Service {
    /// The control surface over `scheduler`, reading progress and last-success times from
    /// `metrics` (those the runner updates).
    pub fn new(scheduler: Arc<Scheduler>, metrics: Arc<Metrics>) -> Self {
        Self { scheduler, metrics }
    }

    /// The view of one job.
    fn job_view(&self, job: &crate::serve::config::Job, now: DateTime<Utc>) -> JobView {
        let status = self.scheduler.status(&job.name).unwrap_or_default();
        // Before its loop first runs, the next tick is the schedule's.
        let next_run = status.next_run.or_else(|| {
            (!self.scheduler.stopping())
                .then(|| job.schedule.next_after(now))
                .flatten()
        });
        let images = status
            .images
            .iter()
            .map(|image| ImageView {
                image: image.clone(),
                last_run: status.last_by_image.get(image).cloned(),
                last_success: self
                    .metrics
                    .last_success_seconds(&job.name, image)
                    .and_then(from_unix_seconds),
                in_flight: status.running.and_then(|running| {
                    self.metrics
                        .in_flight_progress(&job.name, image)
                        .map(|progress| InFlight {
                            started: running.started,
                            progress,
                        })
                }),
            })
            .collect();
        JobView {
            name: job.name.clone(),
            kind: job.kind().name().to_string(),
            schedule: job.schedule.to_string(),
            next_run,
            images,
        }
    }
}

/// A gauge's seconds as a time, to the second.
fn from_unix_seconds(seconds: f64) -> Option<DateTime<Utc>> {
    // Whole seconds: the gauge holds snapshot times (seconds) or the clock's (sub-second).
    DateTime::<Utc>::from_timestamp(seconds.floor() as i64, 0)
}

impl JobControl for Service {
    fn jobs(&self) -> JobsView {
        let now = self.scheduler.now();
        JobsView {
            jobs: self
                .scheduler
                .jobs()
                .map(|job| self.job_view(job, now))
                .collect(),
        }
    }

    fn run_now(&self, job: &str) -> RunNow {
        match self.scheduler.run_now(job) {
            Ok(_) => RunNow::Started,
            Err(StartRefused::UnknownJob) => RunNow::UnknownJob,
            Err(StartRefused::Running) => RunNow::AlreadyRunning,
            Err(StartRefused::Stopping) => RunNow::Stopping,
        }
    }

    fn health(&self) -> Result<(), String> {
        self.scheduler.health()
    }
}

/// How `diskferry serve` runs: the stop deadline and the HTTP bounds.
#[derive(Debug, Clone, Copy)]
pub struct DaemonOptions {
    /// How long a stop waits for the runs in progress.
    pub stop_deadline: Duration,
    /// The HTTP server's bounds.
    pub http: HttpLimits,
}

impl Default for DaemonOptions {
    fn default() -> Self {
        Self {
            stop_deadline: DEFAULT_STOP_DEADLINE,
            http: HttpLimits::default(),
        }
    }
}

/// Why the service could not start.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// The HTTP API could not start (token file, address).
    #[error(transparent)]
    Http(#[from] HttpError),
}

/// What start-up found, for the log.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Startup {
    /// Per job: how many images it has now and how many had a last success on record.
    pub jobs: Vec<JobStartup>,
    /// Problems that did not stop the start (a job's images cannot be listed now: its runs
    /// will say why).
    pub warnings: Vec<String>,
}

/// One job at start-up.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobStartup {
    /// The job.
    pub name: String,
    /// Its images now (`POOL/IMAGE`).
    pub images: usize,
    /// Those with a last success read back from storage.
    pub restored: usize,
    /// Leftovers of killed runs removed from its images.
    pub cleaned: usize,
    /// Its first tick.
    pub next_run: Option<RunTime>,
    /// Its units (`POOL/IMAGE`, or VM names) as they were found, `None` when they could not
    /// be listed; the service hands them to the scheduler (and takes them out).
    pub labels: Option<Vec<String>>,
}

impl JobStartup {
    /// `job` as the start-up work finds it before looking (and leaves it when it cannot).
    fn not_prepared(job: &crate::serve::config::Job) -> Self {
        Self {
            name: job.name.clone(),
            images: 0,
            restored: 0,
            cleaned: 0,
            next_run: None,
            labels: None,
        }
    }
}

/// `diskferry serve`: bound, prepared, ready to [`Daemon::run`].
#[derive(Debug)]
pub struct Daemon {
    scheduler: Arc<Scheduler>,
    http: HttpServer,
    stop_deadline: Duration,
    startup: Startup,
}

/// How a stopped service ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stopped {
    /// Runs still going when the stop deadline passed (0: every run ended and released its
    /// locks).
    pub abandoned: usize,
}

impl Daemon {
    /// Prepares the service of `config` (module documentation: metrics, last-success times,
    /// HTTP), its runs and start-up work in worker processes of `workers`. Nothing is
    /// scheduled before [`Daemon::run`].
    pub async fn start(
        config: &Config,
        options: DaemonOptions,
        workers: WorkerCommand,
    ) -> Result<Self, DaemonError> {
        // Read first: a bad token file fails the start before anything else is done.
        let token = match &config.http.token_file {
            Some(path) => ApiToken::from_file(path)?,
            None => ApiToken::none(),
        };
        let metrics = Arc::new(Metrics::new(std::iter::empty::<(&str, &str)>()));
        let workers = Arc::new(Workers::new(workers, Arc::clone(&metrics)));
        let startup = workers.prepare().await;
        Self::start_with(
            config,
            options,
            token,
            (workers, startup),
            metrics,
            Arc::new(SystemClock),
        )
        .await
    }

    /// [`Daemon::start`] with the API's `token`, the runs' executor and what the start-up work
    /// found (`prepared`), the metrics it updated, and `clock`.
    pub async fn start_with(
        config: &Config,
        options: DaemonOptions,
        token: ApiToken,
        prepared: (Arc<dyn Execute>, Startup),
        metrics: Arc<Metrics>,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, DaemonError> {
        let (executor, mut startup) = prepared;
        if startup.jobs.len() != config.jobs.len() {
            // The start-up work failed as a whole: each job as not looked at.
            startup.jobs = config.jobs.iter().map(JobStartup::not_prepared).collect();
        }
        let scheduler = Scheduler::new(
            config.jobs.iter().cloned(),
            executor,
            clock,
            Arc::clone(&metrics),
        );
        let now = scheduler.now();
        for (found, job) in startup.jobs.iter_mut().zip(&config.jobs) {
            found.next_run = job.schedule.next_after(now);
            if let Some(labels) = found.labels.take() {
                scheduler.set_images(&job.name, labels);
            }
        }
        let control = Arc::new(Service::new(Arc::clone(&scheduler), Arc::clone(&metrics)));
        let http = HttpServer::bind(
            config.http.listen,
            metrics,
            control as Arc<dyn JobControl>,
            token,
            options.http,
        )
        .await?;
        Ok(Self {
            scheduler,
            http,
            stop_deadline: options.stop_deadline,
            startup,
        })
    }

    /// Where the HTTP API listens.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.http.local_addr()
    }

    /// What start-up found.
    pub fn startup(&self) -> &Startup {
        &self.startup
    }

    /// The scheduler (its state, manual runs).
    pub fn scheduler(&self) -> &Arc<Scheduler> {
        &self.scheduler
    }

    /// Serves and schedules until `stop` fires, then stops (module documentation).
    pub async fn run(self, stop: CancellationToken) -> Stopped {
        let Self {
            scheduler,
            http,
            stop_deadline,
            ..
        } = self;
        let http_stop = CancellationToken::new();
        let http_task = tokio::spawn(http.run(http_stop.clone()));
        let loops = tokio::spawn(Arc::clone(&scheduler).run());
        stop.cancelled().await;
        tracing::info!(
            runs = scheduler.runs_in_progress(),
            deadline_seconds = stop_deadline.as_secs_f64(),
            "stopping: no new run starts; waiting for the runs in progress"
        );
        // The HTTP API stops beside the runs (its own grace is shorter than the deadline).
        http_stop.cancel();
        let abandoned = scheduler.shutdown(stop_deadline).await;
        let _ = loops.await;
        let _ = http_task.await;
        if abandoned > 0 {
            tracing::warn!(
                runs = abandoned,
                "runs still going after the stop deadline are abandoned: their locks lapse after the lease"
            );
        }
        Stopped { abandoned }
    }
}

/// The start-up work on the cluster, for every job of `config` in order (module
/// documentation, steps 2 and 3): removes the leftovers of killed runs from its images,
/// resolves its units (their labels in [`JobStartup::labels`]) and reads each unit's last
/// success back into `runner`'s metrics. What fails is a warning: the job's runs say why.
pub async fn prepare(config: &Config, runner: &Runner) -> Startup {
    let ctx = &runner.ctx;
    let metrics = &runner.metrics;
    let mut startup = Startup::default();
    for job in &config.jobs {
        // Its next run is the service's to say, by its clock.
        let mut found = JobStartup::not_prepared(job);
        match resolve_images(ctx, job).await {
            Ok(images) => {
                for image in &images {
                    let scope = Scope::RbdImage {
                        pool: image.pool.clone(),
                        image: image.image.clone(),
                    };
                    match cleanup(ctx, &scope, &CleanupOptions::proven_only()).await {
                        Ok(report) => {
                            found.cleaned += report.removed();
                            startup
                                .warnings
                                .extend(report.items.iter().filter_map(|item| {
                                    item.error.as_ref().map(|e| {
                                        format!(
                                            "job {}: cannot remove the leftover {}: {e}",
                                            job.name, item.location
                                        )
                                    })
                                }));
                        }
                        Err(e) => startup.warnings.push(format!(
                            "job {}: cannot clean up after killed runs on {scope}: {e}",
                            job.name
                        )),
                    }
                }
                // Units as reports and metrics name them: a VM job's units are its VMs.
                let labels: Vec<String> = match unit_labels(ctx, job).await {
                    Ok(labels) => labels,
                    Err(_) => images.iter().map(image_label).collect(),
                };
                found.images = labels.len();
                found.labels = Some(labels);
            }
            Err(e) => startup.warnings.push(e.to_string()),
        }
        match rebuild_last_success(ctx, job, metrics).await {
            Ok(restored) => found.restored = restored,
            Err(e) => startup.warnings.push(e.to_string()),
        }
        startup.jobs.push(found);
    }
    startup
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use chrono::TimeZone;
    use futures::future::BoxFuture;
    use futures::FutureExt;
    use tokio::sync::Semaphore;

    use super::*;
    use crate::serve::config::Job;
    use crate::serve::metrics::RunResult;
    use crate::serve::runner::{RunError, RunReport};

    /// Half-way, as the double reports it.
    const HALF: f64 = 0.5;

    /// Updates the metrics of two images as the runner does: `rbd/a` succeeds, `rbd/b`
    /// fails; each run is half-way until the test lets it end.
    struct HalfWay {
        metrics: Arc<Metrics>,
        finish: Semaphore,
    }

    impl Execute for HalfWay {
        fn run<'a>(
            &'a self,
            job: &'a Job,
            at: RunTime,
        ) -> BoxFuture<'a, Result<RunReport, RunError>> {
            async move {
                for image in ["rbd/a", "rbd/b"] {
                    self.metrics.run_started(&job.name, image);
                    self.metrics.progress(&job.name, image, HALF);
                }
                self.finish.acquire().await.unwrap().forget();
                for (image, result) in
                    [("rbd/a", RunResult::Success), ("rbd/b", RunResult::Failure)]
                {
                    self.metrics.run_finished(
                        &job.name,
                        image,
                        result,
                        Duration::ZERO,
                        Default::default(),
                    );
                }
                Ok(RunReport {
                    job: job.name.clone(),
                    time: at.to_rfc3339(),
                    images: Vec::new(),
                })
            }
            .boxed()
        }
    }

    /// A clock that stands still at 2026-12-06 10:00:00 UTC.
    struct Still;

    impl Clock for Still {
        fn now(&self) -> DateTime<Utc> {
            Utc.with_ymd_and_hms(2026, 12, 6, 10, 0, 0).unwrap()
        }

        fn sleep_until(&self, _at: DateTime<Utc>) -> BoxFuture<'static, ()> {
            futures::future::pending().boxed()
        }
    }

    fn service() -> (Service, Arc<HalfWay>) {
        let text = "time-zone = \"UTC\"\n[locks]\npool = \"rbd\"\n\
                    [[jobs]]\nname = \"snaps\"\nkind = \"snapshot\"\nschedule = \"0 2 * * *\"\n\
                    images = [\"rbd:rbd/a\", \"rbd:rbd/b\"]\n";
        let config = Config::parse(text, "test.toml").unwrap();
        let metrics = Arc::new(Metrics::new([("snaps", "rbd/a"), ("snaps", "rbd/b")]));
        let executor = Arc::new(HalfWay {
            metrics: Arc::clone(&metrics),
            finish: Semaphore::new(0),
        });
        let scheduler = Scheduler::new(
            config.jobs,
            Arc::clone(&executor) as Arc<dyn Execute>,
            Arc::new(Still),
            Arc::clone(&metrics),
        );
        scheduler.set_images("snaps", vec!["rbd/a".to_string(), "rbd/b".to_string()]);
        // A success on record from before the start.
        metrics.set_last_success("snaps", "rbd/a", 1_765_000_000.0);
        (Service::new(scheduler, metrics), executor)
    }

    #[tokio::test]
    async fn jobs_shows_each_image_with_its_last_success_in_flight_progress_and_the_next_run() {
        let (service, executor) = service();
        let view = service.jobs();
        let job = &view.jobs[0];
        assert_eq!(job.name, "snaps");
        assert_eq!(job.kind, "snapshot");
        assert_eq!(job.schedule, "0 2 * * * (UTC)");
        assert_eq!(
            job.next_run,
            Some(Utc.with_ymd_and_hms(2026, 12, 7, 2, 0, 0).unwrap())
        );
        let images: Vec<&str> = job.images.iter().map(|i| i.image.as_str()).collect();
        assert_eq!(images, ["rbd/a", "rbd/b"]);
        assert_eq!(
            job.images[0].last_success.map(|t| t.timestamp()),
            Some(1_765_000_000)
        );
        assert_eq!(job.images[1].last_success, None);
        assert!(job
            .images
            .iter()
            .all(|i| i.last_run.is_none() && i.in_flight.is_none()));

        assert_eq!(service.run_now("snaps"), RunNow::Started);
        let started = Instant::now();
        while service.jobs().jobs[0].images[1].in_flight.is_none() {
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "no progress shown"
            );
            tokio::task::yield_now().await;
        }
        assert_eq!(service.run_now("snaps"), RunNow::AlreadyRunning);
        assert_eq!(service.run_now("other"), RunNow::UnknownJob);
        let view = service.jobs();
        let in_flight = view.jobs[0].images[0].in_flight.as_ref().unwrap();
        assert_eq!(in_flight.progress, HALF);
        assert_eq!(in_flight.started, Still.now());

        executor.finish.add_permits(1);
        while service.scheduler.runs_in_progress() > 0 {
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "the run does not end"
            );
            tokio::task::yield_now().await;
        }
        // The double's report names no image (the runner's names each): set them again.
        service
            .scheduler
            .set_images("snaps", vec!["rbd/a".to_string(), "rbd/b".to_string()]);
        let view = service.jobs();
        let [a, b] = &view.jobs[0].images[..] else {
            panic!("two images")
        };
        assert!(a.in_flight.is_none() && b.in_flight.is_none());
        // The success just now is newer than the one on record; b has still none.
        assert!(a.last_success.unwrap().timestamp() > 1_765_000_000);
        assert_eq!(b.last_success, None);
        assert!(service.health().is_ok());
    }

    #[tokio::test]
    async fn a_stopping_service_starts_no_run_and_shows_no_next_run() {
        let (service, _executor) = service();
        assert_eq!(service.scheduler.shutdown(Duration::ZERO).await, 0);
        assert_eq!(service.run_now("snaps"), RunNow::Stopping);
        assert_eq!(service.jobs().jobs[0].next_run, None);
    }

    #[test]
    fn gauge_seconds_are_shown_to_the_second() {
        assert_eq!(
            from_unix_seconds(1_765_000_000.7).map(|t| t.timestamp()),
            Some(1_765_000_000)
        );
    }
}
