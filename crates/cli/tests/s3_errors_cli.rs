//! The `diskferry` binary's messages about S3 connections: they name the endpoint and the
//! problem in words, with no `Debug` dump of the SDK's error and no credential.

// Shared by every CLI test file; this one uses only `diskferry()`.
#[allow(dead_code)]
mod common;

use std::net::TcpListener;
use std::process::Stdio;

use common::diskferry;

/// An `http://127.0.0.1:PORT` URL where nothing listens (a port just released).
fn closed_endpoint() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    format!("127.0.0.1:{port}")
}

#[test]
fn a_refused_s3_connection_names_the_endpoint_in_words() {
    let host = closed_endpoint();
    let endpoint = format!("http://{host}");
    // Both runs retry for the whole retry budget (60 s): run side by side.
    let spawn = |endpoint: &str| {
        diskferry()
            .env("AWS_ENDPOINT_URL", endpoint)
            .args(["digest", "s3://diskferry-nowhere/disk.qcow2"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let plain = spawn(&endpoint);
    // An endpoint with a user and password in it is named without them.
    let with_password = spawn(&format!("http://someone:s3cr3t@{host}"));
    let out = plain.wait_with_output().unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let last = stderr.lines().last().unwrap_or_default();
    assert!(
        last.contains(&format!(
            "cannot connect to the S3 endpoint {endpoint}: connection refused"
        )),
        "{stderr}"
    );
    assert!(
        last.contains("s3://diskferry-nowhere/disk.qcow2"),
        "{stderr}"
    );
    for debug in ["DispatchFailure", "ConnectorError", "Os {", "kind:"] {
        assert!(!stderr.contains(debug), "a Debug dump ({debug}): {stderr}");
    }

    let out = with_password.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("cannot connect to the S3 endpoint http://{host}/")),
        "{stderr}"
    );
    assert!(
        !stderr.contains("s3cr3t"),
        "the password is shown: {stderr}"
    );
}
