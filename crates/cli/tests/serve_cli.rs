//! `diskferry serve --check --config FILE` through the real binary: a good file prints each
//! job with its next runs and exits 0, a bad one lists every problem by field and exits 1.
//! Needs no cluster: checking a configuration connects to nothing. `run` and `prune` of an
//! export job work on the live cluster.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use diskferry_integration_tests::{pool, unique, ImageGuard, TEST_POOL};

/// Runs `diskferry ARGS` to completion, with no Ceph or S3 environment.
fn diskferry(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_diskferry"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run diskferry")
}

/// The example configuration shipped in docs/.
fn example() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/serve.example.toml")
}

const BAD: &str = r#"
[locks]
pool = "rbd"

[[jobs]]
name = "nightly"
kind = "export"
schedule = "0 25 * * *"
time-zone = "Europe/Berln"
images = ["rbd:rbd/vm@snap"]

[[jobs]]
name = "weekly"
kind = "snapshot"
time-zone = "UTC"
images = ["rbd:rbd/vm"]
[jobs.retention]
"#;

#[test]
fn check_accepts_the_example_and_prints_each_jobs_next_runs() {
    let example = example();
    let out = diskferry(&["serve", "--check", "--config", &example.to_string_lossy()]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("valid, 3 jobs"), "{stdout}");
    for job in [
        "job hourly-snaps (snapshot)",
        "job nightly-vms (export)",
        "job weekly-longhorn (longhorn-backup)",
    ] {
        assert!(stdout.contains(job), "{job}: {stdout}");
    }
    // Three runs per job, each in the job's zone and in UTC.
    assert_eq!(stdout.matches(" UTC)").count(), 9, "{stdout}");
    assert!(stdout.contains("30 3 * * 0 (UTC)"), "{stdout}");

    let out = diskferry(&[
        "serve",
        "--check",
        "--json",
        "--config",
        &example.to_string_lossy(),
    ]);
    assert!(out.status.success());
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(report["valid"], true);
    let jobs = report["jobs"].as_array().unwrap();
    assert_eq!(jobs.len(), 3);
    assert_eq!(jobs[2]["kind"], "longhorn-backup");
    let runs = jobs[1]["next_runs"].as_array().unwrap();
    assert_eq!(runs.len(), 3);
    // The default schedule, 02:00 in the file's zone.
    let local = runs[0]["local"].as_str().unwrap();
    assert!(local.contains("T02:00:00+0"), "{local}");
    assert!(runs[0]["utc"].as_str().unwrap().ends_with('Z'));
}

