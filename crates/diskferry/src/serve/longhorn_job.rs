//! What a `longhorn-backup` job stores and how it finds it again, over
//! [`crate::ops::longhorn::backup`] (no copy code of its own).
//!
//! Each image is one backup volume of the target, named `POOL-IMAGE` (refused when that is no
//! valid Longhorn volume name). Each run backs up the snapshot `diskferry.JOB.TIME` as the
//! backup `diskferry-JOB-TIME` (the time in lower case, as Kubernetes names are), labelled
//! with the job's `labels` and [`JOB_LABEL`] = the job's name; the op adds
//! `diskferry.io/rbd-snapshot` = `POOL@SNAP_ID`, which proves which snapshot a backup was
//! read from. A backup is incremental (only the blocks changed since, through
//! `diff_iterate2`) from the newest earlier backup of the job whose snapshot still exists and
//! is the very snapshot the backup recorded; full otherwise.
//!
//! Retention considers only the completed backups of the volume labelled with the job whose
//! snapshot name is one of the job's, and always keeps the newest of them (the base of the
//! next incremental), as it keeps that backup's snapshot.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use longhorn::{BackupStore, BackupSummary, LockType, PendingLock, VolumeName};

use crate::longhorn::{open_store, SOURCE_SNAPSHOT_LABEL};
use crate::ops::longhorn::{BackupJob, BackupReport};
use crate::serve::config::{Job, LonghornSettings};
use crate::serve::export_job::{stamp, StoredItem};
use crate::{Address, Context, Progress, RbdSpec};
use tokio_util::sync::CancellationToken;

/// The label that names the job on each backup it makes: retention looks for it.
pub const JOB_LABEL: &str = "diskferry.io/job";
/// The first component of the backups a job makes: `diskferry-JOB-20261206t020000z`.
pub const BACKUP_PREFIX: &str = "diskferry";

/// The backup volume of an image: `POOL-IMAGE`, checked against Longhorn's rules.
pub fn volume_name(pool: &str, image: &RbdSpec) -> Result<String, String> {
    let name = format!("{pool}-{}", image.image);
    VolumeName::new(name.as_str())
        .map(|v| v.to_string())
        .map_err(|e| {
            format!(
                "{pool}/{} has no usable Longhorn volume name: {e}",
                image.image
            )
        })
}

/// The name of the backup the job makes at `now`.
pub fn backup_name(job: &Job, now: DateTime<Utc>) -> String {
    format!(
        "{BACKUP_PREFIX}-{}-{}",
        job.name,
        stamp(now).to_ascii_lowercase()
    )
}

/// One image's backup volume in the job's target, for one run of the job on the image.
pub struct Volume {
    /// The store.
    pub store: BackupStore,
    /// The volume name.
    pub volume: String,
    /// The target's settings.
    settings: LonghornSettings,
    /// Every backup cfg of the volume, read once per run ([`Volume::backups`] is asked before
    /// the backup, for its base and for retention) and kept up to date with what this run
    /// adds and removes: under the unit's lock, no other run of the job changes them.
    listing: tokio::sync::Mutex<Option<Vec<BackupSummary>>>,
}

impl std::fmt::Debug for Volume {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Volume")
            .field("volume", &self.volume)
            .finish()
    }
}

/// A backup of the job, with the RBD snapshot it was read from (`POOL@ID`, as recorded).
#[derive(Debug, Clone)]
pub struct JobBackup {
    /// Name and run time.
    pub item: StoredItem,
    /// The snapshot's name (one of the job's).
    pub snapshot: String,
    /// The recorded identity of the snapshot, `POOL@ID`.
    pub identity: Option<String>,
}

impl Volume {
    /// The volume of `image` (in pool `pool`, as the cluster names it) in the job's target.
    pub async fn open(
        ctx: &Context,
        settings: &LonghornSettings,
        pool: &str,
        image: &RbdSpec,
    ) -> Result<Volume, String> {
        let volume = volume_name(pool, image)?;
        let store = open_store(ctx, &settings.target)
            .await
            .map_err(|e| format!("Longhorn target {}: {e}", settings.target.url))?;
        Ok(Volume {
            store,
            volume,
            settings: settings.clone(),
            listing: tokio::sync::Mutex::new(None),
        })
    }

    /// Every backup cfg of the volume (see [`Volume::listing`]): read the first time, then
    /// as this run left them.
    async fn all_backups(&self) -> crate::Result<Vec<BackupSummary>> {
        let mut listing = self.listing.lock().await;
        if let Some(all) = listing.as_ref() {
            return Ok(all.clone());
        }
        let volume = VolumeName::new(self.volume.as_str())?;
        let all = self.store.backups(&volume).await?;
        *listing = Some(all.clone());
        Ok(all)
    }

    /// Whether what killed backups leave (an in-progress or unreadable cfg) may be in the
    /// volume: `false` only when this run's reading of every cfg found none.
    pub async fn may_hold_leftovers(&self) -> bool {
        match self.listing.lock().await.as_ref() {
            Some(all) => all.iter().any(|b| b.in_progress || b.error.is_some()),
            None => true,
        }
    }

    /// Starts taking the volume's backup lock in the background, so that Longhorn's lock
    /// wait passes while the run takes its snapshot ([`Volume::backup`] uses it).
    pub fn start_lock(&self) -> crate::Result<PendingLock> {
        let volume = VolumeName::new(self.volume.as_str())?;
        Ok(self.store.start_lock(&volume, LockType::BackupOrRestore))
    }

