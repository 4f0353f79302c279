//! [`LonghornSink`]: a disk into a Longhorn backup volume.
//!
//! Extents are cut into whole blocks by [`BlockAssembler`] and handed to the backup writer,
//! which dedups, compresses and uploads them in parallel with a bounded number in flight.
//!
//! A full backup zero-fills whatever part of a block no extent covers (those bytes are holes).
//! An incremental backup (extents changed since a snapshot) cannot: the unchanged bytes of a
//! partly changed block are in the image, not zero. So in incremental mode the sink counts
//! how much of each block the changed extents cover and re-reads partly covered blocks whole
//! through a [`BlockFill`]. [`Extent::Zero`] (a range that became zero or a hole) drops whole
//! blocks from the merged list with `put_zero_range` and zero-fills partial ones.

use std::collections::BTreeMap;

use async_trait::async_trait;
use bytes::Bytes;
use longhorn::{BackupConfig, BackupStats, BackupWriter, BlockAssembler};

use super::{DIGEST_ALGORITHM_LABEL, DIGEST_LABEL, DISK_SIZE_LABEL};
use crate::{Error, Extent, Result, Sink, SinkReport, Summary};

/// Reads whole blocks of the disk being backed up (for blocks an incremental diff only partly
/// covers).
#[async_trait]
pub trait BlockFill: Send + Sync {
    /// Reads `len` bytes at `offset`.
    async fn read(&self, offset: u64, len: u64) -> Result<Bytes>;
}

/// An RBD image (or snapshot) as a [`BlockFill`].
pub struct RbdFill {
    image: rbd::Image,
    name: String,
}

impl std::fmt::Debug for RbdFill {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RbdFill").field("name", &self.name).finish()
    }
}

impl RbdFill {
    /// Reads blocks from `image` (opened at the snapshot being backed up).
    pub fn new(image: rbd::Image, name: impl Into<String>) -> Self {
        Self {
            image,
            name: name.into(),
        }
    }
}

#[async_trait]
impl BlockFill for RbdFill {
    async fn read(&self, offset: u64, len: u64) -> Result<Bytes> {
        self.image.read(offset, len as usize).await.map_err(|e| {
            Error::io(
                format!("read block at {offset} of {}", self.name),
                std::io::Error::other(e),
            )
        })
    }
}

/// What the backup sink produced, available after the pipeline finished it.
#[derive(Debug, Clone)]
pub struct BackupOutcome {
    /// The writer's counters.
    pub stats: BackupStats,
    /// The final backup cfg.
    pub cfg: BackupConfig,
}

/// Writes a disk into a Longhorn backup.
pub struct LonghornSink {
    writer: Option<BackupWriter>,
    assembler: BlockAssembler,
    block_size: u64,
    location: String,
    /// Incremental mode: how many bytes of each pending block the changed extents covered.
    fill: Option<Box<dyn BlockFill>>,
    covered: BTreeMap<u64, u64>,
    record_digest: bool,
    outcome: std::sync::Arc<std::sync::Mutex<Option<BackupOutcome>>>,
    bytes_in: u64,
}

impl std::fmt::Debug for LonghornSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LonghornSink")
            .field("location", &self.location)
            .field("block_size", &self.block_size)
            .field("incremental", &self.fill.is_some())
            .finish_non_exhaustive()
    }
}

/// Where [`LonghornSink::finish`] leaves its outcome (the pipeline consumes the sink).
pub type OutcomeSlot = std::sync::Arc<std::sync::Mutex<Option<BackupOutcome>>>;

impl LonghornSink {
    /// A sink over an open backup writer for a volume of `volume_size` bytes. With `fill`,
    /// the extents are an incremental diff (see the module doc). `record_digest` records the
    /// pipeline's content digest and the disk size it covers as backup labels (only
    /// meaningful for a full read).
    pub fn new(
        writer: BackupWriter,
        volume_size: u64,
        location: String,
        fill: Option<Box<dyn BlockFill>>,
        record_digest: bool,
    ) -> (Self, OutcomeSlot) {
        let block_size = writer.block_size();
        let slot = OutcomeSlot::default();
        (
            Self {
                writer: Some(writer),
                assembler: BlockAssembler::new(block_size, volume_size),
                block_size,
                location,
                fill,
                covered: BTreeMap::new(),
                record_digest,
                outcome: slot.clone(),
                bytes_in: 0,
            },
            slot,
        )
    }

