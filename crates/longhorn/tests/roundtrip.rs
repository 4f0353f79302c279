//! Backups written through `VfsDriver` and restored: full, incremental with merge, deletion
//! with GC, corruption, locks, compression stickiness.

mod common;

use std::collections::BTreeSet;
use std::path::Path;

use bytes::Bytes;
use common::{restore_to_vec, store_at};
use longhorn::codec::checksum_hex;
use longhorn::lock::VolumeLock;
use longhorn::paths::{backup_cfg_path, volume_dir};
use longhorn::{
    BackupConfig, BackupMode, BackupName, BackupOptions, BackupStore, BlockSize, Compression,
    CompressionPolicy, Error, LockType, MergeWith, VolumeName,
};
use rand::{RngCore, SeedableRng};

const MIB: usize = 1 << 20;
const BS: usize = 2 * MIB;
const BLOCKS: usize = 8;

fn random_block(seed: u64) -> Vec<u8> {
    let mut v = vec![0u8; BS];
    rand::rngs::StdRng::seed_from_u64(seed).fill_bytes(&mut v);
    v
}

fn text_block(tag: &str) -> Vec<u8> {
    let line = format!("{tag}: the quick brown fox jumps over the lazy dog 0123456789\n");
    line.as_bytes().iter().cycle().take(BS).copied().collect()
}

/// 16 MiB: random, text, zero, random, 0xab, zero, random, a copy of block 0.
fn image_v1() -> Vec<u8> {
    let b0 = random_block(1);
    let blocks = [
        b0.clone(),
        text_block("one"),
        vec![0; BS],
        random_block(3),
        vec![0xab; BS],
        vec![0; BS],
        random_block(6),
        b0,
    ];
    blocks.concat()
}

fn block_of(img: &[u8], i: usize) -> Bytes {
    Bytes::copy_from_slice(&img[i * BS..(i + 1) * BS])
}

fn vol() -> VolumeName {
    VolumeName::new("rt-vol").unwrap()
}

fn name(s: &str) -> BackupName {
    BackupName::new(s).unwrap()
}

fn opts(backup: &str) -> BackupOptions {
    let mut o = BackupOptions::new(vol(), name(backup), (BLOCKS * BS) as u64);
    o.snapshot_name = format!("snap-{backup}");
    o
}

async fn full_backup(
    store: &BackupStore,
    img: &[u8],
    o: BackupOptions,
) -> (longhorn::BackupStats, BackupConfig) {
    let bs = o.block_size.bytes() as usize;
    let mut w = store.begin_backup(o).await.unwrap();
    for i in 0..img.len() / bs {
        w.put_block(
            (i * bs) as u64,
            Bytes::copy_from_slice(&img[i * bs..(i + 1) * bs]),
        )
        .await
        .unwrap();
    }
    w.finish().await.unwrap()
}

fn stored_blocks(root: &Path) -> BTreeSet<String> {
    let dir = root.join(volume_dir(&vol())).join("blocks");
    common::files_under(&dir)
        .into_iter()
        .map(|p| {
            Path::new(&p)
                .file_stem()
                .unwrap()
                .to_string_lossy()
                .into_owned()
        })
        .collect()
}

