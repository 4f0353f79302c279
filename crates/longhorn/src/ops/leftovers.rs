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
