//! Import into RBD (issue: import in one streaming pass) against the live cluster and RGW.
//!
//! Every result is checked against oracles independent of diskferry: `qemu-img convert -O raw`
//! gives the expected content, `rbd export` gives the image's content, `rbd du` its allocation.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use diskferry::ops::{self, ImportOptions};
use diskferry::sinks::RbdSinkOptions;
use diskferry::{Address, CancellationToken, Error, NoProgress, Progress, RbdSpec};
use diskferry_integration_tests::http::FileServer;
use diskferry_integration_tests::{
    context, pattern, pool, qemu_img_qcow2, rbd_export, reference_digest, run, text, unique,
    ImageGuard, TEST_POOL,
};
use rbd::{ErrorKind, Image, OpenMode};

const MIB: usize = 1 << 20;
const VIRTUAL: usize = 64 * MIB;
const OBJECT: usize = 4 * MIB;

/// A 64 MiB disk: random, zero, text-like, random, a long hole, then small pieces.
fn disk_content() -> Vec<u8> {
    let mut disk = vec![0u8; VIRTUAL];
    disk[..4 * MIB].copy_from_slice(&pattern(100, 4 * MIB));
    let text = text(b"diskferry moves disks; ", 2 * MIB);
    disk[8 * MIB..10 * MIB].copy_from_slice(&text);
    disk[10 * MIB..12 * MIB].copy_from_slice(&pattern(101, 2 * MIB));
    disk[40 * MIB..41 * MIB].copy_from_slice(&pattern(102, MIB));
    disk[41 * MIB + MIB / 2..41 * MIB + MIB / 2 + 65536].fill(0xab);
    disk
}

/// Objects of `OBJECT` bytes holding any non-zero byte: what a sparse import allocates.
fn data_objects(content: &[u8]) -> usize {
    content
        .chunks(OBJECT)
        .filter(|c| c.iter().any(|&b| b != 0))
        .count()
}

struct Images {
    dir: tempfile::TempDir,
    content: Vec<u8>,
}