#[tokio::test]
async fn full_incremental_restore_and_delete() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_at(dir.path());
    let img1 = image_v1();

    let mut o = opts("backup-1");
    o.labels = Some([("vm".to_string(), "a&b".to_string())].into());
    o.snapshot_created_at = Some("2026-11-26T10:00:00Z".into());
    let (s1, cfg1) = full_backup(&store, &img1, o).await;
    assert_eq!(s1.blocks_in, 8);
    assert_eq!(s1.zero_blocks, 2);
    assert_eq!(s1.new_blocks, 5, "{s1:?}");
    assert_eq!(s1.reused_blocks, 1, "block 7 repeats block 0");
    assert_eq!(cfg1.blocks.len(), 6);
    assert!(!cfg1.is_incremental && cfg1.processing_blocks_present);
    assert_eq!(cfg1.size, 6 * BS as u64);
    assert_eq!(stored_blocks(dir.path()).len(), 5);
    assert_eq!(
        restore_to_vec(&store, "rt-vol", "backup-1").await.unwrap(),
        img1
    );

    // What Longhorn reads back: the cfg on disk is the one returned, and volume.cfg follows.
    let on_disk =
        std::fs::read(dir.path().join(backup_cfg_path(&vol(), &name("backup-1")))).unwrap();
    assert_eq!(String::from_utf8(on_disk).unwrap(), cfg1.to_json());
    let v = store.inspect_volume(&vol()).await.unwrap();
    assert_eq!(v.last_backup_name, "backup-1");
    assert_eq!(v.last_backup_at, "2026-11-26T10:00:00Z");
    assert_eq!(v.block_count, 5);
    assert_eq!(v.compression().unwrap(), Compression::Lz4);
    assert!(v.to_json().contains(r#""Labels":{"vm":"a\u0026b"}"#));

    // Change blocks 1, 3 and 5 (5 was zero); give the writer only those.
    let mut img2 = img1.clone();
    img2[BS..2 * BS].copy_from_slice(&text_block("two"));
    img2[3 * BS..4 * BS].copy_from_slice(&random_block(33));
    img2[5 * BS..6 * BS].copy_from_slice(&random_block(55));
    let mut o = opts("backup-2");
    o.merge = MergeWith::LastBackup;
    o.snapshot_created_at = Some("2026-11-26T11:00:00Z".into());
    let mut w = store.begin_backup(o).await.unwrap();
    assert!(w.is_incremental());
    for i in [1, 3, 5] {
        w.put_block((i * BS) as u64, block_of(&img2, i))
            .await
            .unwrap();
    }
    let (s2, cfg2) = w.finish().await.unwrap();
    assert_eq!(s2.new_blocks, 3, "{s2:?}");
    assert_eq!(s2.kept_from_previous, 4);
    assert_eq!(cfg2.blocks.len(), 7);
    assert!(cfg2.is_incremental && !cfg2.processing_blocks_present);
    assert!(s2.bytes_uploaded > 0);
    assert_eq!(cfg2.newly_uploaded_data_size, s2.bytes_uploaded);
    assert_eq!(stored_blocks(dir.path()).len(), 8);
    assert_eq!(
        restore_to_vec(&store, "rt-vol", "backup-2").await.unwrap(),
        img2
    );
    assert_eq!(
        restore_to_vec(&store, "rt-vol", "backup-1").await.unwrap(),
        img1
    );
    assert_eq!(store.inspect_volume(&vol()).await.unwrap().block_count, 8);

    // Deleting backup-1 removes exactly the blocks only it needed.
    let only_b1: BTreeSet<String> = [
        checksum_hex(&img1[BS..2 * BS]),
        checksum_hex(&img1[3 * BS..4 * BS]),
    ]
    .into();
    let needed_b2: BTreeSet<String> = cfg2.blocks.iter().map(|b| b.checksum.clone()).collect();
    let report = store
        .delete_backup(&vol(), &name("backup-1"))
        .await
        .unwrap();
    assert_eq!(report.gc_skipped, None);
    assert_eq!(report.blocks_deleted, 2);
    assert_eq!(report.last_backup_name, "backup-2");
    let left = stored_blocks(dir.path());
    assert_eq!(left, needed_b2);
    assert!(left.is_disjoint(&only_b1));
    assert_eq!(
        restore_to_vec(&store, "rt-vol", "backup-2").await.unwrap(),
        img2
    );
    assert_eq!(
        store.list_backups(&vol()).await.unwrap(),
        vec![name("backup-2")]
    );
    let v = store.inspect_volume(&vol()).await.unwrap();
    assert_eq!(v.block_count, 6);
    assert_eq!(v.last_backup_name, "backup-2");

    // Deleting the last backup clears LastBackupName and every block.
    let report = store
        .delete_backup(&vol(), &name("backup-2"))
        .await
        .unwrap();
    assert_eq!(report.blocks_deleted, 6);
    assert!(stored_blocks(dir.path()).is_empty());
    let v = store.inspect_volume(&vol()).await.unwrap();
    assert_eq!((v.last_backup_name.as_str(), v.block_count), ("", 0));
    // No lock file is left behind by any operation.
    assert!(common::files_under(&dir.path().join(volume_dir(&vol())).join("locks")).is_empty());
}

#[tokio::test]
async fn incremental_zeroed_blocks_and_ranges_drop_old_mappings() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_at(dir.path());
    let img1 = image_v1();
    full_backup(&store, &img1, opts("b1")).await;
    let mut img2 = img1.clone();
    img2[..BS].fill(0); // block 0 zeroed: given as data
    img2[6 * BS..].fill(0); // blocks 6 and 7 discarded: given as a range
    let mut o = opts("b2");
    o.merge = MergeWith::Backup(name("b1"));
    let mut w = store.begin_backup(o).await.unwrap();
    w.put_block(0, block_of(&img2, 0)).await.unwrap();
    w.put_zero_range((6 * BS) as u64, (2 * BS) as u64).unwrap();
    assert!(w.put_zero_range(1, BS as u64).is_err());
    let (s, cfg) = w.finish().await.unwrap();
    assert_eq!((s.new_blocks, s.zero_blocks), (0, 1));
    assert_eq!(
        cfg.blocks
            .iter()
            .map(|b| b.offset / BS as u64)
            .collect::<Vec<_>>(),
        vec![1, 3, 4]
    );
    assert_eq!(restore_to_vec(&store, "rt-vol", "b2").await.unwrap(), img2);
    assert_eq!(restore_to_vec(&store, "rt-vol", "b1").await.unwrap(), img1);
}

