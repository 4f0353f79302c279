//! How every command decides the format of what it reads, through the real binary on the live
//! cluster and RGW: `--format` first, then what diskferry recorded (object metadata, a local
//! file's extended attribute, a VM manifest; an RBD image is raw), and the magic bytes only
//! when nothing else is known, which the result then says.
//!
//! The disk used throughout is the trap from the field: a raw disk whose guest wrote a qcow2
//! header at byte 0. Read by its magic it is an 8 MiB qcow2; it is really 64 MiB of raw data.

mod common;

use std::path::{Path, PathBuf};

use common::{ok, run};
use diskferry_integration_tests::{pattern, pool, reference_digest, s3_config, unique, ImageGuard};
use objstore::S3Store;

const MIB: usize = 1 << 20;
/// The raw disk's size.
const RAW_SIZE: usize = 64 * MIB;
/// Where the raw disk has data besides the header.
const DATA_AT: usize = 40 * MIB;

/// A 64 MiB raw disk that starts with a real 8 MiB qcow2 image's first bytes.
fn raw_with_qcow2_header(dir: &Path) -> (PathBuf, Vec<u8>) {
    let header = dir.join("header.qcow2");
    let made = std::process::Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2"])
        .arg(&header)
        .arg("8M")
        .status()
        .expect("qemu-img");
    assert!(made.success());
    let mut content = vec![0u8; RAW_SIZE];
    let head = std::fs::read(&header).unwrap();
    content[..head.len()].copy_from_slice(&head);
    content[DATA_AT..DATA_AT + MIB].copy_from_slice(&pattern(40, MIB));
    let path = dir.join("guest.raw");
    std::fs::write(&path, &content).unwrap();
    (path, content)
}

fn s(path: &Path) -> &str {
    path.to_str().unwrap()
}

fn field<'a>(json: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    json.get(name)
        .unwrap_or_else(|| panic!("no {name:?} in {json}"))
}

/// Imports the raw disk at `raw` (as raw) into a new image named after `prefix`, removed by
/// `guard`.
fn import_raw(raw: &Path, guard: &mut ImageGuard, prefix: &str) -> String {
    let image = guard.add(unique(prefix));
    ok(&run(&[
        "import",
        "-f",
        "raw",
        s(raw),
        &format!("rbd:rbd/{image}"),
    ]));
    image
}

/// The raw disk of [`raw_with_qcow2_header`] in a temporary directory, imported as raw into a
/// new image named after its prefix.
struct Imported {
    dir: tempfile::TempDir,
    content: Vec<u8>,
    guard: ImageGuard,
    image: String,
}

fn imported(prefix: &str) -> Imported {
    let dir = tempfile::tempdir().unwrap();
    let (raw, content) = raw_with_qcow2_header(dir.path());
    let mut guard = ImageGuard::new(&pool());
    let image = import_raw(&raw, &mut guard, prefix);
    Imported {
        dir,
        content,
        guard,
        image,
    }
}

async fn bucket() -> String {
    let store = S3Store::from_config(&s3_config()).unwrap();
    let name = unique("fmt").to_lowercase();
    store.create_bucket(&name).await.unwrap();
    name
}

#[test]
fn a_raw_disk_with_a_qcow2_header_is_guessed_as_qcow2_and_the_result_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let (raw, content) = raw_with_qcow2_header(dir.path());
    let guessed = ok(&run(&["digest", s(&raw), "--json"]));
    assert_eq!(field(&guessed, "format"), "qcow2");
    assert_eq!(field(&guessed, "format_origin"), "guessed");
    let told = ok(&run(&["digest", "-f", "raw", s(&raw), "--json"]));
    assert_eq!(field(&told, "format"), "raw");
    assert_eq!(field(&told, "format_origin"), "given");
    assert_eq!(field(&told, "size"), RAW_SIZE as u64);
    assert_eq!(field(&told, "digest"), reference_digest(&content).as_str());
    let text = run(&["digest", s(&raw)]);
    let said = String::from_utf8_lossy(&text.stdout);
    assert!(said.contains("guessed from its content"), "{said}");
}

