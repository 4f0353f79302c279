//! A signal in the middle of a job: the binary removes what it created, then exits as
//! programs a signal stopped do (128 + the signal's number): 130 after Ctrl-C (SIGINT), 143
//! after SIGTERM, so that scripts and shells see an interrupt, not a failure.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use diskferry_integration_tests::{ceph_conf, pattern, pool, unique, ImageGuard, TEST_POOL};

const MIB: usize = 1 << 20;

/// How long the import may take to create its image.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// Whether an image `name`, or one the import writes before it renames it to `name`
/// (`name.diskferry-new-…`), exists.
fn has_image(name: &str) -> bool {
    rbd::list(&pool()).unwrap().iter().any(|n| {
        n.strip_prefix(name)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('.'))
    })
}

/// Starts importing 256 MiB of data, sends `signal` (a `kill` name) once the image exists,
/// and returns the exit code and stderr; the image must be gone afterwards.
fn interrupt_an_import(signal: &str) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().unwrap();
    let raw = dir.path().join("big.raw");
    // Random data, repeated: every block is written, and making it costs no time.
    std::fs::write(&raw, pattern(17, MIB).repeat(256)).unwrap();
    let mut guard = ImageGuard::new(&pool());
    let name = guard.add(unique("cli-signal"));
    let mut child = Command::new(env!("CARGO_BIN_EXE_diskferry"))
        .env("CEPH_CONF", ceph_conf())
        .arg("import")
        .arg(&raw)
        .arg(format!("rbd:{TEST_POOL}/{name}"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while !has_image(&name) {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("the import ended before the signal: {status}");
        }
        assert!(
            started.elapsed() < START_TIMEOUT,
            "no image after {START_TIMEOUT:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let sent = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(child.id().to_string())
        .status()
        .unwrap();
    assert!(sent.success(), "kill -{signal} failed");
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!has_image(&name), "{name} was left behind: {stderr}");
    (out.status.code(), stderr)
}

#[test]
fn ctrl_c_removes_the_partial_image_and_exits_130() {
    let (code, stderr) = interrupt_an_import("INT");
    assert_eq!(code, Some(130), "{stderr}");
    assert!(stderr.contains("interrupted"), "{stderr}");
}

#[test]
fn sigterm_removes_the_partial_image_and_exits_143() {
    let (code, stderr) = interrupt_an_import("TERM");
    assert_eq!(code, Some(143), "{stderr}");
}

/// A command with nothing to undo (here `snap ls`, waiting for a monitor that never answers)
/// still says why it stopped and exits 143, instead of dying silently of the signal.
#[test]
fn sigterm_before_any_job_started_says_so_and_exits_143() {
    let dir = tempfile::tempdir().unwrap();
    // A port nothing listens on: the client keeps trying until its 5 s mount timeout.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let conf = dir.path().join("ceph.conf");
    std::fs::write(
        &conf,
        format!("[global]\nmon_host = 127.0.0.1:{port}\nauth_client_required = none\n"),
    )
    .unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_diskferry"))
        .env("CEPH_CONF", &conf)
        .env_remove("CEPH_ARGS")
        .args(["snap", "ls", &format!("rbd:{TEST_POOL}/no-such-image")])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Well inside the connection attempt, well after start-up.
    std::thread::sleep(Duration::from_millis(1500));
    let sent = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status()
        .unwrap();
    assert!(sent.success(), "kill -TERM failed");
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(143), "{:?}: {stderr}", out.status);
    assert!(stderr.contains("diskferry: interrupted"), "{stderr}");
}
