//! Allocations sized by input are capped: a raw.zst frame that asks for a window larger than
//! `WINDOW_LOG_MAX` is refused (as `zstd -d` refuses it) with an error naming the input,
//! without the memory being taken. (The VM manifest's cap is in `names_cli.rs`; objstore's
//! `GET_MAX`, `ERROR_BODY_MAX` and `MAX_RESPONSE_HEAD` in its unit tests; qcow2's, with its
//! backing file and external data file refusals, in `crates/qcow2/tests/bad_images.rs`.)

// Not every helper is used here.
#[allow(dead_code)]
mod common;

use common::run;

use std::io::Write;
use std::process::{Command, Stdio};

use diskferry_integration_tests::pattern;

const MIB: usize = 1 << 20;

/// diskferry's raw.zst header frame for a disk of `size` bytes.
fn header_frame(size: u64) -> Vec<u8> {
    let mut frame = Vec::new();
    frame.extend_from_slice(&0x184D_2A5Du32.to_le_bytes());
    frame.extend_from_slice(&16u32.to_le_bytes());
    frame.extend_from_slice(b"DFRAWZ01");
    frame.extend_from_slice(&size.to_le_bytes());
    frame
}

#[test]
fn a_raw_zst_frame_asking_for_a_window_over_the_cap_is_refused() {
    let work = tempfile::tempdir().unwrap();
    let data = pattern(21, MIB);
    // From a pipe the frame cannot record its size, so its window is the full 2^28.
    let mut zstd = Command::new("zstd")
        .args(["--long=28", "-q", "-c"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("run zstd");
    zstd.stdin.take().unwrap().write_all(&data).unwrap();
    let frame = zstd.wait_with_output().unwrap();
    assert!(frame.status.success());
    let mut object = header_frame(MIB as u64);
    object.extend_from_slice(&frame.stdout);
    let file = work.path().join("wide.raw.zst");
    std::fs::write(&file, &object).unwrap();

    let out = run(&["digest", "-f", "raw.zst", file.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("wide.raw.zst") && err.contains("too much memory"),
        "{err}"
    );
}