#[tokio::test(flavor = "multi_thread")]
async fn what_diskferry_wrote_is_read_back_in_the_format_it_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let (raw, content) = raw_with_qcow2_header(dir.path());
    let digest = reference_digest(&content);
    let mut guard = ImageGuard::new(&pool());
    let image = guard.add(unique("fmt-src"));
    let spec = format!("rbd:rbd/{image}");
    let imported = ok(&run(&["import", "-f", "raw", s(&raw), &spec, "--json"]));
    assert_eq!(field(&imported, "source_format_origin"), "given");
    assert_eq!(field(&imported, "size"), RAW_SIZE as u64);

    // An RBD image is raw: nothing to guess.
    let from_rbd = ok(&run(&["digest", &spec, "--json"]));
    assert_eq!(field(&from_rbd, "digest"), digest.as_str());
    assert_eq!(field(&from_rbd, "format_origin"), "recorded");

    // A local raw export carries its format; importing it back is the whole 64 MiB disk.
    let exported = dir.path().join("export.raw");
    ok(&run(&["export", &spec, s(&exported), "--json"]));
    let back = guard.add(unique("fmt-back"));
    let again = ok(&run(&[
        "import",
        s(&exported),
        &format!("rbd:rbd/{back}"),
        "--json",
    ]));
    assert_eq!(field(&again, "source_format"), "raw");
    assert_eq!(field(&again, "source_format_origin"), "recorded");
    assert_eq!(field(&again, "size"), RAW_SIZE as u64);
    assert_eq!(field(&again, "digest"), digest.as_str());

    // So does an S3 object, by its metadata.
    let bucket = bucket().await;
    let object = format!("s3://{bucket}/disk.raw");
    ok(&run(&["export", &spec, &object, "--json"]));
    let from_s3 = ok(&run(&["digest", &object, "--json"]));
    assert_eq!(field(&from_s3, "format_origin"), "recorded");
    assert_eq!(field(&from_s3, "digest"), digest.as_str());
    let verified = ok(&run(&["verify", &object, s(&exported), "--json"]));
    assert_eq!(field(&verified, "identical"), true);
}

