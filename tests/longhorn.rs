//! Longhorn backup and restore (issue 6) on the live cluster, through RGW and through `vfs://`.
//!
//! Oracles independent of diskferry: `rbd export` for image content, `qemu-img convert` to make
//! the qcow2 input, the files on disk for raw restores, `qemu-img check` / `qemu-img compare`
//! for qcow2 restores, the `zstd` command for raw.zst restores, the S3 API for what objects
//! and multipart uploads exist, the fixture README's SHA-256 sums.

use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use diskferry::longhorn::{open_store, BackupStore, BackupTarget};
use diskferry::ops::longhorn::{self as lh, BackupJob, RestoreJob};
use diskferry::sinks::{ObjectFormat, S3_METADATA_FORMAT};
use diskferry::{Address, CancellationToken, Context, Error, NoProgress};
use diskferry_integration_tests::{
    context, file_names, pattern, pool, qemu_check_and_compare, qemu_img_qcow2, rbd_export,
    reference_digest, run, s3_config, text, unique, ImageGuard, TEST_POOL,
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
    let text = text(b"longhorn block; ", BLOCK);
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

    async fn open(&self) -> (BackupTarget, BackupStore) {
        let target = BackupTarget::parse(&self.url).unwrap();
        let store = open_store(&context(), &target).await.unwrap();
        (target, store)
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
    let (target, store) = t.open().await;
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
    restore_with(ctx, t, volume, backup, dst, None, false).await
}

/// A restore with an explicit format and `--force` setting.
async fn restore_with(
    ctx: &Context,
    t: &Target,
    volume: &str,
    backup: &str,
    dst: &str,
    format: Option<ObjectFormat>,
    replace: bool,
) -> diskferry::Result<lh::RestoreReport> {
    let (_, store) = t.open().await;
    let mut job = RestoreJob::new(volume);
    job.backup = Some(backup.into());
    job.format = format;
    job.replace = replace;
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
    // The source reads the changed blocks whole, once each (a 4 KiB change reads its
    // block, not the 4 KiB and then the block again), and nothing else.
    assert_eq!(
        r2.bytes_read as usize,
        3 * BLOCK,
        "only the changed blocks are read"
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
    let (_, store) = t.open().await;
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

/// qcow2 → backup → raw file; a second backup of the same content reuses every block.
async fn qcow2_round_trip(t: &'static Target) {
    let ctx = context();
    let dir = tempfile::tempdir().unwrap();
    let raw = dir.path().join("disk.raw");
    let v1 = disk_v1();
    std::fs::write(&raw, &v1).unwrap();
    let qcow = dir.path().join("disk.qcow2");
    qemu_img_qcow2(&raw, &qcow, &[]);
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
    // A second full scan of the same content finds every block in the store's listing (a
    // flat listing on S3, the shard walk on vfs) and uploads none.
    let again = backup(&ctx, t, raw.to_str().unwrap(), &volume, "q2", None).await;
    assert_eq!(again.merged_with, None);
    assert_eq!(
        (again.new_blocks, again.reused_blocks),
        (0, data_blocks(&v1)),
        "a second backup of stored content"
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

/// Hex SHA-256 of a file and the offset of its first non-zero byte at or after `zero_from`
/// (read in pieces: the restored disks here are up to 512 MiB).
fn sha_and_first_nonzero(path: &Path, zero_from: u64) -> (String, Option<u64>) {
    use std::io::Read;
    let mut f = std::fs::File::open(path).unwrap();
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 4 * MIB];
    let (mut at, mut nonzero) = (0u64, None);
    loop {
        let n = f.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        if nonzero.is_none() && at + n as u64 > zero_from {
            let from = zero_from.saturating_sub(at) as usize;
            nonzero = buf[from..n]
                .iter()
                .position(|&b| b != 0)
                .map(|i| at + (from + i) as u64);
        }
        at += n as u64;
    }
    (hex::encode(hasher.finalize()), nonzero)
}

/// `volume.cfg`'s `Size` (Longhorn writes it as a string).
async fn volume_cfg_size(t: &Target, volume: &str) -> u64 {
    let (target, store) = t.open().await;
    let cfg = lh::inspect(&store, &target, volume, None)
        .await
        .unwrap()
        .cfg;
    cfg["Size"].as_str().unwrap().parse().unwrap()
}

/// Issue 11 item 4a: a disk whose size (33 MiB + 4 KiB) is not a multiple of the 2 MiB block
/// restores, as Longhorn restores it, at volume.cfg's size (rounded up to a block: 34 MiB,
/// which Longhorn requires) with the tail zero-padded, and the restore verifies the recorded
/// digest, which covers the disk as it was backed up (`diskferry digest` of the source).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn unaligned_disk_restores_at_the_volume_size_zero_padded() {
    let ctx = context();
    let t = Target::vfs();
    let disk_size = 33 * MIB + 4096;
    let volume_size = 34 * MIB;
    let mut content = vec![0u8; disk_size];
    content[..MIB].copy_from_slice(&pattern(21, MIB));
    content[16 * MIB..17 * MIB].copy_from_slice(&text(b"unaligned; ", MIB));
    content[33 * MIB..].copy_from_slice(&pattern(22, 4096));
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("unaligned.raw");
    std::fs::write(&src, &content).unwrap();

    let r = backup(&ctx, &t, src.to_str().unwrap(), "unaligned", "u1", None).await;
    assert_eq!(r.disk_size, disk_size as u64, "{r:?}");
    assert_eq!(r.size, volume_size as u64, "{r:?}");
    assert_eq!(
        r.digest.as_deref(),
        Some(reference_digest(&content).as_str())
    );
    assert_eq!(volume_cfg_size(&t, "unaligned").await, volume_size as u64);

    let mut padded = content.clone();
    padded.resize(volume_size, 0);
    let out = dir.path().join("restored.raw");
    let rr = restore(&ctx, &t, "unaligned", "u1", out.to_str().unwrap())
        .await
        .unwrap_or_else(|e| panic!("restore of the unaligned backup: {e}"));
    assert_eq!(rr.digest_verified, Some(true), "{rr:?}");
    assert_eq!(rr.size, volume_size as u64);
    assert_eq!(rr.disk_size, Some(disk_size as u64));
    assert_eq!(sha(&std::fs::read(&out).unwrap()), sha(&padded));
    assert_eq!(rr.digest, reference_digest(&padded));

    let io = pool();
    let mut guard = ImageGuard::new(&io);
    let img = guard.add(unique("lhunaligned"));
    let rr = restore(
        &ctx,
        &t,
        "unaligned",
        "u1",
        &format!("rbd:{TEST_POOL}/{img}"),
    )
    .await
    .unwrap_or_else(|e| panic!("restore of the unaligned backup into RBD: {e}"));
    assert_eq!(rr.digest_verified, Some(true));
    assert_eq!(
        sha(&rbd_export(&img)),
        sha(&padded),
        "rbd export of the restore"
    );
}

/// Issue 11 item 4b: back up a 48 MiB image, grow it to 512 MiB with `rbd resize`, back it up
/// again: the first backup still restores, as Longhorn restores it, at the volume's size now
/// (512 MiB) with its content zero-padded, verified against its recorded digest.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn older_backup_restores_after_the_volume_grew() {
    let ctx = context();
    let t = Target::vfs();
    let (small, big) = (48 * MIB, 512 * MIB);
    let io = pool();
    let mut guard = ImageGuard::new(&io);
    let src = guard.add(unique("lhgrow"));
    rbd::create(&io, &src, small as u64, &CreateOptions::default()).unwrap();
    let image = Image::open(&io, &src, OpenMode::ReadWrite).unwrap();
    let mut v1 = vec![0u8; small];
    for (off, data) in [
        (0, pattern(31, BLOCK)),
        (20 * MIB, text(b"before growing; ", MIB)),
        (small - 65536, pattern(32, 65536)),
    ] {
        v1[off..off + data.len()].copy_from_slice(&data);
        write_image(&image, off, data).await;
    }
    image.snap_create("s1").unwrap();
    drop(image);
    let at_s1 = format!("rbd:{TEST_POOL}/{src}@s1");
    let r1 = backup(&ctx, &t, &at_s1, "grown", "g1", None).await;
    assert_eq!(r1.size, small as u64);

    let conf = diskferry_integration_tests::ceph_conf();
    run(
        "rbd",
        &[
            "--conf",
            &conf.to_string_lossy(),
            "resize",
            "--no-progress",
            "--size",
            "512M",
            &format!("{TEST_POOL}/{src}"),
        ],
    );
    let image = Image::open(&io, &src, OpenMode::ReadWrite).unwrap();
    let late = pattern(33, BLOCK);
    write_image(&image, 500 * MIB, late.clone()).await;
    image.snap_create("s2").unwrap();
    drop(image);
    let at_s2 = format!("rbd:{TEST_POOL}/{src}@s2");
    let r2 = backup(&ctx, &t, &at_s2, "grown", "g2", None).await;
    assert_eq!((r2.size, r2.disk_size), (big as u64, big as u64));
    assert_eq!(volume_cfg_size(&t, "grown").await, big as u64);

    let dir = tempfile::tempdir().unwrap();
    let out1 = dir.path().join("g1.raw");
    let rr = restore(&ctx, &t, "grown", "g1", out1.to_str().unwrap())
        .await
        .unwrap_or_else(|e| panic!("restore of the backup taken before growing: {e}"));
    assert_eq!(rr.digest_verified, Some(true), "{rr:?}");
    assert_eq!((rr.size, rr.disk_size), (big as u64, Some(small as u64)));
    assert_eq!(std::fs::metadata(&out1).unwrap().len(), big as u64);
    let mut padded = v1.clone();
    padded.resize(big, 0);
    let (restored_sha, nonzero) = sha_and_first_nonzero(&out1, small as u64);
    assert_eq!(nonzero, None, "zero-padded beyond the first backup's size");
    assert_eq!(restored_sha, sha(&padded), "the first backup's content");

    let out2 = dir.path().join("g2.raw");
    let rr = restore(&ctx, &t, "grown", "g2", out2.to_str().unwrap())
        .await
        .unwrap();
    assert_eq!(rr.digest_verified, Some(true), "{rr:?}");
    padded[500 * MIB..500 * MIB + BLOCK].copy_from_slice(&late);
    assert_eq!(sha_and_first_nonzero(&out2, big as u64).0, sha(&padded));
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

/// Flips the last byte of the first stored block (in name order) of vfs target `t`, and
/// returns that block's checksum.
fn corrupt_first_block(t: &Target) -> String {
    let mut blocks = Vec::new();
    files_under(&vfs_root(t), ".blk", &mut blocks);
    blocks.sort();
    let victim = &blocks[0];
    let mut data = std::fs::read(victim).unwrap();
    let last = data.len() - 1;
    data[last] ^= 0xff;
    std::fs::write(victim, &data).unwrap();
    victim.file_stem().unwrap().to_string_lossy().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupted_block_fails_the_restore_naming_the_block() {
    let ctx = context();
    let (t, volume, dir) = small_vfs_backup().await;
    let checksum = corrupt_first_block(&t);
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

/// [`small_vfs_backup`] with its cfg's JSON edited by `edit`.
async fn edited_backup(
    edit: impl FnOnce(&mut serde_json::Value),
) -> (Target, String, tempfile::TempDir) {
    let (t, volume, dir) = small_vfs_backup().await;
    let mut cfgs = Vec::new();
    files_under(&vfs_root(&t), "backup_bad1.cfg", &mut cfgs);
    let mut v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&cfgs[0]).unwrap()).unwrap();
    edit(&mut v);
    std::fs::write(&cfgs[0], serde_json::to_vec(&v).unwrap()).unwrap();
    (t, volume, dir)
}

/// Edits the backup cfg's JSON and expects the restore to be refused with `needle`.
async fn refuse_edited_cfg(edit: impl FnOnce(&mut serde_json::Value), needle: &str) {
    let ctx = context();
    let (t, volume, dir) = edited_backup(edit).await;
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

/// A backup whose recorded content digest (label) does not match what its blocks restore to:
/// the restore fails and the destination file is not kept (the sink is aborted, not
/// finished).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_recorded_digest_fails_the_restore_and_keeps_no_file() {
    refuse_edited_cfg(
        |v| {
            let labels = v["Labels"].as_object_mut().unwrap();
            assert!(
                labels.contains_key(diskferry::longhorn::DIGEST_LABEL),
                "{labels:?}"
            );
            labels.insert(
                diskferry::longhorn::DIGEST_LABEL.into(),
                serde_json::json!("0".repeat(64)),
            );
        },
        "the backup recorded",
    )
    .await;
}

/// A backup labelled by a diskferry from before BLAKE3 (a SHA-256 digest, no algorithm
/// label) restores verified, and its restore is digested once, with SHA-256: the report's
/// digest is the recorded one, of the algorithm it names.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sha256_labelled_backup_restores_verified_with_one_digest_of_its_algorithm() {
    let ctx = context();
    let sha256 = diskferry_integration_tests::reference_digest_with(
        diskferry::DigestAlgorithm::Sha256Blocks,
        &disk_v1(),
    );
    let (t, volume, dir) = edited_backup(|v| {
        let labels = v["Labels"].as_object_mut().unwrap();
        labels.remove(diskferry::longhorn::DIGEST_ALGORITHM_LABEL);
        labels.insert(
            diskferry::longhorn::DIGEST_LABEL.into(),
            serde_json::json!(sha256),
        );
    })
    .await;
    let out = dir.path().join("out.raw");
    let r = restore(&ctx, &t, &volume, "bad1", out.to_str().unwrap())
        .await
        .unwrap();
    assert_eq!(r.digest_verified, Some(true), "{r:?}");
    assert_eq!(r.digest_algorithm, "sha256-of-1MiB-block-sha256s", "{r:?}");
    assert_eq!(r.digest, sha256);
    assert_eq!(std::fs::read(&out).unwrap(), disk_v1());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_with_path_separators_or_dotdot_are_refused() {
    let ctx = context();
    let t = Target::vfs();
    let (target, store) = t.open().await;
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
        .unwrap_err();
        // The Longhorn error keeps its kind (not flattened into an I/O error).
        assert!(
            matches!(
                err,
                Error::Longhorn(longhorn::Error::InvalidName { kind: "volume", .. })
            ),
            "{bad}: {err:?}"
        );
        let err = err.to_string();
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
    assert!(BackupTarget::parse("vfs:///tmp/../etc/").is_err());
}

/// Every directory named `locks` under `dir`.
/// Every directory under `dir` with its modification time.
fn dir_times(dir: &Path) -> Vec<(PathBuf, std::time::SystemTime)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.push((p.clone(), p.metadata().unwrap().modified().unwrap()));
            out.extend(dir_times(&p));
        }
    }
    out
}