    fn writer(&mut self) -> Result<&mut BackupWriter> {
        self.writer.as_mut().ok_or_else(|| {
            Error::InvalidOption(format!("{}: backup writer already closed", self.location))
        })
    }

    fn cover(&mut self, offset: u64, len: u64) {
        let bs = self.block_size;
        let mut pos = offset;
        let end = offset + len;
        while pos < end {
            let block = pos - pos % bs;
            let n = (block + bs).min(end) - pos;
            *self.covered.entry(block).or_default() += n;
            pos += n;
        }
    }

    async fn put_blocks(&mut self, blocks: Vec<(u64, Bytes)>) -> Result<()> {
        for (offset, data) in blocks {
            let data = match (&self.fill, self.covered.remove(&offset)) {
                (Some(fill), Some(c)) if c < self.block_size => {
                    fill.read(offset, self.block_size).await?
                }
                _ => data,
            };
            self.writer()?.put_block(offset, data).await?;
        }
        Ok(())
    }

    async fn push(&mut self, offset: u64, data: Bytes) -> Result<()> {
        if self.fill.is_some() {
            self.cover(offset, data.len() as u64);
        }
        let blocks = self.assembler.push(offset, data)?;
        self.put_blocks(blocks).await
    }

    async fn zero(&mut self, offset: u64, len: u64) -> Result<()> {
        if self.fill.is_none() {
            // A full backup starts from nothing: zeros are simply not stored.
            return Ok(());
        }
        let bs = self.block_size;
        let end = offset + len;
        let first_full = offset.div_ceil(bs) * bs;
        let last_full = end - end % bs;
        if first_full >= last_full {
            return self
                .push(offset, Bytes::from(vec![0u8; len as usize]))
                .await;
        }
        if offset < first_full {
            let head = (first_full - offset) as usize;
            self.push(offset, Bytes::from(vec![0u8; head])).await?;
        }
        // Whole blocks that became zero leave the merged block list.
        self.writer()?
            .put_zero_range(first_full, last_full - first_full)?;
        // Keep the assembler's order check in step with what was declared.
        self.assembler.push(last_full, Bytes::new())?;
        if end > last_full {
            let tail = (end - last_full) as usize;
            self.push(last_full, Bytes::from(vec![0u8; tail])).await?;
        }
        Ok(())
    }
}

#[async_trait]
impl Sink for LonghornSink {
    fn describe(&self) -> String {
        self.location.clone()
    }

    async fn write(&mut self, extent: Extent) -> Result<()> {
        match extent {
            Extent::Data { offset, data } => {
                self.bytes_in += data.len() as u64;
                self.push(offset, data).await
            }
            Extent::Zero { offset, len } => self.zero(offset, len).await,
        }
    }

    async fn finish(mut self: Box<Self>, summary: &Summary) -> Result<SinkReport> {
        if let Some(last) = self.assembler.finish() {
            if let Err(e) = self.put_blocks(vec![last]).await {
                let location = self.location.clone();
                return Err(e.after_cleanup(self.abort().await, location));
            }
        }
        let mut writer = self.writer.take().ok_or_else(|| {
            Error::InvalidOption(format!("{}: backup writer already closed", self.location))
        })?;
        if self.record_digest {
            writer.set_label(DIGEST_LABEL, &summary.digest);
            writer.set_label(DIGEST_ALGORITHM_LABEL, crate::DIGEST_ALGORITHM);
            writer.set_label(DISK_SIZE_LABEL, &summary.size.to_string());
        }
        // `finish` removes the in-progress cfg itself when it fails.
        let (stats, cfg) = writer.finish().await?;
        let report = SinkReport {
            location: self.location.clone(),
            bytes_written: stats.bytes_uploaded + stats.bytes_reuploaded,
        };
        *self.outcome.lock().unwrap_or_else(|p| p.into_inner()) =
            Some(BackupOutcome { stats, cfg });
        Ok(report)
    }

    async fn abort(mut self: Box<Self>) -> Result<()> {
        match self.writer.take() {
            Some(w) => Ok(w.abort().await?),
            None => Ok(()),
        }
    }
}
