//! One run of a `diskferry serve` snapshot job ([`Runner::run_job`]) on the live cluster, on a
//! fixed clock: retention over successive runs never touches a snapshot the job did not
//! make, hooks run pre → snapshot → post (post also after a failed snapshot, nothing after a
//! failed pre, a hook killed at its timeout), and an image whose lock another instance holds
//! is skipped and counted.

use std::sync::Arc;
use std::time::{Duration, Instant};

use diskferry::serve::config::{Config, Job};
use diskferry::serve::metrics::Metrics;
use diskferry::serve::runner::{
    lock_object, parse_run_time, rebuild_last_success, ImageOutcome, RunReport, RunTime, Runner,
    LOCK_NAME,
};
use diskferry_integration_tests::{ceph_conf, cluster_config, pool, unique, ImageGuard, TEST_POOL};
use rbd::{CreateOptions, Image, OpenMode};

/// Size of each test image: snapshots need no data.
const IMAGE_BYTES: u64 = 4 << 20;
/// The lock lease of the tests' runs (the configuration's minimum).
const LEASE: Duration = Duration::from_secs(5);
/// A snapshot the test makes itself: retention must never remove it.
const FOREIGN_SNAPSHOT: &str = "manual1";

/// The time of a run `hour` hours after the first, at 02:00 UTC.
fn at(hour: u32) -> RunTime {
    parse_run_time(&format!("2026-12-06T{:02}:00:00Z", 2 + hour)).unwrap()
}

/// The first run's time.
fn t0() -> RunTime {
    at(0)
}

/// Two new images, removed (with their snapshots) when the guard drops.
fn two_images(guard: &mut ImageGuard) -> [String; 2] {
    let io = pool();
    [unique("serve-a"), unique("serve-b")].map(|name| {
        let name = guard.add(name);
        rbd::create(&io, &name, IMAGE_BYTES, &CreateOptions::default()).unwrap();
        name
    })
}

/// One new image and a directory for the hooks' log.
fn image_and_log_dir(guard: &mut ImageGuard) -> (String, tempfile::TempDir) {
    let [image, _] = two_images(guard);
    (image, tempfile::tempdir().unwrap())
}

/// A unique job name (lowercase letters, digits and '-').
fn job_name(prefix: &str) -> String {
    unique(prefix).to_lowercase()
}

/// A configuration with one snapshot job named `job` over `images` in the test pool, with
/// `extra` TOML appended to the job (retention, hooks).
fn config(job: &str, images: &[String], extra: &str) -> Config {
    let list: Vec<String> = images
        .iter()
        .map(|i| format!("\"rbd:{TEST_POOL}/{i}\""))
        .collect();
    let text = format!(
        "time-zone = \"UTC\"\n\
         [locks]\npool = \"{TEST_POOL}\"\nlease-seconds = {}\n\
         [[jobs]]\nname = \"{job}\"\nkind = \"snapshot\"\nimages = [{}]\nconcurrency = 2\n{extra}",
        LEASE.as_secs(),
        list.join(", ")
    );
    Config::parse(&text, "test.toml").unwrap_or_else(|e| panic!("{e}\n{text}"))
}

/// A runner on the test cluster (its own connection, like another process's).
fn runner(metrics: Arc<Metrics>) -> Runner {
    Runner::new(
        diskferry_integration_tests::context(),
        metrics,
        TEST_POOL.to_string(),
        LEASE,
    )
}

/// A job under test: its configuration, a runner with its own metrics, and the cleanup of
/// its lock objects.
struct Fixture {
    config: Config,
    name: String,
    metrics: Arc<Metrics>,
    runner: Runner,
    _locks: LockObjects,
}

impl Fixture {
    /// A snapshot job named after `prefix` over `images`, with `extra` TOML in the job.
    fn new(prefix: &str, images: &[String], extra: &str) -> Self {
        let name = job_name(prefix);
        let config = config(&name, images, extra);
        let locks = LockObjects::of(config.job(&name).unwrap(), images);
        let metrics = Arc::new(Metrics::new(std::iter::empty::<(&str, &str)>()));
        Self {
            runner: runner(metrics.clone()),
            config,
            name,
            metrics,
            _locks: locks,
        }
    }

    fn job(&self) -> &Job {
        self.config.job(&self.name).unwrap()
    }

    /// Runs the job at `now`.
    async fn run(&self, now: RunTime) -> RunReport {
        self.runner.run_job(self.job(), now).await.unwrap()
    }
}

/// The names of an image's snapshots, in creation order.
fn snapshots(image: &str) -> Vec<String> {
    let image = Image::open(&pool(), image, OpenMode::ReadOnly).unwrap();
    image
        .snap_list()
        .unwrap()
        .into_iter()
        .map(|s| s.name)
        .collect()
}