/// Issue 11 item 13: requests refused for what they ask (a backup or volume that does not
/// exist, an RBD destination that exists) are refused before Longhorn's lock is taken, so
/// without its 2 s wait; `ls` and `inspect` never lock. A vfs target creates the `locks`
/// directory in the volume's directory on a lock write and removes it with the last lock (as
/// Longhorn's driver does), so a lock written, even one released since, changes the volume
/// directory's time: no directory time changing shows no lock file was ever written; an
/// accepted restore (the control) changes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_restores_and_removals_write_no_lock() {
    let ctx = context();
    let (t, volume, dir) = small_vfs_backup().await;
    let root = vfs_root(&t);
    let before = dir_times(&root);
    let io = pool();
    let mut guard = ImageGuard::new(&io);
    let taken = guard.add(unique("lhtaken"));
    rbd::create(&io, &taken, BLOCK as u64, &CreateOptions::default()).unwrap();

    let out = dir.path().join("never.raw");
    let err = restore(&ctx, &t, &volume, "nope", out.to_str().unwrap())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("nope"), "{err}");
    let err = restore(&ctx, &t, "novol", "bad1", out.to_str().unwrap())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("novol"), "{err}");
    let err = restore(
        &ctx,
        &t,
        &volume,
        "bad1",
        &format!("rbd:{TEST_POOL}/{taken}"),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, Error::AlreadyExists(_)), "{err}");
    let (target, store) = t.open().await;
    let err = lh::remove(&store, &volume, "nope").await.unwrap_err();
    assert!(err.to_string().contains("does not exist"), "{err}");
    let err = lh::remove(&store, "novol", "bad1").await.unwrap_err();
    assert!(err.to_string().contains("does not exist"), "{err}");
    assert_eq!(lh::list(&store, None).await.unwrap().len(), 1);
    lh::inspect(&store, &target, &volume, Some("bad1"))
        .await
        .unwrap();
    assert!(!out.exists());
    assert_eq!(dir_times(&root), before, "no lock was written");

    restore(&ctx, &t, &volume, "bad1", out.to_str().unwrap())
        .await
        .unwrap();
    assert_ne!(dir_times(&root), before, "an accepted restore locks");
}

