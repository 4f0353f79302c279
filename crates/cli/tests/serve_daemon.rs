//! `diskferry serve` as a process on the live cluster: a snapshot job every few seconds keeps
//! exactly its newest snapshots and its metrics say what happened; a restart reads the last
//! success back from the snapshots; two instances on one configuration make each (job, image)
//! snapshot once per tick, and when one is killed mid-run the other takes over after the lock's
//! lease; SIGTERM (also mid-run) ends `serve` within its deadline with 143 and no lock left;
//! `POST /jobs/NAME/run` needs the token; a real Prometheus scrapes the last-success gauge of
//! each image.

// Only `diskferry()` of the shared helpers is used here.
#[allow(dead_code)]
mod common;

use std::fs::File;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use diskferry::serve::config::{Config, Job};
use diskferry_integration_tests::serve::LockObjects;
use diskferry_integration_tests::{ceph_conf, free_port, pool, unique, ImageGuard, TEST_POOL};
use rbd::{CreateOptions, Image, OpenMode};

/// Size of each test image: snapshots need no data.
const IMAGE_BYTES: u64 = 4 << 20;
/// The lock lease of these tests (the configuration's minimum is 5 s).
const LEASE_SECONDS: u64 = 6;
/// `serve --stop-deadline` in these tests.
const STOP_DEADLINE: Duration = Duration::from_secs(10);
/// How long `serve` may take to start listening.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long to wait for any other expected event.
const EVENT_TIMEOUT: Duration = Duration::from_secs(30);
/// A token for the API (at least 16 characters).
const TOKEN: &str = "serve-daemon-test-token-0123456789";

/// Seconds since the Unix epoch, with fractions.
fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// Sleeps until `phase` seconds after a multiple of `period` seconds (e.g. 1.5 s after each
/// tick of a 3-second schedule, when a run of a snapshot job has ended).
fn sleep_until_phase(period: u64, phase: f64) {
    let now = now();
    let period = period as f64;
    let mut next = (now / period).floor() * period + phase;
    if next <= now {
        next += period;
    }
    std::thread::sleep(Duration::from_secs_f64(next - now));
}

/// The latest tick of a `period`-second schedule at or before now.
fn latest_tick(period: u64) -> i64 {
    (now() as i64 / period as i64) * period as i64
}

/// The environment variable that names an instance to its hooks (inherited through the
/// service's worker processes).
const INSTANCE_ENV: &str = "DISKFERRY_TEST_INSTANCE";

/// A `diskferry -v serve` process in a process group of its own (with its workers), killed
/// when dropped if it still runs.
struct Serve {
    child: Child,
    log: PathBuf,
    addr: SocketAddr,
}

impl Serve {
    /// Starts `serve --config CONFIG`, logging to `log`, and waits until it listens; its
    /// hooks see [`INSTANCE_ENV`] set to the log file's stem.
    fn start(config: &Path, log: PathBuf) -> Serve {
        let instance = log.file_stem().unwrap().to_string_lossy().into_owned();
        let mut child = common::diskferry()
            .env(INSTANCE_ENV, instance)
            .process_group(0)
            .args(["-v", "serve", "--config"])
            .arg(config)
            .args(["--stop-deadline", &STOP_DEADLINE.as_secs().to_string()])
            .stdout(Stdio::null())
            .stderr(File::create(&log).unwrap())
            .spawn()
            .expect("start diskferry serve");
        let started = Instant::now();
        loop {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            if let Some(addr) = text
                .split("HTTP API on http://")
                .nth(1)
                .and_then(|rest| rest.split_whitespace().next())
            {
                let addr = addr.parse().expect("an address");
                return Serve { child, log, addr };
            }
            if let Some(status) = child.try_wait().unwrap() {
                panic!("serve ended before listening ({status}):\n{text}");
            }
            assert!(
                started.elapsed() < START_TIMEOUT,
                "serve does not listen:\n{text}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGKILL to the whole instance, the service and its worker processes, as when its
    /// container or machine dies.
    fn crash(&self) {
        let sent = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.pid())])
            .status()
            .unwrap();
        assert!(sent.success(), "kill -KILL -PGID failed");
    }

