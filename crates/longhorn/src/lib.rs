//! Longhorn backup-store format and operations.
//!
//! - [`names`], [`paths`], [`target`]: validated names, the hash-sharded layout, target URLs.
//! - [`cfg`]: `volume.cfg`, `backup_<name>.cfg` and lock files, written byte-for-byte as Go's
//!   `json.Marshal` writes them and read as tolerantly as Go reads them.
//! - [`codec`]: block checksum, zero detection, `none`/`gzip`/`lz4` with reused state.
//! - [`driver`]: the small storage interface ([`BackupStoreDriver`]) and the local [`VfsDriver`].
//! - [`lock`]: Longhorn's lock protocol.
//! - [`ops`]: listing, inspection, restore reader, backup writer, deletion with GC, all over
//!   a [`BackupStore`].

pub mod cfg;
pub mod codec;
pub mod driver;
pub mod error;
pub mod gojson;
pub mod lock;
pub mod names;
pub mod ops;
pub mod paths;
pub mod target;
pub mod timefmt;

pub use cfg::{BackupConfig, BackupMode, BlockMapping, BlockSize, LockType, VolumeConfig};
pub use codec::{BlockDecoder, BlockEncoder, Compression, EncodedBlock};
pub use driver::{BackupStoreDriver, ObjectInfo, VfsDriver};
pub use error::{DriverError, Error, Result};
pub use names::{BackupName, VolumeName};
pub use ops::{
    BackupOptions, BackupStats, BackupStore, BackupWriter, CompressionPolicy, DeleteReport,
    MergeWith, RestoreItem, RestoreOptions, RestoreReader,
};
pub use target::{BackupTarget, BackupUrl, TargetLocation};
