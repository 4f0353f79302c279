//! Longhorn backup and restore (issue 6) on the live cluster, through RGW and through `vfs://`.
//!
//! Oracles independent of diskferry: `rbd export` for image content, `qemu-img convert` to make
//! the qcow2 input, the files on disk for raw restores, the fixture README's SHA-256 sums.

use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use diskferry::longhorn::{self as lh, BackupJob, BackupStore, BackupTarget, RestoreJob};
use diskferry::{Address, CancellationToken, Context, NoProgress};
use diskferry_integration_tests::{
    context, pattern, pool, rbd_export, run, s3_config, unique, ImageGuard, TEST_POOL,
};
use futures::FutureExt;
use rbd::{CreateOptions, Image, OpenMode};
use sha2::{Digest, Sha256};

const MIB: usize = 1 << 20;
const BLOCK: usize = 2 * MIB;
/// The test disk: small, as the OSD's sparse file only grows.
const SIZE: usize = 16 * MIB;

/// 16 MiB: random, text, a hole, random, a partial block, a hole, a random block at the end.
fn disk_v1() -> Vec<u8> {
    let mut d = vec![0u8; SIZE];
    d[..BLOCK].copy_from_slice(&pattern(1, BLOCK));
    let text: Vec<u8> = b"longhorn block; "
        .iter()
        .copied()
        .cycle()
        .take(BLOCK)
        .collect();
    d[BLOCK..2 * BLOCK].copy_from_slice(&text);
    d[3 * BLOCK..4 * BLOCK].copy_from_slice(&pattern(2, BLOCK));
    d[4 * BLOCK + 4096..4 * BLOCK + 4096 + 65536].copy_from_slice(&pattern(3, 65536));
    d[7 * BLOCK..8 * BLOCK].copy_from_slice(&pattern(4, BLOCK));
    d
}

/// Non-zero 2 MiB blocks of a disk: what a backup must store.
fn data_blocks(d: &[u8]) -> u64 {
    d.chunks(BLOCK)
        .filter(|c| c.iter().any(|&b| b != 0))
        .count() as u64
}

/// The three changes of the second backup: a whole block rewritten, a 4 KiB write inside a
/// block (the rest of that block must come from the image, not be zeroed), and a hole filled.
const CHANGES: [(usize, usize, u64); 3] = [
    (0, BLOCK, 10),
    (3 * BLOCK + 8192, 4096, 11),
    (5 * BLOCK + 512 * 1024, 65536, 12),
];

fn sha(d: &[u8]) -> String {
    hex::encode(Sha256::digest(d))
}

async fn write_image(image: &Image, offset: usize, data: Vec<u8>) {
    image
        .write(offset as u64, Bytes::from(data))
        .await
        .expect("write the test image");
}

/// A backup target for one test: a temp dir, or a fresh RGW bucket removed at the end.
struct Target {
    url: String,
    bucket: Option<String>,
    _dir: Option<tempfile::TempDir>,
}

impl Target {
    fn vfs() -> Target {
        let dir = tempfile::tempdir().unwrap();
        Target {
            url: format!("vfs://{}/", dir.path().display()),
            bucket: None,
            _dir: Some(dir),
        }
    }

    async fn rgw() -> Target {
        let bucket = unique("lhint").to_lowercase();
        objstore::S3Store::from_config(&s3_config())
            .unwrap()
            .create_bucket(&bucket)
            .await
            .unwrap();
        Target {
            url: format!("s3://{bucket}@us-east-1/backups/"),
            bucket: Some(bucket),
            _dir: None,
        }
    }

    fn open(&self) -> (BackupTarget, BackupStore) {
        let s3 = self.bucket.as_ref().map(|_| s3_config());
        lh::open_store(&self.url, s3).unwrap()
    }

    async fn cleanup(&self) {
        if let Some(b) = &self.bucket {
            objstore::S3Store::from_config(&s3_config())
                .unwrap()
                .empty_and_delete_bucket(b)
                .await
                .unwrap();
        }
    }
}

