//! qcow2, both ways, over the `qcow2` crate: [`Qcow2Source`] reads an image behind a range
//! reader (only allocated clusters are read, compressed clusters are decompressed, reads are
//! coalesced and run in parallel by the crate); [`Qcow2Encoder`] writes one with the crate's
//! metadata-last streaming writer.
//!
//! The writer emits data clusters at increasing offsets from one cluster on, then the
//! metadata tail, then the header at offset 0: what an S3 writer takes (part 1, which holds
//! the header, stays in memory and is uploaded last; every other part goes up, in parallel,
//! as soon as it is full).

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use futures::future::BoxFuture;
use objstore::RangeRead;
use qcow2::{Codec, DataReader, Qcow2Image, Qcow2Writer, ReadAt, ReadOptions, WriterOptions};

use super::{Chunk, Encoder};
use crate::{Error, Extent, ObjectFormat, Result, Source};

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

/// Writes a disk as a qcow2 image.
pub struct Qcow2Encoder {
    writer: Qcow2Writer,
    /// The object's name, for messages.
    location: String,
    size: u64,
    cluster_size: u64,
}

impl std::fmt::Debug for Qcow2Encoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Qcow2Encoder")
            .field("location", &self.location)
            .field("size", &self.size)
            .finish_non_exhaustive()
    }
}

impl Qcow2Encoder {
    /// An image of a `size`-byte disk, with clusters of `cluster_size` bytes compressed with
    /// `compression` (if any) on `threads` tasks; `location` names it in errors.
    pub fn new(
        size: u64,
        cluster_size: u64,
        compression: Option<Codec>,
        threads: usize,
        location: &str,
    ) -> Result<Qcow2Encoder> {
        let options = WriterOptions {
            cluster_size,
            compression,
            threads: threads.max(1),
            ..WriterOptions::default()
        };
        let writer = Qcow2Writer::new(size, options).map_err(|source| Error::Qcow2Write {
            address: location.to_string(),
            source,
        })?;
        Ok(Qcow2Encoder {
            writer,
            location: location.to_string(),
            size,
            cluster_size,
        })
    }

    fn error(&self, source: qcow2::WriteError) -> Error {
        Error::Qcow2Write {
            address: self.location.clone(),
            source,
        }
    }
}

/// The crate's chunks as the encoder's.
fn chunks(chunks: Vec<qcow2::Chunk>) -> Vec<Chunk> {
    chunks
        .into_iter()
        .map(|c| Chunk {
            offset: c.file_offset,
            data: c.data,
        })
        .collect()
}

#[async_trait]
impl Encoder for Qcow2Encoder {
    fn format(&self) -> ObjectFormat {
        ObjectFormat::Qcow2
    }

    fn estimated_size(&self) -> u64 {
        // L2 tables (8 bytes per cluster) and refcounts: far below 1/64.
        self.size + self.size / 64 + 4 * self.cluster_size
    }

    async fn push(&mut self, offset: u64, data: Bytes) -> Result<Vec<Chunk>> {
        match self.writer.push(offset, data).await {
            Ok(ready) => Ok(chunks(ready)),
            Err(e) => Err(self.error(e)),
        }
    }

    async fn finish(self: Box<Self>) -> Result<Vec<Chunk>> {
        let location = self.location.clone();
        let finished = self
            .writer
            .finish()
            .await
            .map_err(|source| Error::Qcow2Write {
                address: location,
                source,
            })?;
        // Cluster 0 last: for S3 it is in part 1, which goes up last anyway.
        let mut out = chunks(finished.tail_chunks);
        out.extend(chunks(vec![finished.header_chunk]));
        Ok(out)
    }
}
