//! The scheduling logic on a manual clock with an in-memory executor: which runs start, as of
//! which time, what is skipped, and how shutdown waits.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use chrono::TimeZone;
use tokio::sync::{mpsc, Semaphore};

use super::*;
use crate::serve::config::Config;

/// How long a test waits (real time) for the scheduler's tasks to react.
const REACT: Duration = Duration::from_secs(5);

/// A clock the test moves by hand; sleepers wake when it reaches their time.
struct ManualClock {
    now: watch::Sender<DateTime<Utc>>,
}

impl ManualClock {
    fn new(start: DateTime<Utc>) -> Arc<Self> {
        Arc::new(Self {
            now: watch::Sender::new(start),
        })
    }

    fn set(&self, t: DateTime<Utc>) {
        self.now.send_replace(t);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        *self.now.borrow()
    }

    fn sleep_until(&self, at: DateTime<Utc>) -> BoxFuture<'static, ()> {
        let mut now = self.now.subscribe();
        async move {
            let _ = now.wait_for(|t| *t >= at).await;
        }
        .boxed()
    }
}

/// An executor that reports each run it starts and ends a run of a job only when the test
/// grants that job a permit (or at once, given enough permits).
struct FakeExecutor {
    started: mpsc::UnboundedSender<(String, RunTime)>,
    /// Each job's permits, made with `initial` permits on first use.
    permits: Mutex<BTreeMap<String, Arc<Semaphore>>>,
    initial: usize,
    cancelled: AtomicBool,
    /// Job names whose runs panic.
    panics: Vec<String>,
}

impl FakeExecutor {
    fn new(permits: usize) -> (Arc<Self>, mpsc::UnboundedReceiver<(String, RunTime)>) {
        Self::with_panics(permits, Vec::new())
    }

    fn with_panics(
        permits: usize,
        panics: Vec<String>,
    ) -> (Arc<Self>, mpsc::UnboundedReceiver<(String, RunTime)>) {
        let (started, rx) = mpsc::unbounded_channel();
        let executor = Arc::new(Self {
            started,
            permits: Mutex::new(BTreeMap::new()),
            initial: permits,
            cancelled: AtomicBool::new(false),
            panics,
        });
        (executor, rx)
    }

    fn permits(&self, job: &str) -> Arc<Semaphore> {
        Arc::clone(
            lock(&self.permits)
                .entry(job.to_string())
                .or_insert_with(|| Arc::new(Semaphore::new(self.initial))),
        )
    }

    /// Lets `n` more runs of `job` end.
    fn release(&self, job: &str, n: usize) {
        self.permits(job).add_permits(n);
    }
}

impl Execute for FakeExecutor {
    fn run<'a>(&'a self, job: &'a Job, at: RunTime) -> BoxFuture<'a, Result<RunReport, RunError>> {
        async move {
            let _ = self.started.send((job.name.clone(), at));
            if self.panics.contains(&job.name) {
                panic!("the executor of {} panics", job.name);
            }
            self.permits(&job.name).acquire().await.unwrap().forget();
            Ok(RunReport {
                job: job.name.clone(),
                time: at.to_rfc3339(),
                images: Vec::new(),
            })
        }
        .boxed()
    }

    fn cancel(&self) {
        self.cancelled.store(true, Ordering::SeqCst);
    }
}

/// Snapshot jobs named `(name, schedule)`, in zone `tz`.
fn jobs(tz: &str, list: &[(&str, &str)]) -> Vec<Job> {
    let mut text = format!("time-zone = \"{tz}\"\n[locks]\npool = \"rbd\"\n");
    for (name, schedule) in list {
        text.push_str(&format!(
            "[[jobs]]\nname = \"{name}\"\nkind = \"snapshot\"\nschedule = \"{schedule}\"\n\
             images = [\"rbd:rbd/a\"]\n"
        ));
    }
    Config::parse(&text, "test.toml").unwrap().jobs
}

/// 10:00:00 UTC plus `seconds`.
fn t(seconds: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 12, 6, 10, 0, 0).unwrap() + chrono::TimeDelta::seconds(seconds)
}

/// A scheduler of `jobs` on a manual clock at `start`, already running.
fn start(
    jobs: Vec<Job>,
    executor: Arc<FakeExecutor>,
    start: DateTime<Utc>,
) -> (Arc<Scheduler>, Arc<ManualClock>, Arc<Metrics>) {
    let clock = ManualClock::new(start);
    let metrics = Arc::new(Metrics::new(std::iter::empty::<(&str, &str)>()));
    let scheduler = Scheduler::new(jobs, executor, clock.clone(), metrics.clone());
    tokio::spawn(Arc::clone(&scheduler).run());
    (scheduler, clock, metrics)
}

