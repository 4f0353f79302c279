//! The formats a disk is kept in as an object: qcow2, raw and raw.zst, each in both
//! directions in one module: an [`Encoder`] that turns a disk's extents into the object's
//! bytes (in front of an [`objstore::ObjectWriter`], see [`crate::sinks::ObjectSink`]), and a
//! [`crate::Source`] that reads the object back as extents (see
//! [`crate::sources::open_source`]).

mod qcow2;
mod raw;
pub mod raw_zst;

use async_trait::async_trait;
use bytes::Bytes;

pub use self::qcow2::{
    Qcow2Encoder, Qcow2Source, QCOW2_READ_AHEAD_BYTES, QCOW2_REMOTE_READ_AHEAD_BYTES,
    QCOW2_REMOTE_READ_SIZE,
};
pub use self::raw::{RawEncoder, RawSource};
pub use self::raw_zst::{RawZstEncoder, ZstdRawSource};

use crate::{ObjectFormat, Result};

/// Object bytes to store at an offset of the object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk {
    /// Where in the object the bytes go.
    pub offset: u64,
    /// The bytes.
    pub data: Bytes,
}

/// Turns a disk into the bytes of one object in one format.
///
/// The disk's data comes in increasing offset order through [`Encoder::push`]; what lies
/// between two pushes reads as zeros. Each call returns the object bytes ready so far, to be
/// written where their [`Chunk::offset`] says, in any order the object writer takes (see
/// [`objstore::ObjectWriter`]): qcow2's header, at offset 0, comes last.
#[async_trait]
pub trait Encoder: Send + std::fmt::Debug {
    /// The format written.
    fn format(&self) -> ObjectFormat;

    /// An upper estimate of the object's size, to size upload parts.
    fn estimated_size(&self) -> u64;

    /// The object's size when the encoder leaves the disk's holes to the object writer (raw:
    /// the object is the disk, and the writer fills the holes with zeros); `None` when the
    /// encoder writes every byte of the object.
    fn sparse_size(&self) -> Option<u64> {
        None
    }

    /// The bytes that open the object before any data (raw.zst's header frame).
    fn start(&mut self) -> Vec<Chunk> {
        Vec::new()
    }

    /// Encodes `data`, the disk's bytes at `offset`.
    async fn push(&mut self, offset: u64, data: Bytes) -> Result<Vec<Chunk>>;

    /// Ends the disk; returns the rest of the object.
    async fn finish(self: Box<Self>) -> Result<Vec<Chunk>>;
}
