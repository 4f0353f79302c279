//! What an interrupted backup leaves in a backup volume (an in-progress cfg, its lock, blocks
//! no backup references) and its removal by Longhorn's own rules.
//!
//! Longhorn itself never removes another process's in-progress cfg or lock: a failed
//! backup's cfg goes when the backup is deleted (`DeleteDeltaBlockBackup`: the cfg, then a
//! mark-and-sweep of blocks under the deletion lock), and a lock not refreshed for
//! [`LOCK_DURATION`](crate::lock::LOCK_DURATION) is ignored by everyone. These functions give
//! a caller that can prove a writer gone (its `HOST PID` recorded in the stub,
//! [`WRITER_LABEL`]) what it needs to do the same at once: list, remove the stub and the lock
//! it names, then sweep as a deletion would ([`BackupStore::collect_garbage`]).

use std::time::SystemTime;

use super::backup::{LOCK_LABEL, WRITER_LABEL};
use super::{BackupStore, DeleteReport};
use crate::cfg::{LockFile, LockType};
use crate::error::{Error, Result};
use crate::names::{BackupName, VolumeName};
use crate::paths::{backup_cfg_path, lock_path, locks_dir, LOCK_SUFFIX};

/// An in-progress backup cfg (`CreatedTime == ""`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InProgressBackup {
    /// Backup name.
    pub name: BackupName,
    /// `HOST PID` of its writer, when diskferry wrote it ([`WRITER_LABEL`]).
    pub writer: Option<String>,
    /// The lock its writer held ([`LOCK_LABEL`]).
    pub lock: Option<String>,
    /// When the cfg was written, as the store says.
    pub modified: Option<SystemTime>,
}

/// A lock file of a backup volume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockEntry {
    /// `lock-<16 hex>`.
    pub name: String,
    /// Its type.
    pub lock_type: LockType,
    /// Whether its owner acquired it.
    pub acquired: bool,
    /// When it was last written (created or refreshed), as the store says.
    pub modified: SystemTime,
    /// `HOST PID` of the process holding it, when diskferry wrote it
    /// ([`crate::cfg::WRITER_FIELD`]): a caller that can prove that process gone may remove
    /// the lock before it expires (a restore leaves no in-progress cfg that would name it).
    pub writer: Option<String>,
}

/// What a backup volume holds besides completed backups (read only; see the module).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Leftovers {
    /// In-progress backup cfgs.
    pub in_progress: Vec<InProgressBackup>,
    /// Backup cfgs that cannot be loaded, with why (they stop every sweep).
    pub unreadable: Vec<(BackupName, String)>,
    /// Lock files.
    pub locks: Vec<LockEntry>,
    /// Stored blocks no completed backup references, sorted.
    pub unreferenced_blocks: Vec<String>,
}

impl BackupStore {
    /// Reads what `volume` holds besides its completed backups.
    pub async fn leftovers(&self, volume: &VolumeName) -> Result<Leftovers> {
        let mut out = Leftovers::default();
        let mut referenced = std::collections::HashSet::new();
        for name in self.list_backups(volume).await? {
            match self.load_backup(volume, &name).await {
                Err(Error::Driver(e)) if e.is_not_found() => {}
                Err(e) => out.unreadable.push((name, e.to_string())),
                Ok(cfg) if cfg.in_progress() => {
                    let label = |key: &str| cfg.labels.as_ref().and_then(|l| l.get(key)).cloned();
                    let modified = self
                        .driver
                        .stat(&backup_cfg_path(volume, &name))
                        .await?
                        .map(|i| i.modified);
                    out.in_progress.push(InProgressBackup {
                        writer: label(WRITER_LABEL),
                        lock: label(LOCK_LABEL),
                        modified,
                        name,
                    });
                }
                Ok(cfg) => referenced.extend(cfg.blocks.into_iter().map(|b| b.checksum)),
            }
        }
        out.locks = self.lock_entries(volume).await?;
        let mut unreferenced: Vec<String> = self
            .list_blocks(volume)
            .await?
            .into_iter()
            .filter(|ck| !referenced.contains(ck))
            .collect();
        unreferenced.sort();
        out.unreferenced_blocks = unreferenced;
        Ok(out)
    }

    /// The lock files of `volume` (a lock released while listed is skipped).
    pub async fn lock_entries(&self, volume: &VolumeName) -> Result<Vec<LockEntry>> {
        let dir = locks_dir(volume);
        let mut out = Vec::new();
        for entry in self.driver.list(&dir).await? {
            if entry.strip_suffix(LOCK_SUFFIX).is_none() {
                continue;
            }
            let path = format!("{dir}/{entry}");
            let Ok(data) = self.driver.get(&path).await else {
                continue;
            };
            let Ok(Some(info)) = self.driver.stat(&path).await else {
                continue;
            };
            let Ok(file) = LockFile::from_json(&data, &path) else {
                continue;
            };
            out.push(LockEntry {
                name: file.name,
                lock_type: file.lock_type,
                acquired: file.acquired,
                modified: info.modified,
                writer: file.writer,
            });
        }
        Ok(out)
    }