#[tokio::test]
async fn corrupted_blocks_fail_restore_naming_the_block() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_at(dir.path());
    let img = image_v1();
    let (_, cfg) = full_backup(&store, &img, opts("b1")).await;
    let victim = cfg
        .blocks
        .iter()
        .find(|b| b.offset == 3 * BS as u64)
        .unwrap()
        .checksum
        .clone();
    let path = dir
        .path()
        .join(longhorn::paths::block_path(&vol(), &victim).unwrap());

    // Valid lz4 of other content: the checksum check catches it.
    let mut enc = longhorn::BlockEncoder::new(Compression::Lz4);
    std::fs::write(&path, enc.encode(&Bytes::from(random_block(99))).payload).unwrap();
    let err = restore_to_vec(&store, "rt-vol", "b1").await.unwrap_err();
    assert!(matches!(err, Error::ChecksumMismatch { .. }), "{err}");
    assert!(err.to_string().contains(&victim), "{err}");
    assert!(err.to_string().contains(&(3 * BS).to_string()), "{err}");

    // Garbage: the decompression fails (after the gzip fallback) and names the block.
    std::fs::write(&path, b"definitely not a block").unwrap();
    let err = restore_to_vec(&store, "rt-vol", "b1").await.unwrap_err();
    assert!(matches!(err, Error::Decompress { .. }), "{err}");
    assert!(err.to_string().contains(&victim), "{err}");

    // Missing: the read error names the block.
    std::fs::remove_file(&path).unwrap();
    let err = restore_to_vec(&store, "rt-vol", "b1").await.unwrap_err();
    assert!(matches!(err, Error::BlockRead { .. }), "{err}");
    assert!(err.to_string().contains(&victim), "{err}");
}