/// Runs `body` against `target`, then removes the bucket even if the body panicked.
async fn with_target<F>(target: Target, body: impl FnOnce(&'static Target) -> F)
where
    F: std::future::Future<Output = ()>,
{
    let target: &'static Target = Box::leak(Box::new(target));
    let outcome = AssertUnwindSafe(body(target)).catch_unwind().await;
    target.cleanup().await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

async fn backup(
    ctx: &Context,
    t: &Target,
    src: &str,
    volume: &str,
    name: &str,
    since: Option<&str>,
) -> lh::BackupReport {
    let (target, store) = t.open();
    let mut job = BackupJob::new(volume);
    job.backup = Some(name.into());
    job.since = since.map(str::to_owned);
    job.labels.insert("vm".into(), "test-vm".into());
    lh::backup(
        ctx,
        &store,
        &target,
        &Address::parse(src).unwrap(),
        &job,
        &NoProgress,
        &CancellationToken::new(),
    )
    .await
    .unwrap_or_else(|e| panic!("backup {src} into {}: {e}", t.url))
}

async fn restore(
    ctx: &Context,
    t: &Target,
    volume: &str,
    backup: &str,
    dst: &str,
) -> diskferry::Result<lh::RestoreReport> {
    let (_, store) = t.open();
    let mut job = RestoreJob::new(volume);
    job.backup = Some(backup.into());
    lh::restore(
        ctx,
        &store,
        &job,
        &Address::parse(dst).unwrap(),
        &NoProgress,
        &CancellationToken::new(),
    )
    .await
}

fn file_in(dir: &Path, name: &str) -> PathBuf {
    dir.join(name)
}

/// RBD → backup → RBD; 3 changed blocks → incremental backup of exactly 3 new blocks; both
/// backups restore to their own content; a block turned to zero drops out; deleting the first
/// backup keeps every block the later ones need.
async fn rbd_round_trip(t: &'static Target) {
    let ctx = context();
    let io = pool();
    let mut guard = ImageGuard::new(&io);
    let src = guard.add(unique("lhsrc"));
    let back = guard.add(unique("lhback"));
    rbd::create(&io, &src, SIZE as u64, &CreateOptions::default()).unwrap();
    let image = Image::open(&io, &src, OpenMode::ReadWrite).unwrap();
    let v1 = disk_v1();
    for (i, chunk) in v1.chunks(BLOCK).enumerate() {
        if chunk.iter().any(|&b| b != 0) {
            write_image(&image, i * BLOCK, chunk.to_vec()).await;
        }
    }
    image.snap_create("s1").unwrap();
    let volume = unique("vol");

    let r1 = backup(
        &ctx,
        t,
        &format!("rbd:{TEST_POOL}/{src}@s1"),
        &volume,
        "b1",
        None,
    )
    .await;
    assert_eq!(r1.new_blocks, data_blocks(&v1), "{r1:?}");
    assert_eq!(r1.blocks_total, data_blocks(&v1));
    assert!(!r1.incremental);
    assert_eq!(r1.compression, "lz4");
    assert!(r1.digest.is_some());

    let rr = restore(&ctx, t, &volume, "b1", &format!("rbd:{TEST_POOL}/{back}"))
        .await
        .unwrap();
    assert_eq!(rr.digest_verified, Some(true));
    assert_eq!(sha(&rbd_export(&back)), sha(&v1), "RBD → backup → RBD");

    // Change 3 blocks.
    let mut v2 = v1.clone();
    for (off, len, seed) in CHANGES {
        let data = pattern(seed, len);
        v2[off..off + len].copy_from_slice(&data);
        write_image(&image, off, data).await;
    }
    image.snap_create("s2").unwrap();
    let r2 = backup(
        &ctx,
        t,
        &format!("rbd:{TEST_POOL}/{src}@s2"),
        &volume,
        "b2",
        Some("s1"),
    )
    .await;
    assert_eq!(
        r2.new_blocks, 3,
        "exactly the 3 changed blocks are uploaded: {r2:?}"
    );
    assert!(r2.incremental);
    assert_eq!(r2.merged_with.as_deref(), Some("b1"));
    assert_eq!(r2.blocks_total, data_blocks(&v2));
    // librbd reports changed extents at its own allocation granularity, so a little more
    // than the bytes written is read, but far less than the disk's data.
    assert!(
        (r2.bytes_read as usize) < 3 * BLOCK,
        "only changed extents are read: {} bytes",
        r2.bytes_read
    );

    let dir = tempfile::tempdir().unwrap();
    let f2 = file_in(dir.path(), "b2.raw");
    restore(&ctx, t, &volume, "b2", f2.to_str().unwrap())
        .await
        .unwrap();
    assert_eq!(
        sha(&std::fs::read(&f2).unwrap()),
        sha(&v2),
        "second backup restores the new content"
    );
    let f1 = file_in(dir.path(), "b1.raw");
    restore(&ctx, t, &volume, "b1", f1.to_str().unwrap())
        .await
        .unwrap();
    assert_eq!(
        sha(&std::fs::read(&f1).unwrap()),
        sha(&v1),
        "first backup still restores the old content"
    );

    // A block that becomes zero (discarded) leaves the block list.
    image.discard(7 * BLOCK as u64, BLOCK as u64).await.unwrap();
    let mut v3 = v2.clone();
    v3[7 * BLOCK..8 * BLOCK].fill(0);
    image.snap_create("s3").unwrap();
    let r3 = backup(
        &ctx,
        t,
        &format!("rbd:{TEST_POOL}/{src}@s3"),
        &volume,
        "b3",
        Some("s2"),
    )
    .await;
    assert_eq!(r3.new_blocks, 0, "{r3:?}");
    assert_eq!(r3.blocks_total, data_blocks(&v3));

    // Deleting the first backup keeps what b2 and b3 need.
    let (_, store) = t.open();
    let rm = lh::remove(&store, &volume, "b1").await.unwrap();
    assert_eq!(rm.last_backup, "b3");
    let f2b = file_in(dir.path(), "b2-after-rm.raw");
    restore(&ctx, t, &volume, "b2", f2b.to_str().unwrap())
        .await
        .unwrap();
    assert_eq!(sha(&std::fs::read(&f2b).unwrap()), sha(&v2));
    let f3 = file_in(dir.path(), "b3.raw");
    restore(&ctx, t, &volume, lh::LATEST, f3.to_str().unwrap())
        .await
        .unwrap();
    assert_eq!(sha(&std::fs::read(&f3).unwrap()), sha(&v3));
    let listed = lh::list(&store, Some(&volume)).await.unwrap();
    let names: Vec<&str> = listed[0].backups.iter().map(|b| b.name.as_str()).collect();
    assert_eq!(names, ["b2", "b3"]);
    drop(image);
}

/// qcow2 → backup → raw file.
async fn qcow2_round_trip(t: &'static Target) {
    let ctx = context();
    let dir = tempfile::tempdir().unwrap();
    let raw = dir.path().join("disk.raw");
    let v1 = disk_v1();
    std::fs::write(&raw, &v1).unwrap();
    let qcow = dir.path().join("disk.qcow2");
    run(
        "qemu-img",
        &[
            "convert",
            "-f",
            "raw",
            "-O",
            "qcow2",
            raw.to_str().unwrap(),
            qcow.to_str().unwrap(),
        ],
    );
    let volume = unique("qvol");
    let r = backup(&ctx, t, qcow.to_str().unwrap(), &volume, "q1", None).await;
    assert_eq!(r.source_format, "qcow2");
    assert_eq!(r.new_blocks, data_blocks(&v1));
    let out = dir.path().join("restored.raw");
    let rr = restore(&ctx, t, &volume, "q1", out.to_str().unwrap())
        .await
        .unwrap();
    assert_eq!(rr.digest_verified, Some(true));
    assert_eq!(
        sha(&std::fs::read(&out).unwrap()),
        sha(&v1),
        "qcow2 → backup → raw"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rbd_backup_incremental_restore_delete_vfs() {
    with_target(Target::vfs(), rbd_round_trip).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rbd_backup_incremental_restore_delete_rgw() {
    with_target(Target::rgw().await, rbd_round_trip).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn qcow2_backup_restores_to_raw_file_vfs() {
    with_target(Target::vfs(), qcow2_round_trip).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn qcow2_backup_restores_to_raw_file_rgw() {
    with_target(Target::rgw().await, qcow2_round_trip).await;
}

/// A vfs backup of a small file, for the bad-input tests: returns (target, volume, dir).
async fn small_vfs_backup() -> (Target, String, tempfile::TempDir) {
    let ctx = context();
    let t = Target::vfs();
    let dir = tempfile::tempdir().unwrap();
    let raw = dir.path().join("disk.raw");
    std::fs::write(&raw, disk_v1()).unwrap();
    let volume = "badvol".to_string();
    backup(&ctx, &t, raw.to_str().unwrap(), &volume, "bad1", None).await;
    (t, volume, dir)
}

fn files_under(dir: &Path, suffix: &str, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            files_under(&p, suffix, out);
        } else if p.to_string_lossy().ends_with(suffix) {
            out.push(p);
        }
    }
}

fn vfs_root(t: &Target) -> PathBuf {
    PathBuf::from(t.url.strip_prefix("vfs://").unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupted_block_fails_the_restore_naming_the_block() {
    let ctx = context();
    let (t, volume, dir) = small_vfs_backup().await;
    let mut blocks = Vec::new();
    files_under(&vfs_root(&t), ".blk", &mut blocks);
    blocks.sort();
    let victim = &blocks[0];
    let checksum = victim.file_stem().unwrap().to_string_lossy().to_string();
    let mut data = std::fs::read(victim).unwrap();
    let last = data.len() - 1;
    data[last] ^= 0xff;
    std::fs::write(victim, &data).unwrap();
    let out = dir.path().join("out.raw");
    let err = restore(&ctx, &t, &volume, "bad1", out.to_str().unwrap())
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(&checksum),
        "error names the block {checksum}: {err}"
    );
    assert!(!out.exists(), "a failed restore leaves no file");
}

/// Edits the backup cfg's JSON and expects the restore to be refused with `needle`.
async fn refuse_edited_cfg(edit: impl FnOnce(&mut serde_json::Value), needle: &str) {
    let ctx = context();
    let (t, volume, dir) = small_vfs_backup().await;
    let mut cfgs = Vec::new();
    files_under(&vfs_root(&t), "backup_bad1.cfg", &mut cfgs);
    let mut v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&cfgs[0]).unwrap()).unwrap();
    edit(&mut v);
    std::fs::write(&cfgs[0], serde_json::to_vec(&v).unwrap()).unwrap();
    let out = dir.path().join("out.raw");
    let err = restore(&ctx, &t, &volume, "bad1", out.to_str().unwrap())
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains(needle), "expected {needle:?} in: {err}");
    assert!(!out.exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cfg_with_block_beyond_volume_size_is_rejected() {
    refuse_edited_cfg(
        |v| {
            let blocks = v["Blocks"].as_array_mut().unwrap();
            let last = blocks.len() - 1;
            blocks[last]["Offset"] = serde_json::json!(64 * MIB);
        },
        "beyond",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cfg_with_unsorted_block_list_is_rejected() {
    refuse_edited_cfg(
        |v| {
            let blocks = v["Blocks"].as_array_mut().unwrap();
            blocks.swap(0, 1);
        },
        "sorted",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_with_path_separators_or_dotdot_are_refused() {
    let ctx = context();
    let t = Target::vfs();
    let (target, store) = t.open();
    let src = Address::parse("/dev/null").unwrap();
    for bad in ["../etc", "a/b", ".."] {
        let job = BackupJob::new(bad);
        let err = lh::backup(
            &ctx,
            &store,
            &target,
            &src,
            &job,
            &NoProgress,
            &CancellationToken::new(),
        )
        .await
        .unwrap_err()
        .to_string();
        assert!(err.contains("invalid volume name"), "{bad}: {err}");
        let mut job = RestoreJob::new("okvol");
        job.backup = Some(format!("{bad}x"));
        let err = lh::restore(
            &ctx,
            &store,
            &job,
            &Address::parse("/tmp/x").unwrap(),
            &NoProgress,
            &CancellationToken::new(),
        )
        .await
        .unwrap_err()
        .to_string();
        assert!(err.contains("invalid backup name"), "{bad}: {err}");
    }
    assert!(lh::open_store("vfs:///tmp/../etc/", None).is_err());
}

/// The fixture restored by the `diskferry` binary (built by `cargo build -p diskferry-cli`).
#[test]
fn cli_restores_a_longhorn_fixture() {
    let fixtures = std::env::var_os("LONGHORN_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/work/shared/fixtures/longhorn"));
    let target_dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| diskferry_integration_tests::repo_root().join("target"));
    let bin = target_dir.join("debug/diskferry");
    assert!(
        bin.is_file(),
        "{} missing: run `cargo build -p diskferry-cli` first",
        bin.display()
    );
    let work = tempfile::tempdir().unwrap();
    // Copied: the restore lock writes into the target.
    run(
        "cp",
        &[
            "-a",
            fixtures.join("target-lz4").to_str().unwrap(),
            work.path().to_str().unwrap(),
        ],
    );
    let url = format!("vfs://{}/", work.path().join("target-lz4").display());
    let out = work.path().join("fixvol.raw");
    let json = run(
        bin.to_str().unwrap(),
        &[
            "longhorn",
            "restore",
            &url,
            "--volume",
            "fixvol",
            "--backup",
            "backup-2",
            out.to_str().unwrap(),
            "--json",
        ],
    );
    let report: serde_json::Value = serde_json::from_slice(&json).unwrap();
    assert_eq!(report["backup"], "backup-2");
    assert_eq!(
        sha(&std::fs::read(&out).unwrap()),
        "453fab81322cd8b315dcb83c8572bfc2d3e46dd17f002159415edbebed9c8587"
    );
}

/// Objects PUT at once by the RGW ceiling measurement: the backup writer's default in-flight
/// blocks of the CLI (`--jobs`).
const CEILING_CONCURRENCY: usize = 16;
/// Bytes PUT by the RGW ceiling measurement.
const CEILING_TOTAL: usize = 512 * MIB;

/// RGW PUT throughput for 2 MiB objects (incompressible) at the backup's concurrency: one of
/// the ceilings `benches/compare-longhorn.sh` compares the backup with. Prints MiB/s.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "measurement for benches/compare-longhorn.sh; run with --ignored --nocapture in release"]
async fn rgw_put_ceiling_2mib_objects() {
    use futures::StreamExt;
    let store = objstore::S3Store::from_config(&s3_config()).unwrap();
    let bucket = unique("lhceiling").to_lowercase();
    store.create_bucket(&bucket).await.unwrap();
    let blocks: Vec<Bytes> = (0..CEILING_CONCURRENCY as u64)
        .map(|i| Bytes::from(pattern(1000 + i, BLOCK)))
        .collect();
    let opts = objstore::PutOptions {
        overwrite: true,
        ..Default::default()
    };
    let n = CEILING_TOTAL / BLOCK;
    let started = std::time::Instant::now();
    futures::stream::iter(0..n)
        .map(|i| {
            let (store, bucket, data, opts) =
                (&store, &bucket, blocks[i % blocks.len()].clone(), &opts);
            async move {
                store
                    .put_object(bucket, &format!("blk/{i:06}"), data, opts)
                    .await
                    .unwrap()
            }
        })
        .buffer_unordered(CEILING_CONCURRENCY)
        .collect::<Vec<_>>()
        .await;
    let secs = started.elapsed().as_secs_f64();
    store.empty_and_delete_bucket(&bucket).await.unwrap();
    println!(
        "RGW_PUT_CEILING_MIBS {:.1} ({} x 2 MiB, {} in flight, {:.2} s)",
        CEILING_TOTAL as f64 / MIB as f64 / secs,
        n,
        CEILING_CONCURRENCY,
        secs
    );
}
