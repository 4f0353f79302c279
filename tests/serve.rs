//! One run of a `diskferry serve` snapshot job ([`Runner::run_job`]) on the live cluster, on a
//! fixed clock: retention over successive runs never touches a snapshot the job did not
//! make, hooks run pre → snapshot → post (post also after a failed snapshot, nothing after a
//! failed pre, a hook killed at its timeout), and an image whose lock another instance holds
//! is skipped and counted. Export jobs (to RGW, to a directory, a VM group) and Longhorn
//! backup jobs: retention over what they stored and their snapshots, never anything foreign;
//! incremental backups; a tick done elsewhere; cancellation mid-copy.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use diskferry::serve::config::{Config, Job};
use diskferry::serve::metrics::Metrics;
use diskferry::serve::runner::{
    lock_object, parse_run_time, prune_plans, rebuild_last_success, ImageOutcome, Kept, RunReport,
    RunTime, Runner, LOCK_NAME,
};
use diskferry::{Address, CancellationToken};
use diskferry_integration_tests::serve::LockObjects;
use diskferry_integration_tests::{
    ceph_conf, cluster_config, pattern, pool, unique, ImageGuard, TEST_POOL,
};
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

/// A configuration with one job named `job` over `images` in the test pool: `kind` is the
/// job's kind line and its settings (`kind = "snapshot"`, or an export's with its target),
/// `extra` TOML appended to the job (retention, hooks).
fn config(job: &str, kind: &str, images: &[String], extra: &str) -> Config {
    let list: Vec<String> = images
        .iter()
        .map(|i| format!("\"rbd:{TEST_POOL}/{i}\""))
        .collect();
    let text = format!(
        "time-zone = \"UTC\"\n\
         [locks]\npool = \"{TEST_POOL}\"\nlease-seconds = {}\n\
         [[jobs]]\nname = \"{job}\"\n{kind}\nimages = [{}]\nconcurrency = 2\n{extra}",
        LEASE.as_secs(),
        list.join(", ")
    );
    Config::parse(&text, "test.toml").unwrap_or_else(|e| panic!("{e}\n{text}"))
}

