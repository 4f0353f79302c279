//! A qcow2 image behind a range reader: only allocated clusters are read, compressed clusters
//! are decompressed, reads are coalesced and run in parallel by the qcow2 crate.

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use futures::future::BoxFuture;
use objstore::RangeRead;
use qcow2::{DataReader, Qcow2Image, ReadAt, ReadOptions};

use crate::{Error, Extent, Result, Source};

/// Adapts an object reader to the qcow2 crate's read trait.
#[derive(Debug)]
struct ObjectReadAt(Arc<dyn RangeRead>);

impl ReadAt for ObjectReadAt {
    fn len(&self) -> u64 {
        self.0.size()
    }

    fn read_at(&self, offset: u64, len: usize) -> BoxFuture<'_, std::io::Result<Bytes>> {
        Box::pin(async move {
            self.0
                .read_at(offset, len)
                .await
                .map_err(std::io::Error::other)
        })
    }
}

/// A qcow2 image as a disk source.
pub struct Qcow2Source {
    name: String,
    size: u64,
    reader: DataReader,
}

impl std::fmt::Debug for Qcow2Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Qcow2Source")
            .field("name", &self.name)
            .field("size", &self.size)
            .finish()
    }
}

/// Bytes a qcow2 source reads ahead at most: as many as its concurrent reads fill (8 of
/// 4 MiB). The crate's 64 MiB default let a whole import peak above 256 MiB of RSS, with the
/// sink's writes in flight and librbd's copies of them on top; reading ahead further did not
/// make imports faster.
pub const QCOW2_READ_AHEAD_BYTES: u64 = 32 << 20;

/// Bytes a qcow2 source over HTTP(S) or S3 reads ahead at most. Each ranged GET waits a round
/// trip, so a remote source needs more bytes in flight than a local file to keep the link
/// busy: the same as the parallel download the import benchmark takes as its ceiling
/// (8 ranges of 8 MiB).
pub const QCOW2_REMOTE_READ_AHEAD_BYTES: u64 = 64 << 20;

/// Largest single ranged GET of a remote qcow2 source (neighbouring clusters coalesced).
pub const QCOW2_REMOTE_READ_SIZE: u64 = 8 << 20;

impl Qcow2Source {
    /// Opens and validates the image (header, L1 table) with [`Qcow2Source::read_options`].
    pub async fn open(object: Arc<dyn RangeRead>) -> Result<Qcow2Source> {
        Qcow2Source::open_with(object, Qcow2Source::read_options()).await
    }

    /// The read options jobs use: the qcow2 crate's defaults with at most
    /// [`QCOW2_READ_AHEAD_BYTES`] read ahead.
    pub fn read_options() -> ReadOptions {
        ReadOptions {
            max_in_flight_bytes: QCOW2_READ_AHEAD_BYTES,
            ..ReadOptions::default()
        }
    }

    /// The read options for an object behind HTTP(S) or S3: larger reads and
    /// [`QCOW2_REMOTE_READ_AHEAD_BYTES`] ahead, as many reads in flight as locally.
    pub fn remote_read_options() -> ReadOptions {
        ReadOptions {
            max_read_size: QCOW2_REMOTE_READ_SIZE,
            max_in_flight_bytes: QCOW2_REMOTE_READ_AHEAD_BYTES,
            ..ReadOptions::default()
        }
    }

    /// Opens with explicit read planning options (read size, bytes in flight, concurrency).
    pub async fn open_with(
        object: Arc<dyn RangeRead>,
        options: ReadOptions,
    ) -> Result<Qcow2Source> {
        let name = object.describe();
        let image = Qcow2Image::open(Arc::new(ObjectReadAt(object)))
            .await
            .map_err(|source| Error::Qcow2 {
                address: name.clone(),
                source,
            })?;
        Ok(Qcow2Source {
            size: image.virtual_size(),
            reader: image.data_reader(options),
            name,
        })
    }
}

#[async_trait]
impl Source for Qcow2Source {
    fn describe(&self) -> String {
        self.name.clone()
    }

    fn format(&self) -> &'static str {
        "qcow2"
    }

    fn size(&self) -> u64 {
        self.size
    }

    async fn next_extent(&mut self) -> Result<Option<Extent>> {
        let chunk = self
            .reader
            .next_chunk()
            .await
            .map_err(|source| Error::Qcow2 {
                address: self.name.clone(),
                source,
            })?;
        Ok(chunk.map(|c| Extent::Data {
            offset: c.guest_offset,
            data: c.data,
        }))
    }
}
