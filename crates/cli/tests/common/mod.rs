//! The `diskferry` binary with the test cluster's Ceph and S3 environment, shared by the CLI
//! tests that talk to the live cluster and RGW.

use std::process::{Command, Output, Stdio};

use diskferry_integration_tests::{ceph_conf, s3_config};
use objstore::S3Config;

/// The `diskferry` command with the test cluster's environment.
pub fn diskferry() -> Command {
    let s3: S3Config = s3_config();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_diskferry"));
    cmd.env("CEPH_CONF", ceph_conf())
        .env_remove("CEPH_ARGS")
        .env(
            "AWS_ENDPOINT_URL",
            s3.endpoint.clone().expect("an S3 endpoint"),
        )
        .env(
            "AWS_ACCESS_KEY_ID",
            s3.access_key_id.clone().unwrap_or_default(),
        )
        .env(
            "AWS_SECRET_ACCESS_KEY",
            s3.secret_access_key.clone().unwrap_or_default(),
        )
        .env("AWS_REGION", &s3.region)
        .stdin(Stdio::null());
    cmd
}

/// Runs `diskferry ARGS` to completion.
pub fn run(args: &[&str]) -> Output {
    diskferry().args(args).output().expect("run diskferry")
}

/// Asserts success and returns the JSON on stdout (`Null` when there is none).
pub fn ok(out: &Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "diskferry failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null)
}