    /// Sends `signal` (a `kill` name: TERM, KILL).
    fn signal(&self, signal: &str) {
        let sent = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.pid().to_string())
            .status()
            .unwrap();
        assert!(sent.success(), "kill -{signal} failed");
    }

    /// SIGTERM, then waits for the exit: its code and how long it took.
    fn terminate(&mut self) -> (Option<i32>, Duration) {
        let sent = Instant::now();
        self.signal("TERM");
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return (status.code(), sent.elapsed());
            }
            assert!(
                sent.elapsed() < STOP_DEADLINE + EVENT_TIMEOUT,
                "serve does not end after SIGTERM:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `GET /metrics`.
    fn metrics(&self) -> Scrape {
        let (status, body) = http(self.addr, "GET", "/metrics", None);
        assert_eq!(status, 200, "{body}");
        Scrape(body)
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.crash();
            let _ = self.child.wait();
        }
    }
}

/// One HTTP/1.1 request on a new connection: the status and the body.
fn http(addr: SocketAddr, method: &str, path: &str, token: Option<&str>) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: 0\r\n{auth}\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    let status = answer
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {answer:?}"));
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
    let chunked = head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked");
    (
        status,
        if chunked {
            unchunk(body)
        } else {
            body.to_string()
        },
    )
}

/// The data of a body in HTTP/1.1 chunked encoding.
fn unchunk(mut body: &str) -> String {
    let mut data = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let size = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if size == 0 || rest.len() < size {
            break;
        }
        data.push_str(&rest[..size]);
        body = rest[size..].trim_start_matches("\r\n");
    }
    data
}

/// A `/metrics` answer.
struct Scrape(String);

impl Scrape {
    /// The value of the series `name` with exactly `labels`; 0 when absent (a family the
    /// service does not have).
    fn get(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let mut wanted: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
        wanted.sort();
        for line in self.0.lines().filter(|l| !l.starts_with('#')) {
            let Some((series, value)) = line.rsplit_once(' ') else {
                continue;
            };
            let (metric, mut found) = match series.split_once('{') {
                Some((metric, rest)) => (
                    metric,
                    rest.trim_end_matches('}')
                        .split(',')
                        .map(str::to_string)
                        .collect::<Vec<_>>(),
                ),
                None => (series, Vec::new()),
            };
            found.sort();
            if metric == name && found == wanted {
                return value.parse().unwrap();
            }
        }
        0.0
    }
}

/// Two new images, removed (with their snapshots) when the guard drops.
fn two_images(guard: &mut ImageGuard, prefix: &str) -> [String; 2] {
    let io = pool();
    [
        unique(&format!("{prefix}-a")),
        unique(&format!("{prefix}-b")),
    ]
    .map(|name| {
        let name = guard.add(name);
        rbd::create(&io, &name, IMAGE_BYTES, &CreateOptions::default()).unwrap();
        name
    })
}

/// A configuration: one snapshot job `job` over `images`, `schedule`, `extra` TOML in the job
/// (retention, hooks), the token file when given. Returns its path and the parsed job.
fn write_config(
    dir: &Path,
    file: &str,
    job: &str,
    images: &[String],
    schedule: &str,
    token_file: Option<&Path>,
    extra: &str,
) -> (PathBuf, Job) {
    let list: Vec<String> = images
        .iter()
        .map(|i| format!("\"rbd:{TEST_POOL}/{i}\""))
        .collect();
    let token = token_file
        .map(|p| format!("token-file = \"{}\"\n", p.display()))
        .unwrap_or_default();
    let text = format!(
        "time-zone = \"UTC\"\n\
         [http]\nlisten = \"127.0.0.1:0\"\n{token}\
         [locks]\npool = \"{TEST_POOL}\"\nlease-seconds = {LEASE_SECONDS}\n\
         [ceph]\nconf = \"{}\"\n\
         [[jobs]]\nname = \"{job}\"\nkind = \"snapshot\"\nschedule = \"{schedule}\"\n\
         images = [{}]\nconcurrency = 2\n{extra}",
        ceph_conf().display(),
        list.join(", ")
    );
    let path = dir.join(file);
    std::fs::write(&path, &text).unwrap();
    let job = Config::parse(&text, file)
        .unwrap_or_else(|e| panic!("{e}\n{text}"))
        .job(job)
        .unwrap()
        .clone();
    (path, job)
}