impl Images {
    /// The raw disk and its qcow2 conversions by qemu-img.
    fn make() -> Images {
        let dir = tempfile::tempdir().unwrap();
        let content = disk_content();
        let raw = dir.path().join("disk.raw");
        std::fs::write(&raw, &content).unwrap();
        let out = |name: &str| dir.path().join(name);
        qemu_img_qcow2(&raw, &out("plain.qcow2"), &[]);
        qemu_img_qcow2(&raw, &out("deflate.qcow2"), &["-c"]);
        let zstd = ["-c", "-o", "compression_type=zstd"];
        qemu_img_qcow2(&raw, &out("zstd.qcow2"), &zstd);
        Images { dir, content }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// What qemu-img reads from an image: the expected content.
    fn oracle(&self, name: &str) -> Vec<u8> {
        let out = self.dir.path().join(format!("{name}.oracle.raw"));
        run(
            "qemu-img",
            &[
                "convert",
                "-O",
                "raw",
                &self.path(name).to_string_lossy(),
                &out.to_string_lossy(),
            ],
        );
        let bytes = std::fs::read(&out).unwrap();
        std::fs::remove_file(out).unwrap();
        bytes
    }
}

fn spec(image: &str) -> RbdSpec {
    RbdSpec::parse(&format!("{TEST_POOL}/{image}")).unwrap()
}

fn image_exists(name: &str) -> bool {
    rbd::list(&pool()).unwrap().iter().any(|n| n == name)
}

fn rbd_du_used(name: &str) -> u64 {
    let conf = diskferry_integration_tests::ceph_conf();
    let json = run(
        "rbd",
        &[
            "--conf",
            &conf.to_string_lossy(),
            "du",
            "--format",
            "json",
            &format!("{TEST_POOL}/{name}"),
        ],
    );
    let text = String::from_utf8(json).unwrap();
    let at = text
        .find("\"used_size\":")
        .expect("rbd du json has used_size")
        + "\"used_size\":".len();
    text[at..]
        .split(|c: char| !c.is_ascii_digit())
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

/// Imports `source` into a new image and checks content, digest, metadata and sparseness.
async fn import_and_check(source: &str, expected: &[u8], format: &str) {
    let ioctx = pool();
    let mut guard = ImageGuard::new(&ioctx);
    let name = guard.add(unique("imp"));
    let ctx = context();
    let report = ops::import(
        &ctx,
        &Address::parse(source).unwrap(),
        &spec(&name),
        &ImportOptions::default(),
        &NoProgress,
        &CancellationToken::new(),
    )
    .await
    .unwrap_or_else(|e| panic!("import {source}: {e}"));
    assert_eq!(report.source_format, format);
    assert_eq!(report.size, expected.len() as u64);
    let image_content = rbd_export(&name);
    assert!(
        image_content == expected,
        "content of {name} differs from qemu-img's reading of {source}"
    );
    assert_eq!(report.digest, reference_digest(expected));
    let nonzero_objects = data_objects(expected);
    assert_eq!(
        rbd_du_used(&name),
        (nonzero_objects * OBJECT) as u64,
        "rbd du of {name}"
    );
    assert!(report.bytes_written <= (nonzero_objects * OBJECT) as u64);
    assert_eq!(report.bytes_skipped, report.size - report.bytes_written);
    let image = Image::open(&ioctx, &name, OpenMode::ReadOnly).unwrap();
    assert_eq!(
        image.metadata_get("diskferry.digest").unwrap(),
        Some(report.digest.clone())
    );
    assert_eq!(
        image.metadata_get("diskferry.source").unwrap().as_deref(),
        Some(report.source.as_str())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn imports_local_qcow2_deflate_zstd_and_raw_identical_to_qemu_img() {
    let images = Images::make();
    for (name, format) in [
        ("plain.qcow2", "qcow2"),
        ("deflate.qcow2", "qcow2"),
        ("zstd.qcow2", "qcow2"),
        ("disk.raw", "raw"),
    ] {
        let expected = images.oracle(name);
        assert_eq!(
            expected, images.content,
            "qemu-img reads {name} as the disk"
        );
        import_and_check(&images.path(name).to_string_lossy(), &expected, format).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn imports_from_http_with_range_requests() {
    let images = Images::make();
    let server = FileServer::start(images.dir.path().to_path_buf()).await;
    for (name, format) in [
        ("deflate.qcow2", "qcow2"),
        ("zstd.qcow2", "qcow2"),
        ("disk.raw", "raw"),
    ] {
        import_and_check(&server.url(name), &images.oracle(name), format).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn imports_from_an_rgw_bucket() {
    let images = Images::make();
    let ctx = context();
    let s3 = ctx.s3().await.unwrap();
    let bucket = unique("import-src").to_lowercase();
    s3.create_bucket(&bucket).await.unwrap();
    for name in ["plain.qcow2", "zstd.qcow2", "disk.raw"] {
        let data = Bytes::from(std::fs::read(images.path(name)).unwrap());
        s3.put_object(&bucket, name, data, &Default::default())
            .await
            .unwrap();
    }
    let result = async {
        import_and_check(
            &format!("s3://{bucket}/plain.qcow2"),
            &images.oracle("plain.qcow2"),
            "qcow2",
        )
        .await;
        import_and_check(
            &format!("s3://{bucket}/zstd.qcow2"),
            &images.oracle("zstd.qcow2"),
            "qcow2",
        )
        .await;
        import_and_check(&format!("s3://{bucket}/disk.raw"), &images.content, "raw").await;
    };
    let outcome = futures::FutureExt::catch_unwind(std::panic::AssertUnwindSafe(result)).await;
    s3.empty_and_delete_bucket(&bucket).await.unwrap();
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

/// Runs an import expected to fail and checks nothing is left under the image name.
async fn import_fails(source: &str, image: &str, options: &ImportOptions) -> Error {
    let err = ops::import(
        &context(),
        &Address::parse(source).unwrap(),
        &spec(image),
        options,
        &NoProgress,
        &CancellationToken::new(),
    )
    .await
    .expect_err("the import must fail");
    assert!(!image_exists(image), "{image} was left behind after: {err}");
    err
}

fn corrupt_copy(images: &Images, from: &str, to: &str, edit: impl FnOnce(&mut Vec<u8>)) -> PathBuf {
    let mut bytes = std::fs::read(images.path(from)).unwrap();
    edit(&mut bytes);
    let path = images.path(to);
    std::fs::write(&path, bytes).unwrap();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_sources_fail_clearly_and_leave_no_image() {
    let images = Images::make();
    let ioctx = pool();
    let mut guard = ImageGuard::new(&ioctx);

    // Malformed qcow2: the L1 table offset points past the end of the file.
    let bad = corrupt_copy(&images, "plain.qcow2", "bad-l1.qcow2", |b| {
        b[40..48].copy_from_slice(&(1u64 << 40).to_be_bytes())
    });
    let err = import_fails(
        &bad.to_string_lossy(),
        &guard.add(unique("bad")),
        &ImportOptions::default(),
    )
    .await;
    assert!(matches!(err, Error::Qcow2 { .. }), "{err}");
    assert!(err.to_string().contains("bad-l1.qcow2"), "{err}");

    // A source that ends early: the data clusters past the cut are missing.
    let len = std::fs::metadata(images.path("plain.qcow2")).unwrap().len() as usize;
    let short = corrupt_copy(&images, "plain.qcow2", "short.qcow2", |b| {
        b.truncate(len / 2)
    });
    let err = import_fails(
        &short.to_string_lossy(),
        &guard.add(unique("short")),
        &ImportOptions::default(),
    )
    .await;
    assert!(err.to_string().contains("short.qcow2"), "{err}");

    // HTTP 404.
    let server = FileServer::start(images.dir.path().to_path_buf()).await;
    let url = server.url("missing.qcow2");
    let err = import_fails(&url, &guard.add(unique("404")), &ImportOptions::default()).await;
    assert!(err.to_string().contains(&url), "{err}");

    // Missing bucket and missing key.
    let err = import_fails(
        "s3://no-such-bucket-df/x.qcow2",
        &guard.add(unique("nob")),
        &ImportOptions::default(),
    )
    .await;
    assert!(err.to_string().contains("no-such-bucket-df"), "{err}");
    let ctx = context();
    let s3 = ctx.s3().await.unwrap();
    let bucket = unique("import-empty").to_lowercase();
    s3.create_bucket(&bucket).await.unwrap();
    let err = import_fails(
        &format!("s3://{bucket}/nokey.qcow2"),
        &guard.add(unique("nok")),
        &ImportOptions::default(),
    )
    .await;
    s3.delete_bucket(&bucket).await.unwrap();
    assert!(err.to_string().contains("nokey.qcow2"), "{err}");

    // A missing local file.
    let err = import_fails(
        "/nonexistent/disk.qcow2",
        &guard.add(unique("nof")),
        &ImportOptions::default(),
    )
    .await;
    assert!(err.to_string().contains("/nonexistent/disk.qcow2"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_pool_and_existing_image_are_refused_and_force_replaces() {
    let images = Images::make();
    let source = Address::parse(&images.path("plain.qcow2").to_string_lossy()).unwrap();
    let ctx = context();
    let cancel = CancellationToken::new();

    let err = ops::import(
        &ctx,
        &source,
        &RbdSpec::parse("no-such-pool/x").unwrap(),
        &Default::default(),
        &NoProgress,
        &cancel,
    )
    .await
    .unwrap_err();
    match &err {
        Error::Ceph(e) => assert_eq!(e.kind(), ErrorKind::NotFound, "{err}"),
        other => panic!("{other}"),
    }
    assert!(err.to_string().contains("no-such-pool"), "{err}");

    let ioctx = pool();
    let mut guard = ImageGuard::new(&ioctx);
    let name = guard.add(unique("exists"));
    rbd::create(&ioctx, &name, MIB as u64, &Default::default()).unwrap();
    let err = ops::import(
        &ctx,
        &source,
        &spec(&name),
        &Default::default(),
        &NoProgress,
        &cancel,
    )
    .await
    .unwrap_err();
    assert!(matches!(err, Error::AlreadyExists(_)), "{err}");
    assert!(err.to_string().contains("--force"), "{err}");
    assert_eq!(
        Image::open(&ioctx, &name, OpenMode::ReadOnly)
            .unwrap()
            .size()
            .unwrap(),
        MIB as u64
    );

    let force = ImportOptions {
        sink: RbdSinkOptions {
            replace: true,
            ..Default::default()
        },
        ..Default::default()
    };
    ops::import(&ctx, &source, &spec(&name), &force, &NoProgress, &cancel)
        .await
        .unwrap();
    assert!(
        rbd_export(&name) == images.content,
        "forced import replaced the content"
    );
    let leftovers: Vec<String> = rbd::list(&ioctx)
        .unwrap()
        .into_iter()
        .filter(|n| n.starts_with(&format!("{name}.")))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

/// Cancels the transfer once it passed a given offset.
struct CancelAt {
    offset: u64,
    token: CancellationToken,
    fired: AtomicBool,
}

impl Progress for CancelAt {
    fn position(&self, offset: u64) {
        if offset >= self.offset && !self.fired.swap(true, Ordering::SeqCst) {
            self.token.cancel();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_import_removes_the_partial_image_unless_asked_to_keep_it() {
    let images = Images::make();
    let source = Address::parse(&images.path("deflate.qcow2").to_string_lossy()).unwrap();
    let ctx = context();
    let ioctx = pool();
    let mut guard = ImageGuard::new(&ioctx);
    for keep in [false, true] {
        let name = guard.add(unique("intr"));
        let token = CancellationToken::new();
        let progress = CancelAt {
            offset: 4 << 20,
            token: token.clone(),
            fired: AtomicBool::new(false),
        };
        let options = ImportOptions {
            sink: RbdSinkOptions {
                keep_partial: keep,
                ..Default::default()
            },
            ..Default::default()
        };
        let err = ops::import(&ctx, &source, &spec(&name), &options, &progress, &token)
            .await
            .unwrap_err();
        assert!(err.is_cancelled(), "{err}");
        // Never under the final name: a kept partial image stays under its working name.
        assert!(!image_exists(&name), "keep_partial = {keep}");
        let prefix = format!("{name}{}", diskferry::sinks::WORKING_NAME_INFIX);
        let working: Vec<String> = rbd::list(&ioctx)
            .unwrap()
            .into_iter()
            .filter(|n| n.starts_with(&prefix))
            .collect();
        assert_eq!(
            working.len(),
            usize::from(keep),
            "keep_partial = {keep}: {working:?}"
        );
        for image in working {
            guard.add(image);
        }
    }
}
