//! The positional writer trait shared by S3 multipart uploads and local files.

use async_trait::async_trait;
use bytes::Bytes;

use crate::error::Result;

/// What a finished write produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WrittenObject {
    /// Where it is: `s3://bucket/key` or a path.
    pub location: String,
    /// Its size in bytes, as the store reports it after the write.
    pub size: u64,
    /// Its ETag (S3 only; from HeadObject, since RGW's CompleteMultipartUpload answers with an
    /// empty one).
    pub etag: Option<String>,
}

/// Writes an object as chunks at known offsets, then makes it appear whole on
/// [`ObjectWriter::finish`], or leaves nothing behind on [`ObjectWriter::abort`].
///
/// # Contract
/// - The writes cover `[0, size)` exactly once: no overlaps and, when finished, no gaps. The
///   object's size is the end of the furthest write.
/// - Implementations may restrict the order. [`crate::S3Writer`] takes writes inside its first
///   part (`[0, part_size)`) in any order and at any time, but everything from `part_size` on
///   must arrive in increasing offset order without gaps. This fits the qcow2 streaming writer:
///   data from one cluster on, then the metadata tail, then the header at offset 0 last.
///   [`crate::LocalFileWriter`] takes any order.
/// - `write_at` may wait (backpressure) until earlier data has been stored.
/// - The object is visible under its name only after `finish` returns `Ok`. If `finish` fails,
///   the writer has already cleaned up.
/// - Dropping a writer without `finish` or `abort` cleans up on a best-effort basis (a local
///   temporary file is removed at once; an S3 upload is aborted from a background task if a
///   Tokio runtime is running). Call `abort` explicitly on error paths to know it happened.
/// - Metadata given when the writer was made is stored with the object; metadata known only
///   at the end (a digest of what was written) is added with [`ObjectWriter::set_metadata`]
///   before `finish`, and the object appears with all of it (see each writer for how).
#[async_trait]
pub trait ObjectWriter: Send + std::fmt::Debug {
    /// The destination's name for messages.
    fn describe(&self) -> String;

    /// Stores `data` at `offset`. Errors if the write breaks the contract above, or if an
    /// earlier background upload failed.
    async fn write_at(&mut self, offset: u64, data: Bytes) -> Result<()>;

    /// Records `key = value` with the object when it is finished, replacing a value given
    /// for `key` before (at creation or by an earlier call).
    fn set_metadata(&mut self, key: &str, value: &str);

    /// The size of the parts the object is uploaded in, for writers that upload in parts
    /// (S3); `None` for the others.
    fn part_size(&self) -> Option<usize> {
        None
    }

    /// Checks that `[0, size)` was covered, stores the rest and makes the object appear.
    async fn finish(self: Box<Self>) -> Result<WrittenObject>;

    /// Discards everything written; the destination is left as it was.
    async fn abort(self: Box<Self>) -> Result<()>;
}