/// A bucket for restored objects, emptied and deleted by [`with_bucket`].
async fn new_bucket(prefix: &str) -> (objstore::S3Store, String) {
    let store = objstore::S3Store::from_config(&s3_config()).unwrap();
    let name = unique(prefix).to_lowercase();
    store.create_bucket(&name).await.unwrap();
    (store, name)
}

/// Runs `body` with a fresh bucket, then deletes the bucket even if the body panicked.
async fn with_bucket<F>(prefix: &str, body: impl FnOnce(objstore::S3Store, String) -> F)
where
    F: std::future::Future<Output = ()>,
{
    let (store, bucket) = new_bucket(prefix).await;
    let outcome = AssertUnwindSafe(body(store.clone(), bucket.clone()))
        .catch_unwind()
        .await;
    store.empty_and_delete_bucket(&bucket).await.unwrap();
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

/// The raw disk and a backup of it (from that raw file) in `t`: returns (dir, raw, volume).
async fn backed_up_raw(
    ctx: &Context,
    t: &Target,
    name: &str,
) -> (tempfile::TempDir, PathBuf, String) {
    let dir = tempfile::tempdir().unwrap();
    let raw = dir.path().join("source.raw");
    std::fs::write(&raw, disk_v1()).unwrap();
    let volume = unique("ovol");
    let r = backup(ctx, t, raw.to_str().unwrap(), &volume, name, None).await;
    assert_eq!(r.new_blocks, data_blocks(&disk_v1()));
    (dir, raw, volume)
}

/// Backup (RGW target) → qcow2 object in RGW: downloaded, `qemu-img check` clean and
/// `qemu-img compare` identical to the source; the same backup as a raw object (bytes equal
/// the source) and as a raw.zst object (`zstd -d` gives the source).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn restore_to_rgw_qcow2_raw_and_zst_objects() {
    with_target(Target::rgw().await, |t| async move {
        with_bucket("lhobj", |store, bucket| async move {
            let ctx = context();
            let (dir, raw, volume) = backed_up_raw(&ctx, t, "o1").await;

            let dst = format!("s3://{bucket}/restored/disk.qcow2");
            let r = restore(&ctx, t, &volume, "o1", &dst).await.unwrap();
            assert_eq!(r.format, "qcow2");
            assert_eq!(r.destination, dst);
            assert_eq!(r.digest_verified, Some(true));
            assert_eq!(r.size, SIZE as u64);
            let info = store.head(&bucket, "restored/disk.qcow2").await.unwrap();
            assert_eq!(r.bytes_written, info.size);
            assert_eq!(
                info.metadata.get(S3_METADATA_FORMAT).map(String::as_str),
                Some("qcow2")
            );
            let got = dir.path().join("downloaded.qcow2");
            let bytes = store
                .get_object_bytes(&bucket, "restored/disk.qcow2")
                .await
                .unwrap();
            std::fs::write(&got, &bytes).unwrap();
            qemu_check_and_compare(&got, &raw);

            let dst = format!("s3://{bucket}/restored/disk.img");
            let r = restore(&ctx, t, &volume, "o1", &dst).await.unwrap();
            assert_eq!(r.format, "raw");
            let bytes = store
                .get_object_bytes(&bucket, "restored/disk.img")
                .await
                .unwrap();
            assert_eq!(sha(&bytes), sha(&disk_v1()), "raw object = the source");

            let dst = format!("s3://{bucket}/restored/disk.raw.zst");
            let r = restore(&ctx, t, &volume, "o1", &dst).await.unwrap();
            assert_eq!(r.format, "raw.zst");
            let zst = dir.path().join("disk.raw.zst");
            let bytes = store
                .get_object_bytes(&bucket, "restored/disk.raw.zst")
                .await
                .unwrap();
            std::fs::write(&zst, &bytes).unwrap();
            let decoded = run("zstd", &["-d", "-c", zst.to_str().unwrap()]);
            assert_eq!(sha(&decoded), sha(&disk_v1()), "zstd -d gives the source");

            // No multipart upload is left pending by any of them.
            let pending = store.list_multipart_uploads(&bucket, "").await.unwrap();
            assert!(pending.is_empty(), "{pending:?}");
        })
        .await;
    })
    .await;
}

