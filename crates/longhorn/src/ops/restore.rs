//! Restore: a reader that yields a backup's content in offset order, fetching, decompressing
//! and verifying blocks in parallel with a bounded number in flight.

use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use futures::stream::{Stream, StreamExt};

use super::{BackupStore, Pool};
use crate::cfg::{BackupConfig, LockType};
use crate::codec::{BlockDecoder, Compression};
use crate::error::{Error, Result};
use crate::lock::VolumeLock;
use crate::names::{BackupName, VolumeName};
use crate::paths::{backup_cfg_path, block_path};

/// Blocks fetched and decoded ahead of the consumer by default.
pub const DEFAULT_RESTORE_CONCURRENCY: usize = 4;

/// Restore settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RestoreOptions {
    /// Blocks in flight (fetching or decoding); memory is about twice this many blocks.
    pub concurrency: usize,
    /// Take Longhorn's restore lock (type 1) while reading; turn off for read-only stores.
    pub lock: bool,
}

impl Default for RestoreOptions {
    fn default() -> Self {
        Self {
            concurrency: DEFAULT_RESTORE_CONCURRENCY,
            lock: true,
        }
    }
}

/// One piece of the restored volume; the pieces cover `[0, volume_size)` in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RestoreItem {
    /// A stored block: `data` is exactly one block.
    Data {
        /// Volume offset.
        offset: u64,
        /// The verified block content.
        data: Bytes,
    },
    /// A range no block covers: it reads as zeros.
    Zero {
        /// Volume offset.
        offset: u64,
        /// Length in bytes.
        len: u64,
    },
}

type BlockStream = Pin<Box<dyn Stream<Item = Result<(u64, Bytes)>> + Send>>;

/// Reads one backup in offset order. Get it from [`BackupStore::open_restore`].
pub struct RestoreReader {
    backup: BackupConfig,
    volume_size: u64,
    block_size: u64,
    stream: BlockStream,
    pending: Option<(u64, Bytes)>,
    next_offset: u64,
    stream_done: bool,
    failed: bool,
    lock: Option<VolumeLock>,
}

impl std::fmt::Debug for RestoreReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RestoreReader")
            .field("backup", &self.backup.name)
            .field("volume_size", &self.volume_size)
            .field("block_size", &self.block_size)
            .field("next_offset", &self.next_offset)
            .finish_non_exhaustive()
    }
}

impl BackupStore {
    /// Opens a completed backup for restore. Refuses in-progress backups, a volume size that is
    /// zero or not a multiple of the block size, and blocks beyond the volume size. The volume
    /// size is `volume.cfg`'s, as Longhorn restores it.
    ///
    /// With `opts.lock`, the backup is read under Longhorn's restore lock (a concurrent
    /// deletion cannot remove blocks mid-read); a request refused for what the store holds
    /// (no such volume or backup, one in progress, a bad cfg) is refused before the lock.
    pub async fn open_restore(
        &self,
        volume: &VolumeName,
        backup: &BackupName,
        opts: RestoreOptions,
    ) -> Result<RestoreReader> {
        let kind = opts.lock.then_some(LockType::BackupOrRestore);
        let (mut reader, lock) = self
            .checked_lock(volume, kind, || self.prepare_restore(volume, backup, opts))
            .await?;
        reader.lock = lock;
        Ok(reader)
    }

