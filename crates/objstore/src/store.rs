//! One interface to a store of objects, whatever keeps them: an S3 bucket
//! ([`crate::S3Bucket`]) or a local directory ([`crate::LocalDir`]).
//!
//! A store is bound to its namespace (a bucket, a directory); objects in it are named by keys,
//! `/`-separated, as in S3. Callers hold stores as `Arc<dyn ObjectStore>` and never ask
//! which kind they have: every implementation runs the same conformance suite
//! (`tests/integration/conformance.rs`).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;

use crate::error::Result;
use crate::read::RangeRead;
use crate::s3::{ListedObject, ObjectInfo, PutOptions, DEFAULT_PARTS_IN_FLIGHT, DEFAULT_PART_SIZE};
use crate::write::{ObjectWriter, WrittenObject};

/// Default time a writer keeps trying to remove what it started (abort a multipart upload)
/// when the store cannot be reached, before it gives up and names what is left behind.
pub const DEFAULT_CLEANUP_PATIENCE: Duration = Duration::from_secs(60);

/// How [`ObjectStore::writer`] writes a new object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteOptions {
    /// Metadata, content type and overwrite policy. More metadata can be added before the
    /// end with [`ObjectWriter::set_metadata`].
    pub put: PutOptions,
    /// Smallest part size of stores that upload in parts; raised when `expected_size` needs
    /// it.
    pub part_size: usize,
    /// Part uploads in flight, for stores that upload in parts.
    pub parts_in_flight: usize,
    /// About how large the object will be, if known: parts are sized so that it fits.
    pub expected_size: Option<u64>,
    /// The object is `size` bytes, and every range never written reads as zeros (a local file
    /// keeps it as a hole; an uploaded object gets the zeros). Without it, the writes must
    /// cover the object.
    pub sparse_size: Option<u64>,
    /// Flush a local file to stable storage before it appears under its name (an S3 object
    /// is durable once its upload completes).
    pub sync: bool,
    /// How long to keep trying to clean up after a failure when the store cannot be reached.
    pub cleanup_patience: Duration,
}

impl Default for WriteOptions {
    fn default() -> Self {
        Self {
            put: PutOptions::default(),
            part_size: DEFAULT_PART_SIZE,
            parts_in_flight: DEFAULT_PARTS_IN_FLIGHT,
            expected_size: None,
            sparse_size: None,
            sync: true,
            cleanup_patience: DEFAULT_CLEANUP_PATIENCE,
        }
    }
}

/// The objects under a prefix, one level deep: see [`ObjectStore::list_dir`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DirListing {
    /// The objects directly under the prefix.
    pub objects: Vec<ListedObject>,
    /// The deeper prefixes ("directories"), each the full prefix ending in `/`.
    pub prefixes: Vec<String>,
}

/// A store of objects named by keys: an S3 bucket or a local directory.
///
/// # Contract (checked by the conformance suite for every implementation)
/// - A missing object is [`crate::Error::NotFound`] naming it as [`ObjectStore::describe`]
///   does, from `head`, `open` and `get`; `exists` says `false`; `delete` succeeds.
/// - Without `overwrite`, `put` and `writer` refuse an existing object with
///   [`crate::Error::AlreadyExists`] and leave it as it was.
/// - An object written by `writer` appears whole on `finish`, with its metadata, or not at
///   all; unfinished writes are never listed.
/// - Metadata keys are lower case (S3 lower-cases them); values are what was given.
#[async_trait]
pub trait ObjectStore: Send + Sync + std::fmt::Debug {
    /// The object `key`'s name for messages: `s3://bucket/key` or a path.
    fn describe(&self, key: &str) -> String;

    /// Size, ETag, metadata and time of last change of `key`.
    async fn head(&self, key: &str) -> Result<ObjectInfo>;

    /// Whether `key` exists. A missing bucket is an error, not `false`.
    async fn exists(&self, key: &str) -> Result<bool>;

    /// Refuses, before anything is written, what a writer for `key` would refuse:
    /// [`crate::Error::AlreadyExists`] if it exists and `overwrite` is false, and
    /// [`crate::Error::NotFound`] for a missing bucket. Nothing is created. (A local
    /// directory may be created by the caller afterwards, so it need not exist yet.)
    async fn check_new(&self, key: &str, overwrite: bool) -> Result<()>;

    /// Opens `key` for ranged reads.
    async fn open(&self, key: &str) -> Result<Arc<dyn RangeRead>>;

    /// Reads the whole of a small object `key` (a manifest, a configuration file).
    async fn get(&self, key: &str) -> Result<Bytes>;

    /// Stores a small object in one request.
    async fn put(&self, key: &str, data: Bytes, options: &PutOptions) -> Result<WrittenObject>;

    /// Deletes `key`; a missing object is no error.
    async fn delete(&self, key: &str) -> Result<()>;

    /// Every object whose key starts with `prefix`, at any depth, in no particular order.
    async fn list(&self, prefix: &str) -> Result<Vec<ListedObject>>;

    /// One level under `prefix` (which normally ends in `/`): the objects directly under it
    /// and the deeper prefixes, as S3 lists with delimiter `/`.
    async fn list_dir(&self, prefix: &str) -> Result<DirListing>;

    /// Starts writing the object `key` (see [`ObjectWriter`] for the order of writes each
    /// store takes).
    async fn writer(&self, key: &str, options: WriteOptions) -> Result<Box<dyn ObjectWriter>>;
}