/// Backup (vfs target) → local qcow2 file: `qemu-img check` clean, `qemu-img compare`
/// identical; `--format qcow2` on a path without extension writes qcow2 too, and a path
/// without extension and no format is still a raw file.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn restore_to_local_qcow2_file() {
    with_target(Target::vfs(), |t| async move {
        let ctx = context();
        let (dir, raw, volume) = backed_up_raw(&ctx, t, "f1").await;

        let out = dir.path().join("restored.qcow2");
        let r = restore(&ctx, t, &volume, "f1", out.to_str().unwrap())
            .await
            .unwrap();
        assert_eq!(r.format, "qcow2");
        assert_eq!(r.digest_verified, Some(true));
        assert_eq!(r.bytes_written, std::fs::metadata(&out).unwrap().len());
        qemu_check_and_compare(&out, &raw);

        let forced = dir.path().join("restored-noext");
        let r = restore_with(
            &ctx,
            t,
            &volume,
            "f1",
            forced.to_str().unwrap(),
            Some(ObjectFormat::Qcow2),
            false,
        )
        .await
        .unwrap();
        assert_eq!(r.format, "qcow2");
        qemu_check_and_compare(&forced, &raw);

        let plain = dir.path().join("restored-plain");
        let r = restore(&ctx, t, &volume, "f1", plain.to_str().unwrap())
            .await
            .unwrap();
        assert_eq!(r.format, "raw");
        assert_eq!(sha(&std::fs::read(&plain).unwrap()), sha(&disk_v1()));

        // Only the restored files: no temporary file is left.
        assert_eq!(
            file_names(dir.path()),
            [
                "restored-noext",
                "restored-plain",
                "restored.qcow2",
                "source.raw"
            ]
        );
    })
    .await;
}