#[tokio::test]
async fn restore_refuses_bad_cfgs_and_in_progress_backups() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_at(dir.path());
    let img = image_v1();
    let (_, cfg) = full_backup(&store, &img, opts("b1")).await;
    let cfg_path = |b: &str| dir.path().join(backup_cfg_path(&vol(), &name(b)));

    let mut beyond = cfg.clone();
    beyond.name = "beyond".into();
    beyond.blocks.last_mut().unwrap().offset = (BLOCKS * BS) as u64;
    std::fs::write(cfg_path("beyond"), beyond.to_json()).unwrap();
    let err = restore_to_vec(&store, "rt-vol", "beyond")
        .await
        .unwrap_err();
    assert!(err.to_string().contains("beyond the volume size"), "{err}");

    let mut unsorted = cfg.clone();
    unsorted.name = "unsorted".into();
    unsorted.blocks.swap(0, 1);
    std::fs::write(cfg_path("unsorted"), unsorted.to_json()).unwrap();
    let err = restore_to_vec(&store, "rt-vol", "unsorted")
        .await
        .unwrap_err();
    assert!(err.to_string().contains("not sorted"), "{err}");

    let mut wip = cfg.clone();
    wip.name = "wip".into();
    wip.created_time.clear();
    std::fs::write(cfg_path("wip"), wip.to_json()).unwrap();
    let err = restore_to_vec(&store, "rt-vol", "wip").await.unwrap_err();
    assert!(matches!(err, Error::BackupInProgress { .. }), "{err}");
    assert!(store.inspect_backup(&vol(), &name("wip")).await.is_err());

    // GC is skipped while a backup is in progress or a cfg is unreadable: nothing is deleted.
    std::fs::remove_file(cfg_path("beyond")).unwrap();
    let before = stored_blocks(dir.path());
    let report = store.delete_backup(&vol(), &name("b1")).await.unwrap();
    assert!(
        report.gc_skipped.as_deref().unwrap().contains("unsorted"),
        "{report:?}"
    );
    assert_eq!(report.blocks_deleted, 0);
    assert_eq!(stored_blocks(dir.path()), before);
    std::fs::remove_file(cfg_path("unsorted")).unwrap();
    full_backup(&store, &img, opts("b2")).await;
    let report = store.delete_backup(&vol(), &name("b2")).await.unwrap();
    assert!(
        report
            .gc_skipped
            .as_deref()
            .unwrap()
            .contains("in progress"),
        "{report:?}"
    );
    assert_eq!(stored_blocks(dir.path()), before);
}

/// A full backup `name` of `img`, with the volume size `img`'s length.
async fn sized_backup(store: &BackupStore, name: &str, img: &[u8]) -> longhorn::BackupStats {
    let mut o = opts(name);
    o.volume_size = img.len() as u64;
    full_backup(store, img, o).await.0
}

/// Volumes grow, never shrink: after a backup of 16 MiB, a backup of 8 MiB into the same
/// volume keeps volume.cfg's Size at 16 MiB (a smaller one would put the first backup's
/// blocks beyond it, unrestorable), and both restore at 16 MiB, the second zero-padded as
/// Longhorn pads a backup taken before a growth. A later larger backup grows the size.
#[tokio::test]
async fn volume_size_only_grows_and_every_backup_restores_at_it() {
    let root = tempfile::tempdir().unwrap();
    let store = store_at(root.path());
    let (img1, small) = (image_v1(), text_block("small").repeat(4));
    let bigger = [img1.clone(), random_block(77)].concat();
    let padded = |img: &[u8], len: usize| [img, &vec![0; len - img.len()]].concat();

    let s1 = sized_backup(&store, "big", &img1).await;
    assert_eq!(s1.volume_size, img1.len() as u64);
    let s2 = sized_backup(&store, "small", &small).await;
    assert_eq!(s2.volume_size, img1.len() as u64, "{s2:?}");
    let v = store.inspect_volume(&vol()).await.unwrap();
    assert_eq!(
        (v.size, v.last_backup_name.as_str()),
        (s1.volume_size, "small")
    );
    assert_eq!(restore_to_vec(&store, "rt-vol", "big").await.unwrap(), img1);
    let got = restore_to_vec(&store, "rt-vol", "small").await.unwrap();
    assert_eq!(got, padded(&small, img1.len()));

    let s3 = sized_backup(&store, "bigger", &bigger).await;
    assert_eq!(s3.volume_size, bigger.len() as u64);
    let got = restore_to_vec(&store, "rt-vol", "big").await.unwrap();
    assert_eq!(
        got,
        padded(&img1, bigger.len()),
        "an older backup restores at the grown size"
    );
}

