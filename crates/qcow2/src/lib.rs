//! Pure qcow2: a validating reader and a streaming, metadata-last writer, with no I/O of their
//! own beyond small traits. Conversions are diskferry's jobs, through its one pipeline.
//!
//! # Reading
//! Implement [`ReadAt`] for the object (local files: [`FileReadAt`]; memory: [`MemReadAt`];
//! other crates: S3, HTTP), then:
//!
//! ```no_run
//! # async fn f(reader: std::sync::Arc<dyn qcow2::ReadAt>) -> Result<(), qcow2::ReadError> {
//! let image = qcow2::Qcow2Image::open(reader).await?;
//! let mut data = image.data_reader(qcow2::ReadOptions::default());
//! while let Some(chunk) = data.next_chunk().await? {
//!     // chunk.guest_offset, chunk.data: decoded guest bytes; uncovered ranges are zeros.
//! }
//! # Ok(()) }
//! ```
//!
//! [`Qcow2Image::extents`] walks the mapping as guest-ordered [`Extent`]s (data, compressed,
//! zero, unallocated) without reading any data. Every size and offset from the file is checked
//! before use; backing files, external data files, encryption, extended L2 and dirty or corrupt
//! images are refused with a specific [`ReadError`].
//!
//! # Writing
//! ```no_run
//! # async fn f() -> Result<(), qcow2::WriteError> {
//! use bytes::Bytes;
//! let mut w = qcow2::Qcow2Writer::new(1 << 30, qcow2::WriterOptions::default())?;
//! for chunk in w.push(0, Bytes::from(vec![1u8; 1 << 20])).await? {
//!     // append chunk.data at chunk.file_offset (contiguous, increasing, from one cluster)
//! }
//! let done = w.finish().await?;
//! // write done.tail_chunks in order, then done.header_chunk at offset 0, last.
//! # Ok(()) }
//! ```

#![deny(unsafe_code)]

pub mod codec;
pub mod error;
pub mod format;
pub mod fuzzing;
pub mod header;
pub mod io;
pub mod mapping;
pub mod reader;
pub mod writer;

pub use codec::Codec;
pub use error::{ReadError, WriteError};
pub use header::{CompressionType, Header};
pub use io::{FileReadAt, MemReadAt, ReadAt};
pub use mapping::{Extent, ExtentKind, ExtentWalker};
pub use reader::{DataChunk, DataReader, Qcow2Image, ReadOptions};
pub use writer::{Chunk, Finished, Qcow2Writer, WriterOptions};