/// Removes the lock objects of a job's images when dropped, even when the test panics (the
/// lock is released by the run; the empty object stays).
struct LockObjects(Vec<String>);

impl LockObjects {
    fn of(job: &Job, images: &[String]) -> Self {
        Self(
            images
                .iter()
                .map(|image| {
                    let spec = diskferry::RbdSpec::parse(&format!("{TEST_POOL}/{image}")).unwrap();
                    lock_object(&job.name, &spec)
                })
                .collect(),
        )
    }
}

impl Drop for LockObjects {
    fn drop(&mut self) {
        let conf = ceph_conf();
        for object in &self.0 {
            let _ = std::process::Command::new("rados")
                .args(["--conf", &conf.to_string_lossy(), "-p", TEST_POOL, "rm"])
                .arg(object)
                .output();
        }
    }
}

/// The one image report of `report` for `image`.
fn outcome<'a>(report: &'a RunReport, image: &str) -> &'a diskferry::serve::runner::ImageReport {
    report
        .images
        .iter()
        .find(|i| i.image == format!("{TEST_POOL}/{image}"))
        .unwrap_or_else(|| panic!("{image} not in {report:?}"))
}

/// A shell hook appending `script`'s output to a file, with a timeout.
fn hook(table: &str, script: &str, timeout_seconds: u64) -> String {
    let script = script.replace('\\', "\\\\").replace('"', "\\\"");
    format!(
        "[jobs.hooks.{table}]\ncommand = [\"sh\", \"-c\", \"{script}\"]\ntimeout-seconds = {timeout_seconds}\n"
    )
}