#[tokio::test]
async fn compression_is_sticky_per_volume() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_at(dir.path());
    let img = image_v1();
    full_backup(&store, &img, opts("b1")).await;
    let mut o = opts("b2");
    o.compression = Compression::Gzip;
    o.compression_policy = CompressionPolicy::RequireMatch;
    let err = store.begin_backup(o.clone()).await.unwrap_err();
    assert!(matches!(err, Error::CompressionMismatch { .. }), "{err}");
    o.compression_policy = CompressionPolicy::AdoptVolume;
    let w = store.begin_backup(o).await.unwrap();
    assert_eq!(w.compression(), Compression::Lz4);
    w.abort().await.unwrap();
    assert_eq!(store.list_backups(&vol()).await.unwrap(), vec![name("b1")]);
    // An existing backup name is refused.
    assert!(store.begin_backup(opts("b1")).await.is_err());
}

#[tokio::test]
async fn a_deletion_lock_refuses_backups() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_at(dir.path());
    let lock = VolumeLock::acquire(
        store.driver().clone(),
        &vol(),
        LockType::Deletion,
        store.lock_options(),
    )
    .await
    .unwrap();
    let err = store.begin_backup(opts("b1")).await.unwrap_err();
    assert!(
        matches!(err, Error::LockConflict { other_type: 2, .. }),
        "{err}"
    );
    lock.release().await.unwrap();
    full_backup(&store, &image_v1(), opts("b1")).await;
}

#[tokio::test]
async fn full_mode_reuploads_existing_blocks() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_at(dir.path());
    let img = image_v1();
    full_backup(&store, &img, opts("b1")).await;
    let mut o = opts("b2");
    o.mode = BackupMode::Full;
    let (s, cfg) = full_backup(&store, &img, o).await;
    assert_eq!(
        (s.new_blocks, s.reuploaded_blocks, s.reused_blocks),
        (0, 5, 1),
        "{s:?}"
    );
    assert_eq!(cfg.re_uploaded_data_size, s.bytes_reuploaded);
    assert!(cfg.re_uploaded_data_size > 0);
    assert_eq!(cfg.parameters.as_ref().unwrap()["backup-mode"], "full");
    assert_eq!(restore_to_vec(&store, "rt-vol", "b2").await.unwrap(), img);
}

#[tokio::test]
async fn gzip_and_none_16mib_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_at(dir.path());
    // gzip: two small-ish blocks (deflate is slow in unoptimized test builds).
    let img: Vec<u8> = [text_block("gz"), vec![0; BS]].concat();
    let mut o = BackupOptions::new(
        VolumeName::new("gz-vol").unwrap(),
        name("b1"),
        img.len() as u64,
    );
    o.compression = Compression::Gzip;
    full_backup(&store, &img, o).await;
    assert_eq!(restore_to_vec(&store, "gz-vol", "b1").await.unwrap(), img);

    let img: Vec<u8> = [
        random_block(7),
        text_block("n"),
        vec![0; 12 * MIB],
        random_block(8),
        vec![0; 14 * MIB],
    ]
    .concat();
    assert_eq!(img.len(), 32 * MIB);
    let mut o = BackupOptions::new(
        VolumeName::new("none-vol").unwrap(),
        name("b1"),
        img.len() as u64,
    );
    o.compression = Compression::None;
    o.block_size = BlockSize::Mib16;
    let (s, cfg) = full_backup(&store, &img, o).await;
    assert_eq!(s.new_blocks, 2);
    assert_eq!(
        cfg.parameters.as_ref().unwrap()["backup-block-size"],
        "16777216"
    );
    assert_eq!(cfg.block_size().unwrap(), 16 * MIB as u64);
    assert_eq!(restore_to_vec(&store, "none-vol", "b1").await.unwrap(), img);
}

