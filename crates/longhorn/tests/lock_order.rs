//! When operations take Longhorn's lock (issue 11 item 13): a request refused for what the
//! store holds (no such backup or volume, a backup in progress, a name taken, a bad merge
//! base, a compression mismatch) is refused before any lock file is written, so without the
//! protocol's 2 s wait; listing and inspection never write; a lock that would conflict for
//! certain (an acquired one of the other type) refuses without writing ours. Every write to
//! the store goes through a recording driver, so "no lock file was ever written" is observed
//! directly, not inferred from what is left at the end.

mod common;

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;
use common::store_at;
use longhorn::lock::{LockOptions, VolumeLock};
use longhorn::paths::backup_cfg_path;
use longhorn::{
    BackupConfig, BackupName, BackupOptions, BackupStore, BackupStoreDriver, Compression,
    CompressionPolicy, DriverError, Error, LockType, MergeWith, ObjectInfo, RestoreOptions,
    VfsDriver, VolumeName,
};

const BS: usize = 2 << 20;

/// A vfs driver that records the path of every `put`.
#[derive(Debug)]
struct Recording {
    inner: VfsDriver,
    puts: Mutex<Vec<String>>,
}

impl Recording {
    /// Paths written since the last call, and forgets them.
    fn take_puts(&self) -> Vec<String> {
        std::mem::take(&mut *self.puts.lock().unwrap())
    }
}

#[async_trait]
impl BackupStoreDriver for Recording {
    async fn get(&self, path: &str) -> Result<Bytes, DriverError> {
        self.inner.get(path).await
    }
    async fn put(&self, path: &str, data: Bytes) -> Result<(), DriverError> {
        self.puts.lock().unwrap().push(path.to_owned());
        self.inner.put(path, data).await
    }
    async fn stat(&self, path: &str) -> Result<Option<ObjectInfo>, DriverError> {
        self.inner.stat(path).await
    }
    async fn list(&self, dir: &str) -> Result<Vec<String>, DriverError> {
        self.inner.list(dir).await
    }
    async fn delete(&self, paths: &[String]) -> Result<(), DriverError> {
        self.inner.delete(paths).await
    }
}

fn short_wait() -> LockOptions {
    LockOptions {
        check_wait: std::time::Duration::from_millis(10),
        ..LockOptions::default()
    }
}

fn vol(name: &str) -> VolumeName {
    VolumeName::new(name).unwrap()
}

fn name(s: &str) -> BackupName {
    BackupName::new(s).unwrap()
}

/// A store holding volume `vol` with completed backup `b1` (one lz4 block) and in-progress
/// backup `busy`, seen through a recording driver whose record starts empty.
async fn recorded_store(dir: &std::path::Path) -> (Arc<Recording>, BackupStore) {
    let plain = store_at(dir);
    let mut w = plain
        .begin_backup(BackupOptions::new(vol("vol"), name("b1"), BS as u64))
        .await
        .unwrap();
    w.put_block(0, Bytes::from(vec![7u8; BS])).await.unwrap();
    w.finish().await.unwrap();
    let busy = BackupConfig {
        name: "busy".into(),
        volume_name: "vol".into(),
        compression_method: "lz4".into(),
        ..BackupConfig::default()
    };
    assert!(busy.in_progress());
    plain
        .driver()
        .put(
            &backup_cfg_path(&vol("vol"), &name("busy")),
            Bytes::from(busy.to_json()),
        )
        .await
        .unwrap();
    let rec = Arc::new(Recording {
        inner: VfsDriver::new(dir).unwrap(),
        puts: Mutex::new(Vec::new()),
    });
    let store = BackupStore::new(rec.clone()).with_lock_options(short_wait());
    (rec, store)
}

/// The error a request that must be refused returns.
async fn refused<T: std::fmt::Debug>(
    request: impl std::future::Future<Output = longhorn::Result<T>>,
) -> Error {
    request.await.expect_err("the request is refused")
}

fn lock_writes(puts: &[String]) -> Vec<&String> {
    puts.iter().filter(|p| p.contains("/locks/")).collect()
}

