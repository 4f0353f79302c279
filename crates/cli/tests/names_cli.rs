//! No name that comes from outside (a VM manifest's disk object or VM name, a Longhorn
//! volume or backup name, a block checksum in a backup cfg) makes diskferry read or write
//! outside its bundle, prefix or store: `..`, absolute paths, separators, empty names, NUL
//! and other control characters are refused with an error naming the input, on a local
//! directory and on S3; `%2e%2e%2f` is no escape (names are never percent-decoded). An
//! oversized manifest is refused before it is read.

// Not every helper is used here.
#[allow(dead_code)]
mod common;

use common::run;

use std::path::Path;
use std::process::Output;

use diskferry_integration_tests::{pattern, s3_config, unique, TEST_POOL};
use objstore::{PutOptions, S3Store};

const MIB: usize = 1 << 20;
/// `diskferry::ops::vm::MANIFEST_MAX`.
const MANIFEST_MAX: usize = 1 << 20;

/// A manifest of one raw disk `object` of the VM `name`.
fn manifest(name: &str, object: &str) -> String {
    serde_json::json!({
        "kind": "diskferry-vm-bundle",
        "version": 1,
        "name": name,
        "labels": {},
        "created": "2026-12-06T19:00:00Z",
        "consistency": "crash-consistent",
        "digest_algorithm": "sha256-of-1MiB-block-sha256s",
        "disks": [{
            "role": "os",
            "object": object,
            "source": "rbd:rbd/vm-os@snap",
            "format": "raw",
            "compression": "none",
            "size": MIB,
            "object_size": MIB,
            "digest": "0".repeat(64),
        }],
    })
    .to_string()
}

/// `diskferry import-vm BUNDLE --pool TEST_POOL [--prefix PREFIX]`.
fn import_vm(bundle: &str, prefix: Option<&str>) -> Output {
    let mut args = vec!["import-vm", bundle, "--pool", TEST_POOL];
    args.extend(prefix.iter().flat_map(|p| ["--prefix", *p]));
    run(&args)
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Asserts that `out` failed (exit 1) with `words` and the name, escaped as Rust's `{:?}`
/// writes it (as the error does), in its message.
fn assert_refused(out: &Output, name: &str, words: &str) {
    assert_refused_with(out, name, words, 1);
}

/// [`assert_refused`] with exit status `code`.
fn assert_refused_with(out: &Output, name: &str, words: &str, code: i32) {
    let err = stderr(out);
    assert_eq!(out.status.code(), Some(code), "{name:?}: {err}");
    let shown = format!("{name:?}");
    assert!(
        err.contains(&shown[1..shown.len() - 1]),
        "{name:?} not named: {err}"
    );
    assert!(err.contains(words), "{name:?}: no {words:?} in: {err}");
}

/// Disk object names that would leave the bundle or hide in it.
const ESCAPING_OBJECTS: &[&str] = &[
    "../outside.raw",
    "..",
    "/etc/passwd",
    "os/../../outside.raw",
    "",
    ".hidden.raw",
    "os\0.raw",
    "os\u{1b}[2J.raw",
    "..\\outside.raw",
];

#[test]
fn import_vm_refuses_manifest_object_names_that_leave_a_directory_bundle() {
    let work = tempfile::tempdir().unwrap();
    let bundle = work.path().join("bundle");
    std::fs::create_dir(&bundle).unwrap();
    // What an escape would read: a file beside the bundle.
    std::fs::write(work.path().join("outside.raw"), pattern(9, MIB)).unwrap();
    let bundle_arg = format!("{}/", bundle.display());
    let prefix = unique("names-vm");

    for object in ESCAPING_OBJECTS {
        std::fs::write(bundle.join("manifest.json"), manifest("vm", object)).unwrap();
        let out = import_vm(&bundle_arg, Some(&prefix));
        assert_refused(&out, object, "is not a plain name inside the bundle");
    }

    // Percent-encoding is no escape: the name is looked up as it is, inside the bundle.
    let encoded = "%2e%2e%2foutside.raw";
    std::fs::write(bundle.join("manifest.json"), manifest("vm", encoded)).unwrap();
    let out = import_vm(&bundle_arg, Some(&prefix));
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!("{}/{encoded}", bundle.display())) && err.contains("does not exist"),
        "{err}"
    );

    // The VM name is the default image prefix: it must be a plain name too.
    std::fs::write(bundle.join("manifest.json"), manifest("../vm", "os.raw")).unwrap();
    let out = import_vm(&bundle_arg, None);
    assert_refused(&out, "../vm", "VM name");
}