#[tokio::test]
async fn writer_rejects_bad_blocks() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_at(dir.path());
    let mut w = store.begin_backup(opts("b1")).await.unwrap();
    let blk = Bytes::from(vec![1u8; BS]);
    assert!(w.put_block(1, blk.clone()).await.is_err());
    assert!(w
        .put_block((BLOCKS * BS) as u64, blk.clone())
        .await
        .is_err());
    assert!(w.put_block(0, blk.slice(..BS - 1)).await.is_err());
    w.put_block(0, blk.clone()).await.unwrap();
    assert!(w.put_block(0, blk).await.is_err());
    w.abort().await.unwrap();
    let mut bad = BackupOptions::new(vol(), name("b2"), (BS + 4096) as u64);
    bad.snapshot_name = "s".into();
    assert!(store.begin_backup(bad).await.is_err());
}

#[test]
fn names_that_escape_the_target_are_refused() {
    for n in ["../x", "..", "a/b", "/x", "x/..", "a\\b"] {
        assert!(VolumeName::new(n).is_err(), "{n}");
        assert!(BackupName::new(n).is_err(), "{n}");
    }
    assert!(longhorn::BackupUrl::parse("vfs:///tmp/t/?volume=..%2Fx").is_err());
    assert!(longhorn::BackupUrl::parse("vfs:///tmp/t/?volume=v&backup=..").is_err());
}

#[tokio::test]
async fn dedup_from_the_last_backup_without_listing_blocks() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("vfs://{}/", dir.path().display());
    let target = longhorn::BackupTarget::parse(&url).unwrap();
    let driver = longhorn::VfsDriver::from_target(&target).unwrap();
    assert_eq!(driver.root(), dir.path());
    let store = store_at(dir.path());
    let img = image_v1();
    full_backup(&store, &img, opts("b1")).await;
    let mut o = opts("b2");
    o.dedup = longhorn::DedupSource::LastBackup;
    let (s, cfg) = full_backup(&store, &img, o).await;
    assert_eq!(
        (s.new_blocks, s.reused_blocks, s.zero_blocks),
        (0, 6, 2),
        "{s:?}"
    );
    assert!(!cfg.is_incremental);
    assert_eq!(restore_to_vec(&store, "rt-vol", "b2").await.unwrap(), img);
}

/// A driver whose block uploads fail, to exercise the writer's failure path (and to show the
/// trait is implementable outside the crate).
#[derive(Debug)]
struct FailingBlocks(longhorn::VfsDriver);

#[async_trait::async_trait]
impl longhorn::BackupStoreDriver for FailingBlocks {
    async fn get(&self, path: &str) -> Result<Bytes, longhorn::DriverError> {
        self.0.get(path).await
    }
    async fn put(&self, path: &str, data: Bytes) -> Result<(), longhorn::DriverError> {
        if path.contains("/blocks/") {
            return Err(longhorn::DriverError::Backend {
                op: "put",
                path: path.to_owned(),
                source: "injected failure".into(),
            });
        }
        self.0.put(path, data).await
    }
    async fn stat(
        &self,
        path: &str,
    ) -> Result<Option<longhorn::ObjectInfo>, longhorn::DriverError> {
        self.0.stat(path).await
    }
    async fn list(&self, dir: &str) -> Result<Vec<String>, longhorn::DriverError> {
        self.0.list(dir).await
    }
    async fn delete(&self, paths: &[String]) -> Result<(), longhorn::DriverError> {
        self.0.delete(paths).await
    }
}