/// The value of the series `series` (name and labels, exactly as rendered).
fn metric(metrics: &Metrics, series: &str) -> f64 {
    let text = metrics.render();
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no {series} in\n{text}"))
        .parse()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn three_runs_keep_the_two_newest_and_never_a_foreign_snapshot() {
    let mut guard = ImageGuard::new(&pool());
    let images = two_images(&mut guard);
    for image in &images {
        Image::open(&pool(), image, OpenMode::ReadWrite)
            .unwrap()
            .snap_create(FOREIGN_SNAPSHOT)
            .unwrap();
    }
    let fixture = Fixture::new("keep", &images, "[jobs.retention]\nkeep-last = 2\n");
    let (job, name, metrics) = (fixture.job(), &fixture.name, &fixture.metrics);

    let times = [0, 1, 2].map(at);
    for now in times {
        let report = fixture.run(now).await;
        assert!(report.success(), "{report:?}");
        assert_eq!(report.count(ImageOutcome::Success), 2, "{report:?}");
    }
    for image in &images {
        assert_eq!(
            snapshots(image),
            [
                FOREIGN_SNAPSHOT.to_string(),
                job.snapshot_name(times[1]),
                job.snapshot_name(times[2]),
            ],
            "{image}"
        );
    }
    let created = format!("diskferry_artifacts_created_total{{job=\"{name}\",kind=\"snapshot\"}}");
    let pruned = format!("diskferry_artifacts_pruned_total{{job=\"{name}\",kind=\"snapshot\"}}");
    assert_eq!(metric(metrics, &created), 6.0);
    assert_eq!(metric(metrics, &pruned), 2.0);
    let successes = format!("diskferry_runs_total{{job=\"{name}\",result=\"success\"}}");
    assert_eq!(metric(metrics, &successes), 6.0);

    // A restarted service learns each image's last success from the snapshot names alone.
    let fresh = Metrics::new(std::iter::empty::<(&str, &str)>());
    let ctx = diskferry_integration_tests::context();
    assert_eq!(rebuild_last_success(&ctx, job, &fresh).await.unwrap(), 2);
    for image in &images {
        let gauge = format!(
            "diskferry_last_success_timestamp_seconds{{job=\"{name}\",image=\"{TEST_POOL}/{image}\"}}"
        );
        assert_eq!(metric(&fresh, &gauge), times[2].timestamp() as f64);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn hooks_run_pre_then_snapshot_then_post_and_post_after_a_failed_snapshot() {
    let mut guard = ImageGuard::new(&pool());
    let (image, dir) = image_and_log_dir(&mut guard);
    let log = dir.path().join("hooks.log");
    let conf = ceph_conf();
    // Each hook writes its name and the image's snapshots as the rbd CLI sees them then.
    let listing = |which: &str| {
        format!(
            "echo {which} >> {log}; rbd --conf {conf} snap ls {TEST_POOL}/{image} >> {log}",
            log = log.display(),
            conf = conf.display()
        )
    };
    let extra = format!(
        "{}{}",
        hook("pre", &listing("pre"), 30),
        hook("post", &listing("post"), 30)
    );
    let fixture = Fixture::new("hooks", std::slice::from_ref(&image), &extra);
    let job = fixture.job();

    let report = fixture.run(t0()).await;
    assert!(report.success(), "{report:?}");
    let text = std::fs::read_to_string(&log).unwrap();
    let snapshot = job.snapshot_name(t0());
    let (pre, post) = text.split_once("post\n").expect("post ran");
    assert!(pre.starts_with("pre\n"), "{text}");
    assert!(
        !pre.contains(&snapshot),
        "pre ran before the snapshot: {text}"
    );
    assert!(
        post.contains(&snapshot),
        "post ran after the snapshot: {text}"
    );

    // The same time again: the snapshot exists, so creating it fails; post still runs.
    std::fs::remove_file(&log).unwrap();
    let report = fixture.run(t0()).await;
    assert!(!report.success());
    let failed = outcome(&report, &image);
    assert_eq!(failed.outcome, ImageOutcome::Failed);
    assert!(
        failed.error.as_deref().unwrap().contains(&snapshot),
        "{failed:?}"
    );
    let text = std::fs::read_to_string(&log).unwrap();
    assert_eq!(text.matches("pre\n").count(), 1, "{text}");
    assert_eq!(text.matches("post\n").count(), 1, "{text}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_pre_hook_takes_no_snapshot_and_skips_post() {
    let mut guard = ImageGuard::new(&pool());
    let (image, dir) = image_and_log_dir(&mut guard);
    let log = dir.path().join("hooks.log");
    let extra = format!(
        "{}{}",
        hook("pre", &format!("echo pre >> {}; exit 3", log.display()), 30),
        hook("post", &format!("echo post >> {}", log.display()), 30)
    );
    let fixture = Fixture::new("prefail", std::slice::from_ref(&image), &extra);

    let report = fixture.run(t0()).await;
    assert!(!report.success());
    let failed = outcome(&report, &image);
    assert_eq!(failed.outcome, ImageOutcome::Failed);
    assert!(
        failed.error.as_deref().unwrap().contains("pre hook"),
        "{failed:?}"
    );
    assert_eq!(failed.snapshot, None);
    assert!(snapshots(&image).is_empty(), "{:?}", snapshots(&image));
    assert_eq!(std::fs::read_to_string(&log).unwrap(), "pre\n");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_hook_is_killed_at_its_timeout_and_fails_the_image() {
    let mut guard = ImageGuard::new(&pool());
    let [image, _] = two_images(&mut guard);
    let fixture = Fixture::new(
        "timeout",
        std::slice::from_ref(&image),
        &hook("pre", "sleep 30", 1),
    );

    let started = Instant::now();
    let report = fixture.run(t0()).await;
    let took = started.elapsed();
    assert!(took < Duration::from_secs(10), "the run took {took:?}");
    let failed = outcome(&report, &image);
    assert_eq!(failed.outcome, ImageOutcome::Failed);
    assert!(
        failed.error.as_deref().unwrap().contains("timeout"),
        "{failed:?}"
    );
    assert!(snapshots(&image).is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn an_image_locked_by_another_instance_is_skipped_and_counted() {
    let mut guard = ImageGuard::new(&pool());
    let images = two_images(&mut guard);
    let fixture = Fixture::new("locked", &images, "");
    let (job, name, metrics) = (fixture.job(), &fixture.name, &fixture.metrics);

    // Another instance: another connection, another cookie.
    let other = rados::Cluster::connect(&cluster_config()).unwrap();
    let spec = diskferry::RbdSpec::parse(&format!("{TEST_POOL}/{}", images[0])).unwrap();
    let held = other
        .ioctx(TEST_POOL)
        .unwrap()
        .lock_exclusive(
            &lock_object(name, &spec),
            LOCK_NAME,
            "other-host:1",
            "a test",
            Duration::from_secs(60),
        )
        .unwrap();

    let report = fixture.run(t0()).await;
    assert!(
        report.success(),
        "a skipped image is no failure: {report:?}"
    );
    assert_eq!(
        outcome(&report, &images[0]).outcome,
        ImageOutcome::SkippedLocked
    );
    assert_eq!(outcome(&report, &images[1]).outcome, ImageOutcome::Success);
    assert!(snapshots(&images[0]).is_empty());
    assert_eq!(snapshots(&images[1]), [job.snapshot_name(t0())]);
    let skipped = format!("diskferry_runs_skipped_locked_total{{job=\"{name}\"}}");
    assert_eq!(metric(metrics, &skipped), 1.0);

    // The run released the lock of the image it worked on.
    let worked = diskferry::RbdSpec::parse(&format!("{TEST_POOL}/{}", images[1])).unwrap();
    let info = other
        .ioctx(TEST_POOL)
        .unwrap()
        .lockers(&lock_object(name, &worked), LOCK_NAME)
        .unwrap();
    assert!(info.lockers.is_empty(), "{info:?}");
    held.unlock().unwrap();
}