    /// Removes the in-progress cfg `stale` describes, if it is still in progress and still
    /// records the same writer (a backup of that name completed or restarted meanwhile is
    /// left alone), then the lock it names. Returns whether the cfg was removed.
    pub async fn remove_in_progress(
        &self,
        volume: &VolumeName,
        stale: &InProgressBackup,
    ) -> Result<bool> {
        let now = match self.load_backup(volume, &stale.name).await {
            Ok(cfg) => cfg,
            Err(Error::Driver(e)) if e.is_not_found() => return Ok(false),
            Err(e) => return Err(e),
        };
        let writer = now.labels.as_ref().and_then(|l| l.get(WRITER_LABEL));
        if !now.in_progress() || writer != stale.writer.as_ref() {
            return Ok(false);
        }
        self.driver
            .delete(&[backup_cfg_path(volume, &stale.name)])
            .await?;
        if let Some(lock) = &stale.lock {
            self.remove_lock(volume, lock).await?;
        }
        Ok(true)
    }

    /// Removes the lock file `name` of `volume` (a missing one is no error).
    pub async fn remove_lock(&self, volume: &VolumeName, name: &str) -> Result<()> {
        self.driver.delete(&[lock_path(volume, name)]).await?;
        Ok(())
    }

    /// Longhorn's garbage collection without deleting a backup: under the deletion lock,
    /// every stored block no completed backup references is removed, unless a cfg is in
    /// progress or unreadable or the list changes meanwhile (then nothing is, and the report
    /// says why), and `volume.cfg`'s `BlockCount` is set to the blocks kept.
    pub async fn collect_garbage(&self, volume: &VolumeName) -> Result<DeleteReport> {
        let lock = self.lock(volume, LockType::Deletion).await?;
        let swept = async {
            let mark = self.mark(volume).await?;
            let mut report = DeleteReport {
                gc_skipped: mark.skipped.clone(),
                ..DeleteReport::default()
            };
            self.sweep(volume, &mark, &mut report).await?;
            if let Some(mut vol) = self.load_volume(volume).await? {
                if report.gc_skipped.is_none() && vol.block_count != report.blocks_kept {
                    vol.block_count = report.blocks_kept;
                    self.save_volume(&vol, volume).await?;
                }
                report.last_backup_name = vol.last_backup_name;
            }
            Ok::<_, Error>(report)
        }
        .await;
        let released = lock.release().await;
        let report = swept?;
        released?;
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use async_trait::async_trait;
    use bytes::Bytes;

    use super::*;
    use crate::driver::{BackupStoreDriver, ObjectInfo, VfsDriver};
    use crate::error::DriverError;
    use crate::lock::LockOptions;
    use crate::ops::BackupOptions;
    use crate::paths::{locks_dir, BACKUP_DIRECTORY};

    const BLOCK: usize = 2 << 20;

    /// A dead writer's record: a pid no process has.
    const DEAD: &str = "elsewhere 4000000";

    fn store(driver: Arc<dyn BackupStoreDriver>) -> BackupStore {
        BackupStore::new(driver).with_lock_options(LockOptions {
            check_wait: Duration::from_millis(10),
            // No refresh during a test: a killed writer refreshes nothing.
            refresh_interval: Duration::from_secs(3600),
            ..LockOptions::default()
        })
    }

    fn opts(backup: &str, writer: Option<&str>) -> BackupOptions {
        let mut o = BackupOptions::new(
            VolumeName::new("vol").unwrap(),
            BackupName::new(backup).unwrap(),
            4 * BLOCK as u64,
        );
        o.writer = writer.map(str::to_owned);
        o
    }

    /// What a SIGKILL leaves: the writer is never finished nor aborted, its lock never
    /// released, its block of `fill` bytes uploaded (the volume then stores `stored` blocks).
    async fn killed_backup(
        store: &BackupStore,
        backup: &str,
        writer: Option<&str>,
        fill: u8,
        stored: usize,
    ) {
        let mut w = store.begin_backup(opts(backup, writer)).await.unwrap();
        w.put_block(0, Bytes::from(vec![fill; BLOCK]))
            .await
            .unwrap();
        while store.list_blocks(w_volume()).await.unwrap().len() < stored {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        std::mem::forget(w);
    }

    fn w_volume() -> &'static VolumeName {
        static V: std::sync::OnceLock<VolumeName> = std::sync::OnceLock::new();
        V.get_or_init(|| VolumeName::new("vol").unwrap())
    }

    #[tokio::test]
    async fn a_killed_backup_leaves_a_stub_naming_its_writer_and_lock_and_both_go() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(Arc::new(VfsDriver::new(dir.path()).unwrap()));
        let v = w_volume();
        let mut w = s.begin_backup(opts("done", None)).await.unwrap();
        w.put_block(0, Bytes::from(vec![9u8; BLOCK])).await.unwrap();
        w.finish().await.unwrap();
        killed_backup(&s, "killed", Some(DEAD), 2, 2).await;
        let left = s.leftovers(v).await.unwrap();
        assert_eq!(left.in_progress.len(), 1);
        let stub = &left.in_progress[0];
        assert_eq!(stub.writer.as_deref(), Some(DEAD));
        let lock = stub.lock.clone().expect("the stub names its lock");
        assert_eq!(left.locks.len(), 1);
        assert_eq!(left.locks[0].name, lock);
        assert_eq!(left.unreferenced_blocks.len(), 1);
        // The killed writer's lock keeps a deletion (and its sweep) out until it expires.
        let refused = s.collect_garbage(v).await.unwrap_err();
        assert!(matches!(refused, Error::LockConflict { .. }), "{refused}");
        assert!(s.remove_in_progress(v, stub).await.unwrap());
        let left = s.leftovers(v).await.unwrap();
        assert!(left.in_progress.is_empty() && left.locks.is_empty());
        // The lock's directory went with it, as Longhorn's vfs driver removes it.
        assert!(!dir.path().join(locks_dir(v)).exists());
        let swept = s.collect_garbage(v).await.unwrap();
        assert_eq!((swept.blocks_deleted, swept.blocks_kept), (1, 1));
        assert!(s.leftovers(v).await.unwrap().unreferenced_blocks.is_empty());
        assert_eq!(s.inspect_volume(v).await.unwrap().block_count, 1);
        // The completed backup still restores what it held.
        assert_eq!(s.list_backups(v).await.unwrap().len(), 1);
    }

