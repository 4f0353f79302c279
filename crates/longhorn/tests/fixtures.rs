//! Reading what Longhorn's own Go library wrote: list, inspect, restore, SHA-256 of the
//! restored volumes against the fixtures' README.

mod common;

use common::{fixture_store, fixtures_dir, restore_to_vec, sha256_hex};
use longhorn::{BackupName, Compression, VolumeName};

const LZ4_B1: &str = "970c758a0d145fec2867e228a91bf24dbf6ca99a01c52cc0679b3f1042e923af";
const LZ4_B2: &str = "453fab81322cd8b315dcb83c8572bfc2d3e46dd17f002159415edbebed9c8587";
const GZIP_B1: &str = "970c758a0d145fec2867e228a91bf24dbf6ca99a01c52cc0679b3f1042e923af";
const NONE16_B1: &str = "422244488e1164533b6762af574d433f7d94501278068a569fbd8d276556b782";

#[test]
fn readme_lists_the_hashes_pinned_here() {
    let readme = std::fs::read_to_string(fixtures_dir().join("README.md")).unwrap();
    for h in [LZ4_B1, LZ4_B2, GZIP_B1, NONE16_B1] {
        assert!(readme.contains(h), "{h} not in the fixtures README");
    }
}

#[tokio::test]
async fn lz4_target_lists_inspects_and_restores_both_backups() {
    let (_dir, store) = fixture_store("target-lz4");
    let vols = store.list_volumes().await.unwrap();
    assert_eq!(vols, vec![VolumeName::new("fixvol").unwrap()]);
    let v = &vols[0];
    let backups = store.list_backups(v).await.unwrap();
    assert_eq!(
        backups,
        vec![
            BackupName::new("backup-1").unwrap(),
            BackupName::new("backup-2").unwrap()
        ]
    );
    let vol = store.inspect_volume(v).await.unwrap();
    assert_eq!(vol.size, 12 << 20);
    assert_eq!(vol.compression().unwrap(), Compression::Lz4);
    assert_eq!(vol.last_backup_name, "backup-2");
    assert_eq!(vol.block_count, 7);
    let b2 = store.inspect_backup(v, &backups[1]).await.unwrap();
    assert!(b2.is_incremental);
    assert_eq!(b2.blocks.len(), 5);
    assert_eq!(b2.labels.as_ref().unwrap()["vm-name"], "fixture-vm");
    assert_eq!(store.list_blocks(v).await.unwrap().len(), 7);

    let img1 = restore_to_vec(&store, "fixvol", "backup-1").await.unwrap();
    assert_eq!(img1.len(), 12 << 20);
    assert_eq!(sha256_hex(&img1), LZ4_B1);
    let img2 = restore_to_vec(&store, "fixvol", "backup-2").await.unwrap();
    assert_eq!(sha256_hex(&img2), LZ4_B2);
}

#[tokio::test]
async fn gzip_target_restores() {
    let (_dir, store) = fixture_store("target-gzip");
    let vols = store.list_volumes().await.unwrap();
    assert_eq!(vols, vec![VolumeName::new("fixvol-gzip").unwrap()]);
    let b = store
        .inspect_backup(&vols[0], &BackupName::new("backup-1").unwrap())
        .await
        .unwrap();
    assert_eq!(b.compression().unwrap(), Compression::Gzip);
    let img = restore_to_vec(&store, "fixvol-gzip", "backup-1")
        .await
        .unwrap();
    assert_eq!(sha256_hex(&img), GZIP_B1);
}

#[tokio::test]
async fn none_16mib_target_restores() {
    let (_dir, store) = fixture_store("target-none16");
    let v = VolumeName::new("fixvol-none16").unwrap();
    assert_eq!(store.list_volumes().await.unwrap(), vec![v.clone()]);
    let b = store
        .inspect_backup(&v, &BackupName::new("backup-1").unwrap())
        .await
        .unwrap();
    assert_eq!(b.block_size().unwrap(), 16 << 20);
    assert_eq!(b.compression().unwrap(), Compression::None);
    let img = restore_to_vec(&store, "fixvol-none16", "backup-1")
        .await
        .unwrap();
    assert_eq!(img.len(), 16 << 20);
    assert_eq!(sha256_hex(&img), NONE16_B1);
}

#[tokio::test]
async fn restore_leaves_no_lock_behind() {
    let (dir, store) = fixture_store("target-lz4");
    restore_to_vec(&store, "fixvol", "backup-1").await.unwrap();
    let locks = dir.path().join("backupstore/volumes/1a/91/fixvol/locks");
    let left: Vec<_> = std::fs::read_dir(&locks)
        .map(|r| r.count())
        .into_iter()
        .collect();
    assert!(
        left.is_empty() || left == vec![0],
        "lock files left in {locks:?}"
    );
}