    /// The job's completed backups of the volume, oldest first (nothing else).
    pub async fn backups(&self, job: &Job) -> crate::Result<Vec<JobBackup>> {
        let mut found: Vec<JobBackup> = self
            .all_backups()
            .await?
            .into_iter()
            .filter(|b| !b.in_progress && b.error.is_none())
            .filter(|b| b.labels.get(JOB_LABEL) == Some(&job.name))
            .filter_map(|b| {
                let time = job.snapshot_time(&b.snapshot)?;
                Some(JobBackup {
                    identity: b.labels.get(SOURCE_SNAPSHOT_LABEL).cloned(),
                    snapshot: b.snapshot,
                    item: StoredItem { id: b.name, time },
                })
            })
            .collect();
        found.sort_by_key(|b| b.item.time);
        Ok(found)
    }

    /// Removes a backup (Longhorn's rules: its lock, then the blocks no other backup uses).
    pub async fn remove(&self, backup: &str) -> crate::Result<()> {
        crate::ops::longhorn::remove(&self.store, &self.volume, backup).await?;
        if let Some(all) = self.listing.lock().await.as_mut() {
            all.retain(|b| b.name != backup);
        }
        Ok(())
    }

    /// Backs up `snapshot` as the job's backup of `now`, incremental from `base` (an earlier
    /// backup of the job, from a snapshot of the same image) when given, under `lock`
    /// ([`Volume::start_lock`]), which is released on every path.
    #[allow(clippy::too_many_arguments)]
    pub async fn backup(
        &self,
        ctx: &Context,
        job: &Job,
        snapshot: &RbdSpec,
        base: Option<&JobBackup>,
        now: DateTime<Utc>,
        lock: PendingLock,
        progress: &dyn Progress,
        cancel: &CancellationToken,
    ) -> crate::Result<BackupReport> {
        let mut labels: BTreeMap<String, String> = job.labels.clone();
        labels.insert(JOB_LABEL.to_string(), job.name.clone());
        let mut backup = BackupJob::new(self.volume.clone());
        backup.backup = Some(backup_name(job, now));
        backup.since = base.map(|b| b.snapshot.clone());
        backup.base = base.map(|b| b.item.id.clone());
        backup.labels = labels.clone();
        backup.compression = self.settings.compression;
        backup.clean_leftovers = self.may_hold_leftovers().await;
        let source = Address::Rbd(snapshot.clone());
        let report = crate::ops::longhorn::backup_with_lock(
            ctx,
            &self.store,
            &self.settings.target,
            &source,
            &backup,
            Some(lock),
            progress,
            cancel,
        )
        .await?;
        // What retention reads next: the listing as it now is.
        if let Some(all) = self.listing.lock().await.as_mut() {
            all.push(BackupSummary {
                name: report.backup.clone(),
                snapshot: snapshot.snap.clone().unwrap_or_default(),
                created: now.to_rfc3339(),
                size: report.blocks_total * report.block_size,
                blocks: usize::try_from(report.blocks_total).unwrap_or(usize::MAX),
                in_progress: false,
                labels,
                error: None,
            });
        }
        Ok(report)
    }
}

/// The base of the next incremental backup among `backups` (oldest first): the newest one
/// older than `now` whose snapshot still exists as the very snapshot it recorded
/// (`existing`: each of the job's snapshots with its identity `POOL@ID`).
pub fn incremental_base<'a>(
    backups: &'a [JobBackup],
    existing: &[(String, String)],
    now: DateTime<Utc>,
) -> Option<&'a JobBackup> {
    backups.iter().rev().find(|b| {
        b.item.time < now
            && existing.iter().any(|(name, identity)| {
                *name == b.snapshot && b.identity.as_ref() == Some(identity)
            })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backup(name: &str, hour: u32, snapshot: &str, identity: &str) -> JobBackup {
        let time = DateTime::parse_from_rfc3339(&format!("2026-12-06T{hour:02}:00:00Z"))
            .unwrap()
            .with_timezone(&Utc);
        JobBackup {
            item: StoredItem {
                id: name.into(),
                time,
            },
            snapshot: snapshot.into(),
            identity: Some(identity.into()),
        }
    }

    #[test]
    fn the_base_is_the_newest_earlier_backup_of_a_snapshot_that_is_still_the_same() {
        let backups = [
            backup("b1", 1, "s1", "rbd@1"),
            backup("b2", 2, "s2", "rbd@2"),
            backup("b3", 3, "s3", "rbd@3"),
        ];
        let at = |h: u32| {
            DateTime::parse_from_rfc3339(&format!("2026-12-06T{h:02}:00:00Z"))
                .unwrap()
                .with_timezone(&Utc)
        };
        let existing = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
            pairs
                .iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect()
        };
        let all = existing(&[("s1", "rbd@1"), ("s2", "rbd@2"), ("s3", "rbd@3")]);
        assert_eq!(
            incremental_base(&backups, &all, at(4)).unwrap().item.id,
            "b3"
        );
        // Not from itself or a later one.
        assert_eq!(
            incremental_base(&backups, &all, at(3)).unwrap().item.id,
            "b2"
        );
        // s3 gone: s2's backup.
        let without = existing(&[("s1", "rbd@1"), ("s2", "rbd@2")]);
        assert_eq!(
            incremental_base(&backups, &without, at(4)).unwrap().item.id,
            "b2"
        );
        // s2 recreated under its name (another id) and s3 gone: s1's.
        let recreated = existing(&[("s1", "rbd@1"), ("s2", "rbd@9")]);
        assert_eq!(
            incremental_base(&backups, &recreated, at(4))
                .unwrap()
                .item
                .id,
            "b1"
        );
        assert!(incremental_base(&backups, &[], at(4)).is_none());
    }
}
