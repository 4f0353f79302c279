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

impl Qcow2Source {
    /// Opens and validates the image (header, L1 table) with default read options.
    pub async fn open(object: Arc<dyn RangeRead>) -> Result<Qcow2Source> {
        Qcow2Source::open_with(object, ReadOptions::default()).await
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
