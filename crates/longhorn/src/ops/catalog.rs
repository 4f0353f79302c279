//! What a user asks of a backup store besides backup and restore: listing volumes with their
//! backups, showing a cfg, removing a backup, and naming a backup (by name, [`LATEST`], or the
//! snapshot it was taken from). The reports serialise as `diskferry longhorn … --json` prints
//! them.

use std::collections::BTreeMap;

use futures::{StreamExt, TryStreamExt};
use serde::Serialize;

use super::BackupStore;
use crate::error::{Error, Result};
use crate::names::{BackupName, VolumeName};
use crate::target::BackupTarget;

/// Backup cfgs read at once by a listing.
const CFG_LOAD_CONCURRENCY: usize = 8;

/// The backup name meaning "the volume's last completed backup" (`volume.cfg`'s
/// `LastBackupName`).
pub const LATEST: &str = "latest";

/// One backup in a listing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BackupSummary {
    /// Name.
    pub name: String,
    /// Snapshot it was taken from.
    pub snapshot: String,
    /// Completion time (empty while in progress).
    pub created: String,
    /// Bytes of blocks referenced.
    pub size: u64,
    /// Blocks referenced.
    pub blocks: usize,
    /// Still being written.
    pub in_progress: bool,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Why the cfg could not be read, if it could not.
    pub error: Option<String>,
}

/// One backup volume in a listing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VolumeListing {
    /// Volume name.
    pub volume: String,
    /// Volume size.
    pub size: u64,
    /// Last completed backup.
    pub last_backup: String,
    /// Compression method.
    pub compression: String,
    /// Backups, sorted by name.
    pub backups: Vec<BackupSummary>,
}

/// A volume's or backup's cfg, as Longhorn stores it (the JSON text, parsed).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct InspectReport {
    /// Longhorn's backup URL of what was inspected.
    pub url: String,
    /// The cfg file's JSON.
    pub cfg: serde_json::Value,
}

/// What a removal did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RemoveReport {
    /// Volume.
    pub volume: String,
    /// Backup deleted.
    pub backup: String,
    /// Blocks no remaining backup referenced, deleted.
    pub blocks_deleted: u64,
    /// Blocks still referenced.
    pub blocks_kept: u64,
    /// Why block deletion was skipped (as Longhorn skips it), if it was.
    pub gc_skipped: Option<String>,
    /// The volume's last backup afterwards.
    pub last_backup: String,
}

impl BackupSummary {
    /// A backup whose cfg could not be read: listed with the reason, not dropped.
    fn unreadable(name: &BackupName, error: &Error) -> Self {
        BackupSummary {
            name: name.to_string(),
            snapshot: String::new(),
            created: String::new(),
            size: 0,
            blocks: 0,
            in_progress: false,
            labels: BTreeMap::new(),
            error: Some(error.to_string()),
        }
    }
}

impl BackupStore {
    /// The backup `name` names: a backup name, or [`LATEST`] / `None` for `volume.cfg`'s last
    /// completed one. Reads only.
    pub async fn resolve_backup(
        &self,
        volume: &VolumeName,
        name: Option<&str>,
    ) -> Result<BackupName> {
        match name {
            Some(n) if n != LATEST => BackupName::new(n),
            _ => {
                let vol = self.inspect_volume(volume).await?;
                if vol.last_backup_name.is_empty() {
                    return Err(Error::Refused {
                        volume: volume.to_string(),
                        reason: "no completed backup exists (volume.cfg names none)".into(),
                    });
                }
                BackupName::new(vol.last_backup_name)
            }
        }
    }

    /// The latest completed backup of `volume` taken from snapshot `snapshot` (the base of an
    /// incremental backup since that snapshot), or `None`. Cfgs that cannot be read are
    /// passed over.
    pub async fn backup_of_snapshot(
        &self,
        volume: &VolumeName,
        snapshot: &str,
    ) -> Result<Option<BackupName>> {
        let mut best: Option<(String, BackupName)> = None;
        for name in self.list_backups(volume).await? {
            let cfg = match self.load_backup(volume, &name).await {
                Ok(cfg) if !cfg.in_progress() && cfg.snapshot_name == snapshot => cfg,
                _ => continue,
            };
            if best.as_ref().is_none_or(|(t, _)| cfg.created_time > *t) {
                best = Some((cfg.created_time, name));
            }
        }
        Ok(best.map(|(_, n)| n))
    }