#[tokio::test(flavor = "multi_thread")]
async fn import_vm_reads_each_disk_in_the_format_its_manifest_names() {
    let mut source = imported("fmt-vm");
    let bucket = bucket().await;
    let bundle = format!("s3://{bucket}/vm/");
    ok(&run(&[
        "export-vm",
        "--disk",
        &format!("os=rbd:rbd/{}", source.image),
        "--format",
        "raw",
        &bundle,
    ]));
    let prefix = unique("fmt-vm-back");
    source.guard.add(format!("{prefix}-os"));
    let restored = ok(&run(&[
        "import-vm",
        &bundle,
        "--pool",
        "rbd",
        "--prefix",
        &prefix,
        "--json",
    ]));
    let disk = &field(&restored, "disks")[0];
    assert_eq!(field(disk, "verified"), true);
    let import = field(disk, "import");
    assert_eq!(field(import, "size"), RAW_SIZE as u64);
    assert_eq!(field(import, "source_format_origin"), "given");
    assert_eq!(
        field(import, "digest"),
        reference_digest(&source.content).as_str()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn convert_reads_raw_zst_and_takes_any_address_on_either_side() {
    let dir = tempfile::tempdir().unwrap();
    let (raw, content) = raw_with_qcow2_header(dir.path());
    let digest = reference_digest(&content);
    // A raw.zst written by the zstd tool itself: no metadata, found by its magic.
    let zst = dir.path().join("guest.raw.zst");
    let packed = std::process::Command::new("zstd")
        .args(["-q", "-f"])
        .arg(&raw)
        .arg("-o")
        .arg(&zst)
        .status()
        .expect("zstd");
    assert!(packed.success());
    let qcow2 = dir.path().join("from-zst.qcow2");
    let report = ok(&run(&["convert", s(&zst), s(&qcow2), "--json"]));
    assert_eq!(field(&report, "source_format"), "raw.zst");
    assert_eq!(field(&report, "format"), "qcow2");
    assert_eq!(field(&report, "digest"), digest.as_str());
    let check = std::process::Command::new("qemu-img")
        .args(["compare", "-q", "-f", "qcow2", "-F", "raw"])
        .arg(&qcow2)
        .arg(&raw)
        .status()
        .unwrap();
    assert!(check.success(), "qemu-img compare says the content differs");

    // file -> rbd (default pool) -> s3 -> file, each hop digested.
    let mut guard = ImageGuard::new(&pool());
    let image = guard.add(unique("fmt-conv"));
    let to_rbd = ok(&run(&[
        "convert",
        "-f",
        "raw",
        s(&raw),
        &format!("rbd:{image}"),
        "--json",
    ]));
    assert_eq!(field(&to_rbd, "format"), "raw");
    let bucket = bucket().await;
    let object = format!("s3://{bucket}/conv.qcow2");
    let to_s3 = ok(&run(&[
        "convert",
        "-c",
        "zstd",
        &format!("rbd:rbd/{image}"),
        &object,
        "--json",
    ]));
    assert_eq!(field(&to_s3, "compression"), "zstd");
    let back = dir.path().join("back.raw");
    let to_file = ok(&run(&["convert", &object, s(&back), "--json"]));
    assert_eq!(field(&to_file, "source_format_origin"), "recorded");
    assert_eq!(field(&to_file, "digest"), digest.as_str());
    assert_eq!(std::fs::read(&back).unwrap(), content);

    // The old flag name still works; a qcow2 into an RBD image is refused by name.
    let other = dir.path().join("compress.qcow2");
    ok(&run(&[
        "convert",
        "--compress",
        "deflate",
        s(&qcow2),
        s(&other),
    ]));
    let refused = run(&[
        "convert",
        "-O",
        "qcow2",
        s(&raw),
        &format!("rbd:rbd/{image}-x"),
    ]);
    assert!(!refused.status.success());
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(err.contains("holds a raw disk"), "{err}");
}

#[test]
fn an_image_without_a_pool_is_in_the_default_pool() {
    let dir = tempfile::tempdir().unwrap();
    let (raw, _) = raw_with_qcow2_header(dir.path());
    let mut guard = ImageGuard::new(&pool());
    let image = guard.add(unique("fmt-nopool"));
    let report = ok(&run(&[
        "import",
        "-f",
        "raw",
        s(&raw),
        &format!("rbd:{image}"),
        "--json",
    ]));
    assert_eq!(
        field(&report, "destination"),
        format!("rbd:{image}").as_str()
    );
    let listed = rbd::list(&pool()).unwrap();
    assert!(listed.contains(&image), "{image} is not in the rbd pool");
}

#[tokio::test(flavor = "multi_thread")]
async fn export_vm_creates_its_local_directory_and_removes_it_on_failure() {
    let source = imported("fmt-dir");
    let bundle = source.dir.path().join("new/nested/vm");
    ok(&run(&[
        "export-vm",
        "--disk",
        &format!("os=rbd:rbd/{}", source.image),
        s(&bundle),
    ]));
    assert!(bundle.join("manifest.json").exists());
    assert!(bundle.join("os.qcow2").exists());
    // A failing export (a disk that does not exist) leaves no directory it created.
    let failing = source.dir.path().join("other/vm");
    let out = run(&[
        "export-vm",
        "--disk",
        &format!("os=rbd:rbd/{}-missing", source.image),
        s(&failing),
    ]);
    assert!(!out.status.success());
    assert!(!source.dir.path().join("other").exists());
}

#[test]
fn verify_names_the_first_byte_that_differs() {
    let dir = tempfile::tempdir().unwrap();
    let (raw, mut content) = raw_with_qcow2_header(dir.path());
    let same = ok(&run(&[
        "verify",
        "-f",
        "raw",
        s(&raw),
        "-F",
        "raw",
        s(&raw),
        "--json",
    ]));
    assert_eq!(field(&same, "identical"), true);
    assert!(field(&same, "first_difference").is_null());
    let at = DATA_AT + 12_345;
    content[at] ^= 0x5a;
    let other = dir.path().join("other.raw");
    std::fs::write(&other, &content).unwrap();
    let out = run(&[
        "verify",
        "-f",
        "raw",
        s(&raw),
        "-F",
        "raw",
        s(&other),
        "--json",
    ]);
    assert!(!out.status.success(), "different disks must fail verify");
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(field(&json, "first_difference"), at as u64);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("first at byte {at}")), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn digest_and_verify_never_print_credentials_or_signatures() {
    let dir = tempfile::tempdir().unwrap();
    let (raw, _) = raw_with_qcow2_header(dir.path());
    let server = diskferry_integration_tests::http::FileServer::start(dir.path().into()).await;
    let url = server
        .url("guest.raw")
        .replace("http://", "http://alice:pa55word@")
        + "?X-Amz-Signature=5ec2e75160";
    let raw = s(&raw).to_string();
    let broken = url[..url.len() - 20].to_string();
    let calls: Vec<Vec<String>> = [
        vec!["digest", "-f", "raw", &url],
        vec!["digest", "-f", "raw", &url, "--json"],
        vec!["verify", "-f", "raw", &url, "-F", "raw", &raw],
        vec!["verify", "-f", "raw", &url, "-F", "raw", &raw, "--json"],
        // A failure names the address too.
        vec!["digest", &broken],
    ]
    .iter()
    .map(|call| call.iter().map(|a| a.to_string()).collect())
    .collect();
    for args in calls {
        // The binary answers this test's own server: wait for it off the async workers.
        let out = tokio::task::spawn_blocking(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            run(&args)
        })
        .await
        .unwrap();
        let all = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(all.contains("127.0.0.1"), "the address is named: {all}");
        assert!(!all.contains("pa55word"), "password printed: {all}");
        assert!(!all.contains("5ec2e75160"), "signature printed: {all}");
    }
}

#[test]
fn bad_addresses_and_options_exit_2_like_unparsable_arguments() {
    for args in [
        vec!["digest", "rbd:"],
        vec!["digest", "s3://b"],
        vec!["digest", "ftp://host/x"],
        vec!["export", "rbd:rbd/x", "/tmp/x.raw", "-c", "zstd"],
        vec!["digest", "-f", "vmdk", "x"],
    ] {
        let out = run(&args);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // A job that fails is 1.
    let out = run(&["digest", "/nonexistent/disk.raw"]);
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn force_never_replaces_a_device_fifo_or_symbolic_link() {
    let dir = tempfile::tempdir().unwrap();
    let (raw, _) = raw_with_qcow2_header(dir.path());
    let fifo = dir.path().join("fifo");
    assert!(std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    let kept = dir.path().join("kept.raw");
    std::fs::write(&kept, b"keep me").unwrap();
    let link = dir.path().join("link.raw");
    std::os::unix::fs::symlink(&kept, &link).unwrap();
    for target in [&fifo, &link] {
        let out = run(&[
            "convert",
            "-f",
            "raw",
            s(&raw),
            s(target),
            "-O",
            "raw",
            "--force",
        ]);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let kind = std::fs::symlink_metadata(&fifo).unwrap().file_type();
    assert!(
        std::os::unix::fs::FileTypeExt::is_fifo(&kind),
        "the FIFO was replaced"
    );
    assert!(std::fs::symlink_metadata(&link)
        .unwrap()
        .file_type()
        .is_symlink());
    assert_eq!(std::fs::read(&kept).unwrap(), b"keep me");
}

#[test]
fn longhorn_backup_takes_the_format_rule_too() {
    let dir = tempfile::tempdir().unwrap();
    let (raw, _) = raw_with_qcow2_header(dir.path());
    let store = dir.path().join("store");
    std::fs::create_dir(&store).unwrap();
    let target = format!("vfs://{}/", store.display());
    let guessed = ok(&run(&[
        "longhorn",
        "backup",
        s(&raw),
        &target,
        "--volume",
        "guessed",
        "--json",
    ]));
    assert_eq!(field(&guessed, "source_format_origin"), "guessed");
    let given = ok(&run(&[
        "longhorn",
        "backup",
        "-f",
        "raw",
        s(&raw),
        &target,
        "--volume",
        "given",
        "--json",
    ]));
    assert_eq!(field(&given, "source_format"), "raw");
    assert_eq!(field(&given, "source_format_origin"), "given");
    assert_eq!(field(&given, "disk_size"), RAW_SIZE as u64);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_copy_whose_digest_differs_from_the_recorded_one_is_not_kept() {
    let mut source = imported("fmt-dig");
    let bucket = bucket().await;
    let object = format!("s3://{bucket}/disk.raw");
    ok(&run(&[
        "export",
        &format!("rbd:rbd/{}", source.image),
        &object,
    ]));
    // The object's bytes change after the export; its recorded digest stays.
    let store = S3Store::from_config(&s3_config()).unwrap();
    let info = store.head(&bucket, "disk.raw").await.unwrap();
    let mut bytes = store
        .get_object_bytes(&bucket, "disk.raw")
        .await
        .unwrap()
        .to_vec();
    bytes[DATA_AT + 5] ^= 1;
    let options = objstore::PutOptions {
        metadata: info.metadata,
        content_type: info.content_type,
        overwrite: true,
    };
    store
        .put_object(&bucket, "disk.raw", bytes.into(), &options)
        .await
        .unwrap();
    let copy = source.guard.add(unique("fmt-dig-copy"));
    let out = run(&["import", &object, &format!("rbd:rbd/{copy}")]);
    assert!(!out.status.success(), "a changed object was imported");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("was not kept"), "{err}");
    assert!(!rbd::list(&pool())
        .unwrap()
        .iter()
        .any(|n| n.starts_with(&copy)));
    let converted = source.dir.path().join("copy.qcow2");
    let out = run(&["convert", &object, s(&converted)]);
    assert!(!out.status.success(), "a changed object was converted");
    assert!(!converted.exists());
}

/// A disk file diskferry wrote and a VM then wrote to (in place): its recorded format still
/// holds, its recorded digest no longer does. Read back, it is the raw disk it is, not the
/// qcow2 whose header the guest wrote at byte 0, and it is not refused as corrupt.
#[test]
fn a_written_file_changed_since_keeps_its_format_and_drops_its_digest() {
    let dir = tempfile::tempdir().unwrap();
    let (guest, content) = raw_with_qcow2_header(dir.path());
    // The disk as diskferry wrote it: the guest's content but its first MiB zero.
    let mut before = content.clone();
    before[..MIB].fill(0);
    let plain = dir.path().join("plain.raw");
    std::fs::write(&plain, &before).unwrap();
    let written = dir.path().join("written.raw");
    ok(&run(&[
        "convert",
        "-f",
        "raw",
        s(&plain),
        s(&written),
        "--json",
    ]));

    // The guest writes its qcow2 header over the first bytes, in place.
    let header = std::fs::read(&guest).unwrap();
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(&written)
        .unwrap();
    std::os::unix::fs::FileExt::write_all_at(&file, &header[..MIB], 0).unwrap();
    drop(file);

    let out = dir.path().join("out.raw");
    let read = ok(&run(&["convert", s(&written), s(&out), "--json"]));
    assert_eq!(field(&read, "source_format"), "raw", "{read}");
    assert_eq!(field(&read, "source_format_origin"), "recorded", "{read}");
    assert!(
        std::fs::read(&out).unwrap() == content,
        "not the guest's disk"
    );
}