/// A raw restore to a local file leaves what the backup holds no block for as holes, and
/// reports as written only the blocks it wrote, not the file's size.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_restore_to_a_local_file_keeps_holes() {
    use std::os::unix::fs::MetadataExt;
    /// Bytes `st_blocks` counts in.
    const ST_BLOCK: u64 = 512;
    /// Allocated beyond the data: the file's extended attributes (its metadata) may take a
    /// file-system block.
    const METADATA_SLACK: u64 = 64 << 10;
    let ctx = context();
    let (t, volume, dir) = small_vfs_backup().await;
    let out = dir.path().join("sparse.raw");
    let r = restore(&ctx, &t, &volume, "bad1", out.to_str().unwrap())
        .await
        .unwrap();
    assert_eq!((r.format.as_str(), r.digest_verified), ("raw", Some(true)));
    assert_eq!(sha(&std::fs::read(&out).unwrap()), sha(&disk_v1()));
    let stored = data_blocks(&disk_v1()) * BLOCK as u64;
    assert!(stored < SIZE as u64, "the test disk has holes");
    assert_eq!(r.bytes_written, stored, "the blocks written");
    let meta = std::fs::metadata(&out).unwrap();
    assert_eq!(meta.len(), SIZE as u64);
    assert!(
        meta.blocks() * ST_BLOCK <= stored + METADATA_SLACK,
        "{} bytes allocated for {stored} bytes of blocks",
        meta.blocks() * ST_BLOCK
    );
}