#[test]
fn check_refuses_a_bad_file_naming_every_problem() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("serve.toml");
    std::fs::write(&file, BAD).unwrap();
    let file = file.to_string_lossy();
    let out = diskferry(&["serve", "--check", "--config", &file]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    for needle in [
        "jobs.nightly.time-zone: unknown time zone \"Europe/Berln\"",
        "jobs.nightly.schedule: cron expression \"0 25 * * *\": hour field \"25\"",
        "jobs.nightly.images[0]: \"rbd:rbd/vm@snap\" names a snapshot",
        "jobs.nightly.target: missing",
        "jobs.weekly.retention: no keep rule",
    ] {
        assert!(stderr.contains(needle), "{needle}: {stderr}");
    }
    assert!(out.stdout.is_empty());

    let out = diskferry(&["serve", "--check", "--json", "--config", &file]);
    assert_eq!(out.status.code(), Some(1));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(report["valid"], false);
    let paths: Vec<&str> = report["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["path"].as_str().unwrap())
        .collect();
    assert_eq!(
        paths,
        [
            "jobs.nightly.time-zone",
            "jobs.nightly.schedule",
            "jobs.nightly.images[0]",
            "jobs.nightly.target",
            "jobs.weekly.retention"
        ]
    );

    // An unknown field stops reading at once, with its line.
    std::fs::write(
        dir.path().join("typo.toml"),
        "[locks]\npool = \"rbd\"\nlease-secs = 5\n",
    )
    .unwrap();
    let typo = dir.path().join("typo.toml");
    let out = diskferry(&["serve", "--check", "--config", &typo.to_string_lossy()]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("(line 3, column 1): locks.lease-secs: unknown field `lease-secs`"),
        "{stderr}"
    );

    let missing = dir.path().join("missing.toml");
    let out = diskferry(&["serve", "--check", "--config", &missing.to_string_lossy()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read the configuration"));
}

#[test]
fn serve_refuses_an_invalid_configuration_before_starting() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.toml");
    std::fs::write(&file, "[[jobs]]\nname = \"x\"\nkind = \"nope\"\n").unwrap();
    let out = diskferry(&["serve", "--config", &file.to_string_lossy()]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("jobs") && stderr.contains("kind"),
        "{stderr}"
    );
    let help = diskferry(&["serve", "--help"]);
    assert!(String::from_utf8_lossy(&help.stdout).contains("until SIGTERM"));
}

/// A configuration with one snapshot job, `hourly`, for `run` and `prune`.
const ONE_SNAPSHOT_JOB: &str = r#"locks = { pool = "rbd" }
jobs = [{ name = "hourly", kind = "snapshot", time-zone = "UTC", images = ["rbd:rbd/vm"] }]
"#;

#[test]
fn run_of_an_unknown_job_fails_naming_the_jobs_there_are() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("serve.toml");
    std::fs::write(&file, ONE_SNAPSHOT_JOB).unwrap();
    let out = diskferry(&["run", "--config", &file.to_string_lossy(), "nightly"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("no job named \"nightly\" (its jobs: hourly)"),
        "{stderr}"
    );
    assert!(out.stdout.is_empty());
}

#[test]
fn prune_removes_nothing_without_dry_run() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("serve.toml");
    std::fs::write(&file, ONE_SNAPSHOT_JOB).unwrap();
    let out = diskferry(&["prune", "--config", &file.to_string_lossy()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    // A usage error: retention is applied by runs; prune only shows it.
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("--dry-run"), "{stderr}");
}

/// An export job over one new (empty) image into a directory, keep-last 1.
fn export_job(job: &str, image: &str, target: &Path) -> String {
    format!(
        r#"locks = {{ pool = "{TEST_POOL}", lease-seconds = 5 }}
[[jobs]]
name = "{job}"
kind = "export"
time-zone = "UTC"
images = ["rbd:{TEST_POOL}/{image}"]
target = "{}/"
format = "raw"
[jobs.retention]
keep-last = 1
"#,
        target.display()
    )
}

#[test]
fn run_and_prune_of_an_export_job_show_what_it_stored() {
    let mut guard = ImageGuard::new(&pool());
    let image = new_image(&mut guard, "cli-serve");
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("backups");
    std::fs::create_dir(&target).unwrap();
    let job = unique("cli-export").to_lowercase();
    let file = dir.path().join("serve.toml");
    std::fs::write(&file, export_job(&job, &image, &target)).unwrap();
    let config = file.to_string_lossy().to_string();
    let object = |stamp: &str| {
        target
            .join(format!("{job}/rbd/{TEST_POOL}/{image}/{stamp}.raw"))
            .display()
            .to_string()
    };

    for now in ["2026-12-06T02:00:00Z", "2026-12-06T03:00:00Z"] {
        let report = common::ok(&common::run(&[
            "run", "--config", &config, &job, "--now", now, "--json",
        ]));
        assert_eq!(report["images"][0]["outcome"], "success", "{report}");
    }
    // keep-last 1: only the second run's object and snapshot remain.
    assert!(!Path::new(&object("20261206T020000Z")).exists());
    assert!(Path::new(&object("20261206T030000Z")).exists());

    // The same tick again: done elsewhere, status 0, said so.
    let again = common::run(&[
        "run",
        "--config",
        &config,
        &job,
        "--now",
        "2026-12-06T03:00:00Z",
    ]);
    let stdout = String::from_utf8_lossy(&again.stdout);
    assert!(again.status.success(), "{stdout}");
    assert!(stdout.contains("done elsewhere"), "{stdout}");

    // The dry run lists the stored object with the rule that keeps it.
    let plans = common::ok(&common::run(&[
        "prune",
        "--config",
        &config,
        "--dry-run",
        "--json",
        "--now",
        "2026-12-06T04:00:00Z",
    ]));
    let plan = &plans[0]["images"][0];
    assert_eq!(
        plan["stored_keep"][0]["snapshot"],
        object("20261206T030000Z"),
        "{plans}"
    );
    assert_eq!(
        plan["stored_keep"][0]["reasons"][0], "last snapshot",
        "{plans}"
    );
    assert_eq!(
        plan["keep"][0]["snapshot"],
        format!("diskferry.{job}.20261206T030000Z")
    );
    let human = common::run(&[
        "prune",
        "--config",
        &config,
        "--dry-run",
        "--now",
        "2026-12-06T04:00:00Z",
    ]);
    let text = String::from_utf8_lossy(&human.stdout);
    assert!(
        text.contains(&format!("keep   {}", object("20261206T030000Z"))),
        "{text}"
    );
    remove_lock(&job, &image);
}

/// A configuration with an API token file and one export job into `target`.
fn token_and_export_job(token: &Path, target: &Path) -> String {
    format!(
        r#"time-zone = "UTC"
locks = {{ pool = "rbd" }}
http = {{ token-file = "{}" }}
[[jobs]]
name = "nightly"
kind = "export"
images = ["rbd:rbd/vm"]
target = "{}"
"#,
        token.display(),
        target.display()
    )
}

#[test]
fn check_refuses_a_target_and_a_token_file_the_service_would_fail_on() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("api-token");
    std::fs::write(&token, "0123456789abcdef0123456789\n").unwrap();
    let a_file = dir.path().join("a-file");
    std::fs::write(&a_file, "not a directory").unwrap();
    let config = dir.path().join("serve.toml");
    let check = |token_mode: u32, target: &Path| {
        std::fs::set_permissions(&token, std::fs::Permissions::from_mode(token_mode)).unwrap();
        std::fs::write(&config, token_and_export_job(&token, target)).unwrap();
        diskferry(&["serve", "--check", "--config", &config.to_string_lossy()])
    };

    // Readable by others, and a target that is a file: both refused, each by its field.
    let out = check(0o644, &a_file);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("2 problems"), "{stderr}");
    assert_contains(
        &stderr,
        format!(
            "http.token-file: the API token file {} is open to group or others (mode 0644)",
            token.display()
        ),
    );
    assert_contains(&stderr, format!("chmod 600 {}", token.display()));
    assert_contains(
        &stderr,
        format!(
            "jobs.nightly.target: {} is not a directory",
            a_file.display()
        ),
    );
    assert!(!stderr.contains("does not exist"), "{stderr}");

    // A target that is not there.
    let missing = dir.path().join("missing");
    let out = check(0o600, &missing);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert_contains(
        &stderr,
        format!("jobs.nightly.target: {} does not exist", missing.display()),
    );

    // An empty token file, in the --json listing.
    std::fs::write(&token, "\n").unwrap();
    assert_eq!(check(0o600, dir.path()).status.code(), Some(1));
    let json = diskferry(&[
        "serve",
        "--check",
        "--json",
        "--config",
        &config.to_string_lossy(),
    ]);
    assert_eq!(json.status.code(), Some(1));
    let report: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(report["valid"], false, "{report}");
    assert_eq!(report["problems"].as_array().unwrap().len(), 1, "{report}");
    assert_eq!(report["problems"][0]["path"], "http.token-file", "{report}");
    assert!(
        report["problems"][0]["message"]
            .as_str()
            .unwrap()
            .ends_with("is empty"),
        "{report}"
    );

    // All good: a private token and a writable directory.
    std::fs::write(&token, "0123456789abcdef0123456789\n").unwrap();
    let out = check(0o600, dir.path());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `--syntax-only` checks the file away from where it will run (CI, before a ConfigMap is
/// applied): what it names need not exist here; the configuration itself is still checked.
#[test]
fn check_syntax_only_leaves_out_files_and_directories_but_not_the_configuration() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("serve.toml");
    let elsewhere = Path::new("/nonexistent-diskferry-pod");
    std::fs::write(
        &config,
        token_and_export_job(&elsewhere.join("api-token"), &elsewhere.join("backups")),
    )
    .unwrap();
    let config = config.to_string_lossy().to_string();
    let full = diskferry(&["serve", "--check", "--config", &config]);
    assert_eq!(full.status.code(), Some(1));
    let out = diskferry(&["serve", "--check", "--syntax-only", "--config", &config]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_contains(&String::from_utf8_lossy(&out.stdout), "nightly");

    // A broken field is still refused.
    let broken = dir.path().join("broken.toml");
    std::fs::write(&broken, "[[jobs]]\nname = \"x\"\nkind = \"nope\"\n").unwrap();
    let out = diskferry(&[
        "serve",
        "--check",
        "--syntax-only",
        "--config",
        &broken.to_string_lossy(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    // Only with --check.
    let out = diskferry(&["serve", "--syntax-only", "--config", &config]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn check_says_what_a_cron_field_takes_in_its_own_words() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("serve.toml");
    std::fs::write(
        &file,
        "time-zone = \"UTC\"\nlocks = { pool = \"rbd\" }\n[[jobs]]\nname = \"nightly\"\n\
         kind = \"snapshot\"\nimages = [\"rbd:rbd/vm\"]\nschedule = \"0 25 * * *\"\n",
    )
    .unwrap();
    let out = diskferry(&["serve", "--check", "--config", &file.to_string_lossy()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert_contains(&stderr, "jobs.nightly.schedule: cron expression \"0 25 * * *\": hour field \"25\" is not valid: an hour is 0-23");
    assert!(!stderr.contains("Component error"), "{stderr}");
}

#[test]
fn run_into_a_target_that_is_a_file_says_it_is_not_a_directory() {
    let mut guard = ImageGuard::new(&pool());
    let image = new_image(&mut guard, "cli-serve-file");
    let dir = tempfile::tempdir().unwrap();
    let a_file = dir.path().join("a-file");
    std::fs::write(&a_file, "not a directory").unwrap();
    let job = unique("cli-export-file").to_lowercase();
    let file = dir.path().join("serve.toml");
    std::fs::write(&file, export_job(&job, &image, &a_file)).unwrap();
    let out = common::run(&["run", "--config", &file.to_string_lossy(), &job]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
    // The target as written, with its slash.
    assert_contains(
        &stdout,
        format!(
            "export target directory {}/: is not a directory",
            a_file.display()
        ),
    );
    assert!(!stdout.contains("does not exist"), "{stdout}");
    assert_contains(
        &stderr,
        format!("job {job}: 1 of 1 image failed, 0 cancelled"),
    );
    // Said once, in the report: not again as a log warning.
    assert!(!stderr.contains("is not a directory"), "{stderr}");
    remove_lock(&job, &image);
}

#[test]
fn prune_of_a_job_whose_image_is_gone_says_so_in_plain_words() {
    let dir = tempfile::tempdir().unwrap();
    let image = unique("cli-prune-gone");
    let job = unique("cli-prune-gone").to_lowercase();
    let file = dir.path().join("serve.toml");
    std::fs::write(&file, export_job(&job, &image, dir.path())).unwrap();
    let out = common::run(&["prune", "--config", &file.to_string_lossy(), "--dry-run"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert_contains(
        &stderr,
        format!("job {job}: cannot plan the retention of {TEST_POOL}/{image}: "),
    );
    assert_contains(&stderr, "not found");
    assert!(!stderr.contains("invalid option"), "{stderr}");
}

/// Fails unless `text` contains `needle`, showing `text`.
fn assert_contains(text: &str, needle: impl AsRef<str>) {
    let needle = needle.as_ref();
    assert!(text.contains(needle), "{needle:?} is not in:\n{text}");
}

/// Removes the lock object a run of `job` over `image` leaves (it outlives the run).
fn remove_lock(job: &str, image: &str) {
    let lock = format!("diskferry.lock.{job}.{TEST_POOL}/{image}");
    let _ = std::process::Command::new("rados")
        .args(["-p", TEST_POOL, "rm", &lock])
        .env("CEPH_CONF", diskferry_integration_tests::ceph_conf())
        .output();
}

/// A new empty image of 1 MiB in the test pool, named from `prefix`, removed by `guard`.
fn new_image(guard: &mut ImageGuard, prefix: &str) -> String {
    let image = guard.add(unique(prefix));
    rbd::create(&pool(), &image, 1 << 20, &rbd::CreateOptions::default()).unwrap();
    image
}
