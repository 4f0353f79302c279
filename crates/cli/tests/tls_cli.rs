//! S3 over TLS with a private certificate authority, as the AWS CLI takes it: a radosgw of the
//! test cluster started here on loopback with a certificate our own CA signed, the CA given
//! as `AWS_CA_BUNDLE`. The right CA works; a wrong CA is refused at once with a clear error,
//! never retried as if the endpoint were restarting; so is an `https://` source whose
//! certificate no system authority signed. A self-signed certificate with basicConstraints
//! CA:TRUE used as the server's own is refused (rustls), where the AWS CLI (OpenSSL)
//! accepts it: the error says what to do. One with CA:FALSE works.

// Not every helper is used here.
#[allow(dead_code)]
mod common;

use common::diskferry;

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use diskferry_integration_tests::{ceph_conf, free_port, pattern, s3_config, unique};
use objstore::S3Store;

/// How long a radosgw or an `openssl s_server` may take to listen.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a server may take to stop after SIGTERM.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);
/// A refused certificate must fail faster than the first retry's backoff would allow a
/// retried one to (five attempts take seconds).
const REFUSAL_MAX: Duration = Duration::from_secs(2);

/// Runs `openssl ARGS` in `dir`, panicking with its stderr when it fails.
fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run openssl (scripts/install-deps installs it)");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A self-signed certificate for 127.0.0.1: `NAME.pem` and `NAME.key` in `dir`. `extra` are
/// more `-addext` values.
fn self_signed(dir: &Path, name: &str, cn: &str, extra: &[&str]) {
    let (key, pem, subject) = (
        format!("{name}.key"),
        format!("{name}.pem"),
        format!("/CN={cn}"),
    );
    let mut args = vec![
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-keyout", &key, "-out",
        &pem, "-subj", &subject,
    ];
    for ext in extra {
        args.extend(["-addext", ext]);
    }
    openssl(dir, &args);
}

/// `ca` (a CA) and `server` (127.0.0.1, signed by `ca`, CA:FALSE), and `wrong-ca`.
fn certificates(dir: &Path) {
    self_signed(dir, "ca", "diskferry test CA", &[]);
    self_signed(dir, "wrong-ca", "diskferry wrong CA", &[]);
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=127.0.0.1",
        ],
    );
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=critical,CA:FALSE\n",
    )
    .unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-out",
            "server.pem",
            "-extfile",
            "server.ext",
        ],
    );
}

/// A server process started here; killed and reaped on drop.
struct Server {
    child: Child,
    port: u16,
    log: PathBuf,
}