/// An existing object (or file) is refused without `force`, untouched, with no upload left;
/// with `force` it is replaced; a format for an RBD destination is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn restore_to_an_existing_key_without_force_is_refused() {
    with_target(Target::vfs(), |t| async move {
        with_bucket("lhexist", |store, bucket| async move {
            let ctx = context();
            let (dir, raw, volume) = backed_up_raw(&ctx, t, "e1").await;
            let key = "taken/disk.qcow2";
            let put = objstore::PutOptions {
                overwrite: true,
                ..Default::default()
            };
            store
                .put_object(&bucket, key, Bytes::from_static(b"not a disk"), &put)
                .await
                .unwrap();
            let before = store.head(&bucket, key).await.unwrap();
            let dst = format!("s3://{bucket}/{key}");
            let err = restore(&ctx, t, &volume, "e1", &dst).await.unwrap_err();
            assert!(matches!(err, Error::AlreadyExists(_)), "{err}");
            assert!(err.to_string().contains("--force"), "{err}");
            let after = store.head(&bucket, key).await.unwrap();
            assert_eq!(after.etag, before.etag, "the object is untouched");
            assert_eq!(after.size, 10);
            assert!(store
                .list_multipart_uploads(&bucket, "")
                .await
                .unwrap()
                .is_empty());

            let r = restore_with(&ctx, t, &volume, "e1", &dst, None, true)
                .await
                .unwrap();
            assert_eq!(r.format, "qcow2");
            let got = dir.path().join("replaced.qcow2");
            std::fs::write(&got, store.get_object_bytes(&bucket, key).await.unwrap()).unwrap();
            qemu_check_and_compare(&got, &raw);

            // A local file likewise.
            let file = dir.path().join("taken.qcow2");
            std::fs::write(&file, b"keep me").unwrap();
            let err = restore(&ctx, t, &volume, "e1", file.to_str().unwrap())
                .await
                .unwrap_err();
            assert!(matches!(err, Error::AlreadyExists(_)), "{err}");
            assert_eq!(std::fs::read(&file).unwrap(), b"keep me");

            let err = restore_with(
                &ctx,
                t,
                &volume,
                "e1",
                &format!("rbd:{TEST_POOL}/{}", unique("lhnever")),
                Some(ObjectFormat::Qcow2),
                false,
            )
            .await
            .unwrap_err();
            assert!(err.to_string().contains("RBD"), "{err}");
        })
        .await;
    })
    .await;
}

