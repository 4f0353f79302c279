//! [`LonghornSource`]: a Longhorn backup as a disk source.

use async_trait::async_trait;
use longhorn::{RestoreItem, RestoreReader};

use crate::digest::DigestAlgorithm;
use crate::{Extent, Result, Source};

/// Reads a completed backup in offset order; blocks are fetched, decompressed and verified
/// against their checksum in parallel by the [`RestoreReader`]. Ranges no block covers are
/// holes and are not yielded.
pub struct LonghornSource {
    reader: Option<RestoreReader>,
    size: u64,
    name: String,
    digest_algorithm: Option<DigestAlgorithm>,
}

impl std::fmt::Debug for LonghornSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LonghornSource")
            .field("name", &self.name)
            .field("size", &self.size)
            .finish()
    }
}

impl LonghornSource {
    /// A source over an open restore reader; `name` names the backup in messages.
    pub fn new(reader: RestoreReader, name: String) -> Self {
        Self {
            size: reader.volume_size(),
            reader: Some(reader),
            name,
            digest_algorithm: None,
        }
    }

    /// Has the pipeline digest the backup with `algorithm` (that of the digest the backup
    /// recorded), so the restore's check needs no second digest of the same bytes.
    pub fn digest_with(mut self, algorithm: DigestAlgorithm) -> Self {
        self.digest_algorithm = Some(algorithm);
        self
    }

    /// Releases the restore lock (call after the pipeline; dropping the source without it
    /// leaves the lock file until it expires).
    pub async fn close(&mut self) -> Result<()> {
        match self.reader.take() {
            Some(r) => Ok(r.finish().await?),
            None => Ok(()),
        }
    }
}

#[async_trait]
impl Source for LonghornSource {
    fn describe(&self) -> String {
        self.name.clone()
    }

    fn format(&self) -> &'static str {
        "longhorn"
    }

    fn digest_algorithm(&self) -> Option<DigestAlgorithm> {
        self.digest_algorithm
    }

    fn size(&self) -> u64 {
        self.size
    }

    async fn next_extent(&mut self) -> Result<Option<Extent>> {
        let Some(reader) = self.reader.as_mut() else {
            return Ok(None);
        };
        while let Some(item) = reader.next().await {
            match item? {
                RestoreItem::Data { offset, data } => {
                    return Ok(Some(Extent::Data { offset, data }))
                }
                RestoreItem::Zero { .. } => continue,
            }
        }
        Ok(None)
    }
}
