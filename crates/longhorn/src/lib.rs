//! Longhorn backup-store format and operations.
//!
//! - [`names`], [`paths`], [`target`]: validated names, the hash-sharded layout, target URLs.
//! - [`cfg`](mod@cfg): `volume.cfg`, `backup_<name>.cfg` and lock files, written
//!   byte-for-byte as Go's `json.Marshal` writes them and read as tolerantly as Go reads them.
//! - [`codec`]: block checksum, zero detection, `none`/`gzip`/`lz4` with reused state.
//! - [`driver`]: the small storage interface ([`BackupStoreDriver`]) and the local [`VfsDriver`].
//! - [`lock`]: Longhorn's lock protocol.
//! - [`ops`]: listing, inspection, restore reader, backup writer, deletion with GC, all over
//!   a [`BackupStore`].

//!
//! ```no_run
//! use std::sync::Arc;
//! use bytes::Bytes;
//! use longhorn::{BackupName, BackupOptions, BackupStore, BackupTarget, MergeWith, RestoreItem,
//!                RestoreOptions, VfsDriver, VolumeName};
//!
//! # async fn demo() -> longhorn::Result<()> {
//! let target = BackupTarget::parse("vfs:///srv/backups/")?;
//! let store = BackupStore::new(Arc::new(VfsDriver::from_target(&target)?));
//! let volume = VolumeName::new("vm-disk")?;
//!
//! // Incremental backup: only the changed 2 MiB blocks are given; the rest keeps the last
//! // backup's mapping.
//! let mut opts = BackupOptions::new(volume.clone(), BackupName::generate(), 64 << 20);
//! opts.merge = MergeWith::LastBackup;
//! let mut w = store.begin_backup(opts).await?;
//! w.put_block(0, Bytes::from(vec![1u8; 2 << 20])).await?;
//! let (stats, cfg) = w.finish().await?;
//!
//! // Restore it: pieces cover the volume in offset order.
//! let backup = BackupName::new(cfg.name.clone())?;
//! let mut r = store.open_restore(&volume, &backup, RestoreOptions::default()).await?;
//! while let Some(item) = r.next().await {
//!     match item? {
//!         RestoreItem::Data { offset, data } => { /* write data at offset */ }
//!         RestoreItem::Zero { offset, len } => { /* zero or discard */ }
//!     }
//! }
//! r.finish().await?;
//! # let _ = stats; Ok(()) }
//! ```

pub mod cfg;
pub mod codec;
pub mod driver;
pub mod error;
#[doc(hidden)]
pub mod fuzzing;
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
pub use lock::PendingLock;
pub use names::{BackupName, VolumeName};
pub use ops::{
    BackupOptions, BackupStats, BackupStore, BackupSummary, BackupWriter, BlockAssembler,
    CompressionPolicy, DedupSource, DeleteReport, InProgressBackup, InspectReport, Leftovers,
    LockEntry, MergeWith, RemoveReport, RestoreItem, RestoreOptions, RestoreReader, VerifyReport,
    VolumeListing, LATEST, LOCK_LABEL, WRITER_LABEL,
};
pub use target::{BackupTarget, BackupUrl, TargetLocation};