    #[tokio::test]
    async fn a_stub_that_changed_since_it_was_listed_is_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(Arc::new(VfsDriver::new(dir.path()).unwrap()));
        let v = w_volume();
        killed_backup(&s, "bk", None, 1, 1).await;
        let left = s.leftovers(v).await.unwrap();
        // Written without a writer (as Longhorn writes them): nothing says whose it is.
        assert_eq!(left.in_progress[0].writer, None);
        let mut claimed = left.in_progress[0].clone();
        claimed.writer = Some(DEAD.to_owned());
        assert!(!s.remove_in_progress(v, &claimed).await.unwrap());
        assert_eq!(s.list_backups(v).await.unwrap().len(), 1);
    }

    /// A vfs driver whose deletions of backup cfgs fail (a store gone away mid-cleanup).
    #[derive(Debug)]
    struct CfgUndeletable(VfsDriver);

    #[async_trait]
    impl BackupStoreDriver for CfgUndeletable {
        async fn get(&self, path: &str) -> std::result::Result<Bytes, DriverError> {
            self.0.get(path).await
        }
        async fn put(&self, path: &str, data: Bytes) -> std::result::Result<(), DriverError> {
            self.0.put(path, data).await
        }
        async fn stat(&self, path: &str) -> std::result::Result<Option<ObjectInfo>, DriverError> {
            self.0.stat(path).await
        }
        async fn list(&self, dir: &str) -> std::result::Result<Vec<String>, DriverError> {
            self.0.list(dir).await
        }
        async fn delete(&self, paths: &[String]) -> std::result::Result<(), DriverError> {
            if paths
                .iter()
                .any(|p| p.contains(&format!("/{BACKUP_DIRECTORY}/")))
            {
                return Err(DriverError::InvalidPath {
                    path: paths[0].clone(),
                    reason: "store unreachable",
                });
            }
            self.0.delete(paths).await
        }
    }

    #[tokio::test]
    async fn an_abort_releases_its_lock_even_when_the_stub_cannot_be_removed() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(Arc::new(CfgUndeletable(
            VfsDriver::new(dir.path()).unwrap(),
        )));
        let w = s.begin_backup(opts("bk", Some(DEAD))).await.unwrap();
        assert_eq!(s.lock_entries(w_volume()).await.unwrap().len(), 1);
        assert!(w.abort().await.is_err());
        // Checked before anything else runs: a release left to a task spawned on drop would
        // never run in a process that exits on this error.
        let locks = dir.path().join(locks_dir(w_volume()));
        let left = std::fs::read_dir(&locks).map_or(0, |d| d.count());
        assert_eq!(left, 0, "the lock is still in {}", locks.display());
    }
}
