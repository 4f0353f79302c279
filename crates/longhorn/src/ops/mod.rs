//! Operations over a [`BackupStoreDriver`]: listing, inspection, restore, backup, deletion,
//! and the user-level catalog of them (list, inspect, remove, [`LATEST`]).

mod assemble;
mod backup;
mod catalog;
mod delete;
mod leftovers;
mod restore;
mod verify;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};

use crate::cfg::{BackupConfig, LockType, VolumeConfig};
use crate::driver::BackupStoreDriver;
use crate::error::{Error, Result};
use crate::lock::{LockOptions, PendingLock, VolumeLock};
use crate::names::{BackupName, VolumeName, BACKING_IMAGE_PSEUDO_VOLUME};
use crate::paths::{
    backup_cfg_path, backup_name_from_file, backups_dir, blocks_dir, is_checksum, volume_cfg_path,
    volumes_dir, BLK_SUFFIX, SHARD_LAYER1, SHARD_LAYER2,
};

pub use assemble::BlockAssembler;
pub use backup::{
    BackupOptions, BackupStats, BackupWriter, CompressionPolicy, DedupSource, MergeWith,
    LOCK_LABEL, WRITER_LABEL,
};
pub use catalog::{BackupSummary, InspectReport, RemoveReport, VolumeListing, LATEST};
pub use delete::DeleteReport;
pub use leftovers::{InProgressBackup, Leftovers, LockEntry};
pub use restore::{RestoreItem, RestoreOptions, RestoreReader};
pub use verify::{BlockFailure, VerifyReport};

/// Directory listings in flight at once when walking the sharded trees.
pub const DEFAULT_LIST_CONCURRENCY: usize = 16;

/// A backup store reached through a driver.
#[derive(Debug, Clone)]
pub struct BackupStore {
    driver: Arc<dyn BackupStoreDriver>,
    lock_options: LockOptions,
    list_concurrency: usize,
}

impl BackupStore {
    /// A store over `driver`, with Longhorn's lock timing.
    pub fn new(driver: Arc<dyn BackupStoreDriver>) -> Self {
        Self {
            driver,
            lock_options: LockOptions::default(),
            list_concurrency: DEFAULT_LIST_CONCURRENCY,
        }
    }

    /// Overrides the lock timing (tests shorten the 2 s check wait).
    pub fn with_lock_options(mut self, opts: LockOptions) -> Self {
        self.lock_options = opts;
        self
    }

    /// The driver.
    pub fn driver(&self) -> &Arc<dyn BackupStoreDriver> {
        &self.driver
    }

    /// The lock timing in use.
    pub fn lock_options(&self) -> &LockOptions {
        &self.lock_options
    }

    /// Lists `dir/<shard>` names that look like hex shard directories of `len` characters.
    async fn list_shards(&self, dir: String, len: usize) -> Result<Vec<String>> {
        Ok(self
            .driver
            .list(&dir)
            .await?
            .into_iter()
            .filter(|n| is_shard(n, len))
            .map(|n| format!("{dir}/{n}"))
            .collect())
    }

    /// Starts taking Longhorn's `kind` lock on `volume` in the background
    /// ([`VolumeLock::start`]): its 2 s wait then passes while the caller works.
    pub fn start_lock(&self, volume: &VolumeName, kind: LockType) -> PendingLock {
        VolumeLock::start(self.driver.clone(), volume, kind, &self.lock_options)
    }

    /// Takes Longhorn's `kind` lock on `volume` with this store's lock options.
    async fn lock(&self, volume: &VolumeName, kind: LockType) -> Result<VolumeLock> {
        VolumeLock::acquire(self.driver.clone(), volume, kind, &self.lock_options).await
    }