/// Waits (real time) until `condition` holds.
async fn until(what: &str, mut condition: impl FnMut() -> bool) {
    let started = Instant::now();
    while !condition() {
        assert!(started.elapsed() < REACT, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// The next run the executor starts.
async fn next_start(rx: &mut mpsc::UnboundedReceiver<(String, RunTime)>) -> (String, RunTime) {
    tokio::time::timeout(REACT, rx.recv())
        .await
        .expect("a run starts")
        .expect("the executor lives")
}

/// Waits until the loop of `job` waits for `tick`.
async fn waits_for(scheduler: &Scheduler, job: &str, tick: DateTime<Utc>) {
    until(&format!("{job} waits for {tick}"), || {
        scheduler.status(job).unwrap().next_run == Some(tick)
    })
    .await;
}

/// Waits until no run of `job` is going.
async fn idle(scheduler: &Scheduler, job: &str) {
    until(&format!("{job} is idle"), || {
        scheduler.status(job).unwrap().running.is_none()
    })
    .await;
}

#[tokio::test]
async fn each_run_is_as_of_its_scheduled_tick_not_the_time_the_loop_woke() {
    let (executor, mut started) = FakeExecutor::new(100);
    let (scheduler, clock, _) = start(jobs("UTC", &[("snaps", "*/5 * * * * *")]), executor, t(1));
    waits_for(&scheduler, "snaps", t(5)).await;
    // The loop wakes a little after the tick: the run is still as of the tick.
    clock.set(t(5) + chrono::TimeDelta::milliseconds(700));
    assert_eq!(next_start(&mut started).await, ("snaps".to_string(), t(5)));
    waits_for(&scheduler, "snaps", t(10)).await;
    clock.set(t(10));
    assert_eq!(next_start(&mut started).await.1, t(10));
    idle(&scheduler, "snaps").await;
    let status = scheduler.status("snaps").unwrap();
    let last = status.last.unwrap();
    assert_eq!(last.run.at, t(10));
    assert_eq!(last.run.trigger, Trigger::Schedule);
    assert_eq!(last.result.as_ref().unwrap().time, t(10).to_rfc3339());
}

#[test]
fn each_images_last_run_is_this_instances_last_work_on_it() {
    let mut status = JobStatus::default();
    let run = |at| Running {
        at,
        started: at,
        trigger: Trigger::Schedule,
    };
    record_images(
        &mut status,
        run(t(0)),
        t(1),
        &[
            ("rbd/a", ImageOutcome::Success, None),
            ("rbd/b", ImageOutcome::Failed, Some("it broke")),
            ("rbd/c", ImageOutcome::SkippedLocked, None),
        ],
    );
    assert_eq!(status.images, ["rbd/a", "rbd/b", "rbd/c"]);
    assert_eq!(status.last_by_image["rbd/a"].result, RunResult::Success);
    assert_eq!(status.last_by_image["rbd/a"].error, None);
    assert_eq!(status.last_by_image["rbd/b"].result, RunResult::Failure);
    assert_eq!(
        status.last_by_image["rbd/b"].error.as_deref(),
        Some("it broke")
    );
    assert!(!status.last_by_image.contains_key("rbd/c"));
    // The next run: a is done elsewhere (keeps its entry), b cancelled, c works here.
    record_images(
        &mut status,
        run(t(5)),
        t(6),
        &[
            ("rbd/a", ImageOutcome::DoneElsewhere, None),
            ("rbd/b", ImageOutcome::Cancelled, None),
            ("rbd/c", ImageOutcome::Success, None),
        ],
    );
    assert_eq!(status.last_by_image["rbd/a"].finished, t(1));
    assert_eq!(status.last_by_image["rbd/b"].finished, t(6));
    assert!(status.last_by_image["rbd/b"]
        .error
        .as_deref()
        .unwrap()
        .contains("cancelled"));
    assert_eq!(status.last_by_image["rbd/c"].result, RunResult::Success);
    // A job that cannot run at all fails every image it has.
    let failed: Result<RunReport, String> = Err("cannot list pool rbd".to_string());
    record(&mut status, run(t(10)), t(11), &failed);
    for image in ["rbd/a", "rbd/b", "rbd/c"] {
        assert_eq!(status.last_by_image[image].result, RunResult::Failure);
        assert_eq!(
            status.last_by_image[image].error.as_deref(),
            Some("cannot list pool rbd")
        );
    }
}

#[tokio::test]
async fn a_tick_during_a_run_is_skipped_and_counted_and_missed_ticks_are_not_replayed() {
    // No permit: the first run lasts until the test ends it.
    let (executor, mut started) = FakeExecutor::new(0);
    let (scheduler, clock, metrics) = start(
        jobs("UTC", &[("snaps", "*/5 * * * * *")]),
        executor.clone(),
        t(1),
    );
    waits_for(&scheduler, "snaps", t(5)).await;
    clock.set(t(5));
    assert_eq!(next_start(&mut started).await.1, t(5));
    for (tick, skipped) in [(10, 1), (15, 2)] {
        waits_for(&scheduler, "snaps", t(tick)).await;
        clock.set(t(tick));
        until("the tick is skipped", || {
            scheduler.status("snaps").unwrap().ticks_skipped == skipped
        })
        .await;
    }
    let scrape = metrics.render();
    assert!(
        scrape.contains("diskferry_runs_skipped_overlap_total{job=\"snaps\"} 2"),
        "{scrape}"
    );
    // The long run ends at 10:00:17: nothing runs until the next tick, which runs once.
    clock.set(t(17));
    executor.release("snaps", 100);
    idle(&scheduler, "snaps").await;
    waits_for(&scheduler, "snaps", t(20)).await;
    assert!(started.try_recv().is_err(), "a missed tick was replayed");
    clock.set(t(20));
    assert_eq!(next_start(&mut started).await.1, t(20));
    idle(&scheduler, "snaps").await;
    assert!(started.try_recv().is_err());
}

#[tokio::test]
async fn a_loop_that_wakes_late_runs_once_as_of_the_latest_tick_that_passed() {
    let (executor, mut started) = FakeExecutor::new(100);
    let (scheduler, clock, _) = start(jobs("UTC", &[("snaps", "*/5 * * * * *")]), executor, t(1));
    waits_for(&scheduler, "snaps", t(5)).await;
    // Asleep from 10:00:01 to 10:00:33 (a suspended machine): ticks :05 to :30 passed.
    clock.set(t(33));
    assert_eq!(next_start(&mut started).await.1, t(30));
    waits_for(&scheduler, "snaps", t(35)).await;
    idle(&scheduler, "snaps").await;
    assert!(started.try_recv().is_err(), "missed ticks were replayed");
    assert_eq!(scheduler.status("snaps").unwrap().ticks_skipped, 0);
}

#[test]
fn latest_due_steps_over_the_ticks_that_passed() {
    let schedule = &jobs("UTC", &[("j", "*/5 * * * * *")])[0].schedule;
    assert_eq!(latest_due(schedule, t(5), t(5)), t(5));
    assert_eq!(latest_due(schedule, t(5), t(9)), t(5));
    assert_eq!(latest_due(schedule, t(5), t(10)), t(10));
    assert_eq!(latest_due(schedule, t(5), t(34)), t(30));
}

#[tokio::test]
async fn jobs_are_independent_a_long_run_of_one_delays_no_other() {
    let (executor, mut started) = FakeExecutor::new(0);
    let (scheduler, clock, _) = start(
        jobs(
            "UTC",
            &[("slow", "*/5 * * * * *"), ("fast", "*/2 * * * * *")],
        ),
        executor.clone(),
        t(1),
    );
    executor.release("fast", 100);
    waits_for(&scheduler, "slow", t(5)).await;
    // slow starts at :05 and does not end; fast runs at each of its ticks meanwhile.
    for tick in [2, 4, 6, 8, 10, 12] {
        waits_for(&scheduler, "fast", t(tick)).await;
        clock.set(t(tick));
        let mut expected = vec![("fast".to_string(), t(tick))];
        if tick == 6 {
            expected.push(("slow".to_string(), t(5)));
        }
        if tick == 10 {
            until("slow skips :10", || {
                scheduler.status("slow").unwrap().ticks_skipped == 1
            })
            .await;
        }
        let mut got = Vec::new();
        for _ in 0..expected.len() {
            got.push(next_start(&mut started).await);
        }
        got.sort();
        expected.sort();
        assert_eq!(got, expected, "at :{tick}");
        idle(&scheduler, "fast").await;
    }
    assert_eq!(scheduler.status("fast").unwrap().ticks_skipped, 0);
    assert!(scheduler.status("slow").unwrap().running.is_some());
}

#[tokio::test]
async fn a_fixed_time_job_runs_at_its_wall_clock_time_in_its_zone() {
    let (executor, mut started) = FakeExecutor::new(100);
    // 02:00 in Berlin on 2026-12-07 is 01:00 UTC (winter time).
    let (scheduler, clock, _) = start(
        jobs("Europe/Berlin", &[("nightly", "0 2 * * *")]),
        executor,
        t(0),
    );
    let tick = Utc.with_ymd_and_hms(2026, 12, 7, 1, 0, 0).unwrap();
    waits_for(&scheduler, "nightly", tick).await;
    clock.set(tick);
    assert_eq!(next_start(&mut started).await.1, tick);
}

#[tokio::test]
async fn run_now_runs_as_of_the_clocks_second_and_is_refused_while_the_job_runs() {
    let (executor, mut started) = FakeExecutor::new(0);
    let (scheduler, _clock, _) = start(
        jobs("UTC", &[("snaps", "0 2 * * *")]),
        executor.clone(),
        t(1) + chrono::TimeDelta::milliseconds(400),
    );
    assert_eq!(scheduler.run_now("nope"), Err(StartRefused::UnknownJob));
    assert_eq!(scheduler.run_now("snaps"), Ok(t(1)));
    assert_eq!(next_start(&mut started).await, ("snaps".to_string(), t(1)));
    assert_eq!(scheduler.run_now("snaps"), Err(StartRefused::Running));
    let running = scheduler.status("snaps").unwrap().running.unwrap();
    assert_eq!(running.trigger, Trigger::Manual);
    executor.release("snaps", 1);
    idle(&scheduler, "snaps").await;
    assert_eq!(
        scheduler.status("snaps").unwrap().last.unwrap().run.at,
        t(1)
    );
}

#[tokio::test]
async fn a_panicking_run_is_recorded_as_failed_and_the_job_runs_again() {
    let (executor, mut started) = FakeExecutor::with_panics(100, vec!["snaps".to_string()]);
    let (scheduler, clock, metrics) =
        start(jobs("UTC", &[("snaps", "*/5 * * * * *")]), executor, t(1));
    scheduler.set_images("snaps", vec!["rbd/a".to_string()]);
    waits_for(&scheduler, "snaps", t(5)).await;
    clock.set(t(5));
    next_start(&mut started).await;
    idle(&scheduler, "snaps").await;
    let status = scheduler.status("snaps").unwrap();
    assert_eq!(
        status.last.unwrap().result.as_ref().unwrap_err(),
        "the run panicked"
    );
    assert_eq!(status.last_by_image["rbd/a"].result, RunResult::Failure);
    assert_eq!(
        status.last_by_image["rbd/a"].error.as_deref(),
        Some("the run panicked")
    );
    // Counted as a failure of each image, for the failure alert.
    assert!(
        metrics
            .render()
            .contains("diskferry_runs_total{job=\"snaps\",result=\"failure\"} 1\n"),
        "{}",
        metrics.render()
    );
    assert_eq!(scheduler.runs_in_progress(), 0);
    assert!(
        scheduler.health().is_ok(),
        "a run's panic is not the loop's"
    );
    waits_for(&scheduler, "snaps", t(10)).await;
    clock.set(t(10));
    assert_eq!(next_start(&mut started).await.1, t(10));
}

#[tokio::test]
async fn shutdown_stops_the_loops_cancels_and_waits_for_runs_up_to_its_deadline() {
    let (executor, mut started) = FakeExecutor::new(0);
    let (scheduler, clock, _) = start(
        jobs("UTC", &[("snaps", "*/5 * * * * *")]),
        executor.clone(),
        t(1),
    );
    waits_for(&scheduler, "snaps", t(5)).await;
    clock.set(t(5));
    next_start(&mut started).await;
    // The run does not end: the deadline passes with it still going.
    let still = scheduler.shutdown(Duration::from_millis(50)).await;
    assert_eq!(still, 1);
    assert!(executor.cancelled.load(Ordering::SeqCst));
    assert_eq!(scheduler.run_now("snaps"), Err(StartRefused::Stopping));
    until("the loop stopped", || {
        scheduler.status("snaps").unwrap().next_run.is_none()
    })
    .await;
    // No tick starts anything any more.
    clock.set(t(30));
    executor.release("snaps", 1);
    assert_eq!(scheduler.shutdown(REACT).await, 0);
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert!(started.try_recv().is_err());
    assert!(scheduler.health().is_ok());
}

/// A clock whose sleeps panic: the loop that sleeps on it dies.
struct BrokenClock;

impl Clock for BrokenClock {
    fn now(&self) -> DateTime<Utc> {
        t(0)
    }

    fn sleep_until(&self, _at: DateTime<Utc>) -> BoxFuture<'static, ()> {
        async { panic!("the clock broke") }.boxed()
    }
}

#[tokio::test]
async fn a_dead_loop_makes_the_scheduler_unhealthy() {
    let (executor, _started) = FakeExecutor::new(0);
    let metrics = Arc::new(Metrics::new(std::iter::empty::<(&str, &str)>()));
    let scheduler = Scheduler::new(
        jobs("UTC", &[("snaps", "*/5 * * * * *")]),
        executor,
        Arc::new(BrokenClock),
        metrics,
    );
    Arc::clone(&scheduler).run().await;
    let reason = scheduler.health().unwrap_err();
    assert!(
        reason.contains("job snaps") && reason.contains("the clock broke"),
        "{reason}"
    );
}
