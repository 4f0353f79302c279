//! Longhorn backup stores: back up any disk into a Longhorn backup volume, restore a backup
//! into an RBD image, an S3 object or a local file (qcow2, raw or raw.zst), list, inspect and
//! delete backups.
//!
//! The format lives in the `longhorn` crate; this module plugs it into the pipeline:
//! [`S3Driver`] (a `BackupStoreDriver` over [`objstore::S3Store`]), [`LonghornSink`] (extents
//! → blocks → backup writer), [`LonghornSource`] (restore reader → extents) and the restore's
//! digest check. The jobs are in [`crate::ops::longhorn`].
//!
//! Restores write RBD images through [`RbdSink`](crate::sinks::RbdSink), local raw files
//! through [`RawFileSink`] (sparse: holes are never written), and S3 objects and local
//! qcow2 / raw.zst files through [`ObjectSink`](crate::sinks::ObjectSink) (an S3 multipart
//! upload or a temporary file, aborted on failure).
//!
//! The pipeline's content digest of a full backup is recorded as the backup labels
//! [`DIGEST_LABEL`] and [`DIGEST_ALGORITHM_LABEL`], with the size of the disk it covers as
//! [`DISK_SIZE_LABEL`] (Longhorn keeps labels as an opaque string map and shows them, so
//! extra keys are harmless); a restore checks it. Incremental backups read only the changed
//! ranges, so they record no digest.
//!
//! Sizes, as Longhorn has them: `volume.cfg` records one size per backup volume, always a
//! multiple of the block size (Longhorn's restore refuses anything else), and every backup
//! of the volume restores at that size, zero-padded beyond its own data. So a backup records
//! the disk size rounded up to a block (33 MiB + 4 KiB becomes 34 MiB; a volume keeps a
//! larger size it had), and a restore writes a disk of the volume's size: the backed-up
//! disk, then zeros. The digest check covers exactly that: the recorded digest over the
//! first [`DISK_SIZE_LABEL`] bytes, and zeros after them.

pub(crate) mod check;
mod file;
mod s3;
mod sink;
mod source;

use std::sync::Arc;

pub use self::file::{RawFileSink, FILE_WRITES_IN_FLIGHT};
// The jobs' old home; `crate::ops::longhorn` is theirs now.
pub use self::s3::{s3_config, S3Driver, DELETE_CONCURRENCY, ENV_LONGHORN_ENDPOINTS};
pub use self::sink::{BackupOutcome, BlockFill, LonghornSink, OutcomeSlot, RbdFill};
pub use self::source::LonghornSource;
pub use crate::ops::longhorn::{
    backup, inspect, list, remove, restore, restore_format, BackupJob, BackupReport, RestoreJob,
    RestoreReport, DEFAULT_BACKUP_IN_FLIGHT, DEFAULT_RESTORE_IN_FLIGHT,
};

pub use longhorn::{
    BackupStore, BackupSummary, BackupTarget, BlockSize, Compression, InspectReport, RemoveReport,
    TargetLocation, VolumeListing, LATEST,
};

use crate::Result;

/// Backup label holding the content digest of the backed-up disk (full backups).
pub const DIGEST_LABEL: &str = "diskferry.io/digest";
/// Backup label naming the digest's algorithm.
pub const DIGEST_ALGORITHM_LABEL: &str = "diskferry.io/digest-algorithm";
/// Backup label holding the virtual size in bytes of the backed-up disk, which
/// [`DIGEST_LABEL`] covers (the volume size is this rounded up to a block, or larger).
pub const DISK_SIZE_LABEL: &str = "diskferry.io/disk-size";

/// Opens a backup target (`s3://BUCKET@REGION/PATH/` or `vfs:///DIR/`). `s3` overrides the
/// S3 settings; by default they come from the environment as Longhorn reads it
/// ([`s3_config`]).
pub fn open_store(
    url: &str,
    s3: Option<objstore::S3Config>,
) -> Result<(BackupTarget, BackupStore)> {
    let target = BackupTarget::parse(url)?;
    let driver: Arc<dyn longhorn::BackupStoreDriver> = match &target.location {
        TargetLocation::S3 { bucket, region } => {
            let config =
                s3.unwrap_or_else(|| s3_config(|name| std::env::var(name).ok(), region.as_deref()));
            let store = objstore::S3Store::from_config(&config)?;
            Arc::new(S3Driver::new(
                store,
                bucket.clone(),
                target.root_prefix.clone(),
            ))
        }
        TargetLocation::Vfs { .. } => {
            Arc::new(longhorn::VfsDriver::from_target(&target).map_err(longhorn::Error::from)?)
        }
    };
    Ok((target, BackupStore::new(driver)))
}
