//! Deleting a backup, then garbage-collecting blocks no remaining backup references
//! (Longhorn's `DeleteDeltaBlockBackup`: a mark-and-sweep over every backup cfg).

use std::collections::HashSet;

use futures::{StreamExt, TryStreamExt};

use super::BackupStore;
use crate::cfg::{BackupConfig, LockType};
use crate::error::{Error, Result};
use crate::names::{BackupName, VolumeName};
use crate::paths::{backup_cfg_path, block_path};
use crate::timefmt::parse_rfc3339;

/// Block deletions issued per driver call.
const DELETE_BATCH: usize = 64;
/// Cfg files loaded at once during the mark phase.
const LOAD_CONCURRENCY: usize = 8;

/// What a deletion did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeleteReport {
    /// Blocks removed because no remaining backup referenced them.
    pub blocks_deleted: u64,
    /// Blocks still referenced.
    pub blocks_kept: u64,
    /// Why block deletion was skipped, if it was.
    pub gc_skipped: Option<String>,
    /// `volume.cfg`'s `LastBackupName` afterwards.
    pub last_backup_name: String,
}

impl BackupStore {
    /// Deletes `backup` of `volume` under the deletion lock (a backup that does not exist is
    /// refused before the lock is taken): removes its cfg first, then every
    /// block no remaining backup references, then updates `volume.cfg` (`LastBackupName`,
    /// `LastBackupAt`, `BlockCount`). Block deletion is skipped, as Longhorn skips it, when any
    /// remaining cfg is unreadable or in progress, or the backup list changes meanwhile.
    pub async fn delete_backup(
        &self,
        volume: &VolumeName,
        backup: &BackupName,
    ) -> Result<DeleteReport> {
        let (_, lock) = self
            .checked_lock(volume, Some(LockType::Deletion), || {
                self.deletable(volume, backup)
            })
            .await?;
        let r = self.delete_locked(volume, backup).await;
        let released = match lock {
            Some(l) => l.release().await,
            None => Ok(()),
        };
        let report = r?;
        released?;
        Ok(report)
    }

    /// Refuses to delete a backup that does not exist.
    async fn deletable(&self, volume: &VolumeName, backup: &BackupName) -> Result<()> {
        if !self.driver.exists(&backup_cfg_path(volume, backup)).await? {
            return Err(Error::Refused {
                volume: volume.to_string(),
                reason: format!("backup {backup} does not exist"),
            });
        }
        Ok(())
    }

    async fn delete_locked(
        &self,
        volume: &VolumeName,
        backup: &BackupName,
    ) -> Result<DeleteReport> {
        self.driver
            .delete(&[backup_cfg_path(volume, backup)])
            .await?;
        let mut report = DeleteReport::default();
        let mut vol = self.inspect_volume(volume).await?;
        let was_last = vol.last_backup_name == backup.as_str();
        let mark = self.mark(volume).await?;
        report.gc_skipped = mark.skipped.clone();
        if was_last {
            match &mark.newest {
                Some(cfg) => {
                    vol.last_backup_name = cfg.name.clone();
                    vol.last_backup_at = cfg.snapshot_created_at.clone();
                }
                None => {
                    vol.last_backup_name.clear();
                    vol.last_backup_at.clear();
                }
            }
        }
        self.sweep(volume, &mark, &mut report).await?;
        if report.gc_skipped.is_none() {
            vol.block_count = report.blocks_kept;
        } else if let Some(reason) = &report.gc_skipped {
            tracing::warn!(volume = %volume, backup = %backup, %reason, "skipping block deletion");
        }
        self.save_volume(&vol, volume).await?;
        report.last_backup_name = vol.last_backup_name.clone();
        Ok(report)
    }

    /// Longhorn's mark phase over every backup cfg of `volume`: the blocks completed backups
    /// reference, the newest of them by `SnapshotCreatedAt`, and why blocks must not be
    /// swept (a cfg that cannot be loaded, one in progress, an unparsable time).
    pub(crate) async fn mark(&self, volume: &VolumeName) -> Result<Mark> {
        let names = self.list_backups(volume).await?;
        let loaded: Vec<(BackupName, Result<BackupConfig>)> = futures::stream::iter(names.clone())
            .map(|n| async move {
                let r = self.load_backup(volume, &n).await;
                Ok::<_, Error>((n, r))
            })
            // In name order, so the reason GC is skipped names the same backup every run.
            .buffered(LOAD_CONCURRENCY)
            .try_collect()
            .await?;
        let mut mark = Mark {
            names,
            referenced: HashSet::new(),
            newest: None,
            skipped: None,
        };
        let mut newest: Option<(i64, u32)> = None;
        for (name, r) in &loaded {
            match r {
                Err(e) => {
                    mark.skipped
                        .get_or_insert(format!("backup {name} cannot be loaded: {e}"));
                }
                Ok(cfg) if cfg.in_progress() => {
                    mark.skipped
                        .get_or_insert(format!("backup {name} is in progress"));
                }
                Ok(cfg) => {
                    mark.referenced
                        .extend(cfg.blocks.iter().map(|b| b.checksum.clone()));
                    match parse_rfc3339(&cfg.snapshot_created_at) {
                        Some(t) if newest.is_none_or(|n| t > n) => {
                            newest = Some(t);
                            mark.newest = Some(cfg.clone());
                        }
                        Some(_) => {}
                        None => {
                            mark.skipped.get_or_insert(format!(
                                "backup {name} has an unparsable SnapshotCreatedAt {:?}",
                                cfg.snapshot_created_at
                            ));
                        }
                    }
                }
            }
        }
        Ok(mark)
    }

    /// Longhorn's sweep: unless `mark` says to skip, or the backup list changed since it was
    /// taken, deletes every stored block no completed backup references, counting into
    /// `report` (and setting its `gc_skipped` when the list changed).
    pub(crate) async fn sweep(
        &self,
        volume: &VolumeName,
        mark: &Mark,
        report: &mut DeleteReport,
    ) -> Result<()> {
        if report.gc_skipped.is_none() && self.list_backups(volume).await? != mark.names {
            report.gc_skipped = Some("the backup list changed during deletion".into());
        }
        if report.gc_skipped.is_some() {
            return Ok(());
        }
        let stored = self.list_blocks(volume).await?;
        let mut doomed = Vec::new();
        for ck in &stored {
            if mark.referenced.contains(ck) {
                report.blocks_kept += 1;
            } else {
                doomed.push(block_path(volume, ck)?);
            }
        }
        for batch in doomed.chunks(DELETE_BATCH) {
            self.driver.delete(batch).await?;
            report.blocks_deleted += batch.len() as u64;
        }
        Ok(())
    }
}

/// What Longhorn's mark phase found (see [`BackupStore::mark`]).
#[derive(Debug, Clone)]
pub(crate) struct Mark {
    /// The backup names, sorted, when the phase began.
    pub(crate) names: Vec<BackupName>,
    /// Checksums completed backups reference.
    pub(crate) referenced: HashSet<String>,
    /// The completed backup with the newest `SnapshotCreatedAt`.
    pub(crate) newest: Option<BackupConfig>,
    /// Why no block may be swept, if so.
    pub(crate) skipped: Option<String>,
}