#[test]
fn import_vm_refuses_a_manifest_too_large_to_be_one() {
    let work = tempfile::tempdir().unwrap();
    let bundle = work.path().join("bundle");
    std::fs::create_dir(&bundle).unwrap();
    let mut huge = manifest("vm", "os.raw").into_bytes();
    huge.resize(MANIFEST_MAX + 1, b' ');
    std::fs::write(bundle.join("manifest.json"), &huge).unwrap();
    let out = import_vm(&format!("{}/", bundle.display()), None);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!("{} bytes is not a manifest", MANIFEST_MAX + 1)),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn import_vm_refuses_manifest_names_that_leave_an_s3_prefix() {
    let store = S3Store::from_config(&s3_config()).unwrap();
    let bucket = unique("cli-names").to_lowercase();
    store.create_bucket(&bucket).await.unwrap();
    let put = |key: &'static str, body: Vec<u8>| {
        let store = &store;
        let bucket = &bucket;
        async move {
            store
                .put_object(
                    bucket,
                    key,
                    body.into(),
                    &PutOptions {
                        overwrite: true,
                        ..PutOptions::default()
                    },
                )
                .await
                .unwrap();
        }
    };
    // What an escape would read: an object beside the bundle's prefix.
    put("other/disk.raw", pattern(11, MIB)).await;
    let bundle = format!("s3://{bucket}/vm/");
    let prefix = unique("names-vm");
    for object in [
        "../other/disk.raw",
        "/other/disk.raw",
        "x/../../other/disk.raw",
        "",
    ] {
        put("vm/manifest.json", manifest("vm", object).into_bytes()).await;
        let out = import_vm(&bundle, Some(&prefix));
        assert_refused(&out, object, "is not a plain name inside the bundle");
    }
    let mut huge = manifest("vm", "os.raw").into_bytes();
    huge.resize(MANIFEST_MAX + 1, b' ');
    put("vm/manifest.json", huge).await;
    let out = import_vm(&bundle, None);
    assert!(
        stderr(&out).contains("bytes is not a manifest"),
        "{}",
        stderr(&out)
    );
    store.empty_and_delete_bucket(&bucket).await.unwrap();
}

/// A backup of a 4 MiB file into the vfs store at `target` as volume `vol`, backup `b1`;
/// returns the backup cfg's path.
fn backup(work: &Path, target: &str) -> std::path::PathBuf {
    let src = work.join("disk.raw");
    std::fs::write(&src, pattern(12, 4 * MIB)).unwrap();
    let out = run(&[
        "longhorn",
        "backup",
        src.to_str().unwrap(),
        target,
        "--volume",
        "vol",
        "--name",
        "b1",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let mut cfgs: Vec<_> = walk(&work.join("store"))
        .into_iter()
        .filter(|p| p.ends_with("backups/backup_b1.cfg"))
        .collect();
    assert_eq!(cfgs.len(), 1, "{cfgs:?}");
    cfgs.remove(0)
}

/// Every file below `dir`.
fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}

#[test]
fn longhorn_names_and_block_paths_from_outside_stay_in_the_store() {
    let work = tempfile::tempdir().unwrap();
    let store_dir = work.path().join("store");
    std::fs::create_dir(&store_dir).unwrap();
    let target = format!("vfs://{}/", store_dir.display());
    let cfg_path = backup(work.path(), &target);
    let restored = work.path().join("restored.raw");
    let restored = restored.to_str().unwrap();

    // Names given on the command line (no NUL: an argument cannot hold one): bad arguments,
    // refused before anything is read (status 2).
    for volume in ["../vol", "/etc", "vol/..", "v\u{1b}l"] {
        let out = run(&["longhorn", "restore", &target, "--volume", volume, restored]);
        assert_refused_with(&out, volume, "volume", 2);
    }
    for name in ["../b1", "..", "b1/../../x"] {
        let out = run(&[
            "longhorn", "restore", &target, "--volume", "vol", "--backup", name, restored,
        ]);
        assert_refused_with(&out, name, "backup", 2);
    }

    // A block checksum in the cfg that climbs out of the store: refused, nothing read.
    let cfg = std::fs::read_to_string(&cfg_path).unwrap();
    let checksum = cfg
        .split("\"BlockChecksum\":\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("a block in the cfg")
        .to_owned();
    let evil = "../../../../../../../../../../../../etc/passwd";
    std::fs::write(&cfg_path, cfg.replace(&checksum, evil)).unwrap();
    let out = run(&["longhorn", "restore", &target, "--volume", "vol", restored]);
    assert_refused(&out, evil, "is not 64 lowercase hex");
    assert!(!Path::new(restored).exists(), "a restore was left behind");

    // volume.cfg's last backup name (what `latest` resolves to).
    std::fs::write(&cfg_path, &cfg).unwrap();
    let volume_cfg = cfg_path
        .parent()
        .and_then(Path::parent)
        .unwrap()
        .join("volume.cfg");
    let text = std::fs::read_to_string(&volume_cfg).unwrap();
    let evil = "../../../../etc";
    std::fs::write(
        &volume_cfg,
        text.replace(
            "\"LastBackupName\":\"b1\"",
            &format!("\"LastBackupName\":\"{evil}\""),
        ),
    )
    .unwrap();
    let out = run(&["longhorn", "restore", &target, "--volume", "vol", restored]);
    assert_refused(&out, evil, "backup");
}