/// The times (Unix seconds) of `job`'s snapshots of `image`, oldest first, and the names of
/// the other snapshots.
fn job_snapshots(job: &Job, image: &str) -> (Vec<i64>, Vec<String>) {
    let image = Image::open(&pool(), image, OpenMode::ReadOnly).unwrap();
    let mut times = Vec::new();
    let mut others = Vec::new();
    for snap in image.snap_list().unwrap() {
        match job.snapshot_time(&snap.name) {
            Some(t) => times.push(t.timestamp()),
            None => others.push(snap.name),
        }
    }
    times.sort();
    (times, others)
}

/// Writes [`TOKEN`] into `dir/token`, readable by its owner only (a token file open to
/// others is refused, as ssh refuses such a private key), and returns its path.
fn token_file(dir: &Path) -> PathBuf {
    let path = dir.join("token");
    std::fs::write(&path, format!("{TOKEN}\n")).unwrap();
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    path
}

/// A unique job name (lowercase letters, digits and '-').
fn job_name(prefix: &str) -> String {
    unique(prefix).to_lowercase()
}

#[test]
fn one_instance_snapshots_each_tick_keeps_the_newest_counts_it_and_stops_on_sigterm() {
    const PERIOD: u64 = 3;
    const KEEP: usize = 3;
    let dir = tempfile::tempdir().unwrap();
    let mut guard = ImageGuard::new(&pool());
    let images = two_images(&mut guard, "sd-one");
    // A snapshot the job did not make: retention never removes it.
    Image::open(&pool(), &images[0], OpenMode::ReadWrite)
        .unwrap()
        .snap_create("manual1")
        .unwrap();
    let name = job_name("sd-one");
    let (config, job) = write_config(
        dir.path(),
        "serve.toml",
        &name,
        &images,
        "*/3 * * * * *",
        None,
        &format!("[jobs.retention]\nkeep-last = {KEEP}\n"),
    );
    let locks = LockObjects::of(&job, &images);
    let mut serve = Serve::start(&config, dir.path().join("serve.log"));

    // Six ticks or more, then look 1.5 s after a tick, when its runs have ended; the metrics
    // are read before and after the snapshots, and must not have moved in between.
    std::thread::sleep(Duration::from_secs(6 * PERIOD));
    let (scrape, snaps, newest) = loop {
        sleep_until_phase(PERIOD, 1.5);
        let before = serve.metrics();
        let snaps: Vec<(Vec<i64>, Vec<String>)> =
            images.iter().map(|i| job_snapshots(&job, i)).collect();
        let newest = latest_tick(PERIOD);
        let after = serve.metrics();
        let runs = |s: &Scrape| {
            s.get(
                "diskferry_runs_total",
                &[("job", &name), ("result", "success")],
            )
        };
        if runs(&before) == runs(&after) {
            break (after, snaps, newest);
        }
    };
    let log = serve.log();
    let get = |metric: &str, labels: &[(&str, &str)]| scrape.get(metric, labels);
    let job_label = [("job", name.as_str())];
    let successes = get(
        "diskferry_runs_total",
        &[("job", &name), ("result", "success")],
    );
    assert_eq!(
        get(
            "diskferry_runs_total",
            &[("job", &name), ("result", "failure")]
        ),
        0.0,
        "{log}"
    );
    // Both images each tick: runs per image.
    let ticks = (successes / 2.0) as usize;
    assert_eq!(successes, 2.0 * ticks as f64);
    assert!(ticks >= 6, "only {ticks} ticks ran:\n{log}");
    let snap_kind = [("job", name.as_str()), ("kind", "snapshot")];
    assert_eq!(
        get("diskferry_artifacts_created_total", &snap_kind),
        successes
    );
    assert_eq!(
        get("diskferry_artifacts_pruned_total", &snap_kind),
        2.0 * (ticks - KEEP) as f64,
        "retention removed exactly the expired ones"
    );
    assert_eq!(get("diskferry_runs_skipped_overlap_total", &job_label), 0.0);
    assert_eq!(get("diskferry_runs_skipped_locked_total", &job_label), 0.0);
    // Each image keeps the snapshots of the newest three ticks, the same on both, and the
    // foreign one.
    let expected: Vec<i64> = (0..KEEP as i64)
        .rev()
        .map(|i| newest - i * PERIOD as i64)
        .collect();
    for (image, (times, _)) in images.iter().zip(&snaps) {
        assert_eq!(times, &expected, "{image}:\n{log}");
        let gauge = get(
            "diskferry_last_success_timestamp_seconds",
            &[("job", &name), ("image", &format!("{TEST_POOL}/{image}"))],
        );
        assert!(
            gauge >= newest as f64 && gauge < (newest + PERIOD as i64) as f64,
            "{image}: last success {gauge}, newest tick {newest}"
        );
    }
    assert_eq!(snaps[0].1, ["manual1"]);
    assert!(snaps[1].1.is_empty());

    let (code, took) = serve.terminate();
    assert_eq!(code, Some(143), "{}", serve.log());
    assert!(took < STOP_DEADLINE, "took {took:?}");
    locks.assert_free();

    // A restart (with a schedule that does not come soon) reads each image's last success
    // back from the newest snapshot's name.
    let (config, _) = write_config(
        dir.path(),
        "restart.toml",
        &name,
        &images,
        "0 0 1 1 *",
        None,
        &format!("[jobs.retention]\nkeep-last = {KEEP}\n"),
    );
    let mut restarted = Serve::start(&config, dir.path().join("restart.log"));
    let snaps_now = job_snapshots(&job, &images[0]).0;
    let newest_now = *snaps_now.last().unwrap();
    let scrape = restarted.metrics();
    for image in &images {
        assert_eq!(
            scrape.get(
                "diskferry_last_success_timestamp_seconds",
                &[("job", &name), ("image", &format!("{TEST_POOL}/{image}"))],
            ),
            newest_now as f64,
            "{image}: {}",
            restarted.log()
        );
    }
    assert!(
        restarted
            .log()
            .contains("2 images, 2 with a last success on record, 0 leftovers"),
        "{}",
        restarted.log()
    );
    assert_eq!(restarted.terminate().0, Some(143));
}

