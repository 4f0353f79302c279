//! A raw image behind a range reader, read ahead in parallel.

use std::pin::Pin;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use futures::{Stream, StreamExt};
use objstore::RangeRead;

use super::{DEFAULT_READS_IN_FLIGHT, DEFAULT_READ_SIZE};
use crate::{Extent, Result, Source};

type Chunks = Pin<Box<dyn Stream<Item = objstore::Result<(u64, Bytes)>> + Send>>;

/// A raw disk: every byte of the object is the disk. Chunks that are all zeros are not yielded
/// (they read as zeros anyway), so sinks never write them.
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
