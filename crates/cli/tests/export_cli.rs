//! `diskferry export`, `export-vm` and `import-vm` end to end on the live cluster and RGW,
//! through the real binary: `--json` output, the default format from the key's extension,
//! refusal of an existing key, and an interrupt (SIGINT) in the middle of an upload, after
//! which no object, no multipart upload and no temporary snapshot remain.

mod common;

use common::{diskferry, ok, run};

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use diskferry_integration_tests::{
    pattern, pool, rbd_export, s3_config, unique, ImageGuard, TEST_POOL,
};
use objstore::S3Store;
use rbd::{CreateOptions, Image, OpenMode};

const MIB: usize = 1 << 20;

async fn make_image(guard: &mut ImageGuard, name: &str, content: &[u8]) {
    let io = pool();
    let name = guard.add(name.to_string());
    rbd::create(&io, &name, content.len() as u64, &CreateOptions::default()).unwrap();
    let image = Image::open(&io, &name, OpenMode::ReadWrite).unwrap();
    for (i, piece) in content.chunks(4 * MIB).enumerate() {
        if piece.iter().any(|&b| b != 0) {
            image
                .write((i * 4 * MIB) as u64, Bytes::copy_from_slice(piece))
                .await
                .unwrap();
        }
    }
    image.flush().await.unwrap();
}

fn snapshots(name: &str) -> usize {
    Image::open(&pool(), name, OpenMode::ReadOnly)
        .unwrap()
        .snap_list()
        .unwrap()
        .len()
}

async fn bucket(prefix: &str) -> (S3Store, String) {
    let store = S3Store::from_config(&s3_config()).unwrap();
    let name = unique(prefix).to_lowercase();
    store.create_bucket(&name).await.unwrap();
    (store, name)
}

#[tokio::test(flavor = "multi_thread")]
async fn export_json_default_format_and_refusal_of_an_existing_key() {
    let (store, bucket) = bucket("cli-export").await;
    let mut guard = ImageGuard::new(&pool());
    let image = unique("cli-export");
    let mut content = vec![0u8; 20 * MIB];
    content[..3 * MIB].copy_from_slice(&pattern(1000, 3 * MIB));
    make_image(&mut guard, &image, &content).await;
    let src = format!("rbd:{TEST_POOL}/{image}");

    // The format comes from the extension.
    for (key, format) in [
        ("a/disk.raw.zst", "raw.zst"),
        ("a/disk.img", "raw"),
        ("a/disk", "qcow2"),
    ] {
        let dst = format!("s3://{bucket}/{key}");
        let report = ok(&run(&["export", &src, &dst, "--json"]));
        assert_eq!(report["format"], format, "{key}: {report}");
        assert_eq!(report["destination"], dst.as_str());
        assert_eq!(report["size"], content.len() as u64);
        assert_eq!(report["temporary_snapshot"], true);
        let info = store.head(&bucket, key).await.unwrap();
        assert_eq!(report["object_size"], info.size);
        assert_eq!(
            info.metadata.get("diskferry-digest").map(String::as_str),
            report["digest"].as_str()
        );
    }
    let dst = format!("s3://{bucket}/a/disk");
    let before = store.head(&bucket, "a/disk").await.unwrap();
    let out = run(&["export", &src, &dst]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("already exists") && stderr.contains("--force"),
        "{stderr}"
    );
    assert_eq!(
        store.head(&bucket, "a/disk").await.unwrap().etag,
        before.etag
    );
    ok(&run(&[
        "export",
        &src,
        &dst,
        "--force",
        "--compress",
        "zstd",
        "--json",
    ]));
    let out = run(&[
        "export",
        &src,
        &format!("s3://{bucket}/b.raw"),
        "--compress",
        "zstd",
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--compress"));
    assert_eq!(snapshots(&image), 0);
    store.empty_and_delete_bucket(&bucket).await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn sigint_in_the_middle_aborts_the_upload_and_removes_the_snapshot() {
    let (store, bucket) = bucket("cli-sigint").await;
    let mut guard = ImageGuard::new(&pool());
    let image = unique("cli-sigint");
    make_image(&mut guard, &image, &pattern(1001, 256 * MIB)).await;
    let key = "big/disk.qcow2";
    let mut child = diskferry()
        .args([
            "export",
            &format!("rbd:{TEST_POOL}/{image}"),
            &format!("s3://{bucket}/{key}"),
            "--part-size",
            "5M",
            "--jobs",
            "1",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Interrupt once the multipart upload is under way.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let pending = store.list_multipart_uploads(&bucket, key).await.unwrap();
        if !pending.is_empty() {
            break;
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "the export ended before it was interrupted"
        );
        assert!(Instant::now() < deadline, "no multipart upload started");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let kill = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let out = tokio::task::spawn_blocking(move || child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("interrupted"), "{stderr}");
    assert!(
        store.list(&bucket, key).await.unwrap().is_empty(),
        "an object is visible"
    );
    assert!(
        store
            .list_multipart_uploads(&bucket, key)
            .await
            .unwrap()
            .is_empty(),
        "a multipart upload is left"
    );
    assert_eq!(snapshots(&image), 0, "the temporary snapshot is left");
    store.empty_and_delete_bucket(&bucket).await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn export_vm_then_import_vm_through_the_cli() {
    let (store, bucket) = bucket("cli-vm").await;
    let mut guard = ImageGuard::new(&pool());
    let (os, data) = (unique("cli-vm-os"), unique("cli-vm-data"));
    let (os_content, data_content) = (pattern(1002, 8 * MIB), pattern(1003, 12 * MIB));
    make_image(&mut guard, &os, &os_content).await;
    make_image(&mut guard, &data, &data_content).await;
    let bundle = format!("s3://{bucket}/vms/app1/");
    let report = ok(&run(&[
        "export-vm",
        "--disk",
        &format!("os=rbd:{TEST_POOL}/{os}"),
        "--disk",
        &format!("data=rbd:{TEST_POOL}/{data}"),
        "--label",
        "vm=app1",
        "--compress",
        "zstd",
        &bundle,
        "--json",
    ]));
    assert_eq!(report["manifest"]["name"], "app1");
    assert_eq!(report["manifest"]["labels"]["vm"], "app1");
    assert_eq!(report["manifest"]["disks"][1]["role"], "data");
    assert_eq!(report["manifest"]["disks"][1]["compression"], "zstd");
    let prefix = unique("cli-vm-back");
    guard.add(format!("{prefix}-os"));
    guard.add(format!("{prefix}-data"));
    let restored = ok(&run(&[
        "import-vm",
        &bundle,
        "--pool",
        TEST_POOL,
        "--prefix",
        &prefix,
        "--json",
    ]));
    assert_eq!(restored["disks"][0]["verified"], true);
    assert!(rbd_export(&format!("{prefix}-os")) == os_content);
    assert!(rbd_export(&format!("{prefix}-data")) == data_content);

    store
        .delete(&bucket, "vms/app1/manifest.json")
        .await
        .unwrap();
    let out = run(&[
        "import-vm",
        &bundle,
        "--pool",
        TEST_POOL,
        "--prefix",
        &unique("never"),
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("incomplete"));
    store.empty_and_delete_bucket(&bucket).await.unwrap();
}