#[test]
fn two_instances_snapshot_each_image_once_per_tick_and_take_over_after_a_kill() {
    const PERIOD: u64 = 4;
    let dir = tempfile::tempdir().unwrap();
    let mut guard = ImageGuard::new(&pool());
    let images = two_images(&mut guard, "sd-two");
    let name = job_name("sd-two");
    let pre_log = dir.path().join("pre.log");
    // The pre hook notes which instance runs it and, for an instance with a "slow" flag file,
    // lasts 8 s: that instance can be killed in the middle of a run. (The hook's parent is a
    // worker process of the instance, so the instance is named by the environment.)
    let hook = format!(
        "[jobs.retention]\nkeep-last = 100\n[jobs.hooks.pre]\ncommand = [\"sh\", \"-c\", \
         \"echo ${INSTANCE_ENV} >> {log}; if [ -e {dir}/slow-${INSTANCE_ENV} ]; then sleep 8; fi\"]\ntimeout-seconds = 30\n",
        log = pre_log.display(),
        dir = dir.path().display()
    );
    let (config, job) = write_config(
        dir.path(),
        "serve.toml",
        &name,
        &images,
        "*/4 * * * * *",
        None,
        &hook,
    );
    let locks = LockObjects::of(&job, &images);
    let mut victim = Serve::start(&config, dir.path().join("victim.log"));
    let mut survivor = Serve::start(&config, dir.path().join("survivor.log"));
    let logs = |victim: &Serve, survivor: &Serve| {
        format!("victim:\n{}\nsurvivor:\n{}", victim.log(), survivor.log())
    };
    let success = |s: &Scrape| {
        s.get(
            "diskferry_runs_total",
            &[("job", &name), ("result", "success")],
        )
    };
    let failure = |s: &Scrape| {
        s.get(
            "diskferry_runs_total",
            &[("job", &name), ("result", "failure")],
        )
    };
    let not_here = |s: &Scrape| {
        s.get("diskferry_runs_skipped_locked_total", &[("job", &name)])
            + s.get("diskferry_runs_done_elsewhere_total", &[("job", &name)])
    };
    let snapshot_count =
        || -> usize { images.iter().map(|i| job_snapshots(&job, i).0.len()).sum() };

    // Three ticks with both instances up: each image gets one snapshot per tick, made by
    // one instance and counted once; the other instance skipped it.
    sleep_until_phase(PERIOD, 2.0);
    let (v0, s0, n0, first) = (
        victim.metrics(),
        survivor.metrics(),
        snapshot_count(),
        latest_tick(PERIOD) + PERIOD as i64,
    );
    std::thread::sleep(Duration::from_secs(3 * PERIOD));
    let (v1, s1, n1, last) = (
        victim.metrics(),
        survivor.metrics(),
        snapshot_count(),
        latest_tick(PERIOD),
    );
    let all = logs(&victim, &survivor);
    assert_eq!(last - first, 2 * PERIOD as i64, "{all}");
    assert_eq!(n1 - n0, 6, "{all}");
    assert_eq!(
        success(&v1) + success(&s1) - success(&v0) - success(&s0),
        6.0,
        "{all}"
    );
    assert_eq!(failure(&v1) + failure(&s1), 0.0, "{all}");
    assert_eq!(
        not_here(&v1) + not_here(&s1) - not_here(&v0) - not_here(&s0),
        6.0,
        "{all}"
    );
    for image in &images {
        let times = job_snapshots(&job, image).0;
        for tick in (first..=last).step_by(PERIOD as usize) {
            assert_eq!(
                times.iter().filter(|&&t| t == tick).count(),
                1,
                "{image} at {tick}: {all}"
            );
        }
    }

    // The victim turns slow (between two ticks, so its next run is slow); kill -9 it while
    // it is inside a run (in its pre hook, holding the lock of at least one image).
    sleep_until_phase(PERIOD, 2.0);
    let seen = std::fs::read_to_string(&pre_log).unwrap().lines().count();
    std::fs::write(dir.path().join("slow-victim"), "").unwrap();
    let started = Instant::now();
    let tick = loop {
        let lines: Vec<String> = std::fs::read_to_string(&pre_log)
            .unwrap()
            .lines()
            .skip(seen)
            .map(str::to_string)
            .collect();
        if lines.iter().any(|l| l.trim() == "victim") {
            break latest_tick(PERIOD);
        }
        assert!(
            started.elapsed() < EVENT_TIMEOUT,
            "the victim never ran the hook: {}",
            logs(&victim, &survivor)
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    std::thread::sleep(Duration::from_millis(300));
    victim.crash();
    assert!(
        now() - (tick as f64) < (LEASE_SECONDS / 3) as f64,
        "killed after the first lease renewal: the test was too slow"
    );
    let _ = victim.child.wait();
    // After the tick's runs: the victim's images have no snapshot of it.
    sleep_until_phase(PERIOD, 2.0);
    let before = not_here(&survivor.metrics());
    let victims: Vec<&String> = images
        .iter()
        .filter(|i| !job_snapshots(&job, i).0.contains(&tick))
        .collect();
    assert!(!victims.is_empty(), "{}", logs(&victim, &survivor));
    // tick + 4: the dead instance's lease (from `tick` + 6 s) still runs, so the survivor
    // skips its images; tick + 8: the lease has lapsed and the survivor takes over.
    std::thread::sleep(Duration::from_secs(2 * PERIOD));
    let after = not_here(&survivor.metrics());
    let all = logs(&victim, &survivor);
    assert_eq!(after - before, victims.len() as f64, "{all}");
    let period = PERIOD as i64;
    for image in &images {
        let times = job_snapshots(&job, image).0;
        let has = |t: i64| times.contains(&t);
        if victims.contains(&image) {
            assert!(
                !has(tick) && !has(tick + period),
                "{image}: {times:?}\n{all}"
            );
        } else {
            assert!(has(tick) && has(tick + period), "{image}: {times:?}\n{all}");
        }
        assert!(
            has(tick + 2 * period),
            "{image}: not taken over: {times:?}\n{all}"
        );
    }
    assert_eq!(failure(&survivor.metrics()), 0.0, "{all}");

    let (code, _) = survivor.terminate();
    assert_eq!(code, Some(143), "{}", survivor.log());
    locks.assert_free();
}

/// A Prometheus server, killed when dropped.
struct Prometheus(Child);

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn the_api_needs_its_token_prometheus_scrapes_each_images_last_success_and_sigterm_mid_run_leaves_no_lock(
) {
    let dir = tempfile::tempdir().unwrap();
    let token_file = token_file(dir.path());
    let mut guard = ImageGuard::new(&pool());
    let images = two_images(&mut guard, "sd-api");
    let name = job_name("sd-api");
    let slow = dir.path().join("slow");
    let hook = format!(
        "[jobs.retention]\nkeep-last = 2\n[jobs.hooks.pre]\ncommand = [\"sh\", \"-c\", \
         \"if [ -e {} ]; then sleep 3; fi\"]\n",
        slow.display()
    );
    let (config, job) = write_config(
        dir.path(),
        "serve.toml",
        &name,
        &images,
        "*/2 * * * * *",
        Some(&token_file),
        &hook,
    );
    let locks = LockObjects::of(&job, &images);
    let mut serve = Serve::start(&config, dir.path().join("serve.log"));
    let addr = serve.addr;

    assert_eq!(
        http(addr, "GET", "/healthz", None),
        (200, "ok\n".to_string())
    );
    assert_eq!(http(addr, "GET", "/jobs", None).0, 401);
    assert_eq!(
        http(addr, "GET", "/jobs", Some("not-the-token-0123456789")).0,
        401
    );
    let (status, body) = http(addr, "GET", "/jobs", Some(TOKEN));
    assert_eq!(status, 200, "{body}");
    let view: serde_json::Value = serde_json::from_str(&body).unwrap();
    let view = &view["jobs"][0];
    assert_eq!(view["name"], name.as_str());
    assert!(view["next_run"].is_string(), "{view}");
    let shown: Vec<&str> = view["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["image"].as_str().unwrap())
        .collect();
    let labels: Vec<String> = images.iter().map(|i| format!("{TEST_POOL}/{i}")).collect();
    assert_eq!(shown, labels);
    let run = format!("/jobs/{name}/run");
    assert_eq!(http(addr, "POST", &run, None).0, 401);
    assert_eq!(
        http(addr, "POST", &run, Some("not-the-token-0123456789")).0,
        401
    );
    assert_eq!(
        http(addr, "POST", "/jobs/no-such-job/run", Some(TOKEN)).0,
        404
    );

    // Prometheus scrapes serve every second, its query API gives the gauge of each image.
    let port = free_port();
    let prometheus_config = dir.path().join("prometheus.yml");
    std::fs::write(
        &prometheus_config,
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: diskferry\n    \
             honor_labels: true\n    static_configs:\n      - targets: [\"{addr}\"]\n"
        ),
    )
    .unwrap();
    let prometheus = Prometheus(
        Command::new("prometheus")
            .arg(format!("--config.file={}", prometheus_config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("tsdb").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(File::create(dir.path().join("prometheus.log")).unwrap())
            .spawn()
            .expect("run prometheus (scripts/install-deps installs it)"),
    );
    let prometheus_addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let query = format!(
        "/api/v1/query?query=diskferry_last_success_timestamp_seconds%7Bjob%3D%22{name}%22%7D"
    );
    let started = Instant::now();
    let series = loop {
        let answer = TcpStream::connect(prometheus_addr)
            .is_ok()
            .then(|| http(prometheus_addr, "GET", &query, None));
        if let Some((200, body)) = answer {
            let value: serde_json::Value = serde_json::from_str(&body).unwrap();
            let result = value["data"]["result"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            let positive = result.iter().all(|s| {
                s["value"][1]
                    .as_str()
                    .and_then(|v| v.parse::<f64>().ok())
                    .unwrap_or(0.0)
                    > 0.0
            });
            if result.len() == 2 && positive {
                break result;
            }
        }
        assert!(
            started.elapsed() < EVENT_TIMEOUT,
            "Prometheus has no last-success gauge of both images:\n{}",
            std::fs::read_to_string(dir.path().join("prometheus.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(250));
    };
    drop(prometheus);
    let mut scraped: Vec<String> = series
        .iter()
        .map(|s| s["metric"]["image"].as_str().unwrap().to_string())
        .collect();
    scraped.sort();
    let mut expected = labels.clone();
    expected.sort();
    assert_eq!(scraped, expected);
    for s in &series {
        let value: f64 = s["value"][1].as_str().unwrap().parse().unwrap();
        assert!((now() - value).abs() < 60.0, "{s}");
    }

    // A manual run in its slow pre hook: a second is refused, then SIGTERM.
    std::fs::write(&slow, "").unwrap();
    let started = Instant::now();
    loop {
        // A scheduled run may be going: wait for it to end.
        match http(addr, "POST", &run, Some(TOKEN)).0 {
            202 => break,
            409 => assert!(started.elapsed() < EVENT_TIMEOUT, "always running"),
            other => panic!("POST {run}: {other}"),
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(http(addr, "POST", &run, Some(TOKEN)).0, 409);
    std::thread::sleep(Duration::from_millis(500));
    let (code, took) = serve.terminate();
    let log = serve.log();
    assert_eq!(code, Some(143), "{log}");
    assert!(took < STOP_DEADLINE, "took {took:?}:\n{log}");
    assert!(log.contains("stopping"), "{log}");
    locks.assert_free();
}

/// Waits until `done` holds, polling; panics with `what` and the log after [`EVENT_TIMEOUT`].
fn wait_for(serve: &Serve, what: &str, mut done: impl FnMut() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(
            started.elapsed() < EVENT_TIMEOUT,
            "{what}: not within {EVENT_TIMEOUT:?}\n{}",
            serve.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Whether process `pid` still exists (a zombie counts as gone).
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|stat| {
            // The state follows the command name in parentheses.
            !stat
                .rsplit(')')
                .next()
                .unwrap_or("")
                .trim_start()
                .starts_with('Z')
        })
        .unwrap_or(false)
}

#[test]
fn a_worker_that_dies_fails_its_run_not_the_service_and_a_killed_services_worker_stops_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let token_file = token_file(dir.path());
    let mut guard = ImageGuard::new(&pool());
    let images = two_images(&mut guard, "sd-worker");
    let name = job_name("sd-worker");
    let (pids, slow) = (dir.path().join("pids"), dir.path().join("slow"));
    // The pre hook notes the worker that runs it (its parent) and lasts 20 s while `slow`
    // exists. Runs start only through the API (the schedule's tick is on 1 January).
    let hook = format!(
        "[jobs.retention]\nkeep-last = 100\n[jobs.hooks.pre]\ncommand = [\"sh\", \"-c\", \
         \"echo $PPID >> {pids}; if [ -e {slow} ]; then sleep 20; fi\"]\ntimeout-seconds = 60\n",
        pids = pids.display(),
        slow = slow.display()
    );
    let (config, job) = write_config(
        dir.path(),
        "serve.toml",
        &name,
        &images,
        "0 0 1 1 *",
        Some(&token_file),
        &hook,
    );
    let locks = LockObjects::of(&job, &images);
    let mut serve = Serve::start(&config, dir.path().join("serve.log"));
    let run = format!("/jobs/{name}/run");
    let runs = |serve: &Serve, result: &str| {
        serve.metrics().get(
            "diskferry_runs_total",
            &[("job", &name), ("result", result)],
        )
    };
    let in_flight = |serve: &Serve| -> f64 {
        images
            .iter()
            .map(|i| {
                serve.metrics().get(
                    "diskferry_runs_in_flight",
                    &[("job", &name), ("image", &format!("{TEST_POOL}/{i}"))],
                )
            })
            .sum()
    };
    let worker_pids = || -> Vec<u32> {
        std::fs::read_to_string(&pids)
            .unwrap_or_default()
            .lines()
            .map(|l| l.trim().parse().unwrap())
            .collect()
    };
    let snapshot_count =
        || -> usize { images.iter().map(|i| job_snapshots(&job, i).0.len()).sum() };

    // 1. A worker killed in the middle of its run: the run and its two started images fail,
    // the service stays healthy, and no snapshot was taken.
    std::fs::write(&slow, "").unwrap();
    assert_eq!(http(serve.addr, "POST", &run, Some(TOKEN)).0, 202);
    wait_for(&serve, "both pre hooks running", || {
        worker_pids().len() == 2
    });
    let worker = worker_pids()[0];
    assert_eq!(worker_pids()[1], worker, "one worker runs the job");
    assert_ne!(worker, serve.pid());
    Command::new("kill")
        .args(["-KILL", &worker.to_string()])
        .status()
        .unwrap();
    wait_for(&serve, "the killed run counted as failed", || {
        runs(&serve, "failure") == 2.0
    });
    assert_eq!(in_flight(&serve), 0.0);
    assert_eq!(http(serve.addr, "GET", "/healthz", None).0, 200);
    assert!(
        serve
            .log()
            .contains("without a report (signal: 9 (SIGKILL))"),
        "{}",
        serve.log()
    );
    assert_eq!(snapshot_count(), 0);

    // 2. The service runs on: once the dead worker's locks lapse, a run succeeds.
    std::fs::remove_file(&slow).unwrap();
    std::thread::sleep(Duration::from_secs(LEASE_SECONDS + 1));
    assert_eq!(http(serve.addr, "POST", &run, Some(TOKEN)).0, 202);
    wait_for(&serve, "the next run succeeds", || {
        runs(&serve, "success") == 2.0
    });
    assert_eq!(snapshot_count(), 2);
    locks.assert_free();

    // 3. The service alone killed in the middle of a run: its worker sees its input end,
    // stops the run as on SIGTERM (the pre hook killed, no snapshot) and releases the locks
    // at once, without waiting for the lease.
    std::fs::write(&slow, "").unwrap();
    let seen = worker_pids().len();
    // A manual run is as of its second: the next second's run is a new one.
    std::thread::sleep(Duration::from_millis(1100));
    assert_eq!(http(serve.addr, "POST", &run, Some(TOKEN)).0, 202);
    wait_for(&serve, "the third run's pre hooks", || {
        worker_pids().len() == seen + 2
    });
    let worker = worker_pids()[seen];
    serve.signal("KILL");
    let _ = serve.child.wait();
    let killed = Instant::now();
    wait_for(&serve, "the orphaned worker ends", || !alive(worker));
    assert!(
        killed.elapsed() < Duration::from_secs(LEASE_SECONDS),
        "the worker took {:?} to stop",
        killed.elapsed()
    );
    locks.assert_free();
    assert_eq!(snapshot_count(), 2, "{}", serve.log());
}

#[test]
fn sigterm_during_the_start_up_work_stops_the_service_at_once() {
    let dir = tempfile::tempdir().unwrap();
    // A cluster whose monitor never answers: the start-up work waits for it (its connect
    // timeout, for each step that connects).
    let conf = dir.path().join("unreachable.conf");
    std::fs::write(
        &conf,
        "[global]\nmon_host = 10.255.255.1\nauth_client_required = none\n",
    )
    .unwrap();
    let config = dir.path().join("serve.toml");
    std::fs::write(
        &config,
        format!(
            "time-zone = \"UTC\"\n[http]\nlisten = \"127.0.0.1:0\"\n[locks]\npool = \"{TEST_POOL}\"\n\
             [ceph]\nconf = \"{}\"\n[[jobs]]\nname = \"unreachable\"\nkind = \"snapshot\"\n\
             schedule = \"0 0 1 1 *\"\nimages = [\"rbd:{TEST_POOL}/nothing\"]\n",
            conf.display()
        ),
    )
    .unwrap();
    let log = dir.path().join("serve.log");
    let mut child = common::diskferry()
        .args(["serve", "--config"])
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(File::create(&log).unwrap())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(2));
    let sent = Instant::now();
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        // At once: it does not wait for the start-up work (which gives up on the monitor
        // only after its connect timeout, ~8 s here).
        if sent.elapsed() > Duration::from_secs(3) {
            let _ = child.kill();
            panic!(
                "serve still starting 3 s after SIGTERM:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(143));
}
