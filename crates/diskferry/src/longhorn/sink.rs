//! [`LonghornSink`]: a disk into a Longhorn backup volume.
//!
//! Extents are cut into whole blocks by [`BlockAssembler`] and handed to the backup writer,
//! which dedups, compresses and uploads them in parallel with a bounded number in flight.
//!
//! A full backup zero-fills whatever part of a block no extent covers (those bytes are holes).
//! An incremental backup (extents changed since a snapshot) cannot: the unchanged bytes of a
//! partly changed block are in the image, not zero. So its source must give whole blocks
//! (an [`RbdSource`](crate::sources::RbdSource) with `align` set to the block size reads
//! partly changed blocks whole), and the sink refuses extents that leave part of a block
//! uncovered. [`Extent::Zero`] (a range that became zero or a hole) drops whole blocks from
//! the merged list with `put_zero_range`.

use async_trait::async_trait;
use bytes::Bytes;
use longhorn::{BackupConfig, BackupStats, BackupWriter, BlockAssembler};

use super::{DIGEST_ALGORITHM_LABEL, DIGEST_LABEL, DISK_SIZE_LABEL};
use crate::{Error, Extent, Report, Result, Sink, Summary};

/// What the backup sink produced: its report, which [`crate::pipeline::run`] hands back.
#[derive(Debug, Clone)]
pub struct BackupOutcome {
    /// The backup's address.
    pub location: String,
    /// The writer's counters.
    pub stats: BackupStats,
    /// The final backup cfg.
    pub cfg: BackupConfig,
}

impl Report for BackupOutcome {
    fn location(&self) -> &str {
        &self.location
    }

    /// Block bytes uploaded (new and re-uploaded blocks; deduplicated ones are not counted).
    fn bytes_written(&self) -> u64 {
        self.stats.bytes_uploaded + self.stats.bytes_reuploaded
    }
}

/// Writes a disk into a Longhorn backup.
pub struct LonghornSink {
    writer: Option<BackupWriter>,
    assembler: BlockAssembler,
    block_size: u64,
    location: String,
    /// Incremental mode: the end of the last extent (gaps must fall between whole blocks).
    covered_to: Option<u64>,
    record_digest: bool,
    bytes_in: u64,
}

impl std::fmt::Debug for LonghornSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LonghornSink")
            .field("location", &self.location)
            .field("block_size", &self.block_size)
            .field("incremental", &self.covered_to.is_some())
            .finish_non_exhaustive()
    }
}

impl LonghornSink {
    /// A sink over an open backup writer for a volume of `volume_size` bytes. With
    /// `incremental`, the extents are the whole blocks changed since the merged backup's
    /// snapshot (see the module doc). `record_digest` records the pipeline's content digest
    /// and the disk size it covers as backup labels (only meaningful for a full read).
    pub fn new(
        writer: BackupWriter,
        volume_size: u64,
        location: String,
        incremental: bool,
        record_digest: bool,
    ) -> Self {
        let block_size = writer.block_size();
        Self {
            writer: Some(writer),
            assembler: BlockAssembler::new(block_size, volume_size),
            block_size,
            location,
            covered_to: incremental.then_some(0),
            record_digest,
            bytes_in: 0,
        }
    }

    fn writer(&mut self) -> Result<&mut BackupWriter> {
        self.writer.as_mut().ok_or_else(|| {
            Error::InvalidOption(format!("{}: backup writer already closed", self.location))
        })
    }

    /// Incremental mode: refuses an extent at `offset` that leaves part of a block before it
    /// uncovered (that block would be stored with zeros where the image has data).
    fn cover(&mut self, offset: u64, len: u64) -> Result<()> {
        let Some(to) = self.covered_to else {
            return Ok(());
        };
        let bs = self.block_size;
        if offset != to && !(to.is_multiple_of(bs) && offset.is_multiple_of(bs)) {
            let at = if to.is_multiple_of(bs) { offset } else { to };
            return Err(self.partial_block(at));
        }
        self.covered_to = Some(offset + len);
        Ok(())
    }

    /// The error for a block that the incremental extents cover only in part, at `at`.
    fn partial_block(&self, at: u64) -> Error {
        let block = at - at % self.block_size;
        Error::SourceContract {
            source_name: format!("the changes backed up into {}", self.location),
            reason: format!(
                "they cover the {}-byte block at {block} only up to byte {at}; an incremental \
                 backup needs whole blocks",
                self.block_size
            ),
        }
    }

    async fn put_blocks(&mut self, blocks: Vec<(u64, Bytes)>) -> Result<()> {
        for (offset, data) in blocks {
            self.writer()?.put_block(offset, data).await?;
        }
        Ok(())
    }

    async fn push(&mut self, offset: u64, data: Bytes) -> Result<()> {
        let blocks = self.assembler.push(offset, data)?;
        self.put_blocks(blocks).await
    }

