//! Error types of the crate: every variant names the input and the problem.

use std::path::PathBuf;

/// A storage-driver failure.
#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    /// The object or file does not exist.
    #[error("{path}: not found")]
    NotFound {
        /// Driver-relative path.
        path: String,
    },
    /// A path given to the driver is not a clean relative path.
    #[error("{path:?}: invalid store path: {reason}")]
    InvalidPath {
        /// The offending path.
        path: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A local I/O error.
    #[error("{op} {path}: {source}")]
    Io {
        /// The operation (get, put, list, ...).
        op: &'static str,
        /// The local path.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// Any other backend failure (for drivers over remote object stores).
    #[error("{op} {path}: {source}")]
    Backend {
        /// The operation (get, put, list, ...).
        op: &'static str,
        /// Driver-relative path.
        path: String,
        /// The underlying error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl DriverError {
    /// Whether this error means "the object does not exist".
    pub fn is_not_found(&self) -> bool {
        matches!(self, DriverError::NotFound { .. })
    }
}

/// Every error of the crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A volume or backup name is not acceptable.
    #[error("invalid {kind} name {name:?}: {reason}")]
    InvalidName {
        /// "volume", "backup" or "lock".
        kind: &'static str,
        /// The name as given.
        name: String,
        /// Why it is refused.
        reason: &'static str,
    },
    /// A backup target URL is not acceptable.
    #[error("invalid backup target {url:?}: {reason}")]
    InvalidTarget {
        /// The URL as given.
        url: String,
        /// Why it is refused.
        reason: String,
    },
    /// A cfg file is not valid JSON of the expected shape.
    #[error("{path}: {reason}")]
    Json {
        /// The file that failed to parse.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// A cfg file parsed but its content is not acceptable.
    #[error("{path}: invalid {field}: {reason}")]
    InvalidConfig {
        /// The file.
        path: String,
        /// The JSON field at fault.
        field: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// A compression method that Longhorn does not know.
    #[error("unsupported compression method {0:?} (expected none, gzip or lz4)")]
    UnsupportedCompression(String),
    /// A block size that this crate does not accept.
    #[error("invalid block size {value:?}: {reason}")]
    InvalidBlockSize {
        /// The value as given.
        value: String,
        /// Why it is refused.
        reason: &'static str,
    },
    /// A block failed to decompress.
    #[error("block {checksum} at offset {offset}: {method} decompression failed: {reason}")]
    Decompress {
        /// Block checksum (its file name).
        checksum: String,
        /// Volume offset of the block.
        offset: u64,
        /// Compression method tried.
        method: &'static str,
        /// What went wrong.
        reason: String,
    },
    /// A block decompressed to the wrong content.
    #[error("block {checksum} at offset {offset}: checksum verification failed (content hashes to {actual})")]
    ChecksumMismatch {
        /// Expected checksum (the block's name).
        checksum: String,
        /// Volume offset of the block.
        offset: u64,
        /// Checksum of the decompressed data.
        actual: String,
    },
    /// A stored block could not be read.
    #[error("block {checksum} at offset {offset}: {source}")]
    BlockRead {
        /// Block checksum (its file name).
        checksum: String,
        /// Volume offset of the block.
        offset: u64,
        /// The driver error.
        #[source]
        source: DriverError,
    },
    /// A block could not be stored.
    #[error("block {checksum} at offset {offset}: upload failed: {source}")]
    BlockWrite {
        /// Block checksum (its file name).
        checksum: String,
        /// Volume offset of the block.
        offset: u64,
        /// The driver error.
        #[source]
        source: DriverError,
    },
    /// A block given to the writer is not usable.
    #[error("block at offset {offset}: {reason}")]
    BadBlock {
        /// Volume offset of the block.
        offset: u64,
        /// What is wrong.
        reason: String,
    },
    /// The backup is still being written (`CreatedTime` is empty).
    #[error("backup {backup} of volume {volume} is in progress (CreatedTime is empty)")]
    BackupInProgress {
        /// Volume name.
        volume: String,
        /// Backup name.
        backup: String,
    },
    /// Another operation holds a conflicting lock.
    #[error("volume {volume}: failed to acquire lock {lock} type {lock_type}: conflicting lock {other} type {other_type} is active, please try again later")]
    LockConflict {
        /// Volume name.
        volume: String,
        /// Our lock file name.
        lock: String,
        /// Our lock type.
        lock_type: u8,
        /// The conflicting lock file name.
        other: String,
        /// Its type.
        other_type: u8,
    },
    /// The requested compression differs from the volume's sticky method.
    #[error("volume {volume} uses compression {volume_method}; requested {requested} (the method is fixed by the first backup)")]
    CompressionMismatch {
        /// Volume name.
        volume: String,
        /// The volume's method.
        volume_method: String,
        /// The requested method.
        requested: String,
    },
    /// The operation needs something the store does not have or refuses.
    #[error("volume {volume}: {reason}")]
    Refused {
        /// Volume name.
        volume: String,
        /// Why.
        reason: String,
    },
    /// A storage-driver failure.
    #[error(transparent)]
    Driver(#[from] DriverError),
    /// A blocking worker task panicked or was cancelled.
    #[error("worker task failed: {0}")]
    Task(String),
}

/// Crate result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
