//! `diskferry longhorn restore` into objects and files end to end, through the real binary,
//! on the live RGW: a backup (vfs target) restored into an RGW qcow2 object (`qemu-img check`
//! clean, `qemu-img compare` identical to the source), into a raw object with `--format`, and
//! into a local raw.zst file (`zstd -d` gives the source); `--json` output; an existing key
//! refused without `--force` and left untouched, replaced with it. `longhorn backup`'s
//! compression flag.

mod common;

use common::{ok, run};

use diskferry_integration_tests::{pattern, qemu_check_and_compare, s3_config, unique};
use objstore::S3Store;

const MIB: usize = 1 << 20;

#[tokio::test(flavor = "multi_thread")]
async fn longhorn_restore_to_objects_and_files_json_and_refusal() {
    let store = S3Store::from_config(&s3_config()).unwrap();
    let bucket = unique("cli-lhrestore").to_lowercase();
    store.create_bucket(&bucket).await.unwrap();
    let work = tempfile::tempdir().unwrap();

    // 10 MiB: random data, a hole, text, a hole at the end.
    let mut content = vec![0u8; 10 * MIB];
    content[..3 * MIB].copy_from_slice(&pattern(2000, 3 * MIB));
    for (i, b) in content[5 * MIB..7 * MIB].iter_mut().enumerate() {
        *b = b"restore me; "[i % 12];
    }
    let src = work.path().join("source.raw");
    std::fs::write(&src, &content).unwrap();
    let target_dir = work.path().join("target");
    std::fs::create_dir(&target_dir).unwrap();
    let target = format!("vfs://{}/", target_dir.display());
    let backup = ok(&run(&[
        "longhorn",
        "backup",
        src.to_str().unwrap(),
        &target,
        "--volume",
        "clivol",
        "--name",
        "b1",
        "--json",
    ]));
    // Blocks 0-1 (random, the second partly) and 2-3 (text); 4 (the tail) is a hole.
    assert_eq!(backup["new_blocks"], 4, "{backup}");

    // qcow2 object (from the extension).
    let key = "r/disk.qcow2";
    let dst = format!("s3://{bucket}/{key}");
    let report = ok(&run(&[
        "longhorn", "restore", &target, "--volume", "clivol", &dst, "--json",
    ]));
    assert_eq!(report["format"], "qcow2", "{report}");
    assert_eq!(report["destination"], dst.as_str());
    assert_eq!(report["backup"], "b1");
    assert_eq!(report["digest_verified"], true);
    let info = store.head(&bucket, key).await.unwrap();
    assert_eq!(report["bytes_written"], info.size);
    let got = work.path().join("got.qcow2");
    std::fs::write(&got, store.get_object_bytes(&bucket, key).await.unwrap()).unwrap();
    qemu_check_and_compare(&got, &src);

    // The same key again: refused, untouched.
    let out = run(&["longhorn", "restore", &target, "--volume", "clivol", &dst]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("already exists") && stderr.contains("--force"),
        "{stderr}"
    );
    assert_eq!(store.head(&bucket, key).await.unwrap().etag, info.etag);

    // --force --format raw replaces it with the raw disk.
    let report = ok(&run(&[
        "longhorn", "restore", &target, "--volume", "clivol", "--backup", "b1", &dst, "--force",
        "--format", "raw", "--json",
    ]));
    assert_eq!(report["format"], "raw", "{report}");
    let bytes = store.get_object_bytes(&bucket, key).await.unwrap();
    assert!(
        bytes[..] == content[..],
        "the raw object is the source disk"
    );

    // A local raw.zst file.
    let zst = work.path().join("disk.raw.zst");
    let report = ok(&run(&[
        "longhorn",
        "restore",
        &target,
        "--volume",
        "clivol",
        zst.to_str().unwrap(),
        "--json",
    ]));
    assert_eq!(report["format"], "raw.zst", "{report}");
    let decoded = diskferry_integration_tests::run("zstd", &["-d", "-c", zst.to_str().unwrap()]);
    assert!(decoded == content, "zstd -d gives the source disk");

    // A format for an RBD destination is refused.
    let out = run(&[
        "longhorn",
        "restore",
        &target,
        "--volume",
        "clivol",
        "rbd:rbd/never-created",
        "--format",
        "qcow2",
    ]);
    assert!(!out.status.success());

    assert!(store
        .list_multipart_uploads(&bucket, "")
        .await
        .unwrap()
        .is_empty());
    store.empty_and_delete_bucket(&bucket).await.unwrap();
}