#[tokio::test]
async fn failed_uploads_leave_no_in_progress_cfg_or_lock() {
    let dir = tempfile::tempdir().unwrap();
    let driver = std::sync::Arc::new(FailingBlocks(longhorn::VfsDriver::new(dir.path()).unwrap()));
    let store =
        BackupStore::new(driver).with_lock_options(store_at(dir.path()).lock_options().to_owned());
    let mut w = store.begin_backup(opts("b1")).await.unwrap();
    let blk = Bytes::from(text_block("x"));
    // The failure surfaces either from a later put_block or from finish.
    let mut err = None;
    for i in 0..BLOCKS {
        if let Err(e) = w.put_block((i * BS) as u64, blk.clone()).await {
            err = Some(e);
            break;
        }
    }
    let err = match err {
        Some(e) => {
            w.abort().await.unwrap();
            e
        }
        None => w.finish().await.unwrap_err(),
    };
    assert!(matches!(err, Error::BlockWrite { .. }), "{err}");
    assert!(err.to_string().contains(&checksum_hex(&blk)), "{err}");
    assert!(store.list_backups(&vol()).await.unwrap().is_empty());
    assert!(common::files_under(&dir.path().join(volume_dir(&vol())).join("locks")).is_empty());
}

#[tokio::test]
async fn stale_deletion_locks_expire_and_backing_image_is_not_a_volume() {
    use longhorn::cfg::LockFile;
    use std::time::{Duration, SystemTime};
    let dir = tempfile::tempdir().unwrap();
    let store = store_at(dir.path());
    let lock_path = dir
        .path()
        .join(longhorn::paths::lock_path(&vol(), "lock-00000000000000aa"));
    std::fs::create_dir_all(lock_path.parent().unwrap()).unwrap();
    let held = LockFile {
        name: "lock-00000000000000aa".into(),
        lock_type: LockType::Deletion,
        acquired: true,
        writer: None,
    };
    std::fs::write(&lock_path, held.to_json()).unwrap();
    let err = store.begin_backup(opts("b1")).await.unwrap_err();
    assert!(err.to_string().contains("lock-00000000000000aa"), "{err}");
    // Not refreshed for longer than LOCK_DURATION (150 s): ignored.
    let old = SystemTime::now() - Duration::from_secs(200);
    std::fs::File::options()
        .write(true)
        .open(&lock_path)
        .unwrap()
        .set_modified(old)
        .unwrap();
    store
        .begin_backup(opts("b1"))
        .await
        .unwrap()
        .abort()
        .await
        .unwrap();

    let bi = dir
        .path()
        .join("backupstore/volumes/22/fc/BACKINGIMAGE/locks");
    std::fs::create_dir_all(bi).unwrap();
    assert_eq!(store.list_volumes().await.unwrap(), vec![vol()]);
}

#[tokio::test]
async fn verify_reports_every_bad_block() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_at(dir.path());
    let img = image_v1();
    let (_, cfg) = full_backup(&store, &img, opts("b1")).await;
    let ok = store
        .verify_backup(&vol(), &name("b1"), longhorn::RestoreOptions::default())
        .await
        .unwrap();
    assert_eq!((ok.blocks_checked, ok.failures.len()), (5, 0), "{ok:?}");
    assert_eq!(ok.bytes_checked, 5 * BS as u64);
    let bad: Vec<_> = cfg
        .blocks
        .iter()
        .filter(|b| [3, 4].contains(&(b.offset / BS as u64)))
        .collect();
    for b in &bad {
        let p = dir
            .path()
            .join(longhorn::paths::block_path(&vol(), &b.checksum).unwrap());
        std::fs::write(p, b"junk").unwrap();
    }
    let report = store
        .verify_backup(&vol(), &name("b1"), longhorn::RestoreOptions::default())
        .await
        .unwrap();
    assert_eq!(report.blocks_checked, 5);
    let failed: Vec<_> = report
        .failures
        .iter()
        .map(|f| (f.offset, f.checksum.clone()))
        .collect();
    let expected: Vec<_> = bad.iter().map(|b| (b.offset, b.checksum.clone())).collect();
    assert_eq!(failed, expected);
}
