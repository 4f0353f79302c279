//! The catalog methods of `BackupStore` (list, inspect, remove, resolve_backup,
//! backup_of_snapshot) over a `VfsDriver` store: what `diskferry longhorn ls|inspect|rm`
//! print.

mod common;

use bytes::Bytes;
use common::store_at;
use longhorn::paths::backup_cfg_path;
use longhorn::{BackupName, BackupOptions, BackupStore, BackupTarget, VolumeName, LATEST};

const BS: usize = 2 << 20;
const VOLUME_SIZE: u64 = 4 * BS as u64;

fn vol() -> VolumeName {
    VolumeName::new("cat-vol").unwrap()
}

fn name(s: &str) -> BackupName {
    BackupName::new(s).unwrap()
}

/// A full backup of one block of `fill` bytes, taken from snapshot `snapshot`.
async fn backup(store: &BackupStore, backup: &str, snapshot: &str, fill: u8) {
    let mut o = BackupOptions::new(vol(), name(backup), VOLUME_SIZE);
    o.snapshot_name = snapshot.into();
    let mut w = store.begin_backup(o).await.unwrap();
    w.put_block(0, Bytes::from(vec![fill; BS])).await.unwrap();
    w.finish().await.unwrap();
}

/// Rewrites a backup cfg's `CreatedTime` (backups made within one second tie otherwise).
fn set_created(root: &std::path::Path, backup: &str, time: &str) {
    let path = root.join(backup_cfg_path(&vol(), &name(backup)));
    let mut v: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    v["CreatedTime"] = serde_json::json!(time);
    std::fs::write(&path, serde_json::to_vec(&v).unwrap()).unwrap();
}

#[tokio::test]
async fn list_shows_every_backup_and_names_an_unreadable_cfg() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_at(dir.path());
    backup(&store, "b1", "snap-a", 1).await;
    backup(&store, "b2", "snap-b", 2).await;
    let bad = dir.path().join(backup_cfg_path(&vol(), &name("b0-bad")));
    std::fs::write(&bad, b"{not json").unwrap();

    let listed = store.list(None).await.unwrap();
    assert_eq!(listed.len(), 1);
    let v = &listed[0];
    assert_eq!(
        (v.volume.as_str(), v.size, v.last_backup.as_str()),
        ("cat-vol", VOLUME_SIZE, "b2")
    );
    assert_eq!(v.compression, "lz4");
    let names: Vec<&str> = v.backups.iter().map(|b| b.name.as_str()).collect();
    assert_eq!(names, ["b0-bad", "b1", "b2"]);
    assert!(v.backups[0].error.is_some(), "{:?}", v.backups[0]);
    let b1 = &v.backups[1];
    assert_eq!(
        (b1.snapshot.as_str(), b1.blocks, b1.in_progress, &b1.error),
        ("snap-a", 1, false, &None)
    );
    assert_eq!(store.list(Some(&vol())).await.unwrap(), listed);
}

#[tokio::test]
async fn inspect_gives_the_cfg_and_its_backup_url() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_at(dir.path());
    let target = BackupTarget::parse(&format!("vfs://{}/", dir.path().display())).unwrap();
    backup(&store, "b1", "snap-a", 1).await;

    let v = store.inspect(&target, &vol(), None).await.unwrap();
    assert_eq!(v.url, target.backup_url(&vol(), None));
    assert_eq!(v.cfg["Name"], "cat-vol");
    assert_eq!(v.cfg["Size"], VOLUME_SIZE.to_string());

    let b = store.inspect(&target, &vol(), Some(LATEST)).await.unwrap();
    assert_eq!(b.url, target.backup_url(&vol(), Some(&name("b1"))));
    assert_eq!(b.cfg["Name"], "b1");
    assert_eq!(b.cfg["SnapshotName"], "snap-a");
}

#[tokio::test]
async fn remove_latest_then_nothing_is_latest() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_at(dir.path());
    backup(&store, "b1", "snap-a", 1).await;
    backup(&store, "b2", "snap-b", 2).await;

    let r = store.remove(&vol(), LATEST).await.unwrap();
    assert_eq!((r.backup.as_str(), r.blocks_deleted), ("b2", 1), "{r:?}");
    assert_eq!(
        store.resolve_backup(&vol(), None).await.unwrap(),
        name("b1")
    );
    let r = store.remove(&vol(), "b1").await.unwrap();
    assert_eq!(r.last_backup, "");
    let err = store
        .resolve_backup(&vol(), Some(LATEST))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("no completed backup"), "{err}");
    let err = store.remove(&vol(), "b1").await.unwrap_err();
    assert!(err.to_string().contains("does not exist"), "{err}");
}

#[tokio::test]
async fn backup_of_snapshot_is_the_latest_completed_one() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_at(dir.path());
    backup(&store, "a-late", "snap-a", 1).await;
    backup(&store, "b-early", "snap-a", 2).await;
    backup(&store, "c-other", "snap-b", 3).await;
    set_created(dir.path(), "a-late", "2026-02-01T00:00:00Z");
    set_created(dir.path(), "b-early", "2026-01-01T00:00:00Z");
    // An in-progress backup of the snapshot (empty CreatedTime) is not a base.
    set_created(dir.path(), "c-other", "");

    assert_eq!(
        store.backup_of_snapshot(&vol(), "snap-a").await.unwrap(),
        Some(name("a-late"))
    );
    assert_eq!(
        store.backup_of_snapshot(&vol(), "snap-b").await.unwrap(),
        None
    );
    assert_eq!(
        store.backup_of_snapshot(&vol(), "snap-x").await.unwrap(),
        None
    );
}