/// A corrupted block fails a restore into an RGW qcow2 object and into a local qcow2 file:
/// the error names the block, and no object, multipart upload or file (temporary or final)
/// is left.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn corrupted_block_leaves_no_object_or_file() {
    with_bucket("lhcorrupt", |store, bucket| async move {
        let ctx = context();
        let (t, volume, dir) = small_vfs_backup().await;
        let checksum = corrupt_first_block(&t);

        let dst = format!("s3://{bucket}/bad/disk.qcow2");
        let err = restore(&ctx, &t, &volume, "bad1", &dst)
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains(&checksum), "error names {checksum}: {err}");
        assert!(store.list(&bucket, "").await.unwrap().is_empty());
        assert!(store
            .list_multipart_uploads(&bucket, "")
            .await
            .unwrap()
            .is_empty());

        let out = dir.path().join("bad.qcow2");
        let err = restore(&ctx, &t, &volume, "bad1", out.to_str().unwrap())
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains(&checksum), "error names {checksum}: {err}");
        let left: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n != "disk.raw")
            .collect();
        assert!(left.is_empty(), "left behind: {left:?}");
    })
    .await;
}

/// The fixture restored by the `diskferry` binary (built by `cargo build -p diskferry-cli`,
/// with `--release` when these tests are).
#[test]
fn cli_restores_a_longhorn_fixture() {
    let fixtures = std::env::var_os("LONGHORN_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/work/shared/fixtures/longhorn"));
    let target_dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| diskferry_integration_tests::repo_root().join("target"));
    // The binary of the profile these tests are built in.
    let (profile, flag) = if cfg!(debug_assertions) {
        ("debug", "")
    } else {
        ("release", " --release")
    };
    let bin = target_dir.join(profile).join("diskferry");
    assert!(
        bin.is_file(),
        "{} missing: run `cargo build{flag} -p diskferry-cli` first",
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
/// MiB PUT by the RGW ceiling measurement unless `LH_CEILING_MIB` says otherwise.
const CEILING_DEFAULT_MIB: usize = 512;

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
    let total_mib = std::env::var("LH_CEILING_MIB")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(CEILING_DEFAULT_MIB);
    let n = (total_mib * MIB / BLOCK).max(CEILING_CONCURRENCY);
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
        (n * BLOCK) as f64 / MIB as f64 / secs,
        n,
        CEILING_CONCURRENCY,
        secs
    );
}