impl Server {
    /// Waits until the server accepts connections.
    fn wait_listening(self) -> Self {
        let deadline = Instant::now() + START_TIMEOUT;
        let mut server = self;
        while TcpStream::connect(("127.0.0.1", server.port)).is_err() {
            if let Ok(Some(status)) = server.child.try_wait() {
                panic!(
                    "the server exited ({status}): {}",
                    std::fs::read_to_string(&server.log).unwrap_or_default()
                );
            }
            assert!(
                Instant::now() < deadline,
                "the server did not listen in time"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        server
    }

    fn endpoint(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }
}

impl Drop for Server {
    /// SIGTERM first, so that a radosgw leaves the cluster cleanly (a killed one leaves its
    /// watches on the zone's control objects until the OSD times them out); SIGKILL only if
    /// it does not end.
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + STOP_TIMEOUT;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A radosgw of the test cluster (as client.admin, whose keyring its conf names) serving
/// only HTTPS on 127.0.0.1 with `cert` and `key`, its socket, log and data in `dir`.
fn radosgw(dir: &Path, cert: &Path, key: &Path) -> Server {
    let port = free_port();
    let log = dir.join("rgw.log");
    let frontends = format!(
        "beast ssl_endpoint=127.0.0.1:{port} ssl_certificate={} ssl_private_key={}",
        cert.display(),
        key.display()
    );
    let child = Command::new("radosgw")
        .arg("-c")
        .arg(ceph_conf())
        .args(["-n", "client.admin", "-f", "--rgw_frontends", &frontends])
        .arg("--log_file")
        .arg(&log)
        .arg("--admin_socket")
        .arg(dir.join("rgw.asok"))
        .arg("--run_dir")
        .arg(dir)
        .arg("--rgw_data")
        .arg(dir.join("rgw-data"))
        .env_remove("CEPH_ARGS")
        .env_remove("CEPH_KEYRING")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start radosgw");
    Server { child, port, log }.wait_listening()
}

/// `openssl s_server` on 127.0.0.1 presenting `NAME.pem` from `dir` (it answers any
/// request with a status page, enough to see whether the handshake passes).
fn s_server(dir: &Path, name: &str) -> Server {
    let port = free_port();
    let log = dir.join(format!("{name}.s_server.log"));
    let child = Command::new("openssl")
        .args(["s_server", "-quiet", "-www", "-accept", &port.to_string()])
        .args([
            "-cert",
            &format!("{name}.pem"),
            "-key",
            &format!("{name}.key"),
        ])
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("start openssl s_server");
    Server { child, port, log }.wait_listening()
}

/// `diskferry ARGS` against `endpoint` trusting `ca` only, and how long it took.
fn over_tls(endpoint: &str, ca: &Path, args: &[&str]) -> (Output, Duration) {
    let started = Instant::now();
    let out = diskferry()
        .env("AWS_ENDPOINT_URL", endpoint)
        .env("AWS_CA_BUNDLE", ca)
        .env_remove("RUST_LOG")
        .args(args)
        .output()
        .expect("run diskferry");
    (out, started.elapsed())
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Asserts that `out` failed at once on the certificate, saying so, without a retry.
fn assert_refused(what: &str, out: &Output, took: Duration, words: &str) {
    let err = stderr(out);
    assert_eq!(out.status.code(), Some(1), "{what}: {err}");
    assert!(err.contains("TLS with the endpoint"), "{what}: {err}");
    assert!(err.contains(words), "{what}: no {words:?} in: {err}");
    assert!(!err.contains("retrying"), "{what}: retried: {err}");
    assert!(!err.contains("attempts"), "{what}: retried: {err}");
    assert!(took < REFUSAL_MAX, "{what}: took {took:?}: {err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn s3_over_tls_trusts_exactly_the_ca_bundle() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    certificates(d);
    let rgw = radosgw(d, &d.join("server.pem"), &d.join("server.key"));

    // The bucket, through the cluster's plain-HTTP gateway (same cluster, same user).
    let bucket = unique("cli-tls").to_lowercase();
    let plain = S3Store::from_config(&s3_config()).unwrap();
    plain.create_bucket(&bucket).await.unwrap();
    let raw = d.join("disk.raw");
    let mut content = vec![0u8; 3 << 20];
    content[1 << 20..2 << 20].copy_from_slice(&pattern(5, 1 << 20));
    std::fs::write(&raw, &content).unwrap();
    let raw = raw.to_str().unwrap();
    let object = format!("s3://{bucket}/disk.raw");

    // The right CA: a copy there and back, identical.
    let ca = d.join("ca.pem");
    let (out, _) = over_tls(&rgw.endpoint(), &ca, &["convert", "-q", raw, &object]);
    assert!(out.status.success(), "{}", stderr(&out));
    let (out, _) = over_tls(&rgw.endpoint(), &ca, &["verify", raw, &object]);
    assert!(out.status.success(), "{}", stderr(&out));

    // A wrong CA: refused at once, naming the problem.
    let (out, took) = over_tls(
        &rgw.endpoint(),
        &d.join("wrong-ca.pem"),
        &["digest", &object],
    );
    assert_refused(
        "a wrong CA",
        &out,
        took,
        "no authority in the trusted bundle",
    );
    assert!(stderr(&out).contains(&rgw.endpoint()), "{}", stderr(&out));

    // An https:// source the system's authorities do not vouch for: the same, for HTTP.
    let url = format!("{}/{bucket}/disk.raw", rgw.endpoint());
    let (out, took) = over_tls(&rgw.endpoint(), &ca, &["digest", &url]);
    assert_refused("an https:// source", &out, took, "no authority");

    plain.empty_and_delete_bucket(&bucket).await.unwrap();
    drop(rgw);
}

#[test]
fn a_self_signed_ca_certificate_as_the_servers_own_is_refused_with_advice() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // `openssl req -x509` makes CA:TRUE certificates unless told otherwise.
    self_signed(
        d,
        "ca-as-server",
        "127.0.0.1",
        &["subjectAltName=IP:127.0.0.1"],
    );
    self_signed(
        d,
        "leaf",
        "127.0.0.1",
        &[
            "subjectAltName=IP:127.0.0.1",
            "basicConstraints=critical,CA:FALSE",
        ],
    );

    let server = s_server(d, "ca-as-server");
    let (out, took) = over_tls(
        &server.endpoint(),
        &d.join("ca-as-server.pem"),
        &["digest", "s3://bucket/disk.raw"],
    );
    assert_refused("a CA certificate as the server's", &out, took, "CA:FALSE");
    drop(server);

    // CA:FALSE: the handshake passes. The status page server does not answer the HEAD
    // request that follows (the job would wait for its read timeout): still running after
    // far longer than a refusal takes, with no TLS error, is the proof; it is stopped.
    let server = s_server(d, "leaf");
    let mut child = diskferry()
        .env("AWS_ENDPOINT_URL", server.endpoint())
        .env("AWS_CA_BUNDLE", d.join("leaf.pem"))
        .env_remove("RUST_LOG")
        .args(["digest", "s3://bucket/disk.raw"])
        .stderr(Stdio::piped())
        .spawn()
        .expect("run diskferry");
    std::thread::sleep(2 * REFUSAL_MAX);
    let exited = child.try_wait().unwrap();
    let _ = child.kill();
    let out = child.wait_with_output().unwrap();
    let err = stderr(&out);
    assert!(exited.is_none(), "ended ({exited:?}): {err}");
    assert!(!err.contains("TLS"), "{err}");
}
