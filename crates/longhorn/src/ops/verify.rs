//! Verify (scrub) a backup: fetch, decompress and checksum every block it references without
//! writing anything, and report every bad block instead of stopping at the first.

use std::collections::BTreeMap;
use std::sync::Arc;

use futures::StreamExt;

use super::restore::fetch_block;
use super::{BackupStore, Pool, RestoreOptions};
use crate::cfg::{BackupConfig, LockType};
use crate::codec::BlockDecoder;
use crate::error::Result;
use crate::names::{BackupName, VolumeName};
use crate::paths::backup_cfg_path;

/// A block that failed verification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockFailure {
    /// The block's checksum (its file name).
    pub checksum: String,
    /// The first volume offset that references it.
    pub offset: u64,
    /// What went wrong.
    pub error: String,
}

/// Outcome of [`BackupStore::verify_backup`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VerifyReport {
    /// Distinct blocks checked (a block referenced at several offsets is checked once).
    pub blocks_checked: u64,
    /// Uncompressed bytes verified.
    pub bytes_checked: u64,
    /// Every block that is missing, undecodable or has the wrong content.
    pub failures: Vec<BlockFailure>,
}

impl BackupStore {
    /// Checks every block `backup` references. Errors only for problems with the backup as a
    /// whole (cfg unreadable, in progress, lock conflict; the first two before any lock is
    /// taken); bad blocks are listed in the report.
    pub async fn verify_backup(
        &self,
        volume: &VolumeName,
        backup: &BackupName,
        opts: RestoreOptions,
    ) -> Result<VerifyReport> {
        let kind = opts.lock.then_some(LockType::BackupOrRestore);
        let (cfg, lock) = self
            .checked_lock(volume, kind, || self.verifiable(volume, backup))
            .await?;
        let r = self.scrub(volume, cfg, opts).await;
        if let Some(l) = lock {
            l.release().await?;
        }
        r
    }

    /// The cfg of `backup`, if it can be verified at all.
    async fn verifiable(&self, volume: &VolumeName, backup: &BackupName) -> Result<BackupConfig> {
        let cfg = self.inspect_backup(volume, backup).await?;
        cfg.block_size()?;
        cfg.compression()?;
        if let Some(vol) = self.load_volume(volume).await? {
            cfg.check_within(vol.size, &backup_cfg_path(volume, backup))?;
        }
        Ok(cfg)
    }

    async fn scrub(
        &self,
        volume: &VolumeName,
        cfg: BackupConfig,
        opts: RestoreOptions,
    ) -> Result<VerifyReport> {
        let block_size = cfg.block_size()?;
        let method = cfg.compression()?;
        // One check per distinct block, at its first offset.
        let mut distinct: BTreeMap<String, u64> = BTreeMap::new();
        for b in &cfg.blocks {
            distinct.entry(b.checksum.clone()).or_insert(b.offset);
        }
        let pool: Arc<Pool<BlockDecoder>> = Arc::new(Pool::new(BlockDecoder::new));
        let mut results = futures::stream::iter(distinct)
            .map(|(checksum, offset)| {
                let task = tokio::spawn(fetch_block(
                    self.driver.clone(),
                    pool.clone(),
                    volume.clone(),
                    method,
                    block_size,
                    offset,
                    checksum.clone(),
                ));
                async move { (checksum, offset, task.await) }
            })
            .buffer_unordered(opts.concurrency.max(1));
        let mut report = VerifyReport::default();
        while let Some((checksum, offset, joined)) = results.next().await {
            report.blocks_checked += 1;
            match joined {
                Ok(Ok(_)) => report.bytes_checked += block_size,
                Ok(Err(e)) => report.failures.push(BlockFailure {
                    checksum,
                    offset,
                    error: e.to_string(),
                }),
                Err(e) => report.failures.push(BlockFailure {
                    checksum,
                    offset,
                    error: format!("worker task failed: {e}"),
                }),
            }
        }
        report.failures.sort_by_key(|f| f.offset);
        Ok(report)
    }
}