    /// Checks a request, then takes Longhorn's `kind` lock on `volume` (when `kind` is
    /// given) and checks it again under the lock, returning the second check's result.
    ///
    /// `check` reads only. The first run refuses a request that is wrong in itself (no such
    /// volume or backup, a backup in progress, a name taken) at once: without the lock
    /// protocol's wait and without writing a lock file into the store. The second run sees
    /// what a process that held the lock meanwhile (a deletion) changed.
    async fn checked_lock<T, Fut>(
        &self,
        volume: &VolumeName,
        kind: Option<LockType>,
        check: impl Fn() -> Fut,
    ) -> Result<(T, Option<VolumeLock>)>
    where
        Fut: std::future::Future<Output = Result<T>>,
    {
        let unlocked = check().await?;
        let Some(kind) = kind else {
            return Ok((unlocked, None));
        };
        drop(unlocked);
        let lock = self.lock(volume, kind).await?;
        match check().await {
            Ok(checked) => Ok((checked, Some(lock))),
            Err(e) => {
                let _ = lock.release().await;
                Err(e)
            }
        }
    }

    /// Walks two shard levels under `root` and lists the entries of each leaf directory.
    async fn list_sharded(&self, root: String) -> Result<Vec<String>> {
        let level1 = self.list_shards(root, SHARD_LAYER1).await?;
        let level2: Vec<Vec<String>> = futures::stream::iter(level1)
            .map(|d| self.list_shards(d, SHARD_LAYER2 - SHARD_LAYER1))
            .buffer_unordered(self.list_concurrency)
            .try_collect()
            .await?;
        let leaves: Vec<Vec<String>> = futures::stream::iter(level2.into_iter().flatten())
            .map(|d| async move { Ok::<_, Error>(self.driver.list(&d).await?) })
            .buffer_unordered(self.list_concurrency)
            .try_collect()
            .await?;
        Ok(leaves.into_iter().flatten().collect())
    }

    /// Every backup volume, sorted; skips the `BACKINGIMAGE` pseudo-volume and invalid names
    /// (as Longhorn does).
    pub async fn list_volumes(&self) -> Result<Vec<VolumeName>> {
        let mut v: Vec<VolumeName> = self
            .list_sharded(volumes_dir())
            .await?
            .into_iter()
            .filter(|n| n != BACKING_IMAGE_PSEUDO_VOLUME)
            .filter_map(|n| VolumeName::new(n).ok())
            .collect();
        v.sort();
        v.dedup();
        Ok(v)
    }

    /// Names of the backups of `volume` (including in-progress ones), sorted.
    pub async fn list_backups(&self, volume: &VolumeName) -> Result<Vec<BackupName>> {
        let mut v: Vec<BackupName> = self
            .driver
            .list(&backups_dir(volume))
            .await?
            .iter()
            .filter_map(|f| backup_name_from_file(f))
            .collect();
        v.sort();
        Ok(v)
    }

    /// Checksums of every block stored for `volume`: one flat listing where the driver has
    /// one, else a walk of the shard levels; never a HEAD per block.
    pub async fn list_blocks(&self, volume: &VolumeName) -> Result<HashSet<String>> {
        let dir = blocks_dir(volume);
        // A flat listing where the store has one: a volume's tree holds only its blocks.
        let names = match self.driver.list_tree(&dir).await? {
            Some(paths) => paths
                .iter()
                .filter_map(|p| sharded_entry(p))
                .map(str::to_owned)
                .collect(),
            None => self.list_sharded(dir).await?,
        };
        Ok(names
            .into_iter()
            .filter_map(|n| n.strip_suffix(BLK_SUFFIX).map(str::to_owned))
            .filter(|ck| is_checksum(ck))
            .collect())
    }

