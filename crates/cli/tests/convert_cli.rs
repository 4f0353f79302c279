//! `diskferry convert` end to end: round trips checked by `qemu-img compare` and byte equality,
//! format detection by magic, overwrite protection and removal of partial output.

use std::path::Path;
use std::process::{Command, Output};

fn diskferry(args: &[&std::ffi::OsStr]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_diskferry"))
        .args(args)
        .output()
        .expect("run diskferry")
}

fn convert(extra: &[&str], src: &Path, dst: &Path) -> Output {
    let mut args: Vec<&std::ffi::OsStr> = vec!["convert".as_ref()];
    args.extend(extra.iter().map(std::ffi::OsStr::new));
    args.push(src.as_os_str());
    args.push(dst.as_os_str());
    diskferry(&args)
}

fn ok(out: &Output) {
    assert!(
        out.status.success(),
        "diskferry failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn qemu_img(args: &[&std::ffi::OsStr]) -> String {
    assert!(
        Path::new("/usr/bin/qemu-img").exists(),
        "qemu-img is required"
    );
    let out = Command::new("/usr/bin/qemu-img")
        .args(args)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "qemu-img {args:?}: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

/// A raw disk with random, text and zero parts, and a hole.
fn make_raw(path: &Path) {
    let mut data = Vec::new();
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for _ in 0..(1 << 20) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        data.push(x as u8);
    }
    while data.len() < 3 << 20 {
        data.extend_from_slice(b"diskferry converts qcow2 clusters\n");
    }
    data.resize(4 << 20, 0);
    std::fs::write(path, &data).unwrap();
    let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    f.set_len(6 << 20).unwrap();
}

#[test]
fn converts_raw_to_qcow2_in_every_mode_and_back() {
    let dir = tempfile::tempdir().unwrap();
    let raw = dir.path().join("disk.img");
    make_raw(&raw);
    for mode in ["none", "deflate", "zstd"] {
        let img = dir.path().join(format!("{mode}.qcow2"));
        ok(&convert(&["-c", mode], &raw, &img));
        let check = qemu_img(&["check".as_ref(), img.as_os_str()]);
        assert!(check.contains("No errors"), "{check}");
        let cmp = qemu_img(&["compare".as_ref(), raw.as_os_str(), img.as_os_str()]);
        assert!(cmp.contains("identical"), "{cmp}");
        let back = dir.path().join(format!("{mode}.back"));
        ok(&convert(&["-O", "raw"], &img, &back));
        assert!(
            std::fs::read(&raw).unwrap() == std::fs::read(&back).unwrap(),
            "{mode}: round trip differs"
        );
    }
}

#[test]
fn detects_qcow2_by_magic_not_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let raw = dir.path().join("disk.qcow2"); // a raw file with a misleading name
    make_raw(&raw);
    let img = dir.path().join("image.raw"); // a qcow2 file with a misleading name
                                            // The output format is asked for: without -O it would follow the name, as for export.
    let first = convert(
        &[
            "-O",
            "qcow2",
            "--cluster-size",
            "4096",
            "-c",
            "zstd",
            "--level",
            "5",
        ],
        &raw,
        &img,
    );
    ok(&first);
    let said = String::from_utf8_lossy(&first.stdout);
    assert!(said.contains("(raw, guessed from its content"), "{said}");
    let info = qemu_img(&["info".as_ref(), img.as_os_str()]);
    assert!(
        info.contains("file format: qcow2") && info.contains("cluster_size: 4096"),
        "{info}"
    );
    let out = dir.path().join("out");
    let o = convert(&["-O", "raw"], &img, &out);
    ok(&o);
    // diskferry recorded the format of what it wrote: nothing is guessed the second time.
    let said = String::from_utf8_lossy(&o.stdout);
    assert!(said.contains("image.raw (qcow2) to"), "{said}");
    assert!(std::fs::read(&raw).unwrap() == std::fs::read(&out).unwrap());
}

#[test]
fn refuses_to_overwrite_without_force() {
    let dir = tempfile::tempdir().unwrap();
    let raw = dir.path().join("disk.img");
    make_raw(&raw);
    let dst = dir.path().join("existing");
    std::fs::write(&dst, b"keep me").unwrap();
    let out = convert(&[], &raw, &dst);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("exists"));
    assert_eq!(std::fs::read(&dst).unwrap(), b"keep me");
    ok(&convert(&["--force"], &raw, &dst));
    let cmp = qemu_img(&["compare".as_ref(), raw.as_os_str(), dst.as_os_str()]);
    assert!(cmp.contains("identical"));
}

#[test]
fn removes_partial_output_on_failure() {
    let dir = tempfile::tempdir().unwrap();
    let raw = dir.path().join("disk.img");
    make_raw(&raw);
    let img = dir.path().join("disk.qcow2");
    ok(&convert(&["-c", "deflate"], &raw, &img));
    // Break the last compressed cluster's data: the failure comes after output was written.
    let mut bytes = std::fs::read(&img).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let offset = rt.block_on(async {
        let reader = std::sync::Arc::new(qcow2::FileReadAt::open(&img).unwrap());
        let image = qcow2::Qcow2Image::open(reader).await.unwrap();
        let extents = image.collect_extents().await.unwrap();
        extents
            .iter()
            .rev()
            .find_map(|e| match e.kind {
                qcow2::ExtentKind::Compressed { host_offset, .. } => Some(host_offset as usize),
                _ => None,
            })
            .expect("a compressed cluster")
    });
    bytes[offset..offset + 16].fill(0xff);
    std::fs::write(&img, &bytes).unwrap();
    let out_path = dir.path().join("partial.raw");
    let out = convert(&["-O", "raw"], &img, &out_path);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("does not decompress"), "{err}");
    assert!(!out_path.exists(), "partial output left behind");
}

#[test]
fn rejects_bad_options() {
    let dir = tempfile::tempdir().unwrap();
    let raw = dir.path().join("disk.img");
    make_raw(&raw);
    let dst = dir.path().join("x.qcow2");
    let zst = dir.path().join("x.raw.zst");
    // Refused before anything is written, as bad arguments: status 2, like clap's own.
    for (flags, out) in [
        (&["--cluster-size", "1000"][..], &dst),
        (&["--cluster-size", "256"][..], &dst),
        (&["-c", "deflate", "--level", "12"][..], &dst),
        (&["-c", "zstd", "--level", "99"][..], &dst),
        (&["--level", "23"][..], &zst),
        (&["-O", "raw", "-c", "zstd"][..], &dst),
    ] {
        let out_status = convert(flags, &raw, out).status;
        assert_eq!(out_status.code(), Some(2), "{flags:?}");
        assert!(!out.exists(), "{flags:?}");
    }
}