/// `--since SNAP` must merge with a backup of that very snapshot: one recreated under the same
/// name, or another image's snapshot of that name, made the incremental backup store a wrong
/// disk with exit 0 (hostile-input review). Both are refused now.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_incremental_backup_since_a_recreated_or_foreign_snapshot_is_refused() {
    with_target(Target::vfs(), |t| async move {
        let ctx = context();
        let io = pool();
        let mut guard = ImageGuard::new(&io);
        let (src, other) = (guard.add(unique("lhre")), guard.add(unique("lhre-other")));
        for name in [&src, &other] {
            rbd::create(&io, name, SIZE as u64, &CreateOptions::default()).unwrap();
        }
        let image = Image::open(&io, &src, OpenMode::ReadWrite).unwrap();
        write_image(&image, 0, pattern(1, BLOCK)).await;
        image.snap_create("daily").unwrap();
        let volume = unique("vol");
        let at = |image: &str, snap: &str| format!("rbd:{TEST_POOL}/{image}@{snap}");
        backup(&ctx, t, &at(&src, "daily"), &volume, "b1", None).await;

        // The snapshot is removed and made again after more writes.
        image.snap_remove("daily").unwrap();
        write_image(&image, 2 * BLOCK, pattern(2, BLOCK)).await;
        image.snap_create("daily").unwrap();
        write_image(&image, 4 * BLOCK, pattern(3, 4096)).await;
        image.snap_create("daily2").unwrap();
        let err = incremental(t, &volume, at(&src, "daily2"))
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("recreated since"), "{err}");

        // Another image with a snapshot of the same name.
        let other_image = Image::open(&io, &other, OpenMode::ReadWrite).unwrap();
        write_image(&other_image, 0, pattern(4, BLOCK)).await;
        other_image.snap_create("daily").unwrap();
        other_image.snap_create("x").unwrap();
        let err = incremental(t, &volume, at(&other, "x"))
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("take a full backup"), "{err}");

        // The same snapshot, still there: the incremental backup goes on.
        image.snap_create("weekly").unwrap();
        backup(&ctx, t, &at(&src, "weekly"), &volume, "b3", None).await;
        write_image(&image, 5 * BLOCK, pattern(5, 4096)).await;
        image.snap_create("weekly2").unwrap();
        let r = backup(&ctx, t, &at(&src, "weekly2"), &volume, "b4", Some("weekly")).await;
        assert!(r.incremental);
        for snap in ["daily", "daily2", "weekly", "weekly2"] {
            let _ = image.snap_remove(snap);
        }
        for snap in ["daily", "x"] {
            let _ = other_image.snap_remove(snap);
        }
    })
    .await;
}

/// An incremental backup `--since daily` of `source` into backup `b2` of `volume`.
async fn incremental(
    t: &Target,
    volume: &str,
    source: String,
) -> diskferry::Result<lh::BackupReport> {
    let (target, store) = t.open().await;
    let mut job = BackupJob::new(volume);
    job.backup = Some("b2".into());
    job.since = Some("daily".into());
    lh::backup(
        &context(),
        &store,
        &target,
        &Address::parse(&source).unwrap(),
        &job,
        &NoProgress,
        &CancellationToken::new(),
    )
    .await
}

/// A backup of an image's head reads a temporary snapshot, as export does, and removes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_backup_of_an_image_head_reads_a_temporary_snapshot_and_removes_it() {
    with_target(Target::vfs(), |t| async move {
        let io = pool();
        let mut guard = ImageGuard::new(&io);
        let src = guard.add(unique("lhhead"));
        rbd::create(&io, &src, SIZE as u64, &CreateOptions::default()).unwrap();
        let image = Image::open(&io, &src, OpenMode::ReadWrite).unwrap();
        write_image(&image, 0, pattern(9, BLOCK)).await;
        let head = format!("rbd:{TEST_POOL}/{src}");
        let volume = unique("vol");
        let report = backup(&context(), t, &head, &volume, "b1", None).await;
        // Read from a snapshot: the backup names it (it was the live image before).
        let (_, store) = t.open().await;
        let cfg = store
            .load_backup(
                &longhorn::VolumeName::new(volume.as_str()).unwrap(),
                &longhorn::BackupName::new("b1").unwrap(),
            )
            .await
            .unwrap();
        assert!(
            cfg.snapshot_name.starts_with(lh::BACKUP_SNAPSHOT_PREFIX),
            "{}",
            cfg.snapshot_name
        );
        assert_eq!(report.source, head);
        assert_eq!(
            report.digest,
            Some(reference_digest(&{
                let mut d = vec![0u8; SIZE];
                d[..BLOCK].copy_from_slice(&pattern(9, BLOCK));
                d
            }))
        );
        assert!(
            image.snap_list().unwrap().is_empty(),
            "the temporary snapshot is gone"
        );
    })
    .await;
}
