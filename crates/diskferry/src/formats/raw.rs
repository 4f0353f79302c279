//! Raw, both ways: [`RawSource`] reads a raw image behind a range reader, read ahead in
//! parallel; [`RawEncoder`] writes the disk's data where it lies and leaves the holes to the
//! object writer (zeros uploaded, or holes kept in a local file).

use std::pin::Pin;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use futures::{stream, Stream, StreamExt};
use objstore::RangeRead;

use super::{Chunk, Encoder};
use crate::sources::{DEFAULT_READS_IN_FLIGHT, DEFAULT_READ_SIZE};
use crate::{Extent, ObjectFormat, Result, Source};

type Chunks = Pin<Box<dyn Stream<Item = objstore::Result<(u64, Bytes)>> + Send>>;

/// Size of one read of a local file's data (qemu-img reads 2 MiB at a time too).
const LOCAL_READ_SIZE: usize = 2 << 20;
/// Reads of a local file in flight. Few: the page cache and the kernel's readahead keep a
/// local file's reads short, and data read long before they are written have left the CPU
/// caches by then, so the copy into the destination reads them from memory (8 reads of 4 MiB
/// cost 0.1–0.15 s more CPU per GiB converted than 4 of 2 MiB).
const LOCAL_READS_IN_FLIGHT: usize = 4;

/// A raw disk: every byte of the object is the disk. Chunks that are all zeros are not yielded
/// (they read as zeros anyway), so sinks never write them; ranges known to be holes (a sparse
/// local file's, see [`RawSource::with_segments`]) are not even read.
pub struct RawSource {
    object: Arc<dyn RangeRead>,
    chunks: Chunks,
}

impl std::fmt::Debug for RawSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawSource")
            .field("object", &self.object.describe())
            .finish()
    }
}

impl RawSource {
    /// Reads `object` with the default read size and reads in flight.
    pub fn new(object: Arc<dyn RangeRead>) -> RawSource {
        RawSource::with_reads(object, DEFAULT_READ_SIZE, DEFAULT_READS_IN_FLIGHT)
    }

    /// Reads `object` in `read_size` pieces, `in_flight` at a time (memory: their product).
    pub fn with_reads(object: Arc<dyn RangeRead>, read_size: usize, in_flight: usize) -> RawSource {
        let chunks =
            objstore::ranges(object.clone(), 0, object.size(), read_size, in_flight).boxed();
        RawSource { object, chunks }
    }

    /// Reads only the `segments` of `object` (sorted, non-overlapping `(start, end)` ranges:
    /// a sparse local file's data found with `SEEK_DATA`), `LOCAL_READ_SIZE` at a time,
    /// `LOCAL_READS_IN_FLIGHT` in flight; the rest reads as zeros.
    pub fn with_segments(object: Arc<dyn RangeRead>, segments: Vec<(u64, u64)>) -> RawSource {
        let reader = object.clone();
        let pieces = segments.into_iter().flat_map(|(start, end)| {
            let step = LOCAL_READ_SIZE as u64;
            (start..end)
                .step_by(LOCAL_READ_SIZE)
                .map(move |offset| (offset, (end - offset).min(step) as usize))
        });
        let chunks = stream::iter(pieces)
            .map(move |(offset, len)| {
                let reader = reader.clone();
                async move { Ok((offset, reader.read_at(offset, len).await?)) }
            })
            .buffered(LOCAL_READS_IN_FLIGHT)
            .boxed();
        RawSource { object, chunks }
    }
}

#[async_trait]
impl Source for RawSource {
    fn describe(&self) -> String {
        self.object.describe()
    }

    fn format(&self) -> &'static str {
        "raw"
    }

    fn size(&self) -> u64 {
        self.object.size()
    }

    async fn next_extent(&mut self) -> Result<Option<Extent>> {
        while let Some(item) = self.chunks.next().await {
            let (offset, data) = item?;
            if !crate::is_zero(&data) {
                return Ok(Some(Extent::Data { offset, data }));
            }
        }
        Ok(None)
    }
}

/// Writes a disk as a raw object: the object is the disk.
#[derive(Debug)]
pub struct RawEncoder {
    size: u64,
}

impl RawEncoder {
    /// A raw object of a `size`-byte disk.
    pub fn new(size: u64) -> RawEncoder {
        RawEncoder { size }
    }
}

#[async_trait]
impl Encoder for RawEncoder {
    fn format(&self) -> ObjectFormat {
        ObjectFormat::Raw
    }

    fn estimated_size(&self) -> u64 {
        self.size
    }

    fn sparse_size(&self) -> Option<u64> {
        Some(self.size)
    }

    async fn push(&mut self, offset: u64, data: Bytes) -> Result<Vec<Chunk>> {
        Ok(vec![Chunk { offset, data }])
    }

    async fn finish(self: Box<Self>) -> Result<Vec<Chunk>> {
        Ok(Vec::new())
    }
}
