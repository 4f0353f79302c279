//! The `diskferry` binary's logs on stderr: `RUST_LOG` and `-v` show each job's span (what is
//! read, what is written, the size) and its end, retries say their cause and attempt, no
//! level ever prints the S3 secret key or a request signature, and `-q` keeps a successful
//! run silent.

// Not every helper is used here.
#[allow(dead_code)]
mod common;

use common::{diskferry, ok};

use std::io::{Read, Write};
use std::net::TcpListener;
use std::process::Output;

use diskferry_integration_tests::{pattern, pool, s3_config, unique, ImageGuard, TEST_POOL};
use objstore::S3Store;

const MIB: usize = 1 << 20;

/// `diskferry ARGS` with `RUST_LOG` set to `rust_log` (or removed when `None`).
fn logged(rust_log: Option<&str>, args: &[&str]) -> Output {
    let mut cmd = diskferry();
    match rust_log {
        Some(filter) => cmd.env("RUST_LOG", filter),
        None => cmd.env_remove("RUST_LOG"),
    };
    cmd.args(args).output().expect("run diskferry")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Asserts that a job's log names its span fields and its end, and holds no secret. The
/// sink may be written under a temporary name that starts with `sink`.
fn assert_job_logged(log: &str, source: &str, sink: &str, size: usize, secret: &str) {
    let span = format!("job{{source={source} sink={sink}");
    assert!(log.contains(&span), "no span {span} in:\n{log}");
    assert!(log.contains(&format!(" size={size}}}: ")), "{log}");
    assert!(log.contains("job started"), "{log}");
    assert!(
        log.contains("job finished") && log.contains("bytes_read="),
        "{log}"
    );
    assert!(
        !log.contains(secret),
        "the secret key is in the log:\n{log}"
    );
    assert!(
        !log.contains("Signature="),
        "a signature is in the log:\n{log}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn trace_logs_name_each_job_and_never_the_secret_and_quiet_prints_nothing() {
    let s3 = s3_config();
    let secret = s3.secret_access_key.clone().expect("a secret key");
    let store = S3Store::from_config(&s3).unwrap();
    let bucket = unique("cli-logs").to_lowercase();
    store.create_bucket(&bucket).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let raw = dir.path().join("disk.raw");
    let mut content = vec![0u8; 8 * MIB];
    content[2 * MIB..3 * MIB].copy_from_slice(&pattern(31, MIB));
    std::fs::write(&raw, &content).unwrap();
    let raw = raw.to_str().unwrap();
    let mut guard = ImageGuard::new(&pool());
    let image = format!("rbd:{TEST_POOL}/{}", guard.add(unique("cli-logs")));
    let object = format!("s3://{bucket}/disk.raw");

    // RUST_LOG wins over the flags (-q would say errors only).
    let out = logged(Some("trace"), &["import", "-q", raw, &image]);
    ok(&out);
    assert_job_logged(&stderr(&out), raw, &image, 8 * MIB, &secret);

    let out = logged(None, &["export", "-vv", &image, &object]);
    ok(&out);
    let log = stderr(&out);
    // An export reads a temporary snapshot of the image: the span says so.
    assert!(log.contains(&format!("job{{source={image}@")), "{log}");
    assert!(log.contains("job finished"), "{log}");
    assert!(!log.contains(&secret), "{log}");

    // Every target at trace, the SDK's too when named: still no secret, no signature.
    let out = logged(
        Some("trace,aws=trace,hyper=trace"),
        &["digest", "--json", &object],
    );
    let digest = ok(&out);
    // stdout is --json's alone, whatever is logged.
    assert!(digest["digest"].is_string(), "{digest}");
    assert_job_logged(&stderr(&out), &object, "(digest only)", 8 * MIB, &secret);

    // `-q`: a successful run prints its result on stdout and nothing on stderr.
    let out = logged(None, &["digest", "-q", "--json", &object]);
    assert_eq!(ok(&out), digest);
    assert_eq!(stderr(&out), "");
    let out = logged(None, &["-q", "import", "--force", raw, &image]);
    ok(&out);
    assert_eq!(stderr(&out), "");

    store.empty_and_delete_bucket(&bucket).await.unwrap();
}

/// Answers every request with `503 Service Unavailable`, `answers` times, on 127.0.0.1.
fn unavailable_server(answers: usize) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming().take(answers) {
            let Ok(mut stream) = stream else { continue };
            let mut request = [0u8; 4096];
            let _ = stream.read(&mut request);
            let _ = stream.write_all(
                b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            );
        }
    });
    format!("http://127.0.0.1:{port}/disk.raw")
}

#[test]
fn a_retry_is_logged_with_its_cause_and_attempt() {
    let url = unavailable_server(64);
    let out = logged(None, &["digest", &url]);
    assert!(!out.status.success());
    let log = stderr(&out);
    // Retries are warnings: shown without -v.
    assert!(log.contains("transient error, retrying"), "{log}");
    assert!(log.contains("attempt=1 max_attempts="), "{log}");
    assert!(log.contains("503"), "{log}");
}

/// How much the test's slow reader takes from the log pipe at a time, and how long it waits
/// between reads: about 400 KiB/s, slower than a trace log of an export is written.
const SLOW_READ: usize = 8 * 1024;
const SLOW_READ_PAUSE: std::time::Duration = std::time::Duration::from_millis(20);

/// librados (Ceph 16) makes a piped stderr non-blocking. A log pipe whose reader falls behind
/// must then make the job wait, not end it: Rust's stderr writes panic on `EAGAIN`, and the
/// panic's own message is lost the same way (exit status 101, not a word; seen in CI).
#[tokio::test(flavor = "multi_thread")]
async fn a_trace_log_into_a_slowly_read_pipe_makes_the_job_wait_not_die() {
    let store = S3Store::from_config(&s3_config()).unwrap();
    let bucket = unique("cli-logpipe").to_lowercase();
    store.create_bucket(&bucket).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let raw = dir.path().join("disk.raw");
    std::fs::write(&raw, pattern(37, 16 * MIB)).unwrap();
    let mut guard = ImageGuard::new(&pool());
    let image = format!("rbd:{TEST_POOL}/{}", guard.add(unique("cli-logpipe")));
    ok(&logged(
        None,
        &["import", "-q", raw.to_str().unwrap(), &image],
    ));

    let mut child = diskferry()
        .env("RUST_LOG", "trace,aws=trace,hyper=trace")
        .args(["export", &image, &format!("s3://{bucket}/disk.qcow2")])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut pipe = child.stderr.take().unwrap();
    let mut log = Vec::new();
    let mut chunk = vec![0u8; SLOW_READ];
    loop {
        let n = pipe.read(&mut chunk).unwrap();
        if n == 0 {
            break;
        }
        log.extend_from_slice(&chunk[..n]);
        std::thread::sleep(SLOW_READ_PAUSE);
    }
    let status = child.wait().unwrap();
    let log = String::from_utf8_lossy(&log);
    assert!(status.success(), "{status}; the log ends:\n{}", tail(&log));
    assert!(log.contains("job finished"), "{}", tail(&log));
    store.empty_and_delete_bucket(&bucket).await.unwrap();
}

/// The last lines of `log`.
fn tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}