/// One compression flag across convert, export and longhorn (issue 11 item 11): `longhorn
/// backup` takes `-c/--compression`, and the older `--compress` still works without being
/// shown. What a backup used is read back from the cfg Longhorn reads (`inspect`).
#[test]
fn longhorn_backup_takes_c_compression_and_the_old_compress() {
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("disk.raw");
    std::fs::write(&src, pattern(2100, 2 * MIB)).unwrap();
    let target_dir = work.path().join("target");
    std::fs::create_dir(&target_dir).unwrap();
    let target = format!("vfs://{}/", target_dir.display());
    for (volume, flag, method) in [
        ("cvol", "-c", "gzip"),
        ("compressionvol", "--compression", "none"),
        ("compressvol", "--compress", "gzip"),
    ] {
        let src = src.to_str().unwrap();
        let args = [
            "longhorn", "backup", src, &target, "--volume", volume, flag, method, "--json",
        ];
        let report = ok(&run(&args));
        assert_eq!(report["compression"], method, "{flag} {method}: {report}");
        let cfg = ok(&run(&[
            "longhorn", "inspect", &target, "--volume", volume, "--backup", "latest", "--json",
        ]));
        assert_eq!(cfg["cfg"]["CompressionMethod"], method, "{flag}: {cfg}");
    }

    let help = run(&["longhorn", "backup", "--help"]);
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(help.contains("-c, --compression <"), "{help}");
    assert!(
        !help.contains("--compress <"),
        "the old name is not offered: {help}"
    );
}

/// One S3 configuration (issue 12 item 4): a Longhorn command reaches an S3 target with the
/// same settings as every command, and a Longhorn user's own endpoint variable
/// `AWS_ENDPOINTS` still serves when no AWS endpoint is set; the target's `@REGION` is
/// accepted as Longhorn writes it.
#[tokio::test(flavor = "multi_thread")]
async fn longhorn_s3_target_through_longhorn_endpoint_variable() {
    let s3 = s3_config();
    let store = S3Store::from_config(&s3).unwrap();
    let bucket = unique("cli-lhenv").to_lowercase();
    store.create_bucket(&bucket).await.unwrap();
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("disk.raw");
    std::fs::write(&src, pattern(2200, 2 * MIB)).unwrap();
    let target = format!("s3://{bucket}@eu-west-3/lh/");
    let longhorn_env = |args: &[&str]| {
        common::diskferry()
            .env_remove("AWS_ENDPOINT_URL")
            .env("AWS_ENDPOINTS", s3.endpoint.clone().unwrap())
            .args(args)
            .output()
            .unwrap()
    };
    let report = ok(&longhorn_env(&[
        "longhorn",
        "backup",
        src.to_str().unwrap(),
        &target,
        "--volume",
        "envvol",
        "--json",
    ]));
    assert_eq!(report["new_blocks"], 1, "{report}");
    let listed = ok(&longhorn_env(&["longhorn", "ls", &target, "--json"]));
    assert_eq!(listed[0]["volume"], "envvol", "{listed}");
    // The objects are where Longhorn puts them: under the URL's path in that bucket.
    let keys: Vec<String> = store
        .list(&bucket, "")
        .await
        .unwrap()
        .into_iter()
        .map(|o| o.key)
        .collect();
    assert!(
        keys.iter()
            .all(|k| k.starts_with("lh/backupstore/volumes/")),
        "{keys:?}"
    );
    store.empty_and_delete_bucket(&bucket).await.unwrap();
}