    /// The backups of `volume`, sorted by name, each cfg read (several at once; one that
    /// cannot be read is listed with the reason). Reads only, takes no lock; no `volume.cfg`
    /// is needed.
    pub async fn backups(&self, volume: &VolumeName) -> Result<Vec<BackupSummary>> {
        let names = self.list_backups(volume).await?;
        futures::stream::iter(names)
            .map(|b| async move {
                Ok(match self.load_backup(volume, &b).await {
                    Ok(c) => BackupSummary {
                        name: b.to_string(),
                        snapshot: c.snapshot_name.clone(),
                        in_progress: c.in_progress(),
                        created: c.created_time,
                        size: c.size,
                        blocks: c.blocks.len(),
                        labels: c.labels.unwrap_or_default(),
                        error: None,
                    },
                    Err(e) => BackupSummary::unreadable(&b, &e),
                })
            })
            .buffered(CFG_LOAD_CONCURRENCY)
            .try_collect()
            .await
    }

    /// The backup volumes of the store (or just `volume`), each with its backups; a backup
    /// whose cfg cannot be read is listed with the reason. Reads only, takes no lock.
    pub async fn list(&self, volume: Option<&VolumeName>) -> Result<Vec<VolumeListing>> {
        let volumes = match volume {
            Some(v) => vec![v.clone()],
            None => self.list_volumes().await?,
        };
        let mut out = Vec::with_capacity(volumes.len());
        for v in volumes {
            let (cfg, backups) = tokio::try_join!(self.inspect_volume(&v), self.backups(&v))?;
            out.push(VolumeListing {
                volume: v.to_string(),
                size: cfg.size,
                last_backup: cfg.last_backup_name.clone(),
                compression: cfg
                    .compression()
                    .map(|c| c.as_str().to_string())
                    .unwrap_or(cfg.compression_method),
                backups,
            });
        }
        Ok(out)
    }

    /// `volume.cfg`, or the cfg of `backup` ([`LATEST`] allowed; a backup still in progress is
    /// refused), with its backup URL on `target` (this store's target). Reads only.
    pub async fn inspect(
        &self,
        target: &BackupTarget,
        volume: &VolumeName,
        backup: Option<&str>,
    ) -> Result<InspectReport> {
        let (url, path, json) = match backup {
            None => {
                let cfg = self.inspect_volume(volume).await?;
                let path = crate::paths::volume_cfg_path(volume);
                (target.backup_url(volume, None), path, cfg.to_json())
            }
            Some(b) => {
                let b = self.resolve_backup(volume, Some(b)).await?;
                let cfg = self.inspect_backup(volume, &b).await?;
                let path = crate::paths::backup_cfg_path(volume, &b);
                (target.backup_url(volume, Some(&b)), path, cfg.to_json())
            }
        };
        // The cfg was just written by our own Go-exact serialiser, so this cannot fail
        // unless that serialiser is broken; say which file if it ever does.
        let cfg = serde_json::from_str(&json).map_err(|e| Error::Json {
            path,
            reason: e.to_string(),
        })?;
        Ok(InspectReport { url, cfg })
    }

    /// Deletes `backup` ([`LATEST`] allowed) of `volume` with Longhorn's rules: the deletion
    /// lock, then garbage collection of blocks no remaining backup references (see
    /// [`BackupStore::delete_backup`]).
    pub async fn remove(&self, volume: &VolumeName, backup: &str) -> Result<RemoveReport> {
        let backup = self.resolve_backup(volume, Some(backup)).await?;
        let r = self.delete_backup(volume, &backup).await?;
        Ok(RemoveReport {
            volume: volume.to_string(),
            backup: backup.to_string(),
            blocks_deleted: r.blocks_deleted,
            blocks_kept: r.blocks_kept,
            gc_skipped: r.gc_skipped,
            last_backup: r.last_backup_name,
        })
    }
}