    /// `volume.cfg`, or `None` when the volume has none.
    pub async fn load_volume(&self, volume: &VolumeName) -> Result<Option<VolumeConfig>> {
        let path = volume_cfg_path(volume);
        match self.driver.get(&path).await {
            Ok(data) => Ok(Some(VolumeConfig::from_json(&data, &path)?)),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// `volume.cfg`; a missing one is an error.
    pub async fn inspect_volume(&self, volume: &VolumeName) -> Result<VolumeConfig> {
        self.load_volume(volume)
            .await?
            .ok_or_else(|| Error::Refused {
                volume: volume.to_string(),
                reason: format!(
                    "no backup volume ({} does not exist)",
                    volume_cfg_path(volume)
                ),
            })
    }

    /// A backup cfg, in progress or not.
    pub async fn load_backup(
        &self,
        volume: &VolumeName,
        backup: &BackupName,
    ) -> Result<BackupConfig> {
        let path = backup_cfg_path(volume, backup);
        let data = self.driver.get(&path).await?;
        BackupConfig::from_json(&data, &path)
    }

    /// A completed backup's cfg; refuses an in-progress one (`CreatedTime == ""`).
    pub async fn inspect_backup(
        &self,
        volume: &VolumeName,
        backup: &BackupName,
    ) -> Result<BackupConfig> {
        let cfg = self.load_backup(volume, backup).await?;
        if cfg.in_progress() {
            return Err(Error::BackupInProgress {
                volume: volume.to_string(),
                backup: backup.to_string(),
            });
        }
        Ok(cfg)
    }

    pub(crate) async fn save_volume(&self, cfg: &VolumeConfig, volume: &VolumeName) -> Result<()> {
        self.driver
            .put(&volume_cfg_path(volume), Bytes::from(cfg.to_json()))
            .await?;
        Ok(())
    }

    pub(crate) async fn save_backup(
        &self,
        cfg: &BackupConfig,
        volume: &VolumeName,
        backup: &BackupName,
    ) -> Result<()> {
        self.driver
            .put(&backup_cfg_path(volume, backup), Bytes::from(cfg.to_json()))
            .await?;
        Ok(())
    }
}

/// From a path relative to a sharded root, the entry name the walk in `list_sharded` would
/// return for it: `name` in `xx/yy/name[/...]`, with two hex shard directories.
fn sharded_entry(path: &str) -> Option<&str> {
    let mut parts = path.split('/');
    let (l1, l2, entry) = (parts.next()?, parts.next()?, parts.next()?);
    (is_shard(l1, SHARD_LAYER1) && is_shard(l2, SHARD_LAYER2 - SHARD_LAYER1) && !entry.is_empty())
        .then_some(entry)
}

/// Whether `name` looks like a shard directory of `len` hex characters.
fn is_shard(name: &str, len: usize) -> bool {
    name.len() == len && name.bytes().all(|b| b.is_ascii_hexdigit())
}

/// A pool of reusable codec states shared by blocking workers.
pub(crate) struct Pool<T> {
    items: Mutex<Vec<T>>,
    make: Box<dyn Fn() -> T + Send + Sync>,
}

impl<T> std::fmt::Debug for Pool<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool").finish_non_exhaustive()
    }
}

impl<T> Pool<T> {
    pub(crate) fn new(make: impl Fn() -> T + Send + Sync + 'static) -> Self {
        Self {
            items: Mutex::new(Vec::new()),
            make: Box::new(make),
        }
    }

    pub(crate) fn take(&self) -> T {
        let item = self.items.lock().unwrap_or_else(|p| p.into_inner()).pop();
        item.unwrap_or_else(|| (self.make)())
    }

    pub(crate) fn put(&self, item: T) {
        self.items
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(item);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn send<T: Send>() {}
    fn send_sync<T: Send + Sync>() {}

    #[test]
    fn handles_can_move_between_tasks() {
        send_sync::<BackupStore>();
        send::<BackupWriter>();
        send::<RestoreReader>();
        send_sync::<crate::lock::VolumeLock>();
    }

    #[test]
    fn flat_listing_entries_are_those_the_shard_walk_returns() {
        assert_eq!(sharded_entry("ab/cd/abcd01.blk"), Some("abcd01.blk"));
        // The walk's delimiter listing of `ab/cd` names a deeper directory once.
        assert_eq!(sharded_entry("ab/cd/sub/x.blk"), Some("sub"));
        for outside in [
            "abcd01.blk",
            "ab/abcd01.blk",
            "abc/cd/x.blk",
            "ab/zz/x.blk",
            "ab/cd/",
        ] {
            assert_eq!(sharded_entry(outside), None, "{outside}");
        }
    }
}