    async fn zero(&mut self, offset: u64, len: u64) -> Result<()> {
        if self.covered_to.is_none() {
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
impl Sink<BackupOutcome> for LonghornSink {
    fn describe(&self) -> String {
        self.location.clone()
    }

    async fn write(&mut self, extent: Extent) -> Result<()> {
        match extent {
            Extent::Data { offset, data } => {
                self.cover(offset, data.len() as u64)?;
                self.bytes_in += data.len() as u64;
                self.push(offset, data).await
            }
            Extent::Zero { offset, len } => {
                self.cover(offset, len)?;
                self.zero(offset, len).await
            }
        }
    }

    async fn finish(mut self: Box<Self>, summary: &Summary) -> Result<BackupOutcome> {
        // The last block may end at the disk's end (the volume is zero beyond it).
        if let Some(to) = self
            .covered_to
            .filter(|&to| !to.is_multiple_of(self.block_size))
        {
            if to != summary.size {
                let (error, location) = (self.partial_block(to), self.location.clone());
                return Err(error.after_cleanup(self.abort().await, location));
            }
        }
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
            writer.set_label(DIGEST_ALGORITHM_LABEL, summary.digest_algorithm.name());
            writer.set_label(DISK_SIZE_LABEL, &summary.size.to_string());
        }
        // `finish` removes the in-progress cfg itself when it fails.
        let (stats, cfg) = writer.finish().await?;
        Ok(BackupOutcome {
            location: self.location.clone(),
            stats,
            cfg,
        })
    }

    async fn abort(mut self: Box<Self>) -> Result<()> {
        match self.writer.take() {
            Some(w) => Ok(w.abort().await?),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use longhorn::lock::LockOptions;
    use longhorn::{BackupName, BackupOptions, BackupStore, MergeWith, VfsDriver, VolumeName};

    use super::*;

    const BLOCK: u64 = 2 << 20;
    /// Three blocks and 4 KiB: the last block ends at the disk's end.
    const DISK: u64 = 3 * BLOCK + 4096;

    fn summary() -> Summary {
        Summary {
            source: "test".into(),
            source_format: "raw",
            size: DISK,
            digest: String::new(),
            digest_algorithm: crate::DigestAlgorithm::DEFAULT,
        }
    }

    fn data(offset: u64, len: u64) -> Extent {
        Extent::Data {
            offset,
            data: Bytes::from(vec![7u8; len as usize]),
        }
    }

    /// An incremental sink over a new vfs store holding a full backup `b0` of the volume.
    async fn incremental() -> (tempfile::TempDir, Box<LonghornSink>) {
        let dir = tempfile::tempdir().unwrap();
        let store = BackupStore::new(Arc::new(VfsDriver::new(dir.path()).unwrap()))
            .with_lock_options(LockOptions {
                check_wait: std::time::Duration::from_millis(10),
                ..LockOptions::default()
            });
        let volume = VolumeName::new("sinkvol").unwrap();
        let size = 4 * BLOCK;
        let b0 = BackupName::new("b0").unwrap();
        let w = store
            .begin_backup(BackupOptions::new(volume.clone(), b0.clone(), size))
            .await
            .unwrap();
        w.finish().await.unwrap();
        let mut opts = BackupOptions::new(volume, BackupName::new("b1").unwrap(), size);
        opts.merge = MergeWith::Backup(b0);
        let writer = store.begin_backup(opts).await.unwrap();
        let sink = LonghornSink::new(writer, size, "vfs test".into(), true, false);
        (dir, Box::new(sink))
    }

    #[tokio::test]
    async fn incremental_extents_must_cover_whole_blocks() {
        let (_dir, mut sink) = incremental().await;
        // A partly covered block would be stored with zeros where the image has data.
        let err = sink.write(data(BLOCK + 4096, 4096)).await.unwrap_err();
        assert!(matches!(err, Error::SourceContract { .. }), "{err}");
        assert!(err.to_string().contains("whole blocks"), "{err}");

        let (_dir, mut sink) = incremental().await;
        sink.write(data(0, BLOCK)).await.unwrap();
        sink.write(data(BLOCK, 4096)).await.unwrap();
        // The gap after a block's first 4 KiB is refused at the next extent or at the end.
        let err = sink.write(data(2 * BLOCK, BLOCK)).await.unwrap_err();
        assert!(err.to_string().contains("up to byte"), "{err}");
    }

    #[tokio::test]
    async fn incremental_whole_blocks_and_the_disk_end_are_accepted() {
        let (_dir, mut sink) = incremental().await;
        sink.write(data(0, BLOCK / 2)).await.unwrap();
        sink.write(data(BLOCK / 2, BLOCK / 2)).await.unwrap();
        sink.write(Extent::Zero {
            offset: 2 * BLOCK,
            len: BLOCK,
        })
        .await
        .unwrap();
        sink.write(data(3 * BLOCK, 4096)).await.unwrap();
        sink.finish(&summary()).await.unwrap();

        let (_dir, mut sink) = incremental().await;
        sink.write(data(3 * BLOCK, 2048)).await.unwrap();
        let err = sink.finish(&summary()).await.unwrap_err();
        assert!(err.to_string().contains("up to byte"), "{err}");
    }
}
