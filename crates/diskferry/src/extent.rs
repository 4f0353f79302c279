//! What flows from a source to a sink.

use bytes::Bytes;

/// A piece of the disk, in increasing offset order. Ranges a source never yields read as
/// zeros (holes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Extent {
    /// Data at an offset.
    Data {
        /// Byte offset in the disk.
        offset: u64,
        /// The bytes.
        data: Bytes,
    },
    /// A range that reads as zeros and that the source marks explicitly (a discarded range
    /// of an RBD diff); sinks that start empty may ignore it.
    Zero {
        /// Byte offset in the disk.
        offset: u64,
        /// Length in bytes.
        len: u64,
    },
}

impl Extent {
    /// Offset of the first byte.
    pub fn offset(&self) -> u64 {
        match self {
            Extent::Data { offset, .. } | Extent::Zero { offset, .. } => *offset,
        }
    }

    /// Length in bytes.
    pub fn len(&self) -> u64 {
        match self {
            Extent::Data { data, .. } => data.len() as u64,
            Extent::Zero { len, .. } => *len,
        }
    }

    /// Whether the extent is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Offset one past the last byte.
    pub fn end(&self) -> u64 {
        self.offset() + self.len()
    }
}

/// Whether every byte is zero (the qcow2 writer's check, shared).
pub use qcow2::writer::is_zero;