/// The kind line of a snapshot job.
const SNAPSHOT_KIND: &str = "kind = \"snapshot\"";

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
        Self::of_kind(prefix, SNAPSHOT_KIND, images, extra)
    }

    /// A job of `kind` (its kind line and settings) named after `prefix` over `images`.
    fn of_kind(prefix: &str, kind: &str, images: &[String], extra: &str) -> Self {
        Self::named(job_name(prefix), kind, images, extra)
    }

    /// A job named `name` of `kind` over `images`.
    fn named(name: String, kind: &str, images: &[String], extra: &str) -> Self {
        let config = config(&name, kind, images, extra);
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

/// Asserts that `image` has exactly the foreign snapshot and the job's snapshots of `times`.
fn assert_foreign_and(image: &str, job: &Job, times: &[RunTime]) {
    let mut expected = vec![FOREIGN_SNAPSHOT.to_string()];
    expected.extend(times.iter().map(|t| job.snapshot_name(*t)));
    assert_eq!(snapshots(image), expected, "{image}");
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
        assert_foreign_and(image, job, &times[1..]);
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
async fn an_idle_runner_holds_no_cluster_connection_and_the_next_run_connects_again() {
    let mut guard = ImageGuard::new(&pool());
    let images = two_images(&mut guard);
    let fixture = Fixture::new("idle", &images, "[jobs.retention]\nkeep-last = 1\n");
    for now in [at(0), at(1)] {
        let report = fixture.run(now).await;
        assert!(report.success(), "{report:?}");
        // The run's end let go of the connection: there is none left to release.
        assert!(
            !fixture.runner.ctx.release_cluster().was_connected(),
            "the runner still holds its cluster connection after the run at {now}"
        );
    }
    // The second run connected again, and its retention removed the first run's snapshot.
    for image in &images {
        assert_eq!(
            snapshots(image),
            vec![fixture.job().snapshot_name(at(1))],
            "{image}"
        );
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

    // The same time again: done (here, as if elsewhere), so no hook runs and nothing is made.
    std::fs::remove_file(&log).unwrap();
    let report = fixture.run(t0()).await;
    assert!(report.success(), "{report:?}");
    assert_eq!(
        outcome(&report, &image).outcome,
        ImageOutcome::DoneElsewhere
    );
    assert!(!log.exists(), "a hook ran for a tick done already");

    // A pre hook that takes the run's snapshot itself makes the snapshot fail: post still
    // runs.
    let name = job_name("steal");
    let next = format!("diskferry.{name}.20261206T030000Z");
    let steal = format!(
        "echo pre >> {log}; rbd --conf {conf} snap create {TEST_POOL}/{image}@{next}",
        log = log.display(),
        conf = conf.display()
    );
    let extra = format!(
        "{}{}",
        hook("pre", &steal, 30),
        hook("post", &format!("echo post >> {}", log.display()), 30)
    );
    let stealing = Fixture::named(name, SNAPSHOT_KIND, std::slice::from_ref(&image), &extra);
    assert_eq!(stealing.job().snapshot_name(at(1)), next);
    let report = stealing.run(at(1)).await;
    assert!(!report.success());
    let failed = outcome(&report, &image);
    assert_eq!(failed.outcome, ImageOutcome::Failed);
    assert!(
        failed.error.as_deref().unwrap().contains(&next),
        "{failed:?}"
    );
    let text = std::fs::read_to_string(&log).unwrap();
    assert_eq!(text, "pre\npost\n");
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

#[tokio::test(flavor = "multi_thread")]
async fn a_unit_that_fails_before_its_work_is_counted_as_a_failure() {
    let mut guard = ImageGuard::new(&pool());
    let images = two_images(&mut guard);
    let fixture = Fixture::new("nolockpool", &images, "");
    // The lock pool does not exist: every unit fails at its lock, before any work.
    let no_pool = Runner::new(
        diskferry_integration_tests::context(),
        fixture.metrics.clone(),
        format!("{}-no-such-pool", fixture.name),
        LEASE,
    );
    let report = no_pool.run_job(fixture.job(), t0()).await.unwrap();
    for image in &images {
        assert_eq!(outcome(&report, image).outcome, ImageOutcome::Failed);
        assert!(snapshots(image).is_empty());
    }
    // The failure alert is written on this counter: it must see such runs.
    let failed = format!(
        "diskferry_runs_total{{job=\"{}\",result=\"failure\"}}",
        fixture.name
    );
    assert_eq!(metric(&fixture.metrics, &failed), 2.0);
}

// ---------------------------------------------------------------------------------------------
// Export and Longhorn jobs.

/// Size of the images the export and Longhorn tests copy.
const DATA_IMAGE_BYTES: u64 = 8 << 20;
/// What each data image holds at offset 0 (the rest is a hole).
const DATA_BYTES: usize = 2 << 20;
/// A Longhorn block: what an incremental backup reads at least for one small change.
const LONGHORN_BLOCK: u64 = 2 << 20;

/// Two new images with `DATA_BYTES` of data each (different per image).
async fn two_data_images(guard: &mut ImageGuard) -> [String; 2] {
    let io = pool();
    let names = [unique("serve-x"), unique("serve-y")];
    for (seed, name) in names.iter().enumerate() {
        let name = guard.add(name.clone());
        rbd::create(&io, &name, DATA_IMAGE_BYTES, &CreateOptions::default()).unwrap();
        write(&name, 0, pattern(seed as u64 + 40, DATA_BYTES)).await;
    }
    names
}

/// Writes `data` into `image` at `offset`.
async fn write(image: &str, offset: u64, data: Vec<u8>) {
    let image = Image::open(&pool(), image, OpenMode::ReadWrite).unwrap();
    image.write(offset, Bytes::from(data)).await.unwrap();
    image.flush().await.unwrap();
}

/// A bucket for one test, emptied and deleted when dropped at the end (by the test).
struct Bucket {
    store: objstore::S3Store,
    name: String,
}

impl Bucket {
    async fn new(prefix: &str) -> Bucket {
        let store = diskferry_integration_tests::context()
            .s3()
            .await
            .unwrap()
            .clone();
        let name = unique(prefix).to_lowercase();
        store.create_bucket(&name).await.unwrap();
        Bucket { store, name }
    }

    async fn keys(&self, prefix: &str) -> Vec<String> {
        let mut keys: Vec<String> = self
            .store
            .list(&self.name, prefix)
            .await
            .unwrap()
            .into_iter()
            .map(|o| o.key)
            .collect();
        keys.sort();
        keys
    }

    async fn uploads(&self) -> Vec<String> {
        self.store
            .list_multipart_uploads(&self.name, "")
            .await
            .unwrap()
            .into_iter()
            .map(|u| u.key)
            .collect()
    }

    async fn delete(self) {
        self.store
            .empty_and_delete_bucket(&self.name)
            .await
            .unwrap();
    }
}

/// Every file under `dir`, relative to it, sorted.
fn files(dir: &Path) -> Vec<String> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(root, &path, out);
            } else {
                out.push(path.strip_prefix(root).unwrap().display().to_string());
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

/// The stamp of a run time in keys.
fn stamp(t: RunTime) -> String {
    t.format("%Y%m%dT%H%M%SZ").to_string()
}

/// Checks that the object at `object` holds exactly the snapshot `snapshot` of `image`.
async fn verifies(object: &str, image: &str, snapshot: &str) {
    let ctx = diskferry_integration_tests::context();
    let object = Address::parse(object).unwrap();
    let snapshot = Address::parse(&format!("rbd:{TEST_POOL}/{image}@{snapshot}")).unwrap();
    let report = diskferry::ops::verify(
        &ctx,
        (&object, None),
        (&snapshot, None),
        &CancellationToken::new(),
    )
    .await
    .unwrap();
    assert!(
        report.identical,
        "{object} differs from {snapshot}: {report:?}"
    );
}

/// Three runs of an export job over two images into `target` (an `s3://` prefix or a
/// directory), keep-last 2: exactly the two newest objects and snapshots stay, each object
/// verifies against its snapshot, and a foreign object, a foreign snapshot and another job's
/// object stay untouched. `put` writes a foreign file under the target; `list` lists it.
async fn export_keeps_the_newest<P, L, PF, LF>(target: &str, put: P, list: L)
where
    P: Fn(String, Vec<u8>) -> PF,
    PF: std::future::Future<Output = ()>,
    L: Fn() -> LF,
    LF: std::future::Future<Output = Vec<String>>,
{
    let mut guard = ImageGuard::new(&pool());
    let images = two_data_images(&mut guard).await;
    for image in &images {
        Image::open(&pool(), image, OpenMode::ReadWrite)
            .unwrap()
            .snap_create(FOREIGN_SNAPSHOT)
            .unwrap();
    }
    let kind = format!("kind = \"export\"\ntarget = \"{target}\"\nformat = \"qcow2\"");
    let fixture = Fixture::of_kind(
        "export",
        &kind,
        &images,
        "[jobs.retention]\nkeep-last = 2\n",
    );
    let (job, name, metrics) = (fixture.job(), &fixture.name, &fixture.metrics);
    let dir = |image: &str| format!("{name}/rbd/{TEST_POOL}/{image}/");
    // Not the job's: a note in its directory, a file whose name only starts like one of its
    // objects, and another job's object of the same image.
    let foreign = [
        format!("{}notes.txt", dir(&images[0])),
        format!("{}{}.qcow2.part", dir(&images[0]), stamp(at(0))),
        format!(
            "other-job/rbd/{TEST_POOL}/{}/{}.qcow2",
            images[0],
            stamp(at(0))
        ),
    ];
    for key in &foreign {
        put(key.clone(), b"not the job's".to_vec()).await;
    }

    let times = [0, 1, 2].map(at);
    for now in times {
        let report = fixture.run(now).await;
        assert!(report.success(), "{report:?}");
        assert_eq!(report.count(ImageOutcome::Success), 2, "{report:?}");
        let first = outcome(&report, &images[0]);
        assert_eq!(first.bytes_read, DATA_BYTES as u64, "{first:?}");
        assert!(
            first.stored.as_deref().unwrap().ends_with(".qcow2"),
            "{first:?}"
        );
    }
    let mut expected: Vec<String> = foreign.to_vec();
    for image in &images {
        assert_foreign_and(image, job, &times[1..]);
        for t in &times[1..] {
            expected.push(format!("{}{}.qcow2", dir(image), stamp(*t)));
        }
    }
    expected.sort();
    assert_eq!(list().await, expected);
    for image in &images {
        for t in &times[1..] {
            let object = format!("{}{}{}.qcow2", target, dir(image), stamp(*t));
            verifies(&object, image, &job.snapshot_name(*t)).await;
        }
    }
    for kind in ["snapshot", "backup"] {
        let created =
            format!("diskferry_artifacts_created_total{{job=\"{name}\",kind=\"{kind}\"}}");
        let pruned = format!("diskferry_artifacts_pruned_total{{job=\"{name}\",kind=\"{kind}\"}}");
        assert_eq!(metric(metrics, &created), 6.0, "{kind}");
        assert_eq!(metric(metrics, &pruned), 2.0, "{kind}");
    }
    let read = format!("diskferry_read_bytes_total{{job=\"{name}\"}}");
    assert_eq!(metric(metrics, &read), (6 * DATA_BYTES) as f64);

    // Dry run later: the plan names the stored objects too, with their reasons.
    let ctx = diskferry_integration_tests::context();
    let plans = prune_plans(&ctx, job, at(3)).await.unwrap();
    assert_eq!(plans.len(), 2);
    assert_eq!(plans[0].stored_keep.len(), 2, "{plans:?}");
    assert!(plans[0].stored_keep[0]
        .snapshot
        .ends_with(&format!("{}.qcow2", stamp(at(2)))));
    assert!(plans[0].stored_remove.is_empty(), "{plans:?}");

    // A restarted service learns the last success from the objects alone.
    let fresh = Metrics::new(std::iter::empty::<(&str, &str)>());
    assert_eq!(rebuild_last_success(&ctx, job, &fresh).await.unwrap(), 2);
    let gauge = format!(
        "diskferry_last_success_timestamp_seconds{{job=\"{name}\",image=\"{TEST_POOL}/{}\"}}",
        images[1]
    );
    assert_eq!(metric(&fresh, &gauge), times[2].timestamp() as f64);

    // The same tick again: done elsewhere, nothing made twice.
    let report = fixture.run(times[2]).await;
    assert!(report.success(), "{report:?}");
    assert_eq!(report.count(ImageOutcome::DoneElsewhere), 2, "{report:?}");
    assert_eq!(list().await, expected);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_export_job_to_rgw_keeps_the_newest_objects_and_never_a_foreign_one() {
    let bucket = Bucket::new("serve-export").await;
    let target = format!("s3://{}/backups/", bucket.name);
    let (store, name) = (bucket.store.clone(), bucket.name.clone());
    export_keeps_the_newest(
        &target,
        |key, body| {
            let (store, name) = (store.clone(), name.clone());
            async move {
                store
                    .put_object(
                        &name,
                        &format!("backups/{key}"),
                        Bytes::from(body),
                        &Default::default(),
                    )
                    .await
                    .unwrap();
            }
        },
        || async {
            bucket
                .keys("backups/")
                .await
                .into_iter()
                .map(|k| k.strip_prefix("backups/").unwrap().to_string())
                .collect()
        },
    )
    .await;
    assert!(bucket.uploads().await.is_empty());
    bucket.delete().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_export_job_to_a_directory_keeps_the_newest_files_and_never_a_foreign_one() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    let target = format!("{}/", root.display());
    export_keeps_the_newest(
        &target,
        |key, body| {
            let path = root.join(key);
            async move {
                std::fs::create_dir_all(path.parent().unwrap()).unwrap();
                std::fs::write(path, body).unwrap();
            }
        },
        || async { files(&root) },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_vm_export_writes_both_disks_and_the_manifest_with_the_job_labels() {
    let mut guard = ImageGuard::new(&pool());
    let images = two_data_images(&mut guard).await;
    let bucket = Bucket::new("serve-vm").await;
    let name = job_name("vmexp");
    let vm = unique("web").to_lowercase();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("hooks.log");
    let text = format!(
        "time-zone = \"UTC\"\n[locks]\npool = \"{TEST_POOL}\"\nlease-seconds = {}\n\
         [[jobs]]\nname = \"{name}\"\nkind = \"export\"\ntarget = \"s3://{}/\"\n\
         format = \"raw.zst\"\nlabels = {{ site = \"test\" }}\n\
         [[jobs.vms]]\nname = \"{vm}\"\ndisks = [\"os=rbd:{TEST_POOL}/{}\", \"data=rbd:{TEST_POOL}/{}\"]\n{}{}",
        LEASE.as_secs(),
        bucket.name,
        images[0],
        images[1],
        hook("pre", &format!("echo pre >> {}", log.display()), 30),
        hook("post", &format!("echo post >> {}", log.display()), 30),
    );
    let config = Config::parse(&text, "test.toml").unwrap();
    let job = config.job(&name).unwrap();
    let metrics = Arc::new(Metrics::new(std::iter::empty::<(&str, &str)>()));
    let runner = runner(metrics);
    let report = runner.run_job(job, t0()).await.unwrap();
    let _lock = LockObjects(vec![format!("diskferry.lock.{name}.{vm}")]);
    assert!(report.success(), "{report:?}");
    assert_eq!(report.images.len(), 1, "one unit per VM: {report:?}");
    assert_eq!(report.images[0].image, vm);
    // Hooks once per VM.
    assert_eq!(std::fs::read_to_string(&log).unwrap(), "pre\npost\n");

    let prefix = format!("{name}/vm/{vm}/{}/", stamp(t0()));
    assert_eq!(
        bucket.keys("").await,
        [
            format!("{prefix}data.raw.zst"),
            format!("{prefix}manifest.json"),
            format!("{prefix}os.raw.zst"),
        ]
    );
    let ctx = diskferry_integration_tests::context();
    let bundle = diskferry::ops::Bundle::parse(&format!("s3://{}/{prefix}", bucket.name)).unwrap();
    let manifest = diskferry::ops::read_manifest(&ctx, &bundle).await.unwrap();
    assert_eq!(manifest.name, vm);
    assert_eq!(
        manifest.labels.get("site").map(String::as_str),
        Some("test")
    );
    assert_eq!(manifest.disks.len(), 2);
    // No group or snapshot is left on the disks.
    for image in &images {
        assert!(
            snapshots(image).is_empty(),
            "{image}: {:?}",
            snapshots(image)
        );
    }

    // The same tick again: done elsewhere; no hook runs.
    let report = runner.run_job(job, t0()).await.unwrap();
    assert_eq!(
        report.images[0].outcome,
        ImageOutcome::DoneElsewhere,
        "{report:?}"
    );
    assert_eq!(std::fs::read_to_string(&log).unwrap(), "pre\npost\n");
    bucket.delete().await;
}

/// The job's backups of a Longhorn volume: (name, labels), oldest first.
async fn job_backups(
    target: &str,
    volume: &str,
) -> Vec<(String, std::collections::BTreeMap<String, String>)> {
    let ctx = diskferry_integration_tests::context();
    let target = diskferry::longhorn::BackupTarget::parse(target).unwrap();
    let store = diskferry::longhorn::open_store(&ctx, &target)
        .await
        .unwrap();
    let mut backups: Vec<_> = diskferry::ops::longhorn::list(&store, Some(volume))
        .await
        .unwrap()
        .into_iter()
        .flat_map(|v| v.backups)
        .map(|b| (b.name, b.labels))
        .collect();
    backups.sort();
    backups
}

#[tokio::test(flavor = "multi_thread")]
async fn a_longhorn_job_backs_up_full_then_only_changed_blocks_and_keeps_its_base() {
    let mut guard = ImageGuard::new(&pool());
    let images = two_data_images(&mut guard).await;
    let image = &images[0];
    Image::open(&pool(), image, OpenMode::ReadWrite)
        .unwrap()
        .snap_create(FOREIGN_SNAPSHOT)
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let target = format!("vfs://{}/", dir.path().display());
    let kind = format!("kind = \"longhorn-backup\"\ntarget = \"{target}\"");
    let fixture = Fixture::of_kind(
        "lh",
        &kind,
        std::slice::from_ref(image),
        "labels = { team = \"ops\" }\n[jobs.retention]\nkeep-last = 2\n",
    );
    let (job, name, metrics) = (fixture.job(), &fixture.name, &fixture.metrics);
    let volume = format!("{TEST_POOL}-{image}");
    let backup = |t: RunTime| format!("diskferry-{name}-{}", stamp(t).to_lowercase());

    // First run: full.
    let report = fixture.run(at(0)).await;
    assert!(report.success(), "{report:?}");
    let first = outcome(&report, image);
    assert_eq!(first.incremental_from, None, "{first:?}");
    assert_eq!(first.bytes_read, DATA_BYTES as u64, "{first:?}");

    // A 4 KiB change in the second block: the second run reads that block only.
    write(image, LONGHORN_BLOCK + 4096, pattern(77, 4096)).await;
    let report = fixture.run(at(1)).await;
    assert!(report.success(), "{report:?}");
    let second = outcome(&report, image);
    assert_eq!(
        second.incremental_from.as_deref(),
        Some(backup(at(0)).as_str()),
        "{second:?}"
    );
    assert_eq!(second.bytes_read, LONGHORN_BLOCK, "{second:?}");

    // The same tick again: done elsewhere.
    let again = fixture.run(at(1)).await;
    assert_eq!(
        outcome(&again, image).outcome,
        ImageOutcome::DoneElsewhere,
        "{again:?}"
    );

    // Third run: retention removes the first backup and snapshot, keeps the newest two.
    let report = fixture.run(at(2)).await;
    assert!(report.success(), "{report:?}");
    let third = outcome(&report, image);
    assert_eq!(
        third.incremental_from.as_deref(),
        Some(backup(at(1)).as_str())
    );
    assert_eq!(third.bytes_read, 0, "nothing changed: {third:?}");
    assert_eq!(third.stored_pruned, [backup(at(0))], "{third:?}");
    let backups = job_backups(&target, &volume).await;
    let names: Vec<&str> = backups.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, [backup(at(1)), backup(at(2))]);
    for (_, labels) in &backups {
        assert_eq!(labels.get("diskferry.io/job"), Some(name), "{labels:?}");
        assert_eq!(
            labels.get("team").map(String::as_str),
            Some("ops"),
            "{labels:?}"
        );
    }
    assert_foreign_and(image, job, &[at(1), at(2)]);
    let pruned = format!("diskferry_artifacts_pruned_total{{job=\"{name}\",kind=\"backup\"}}");
    assert_eq!(metric(metrics, &pruned), 1.0);

    // The newest backup and its snapshot are pinned as the next incremental's base.
    let ctx = diskferry_integration_tests::context();
    let plans = prune_plans(&ctx, job, at(3)).await.unwrap();
    let pinned = |kept: &[Kept], id: &str| {
        kept.iter()
            .find(|k| k.snapshot == id)
            .is_some_and(|k| k.reasons.iter().any(|r| r.contains("incremental")))
    };
    assert!(pinned(&plans[0].stored_keep, &backup(at(2))), "{plans:?}");
    assert!(
        pinned(&plans[0].keep, &job.snapshot_name(at(2))),
        "{plans:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn cancelling_mid_export_leaves_no_object_no_upload_and_no_snapshot() {
    let mut guard = ImageGuard::new(&pool());
    let io = pool();
    let image = guard.add(unique("serve-big"));
    // Big enough that the copy is still running when the first part is in flight.
    const BIG: usize = 96 << 20;
    rbd::create(&io, &image, BIG as u64, &CreateOptions::default()).unwrap();
    write(&image, 0, pattern(91, BIG)).await;
    let bucket = Bucket::new("serve-cancel").await;
    let kind = format!(
        "kind = \"export\"\ntarget = \"s3://{}/\"\nformat = \"raw\"",
        bucket.name
    );
    let fixture = Fixture::of_kind("cancel", &kind, std::slice::from_ref(&image), "");
    let cancel = CancellationToken::new();
    let runner = runner(fixture.metrics.clone()).with_cancel(cancel.clone());
    let job = fixture.job();

    let watcher = {
        let (store, name) = (bucket.store.clone(), bucket.name.clone());
        let cancel = cancel.clone();
        tokio::spawn(async move {
            // Cancel as soon as the upload exists: the copy is then surely under way.
            for _ in 0..2000 {
                let uploads = store.list_multipart_uploads(&name, "").await.unwrap();
                if !uploads.is_empty() {
                    cancel.cancel();
                    return true;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            false
        })
    };
    let report = runner.run_job(job, t0()).await.unwrap();
    assert!(
        watcher.await.unwrap(),
        "the upload was never seen: {report:?}"
    );
    assert_eq!(
        outcome(&report, &image).outcome,
        ImageOutcome::Cancelled,
        "{report:?}"
    );
    assert!(!report.success());
    assert!(bucket.keys("").await.is_empty());
    assert!(bucket.uploads().await.is_empty());
    assert!(snapshots(&image).is_empty(), "{:?}", snapshots(&image));

    // Images not started are reported cancelled.
    let report = runner.run_job(job, at(1)).await.unwrap();
    assert_eq!(outcome(&report, &image).outcome, ImageOutcome::Cancelled);
    bucket.delete().await;
}