    async fn prepare_restore(
        &self,
        volume: &VolumeName,
        backup: &BackupName,
        opts: RestoreOptions,
    ) -> Result<RestoreReader> {
        let vol = self.inspect_volume(volume).await?;
        let cfg = self.inspect_backup(volume, backup).await?;
        let path = backup_cfg_path(volume, backup);
        let block_size = cfg.block_size()?;
        let refuse = |reason: String| Error::Refused {
            volume: volume.to_string(),
            reason,
        };
        if vol.size == 0 {
            return Err(refuse("volume.cfg Size is 0".into()));
        }
        if vol.size % block_size != 0 {
            return Err(refuse(format!(
                "volume size {} is not a multiple of backup {backup}'s block size {block_size}",
                vol.size
            )));
        }
        cfg.check_within(vol.size, &path)?;
        let method = cfg.compression()?;
        let driver = self.driver.clone();
        let pool: Arc<Pool<BlockDecoder>> = Arc::new(Pool::new(BlockDecoder::new));
        let volume = volume.clone();
        let blocks = cfg.blocks.clone();
        let stream = futures::stream::iter(blocks)
            .map(move |b| {
                let driver = driver.clone();
                let pool = pool.clone();
                let volume = volume.clone();
                // Spawned, so fetches and decodes progress while the consumer is busy
                // elsewhere; `buffered` bounds how many exist at once.
                AbortOnDrop(tokio::spawn(fetch_block(
                    driver, pool, volume, method, block_size, b.offset, b.checksum,
                )))
            })
            .buffered(opts.concurrency.max(1));
        Ok(RestoreReader {
            backup: cfg,
            volume_size: vol.size,
            block_size,
            stream: Box::pin(stream),
            pending: None,
            next_offset: 0,
            stream_done: false,
            failed: false,
            lock: None,
        })
    }
}

/// A spawned block fetch, cancelled when the reader is dropped early.
struct AbortOnDrop(tokio::task::JoinHandle<Result<(u64, Bytes)>>);

impl std::future::Future for AbortOnDrop {
    type Output = Result<(u64, Bytes)>;

    fn poll(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        Pin::new(&mut self.0)
            .poll(cx)
            .map(|r| r.map_err(|e| Error::Task(e.to_string())).and_then(|r| r))
    }
}

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

pub(super) async fn fetch_block(
    driver: Arc<dyn crate::driver::BackupStoreDriver>,
    pool: Arc<Pool<BlockDecoder>>,
    volume: VolumeName,
    method: Compression,
    block_size: u64,
    offset: u64,
    checksum: String,
) -> Result<(u64, Bytes)> {
    let path = block_path(&volume, &checksum)?;
    let stored = driver.get(&path).await.map_err(|source| Error::BlockRead {
        checksum: checksum.clone(),
        offset,
        source,
    })?;
    let data = tokio::task::spawn_blocking(move || {
        let mut dec = pool.take();
        let r = dec.decode(method, &stored, block_size, &checksum, offset);
        pool.put(dec);
        r
    })
    .await
    .map_err(|e| Error::Task(e.to_string()))??;
    Ok((offset, data))
}

impl RestoreReader {
    /// The backup being restored.
    pub fn backup(&self) -> &BackupConfig {
        &self.backup
    }

    /// Size of the restored volume (from `volume.cfg`).
    pub fn volume_size(&self) -> u64 {
        self.volume_size
    }

    /// The backup's block size.
    pub fn block_size(&self) -> u64 {
        self.block_size
    }

    /// The next piece of the volume, `None` at the end. After an error the reader yields
    /// nothing more.
    pub async fn next(&mut self) -> Option<Result<RestoreItem>> {
        if self.failed {
            return None;
        }
        if self.pending.is_none() && !self.stream_done {
            match self.stream.next().await {
                Some(Ok(b)) => self.pending = Some(b),
                Some(Err(e)) => {
                    self.failed = true;
                    return Some(Err(e));
                }
                None => self.stream_done = true,
            }
        }
        match self.pending.take() {
            Some((offset, data)) if offset == self.next_offset => {
                self.next_offset = offset + self.block_size;
                Some(Ok(RestoreItem::Data { offset, data }))
            }
            Some((offset, data)) => {
                let gap = RestoreItem::Zero {
                    offset: self.next_offset,
                    len: offset - self.next_offset,
                };
                self.next_offset = offset;
                self.pending = Some((offset, data));
                Some(Ok(gap))
            }
            None if self.next_offset < self.volume_size => {
                let gap = RestoreItem::Zero {
                    offset: self.next_offset,
                    len: self.volume_size - self.next_offset,
                };
                self.next_offset = self.volume_size;
                Some(Ok(gap))
            }
            None => None,
        }
    }

    /// Releases the restore lock.
    pub async fn finish(mut self) -> Result<()> {
        if let Some(l) = self.lock.take() {
            l.release().await?;
        }
        Ok(())
    }
}