#[tokio::test]
async fn refused_requests_write_no_lock_and_reads_write_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (rec, store) = recorded_store(dir.path()).await;
    let opts = RestoreOptions::default();
    assert!(opts.lock, "restores lock by default");

    let (v, novol, b1, nope) = (&vol("vol"), &vol("novol"), &name("b1"), &name("nope"));
    let refusals: Vec<(&str, Error)> = vec![
        (
            "restore, no such backup",
            refused(store.open_restore(v, nope, opts)).await,
        ),
        (
            "restore, no such volume",
            refused(store.open_restore(novol, b1, opts)).await,
        ),
        (
            "restore, in progress",
            refused(store.open_restore(v, &name("busy"), opts)).await,
        ),
        (
            "verify, no such backup",
            refused(store.verify_backup(v, nope, opts)).await,
        ),
        (
            "delete, no such backup",
            refused(store.delete_backup(v, nope)).await,
        ),
        (
            "delete, no such volume",
            refused(store.delete_backup(novol, b1)).await,
        ),
        ("backup, name taken", {
            let o = BackupOptions::new(vol("vol"), name("b1"), BS as u64);
            refused(store.begin_backup(o)).await
        }),
        ("backup merged with a missing backup", {
            let mut o = BackupOptions::new(vol("vol"), name("b2"), BS as u64);
            o.merge = MergeWith::Backup(name("nope"));
            refused(store.begin_backup(o)).await
        }),
        ("backup merged with the last backup of a new volume", {
            let mut o = BackupOptions::new(vol("newvol"), name("b2"), BS as u64);
            o.merge = MergeWith::LastBackup;
            refused(store.begin_backup(o)).await
        }),
        ("backup requiring another compression", {
            let mut o = BackupOptions::new(vol("vol"), name("b2"), BS as u64);
            o.compression = Compression::Gzip;
            o.compression_policy = CompressionPolicy::RequireMatch;
            refused(store.begin_backup(o)).await
        }),
    ];
    for (what, err) in &refusals {
        assert!(
            !matches!(err, Error::LockConflict { .. }),
            "{what}: refused for the request, not a lock: {err}"
        );
        println!("{what}: {err}");
    }
    assert_eq!(
        rec.take_puts(),
        Vec::<String>::new(),
        "refused requests write nothing, no lock file included"
    );

    // Listing and inspection read only.
    assert_eq!(store.list_volumes().await.unwrap(), [vol("vol")]);
    assert_eq!(store.list_backups(&vol("vol")).await.unwrap().len(), 2);
    store.inspect_volume(&vol("vol")).await.unwrap();
    store
        .inspect_backup(&vol("vol"), &name("b1"))
        .await
        .unwrap();
    store.list_blocks(&vol("vol")).await.unwrap();
    assert_eq!(rec.take_puts(), Vec::<String>::new(), "reads write nothing");

    // The control: an accepted restore does take the lock (written, then marked acquired).
    let r = store
        .open_restore(&vol("vol"), &name("b1"), opts)
        .await
        .unwrap();
    r.finish().await.unwrap();
    let puts = rec.take_puts();
    assert_eq!(lock_writes(&puts).len(), 2, "{puts:?}");
    assert_eq!(puts.len(), 2, "{puts:?}");
}

/// A deletion while a backup holds its acquired lock: refused at once, naming that lock,
/// without writing a lock of its own (it could only lose: an acquired lock has priority).
/// A second backup lock (same type) is still granted, through the full protocol.
#[tokio::test]
async fn a_certain_conflict_is_refused_without_writing_a_lock() {
    let dir = tempfile::tempdir().unwrap();
    let (rec, store) = recorded_store(dir.path()).await;
    let holder = VolumeLock::acquire(
        store.driver().clone(),
        &vol("vol"),
        LockType::BackupOrRestore,
        &short_wait(),
    )
    .await
    .unwrap();
    let held = holder.path().rsplit('/').next().unwrap().to_owned();
    rec.take_puts();

    let err = store
        .delete_backup(&vol("vol"), &name("b1"))
        .await
        .unwrap_err();
    match &err {
        Error::LockConflict {
            other, other_type, ..
        } => {
            assert_eq!(format!("{other}.lck"), held, "{err}");
            assert_eq!(*other_type, LockType::BackupOrRestore.value());
        }
        e => panic!("expected a lock conflict, got {e}"),
    }
    assert_eq!(rec.take_puts(), Vec::<String>::new());

    let r = store
        .open_restore(&vol("vol"), &name("b1"), RestoreOptions::default())
        .await
        .unwrap();
    r.finish().await.unwrap();
    assert_eq!(lock_writes(&rec.take_puts()).len(), 2);
    holder.release().await.unwrap();

    // Released: the deletion goes through.
    store.delete_backup(&vol("vol"), &name("b1")).await.unwrap();
}
