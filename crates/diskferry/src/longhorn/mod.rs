//! Longhorn backup stores: back up any disk into a Longhorn backup volume, restore a backup
//! into an RBD image, an S3 object or a local file (qcow2, raw or raw.zst), list, inspect and
//! delete backups.
//!
//! The format lives in the `longhorn` crate; this module plugs it into the pipeline:
//! [`StoreDriver`] (a `BackupStoreDriver` over an [`objstore::ObjectStore`]),
//! [`LonghornSink`] (extents → blocks → backup writer), [`LonghornSource`] (restore reader →
//! extents) and the restore's digest check. The jobs are in [`crate::ops::longhorn`].
//!
//! Restores open their sink as every job does ([`open_sink`](crate::sinks::open_sink)): an
//! RBD image, or an object, S3 or a local file (a raw file keeps the backup's holes as
//! holes), aborted on failure.
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
mod sink;
mod source;
mod store;

use std::sync::Arc;

use objstore::{S3Bucket, S3Config, S3Store};

pub use self::sink::{BackupOutcome, LonghornSink};
pub use self::source::LonghornSource;
pub use self::store::{StoreDriver, DELETE_CONCURRENCY, ENV_LONGHORN_ENDPOINTS};

pub use longhorn::{
    BackupName, BackupStore, BackupSummary, BackupTarget, BlockSize, Compression, InspectReport,
    RemoveReport, TargetLocation, VolumeListing, VolumeName, LATEST,
};

use crate::{Context, Result};

/// Backup label holding the content digest of the backed-up disk (full backups).
pub const DIGEST_LABEL: &str = "diskferry.io/digest";
/// Backup label naming the digest's algorithm.
pub const DIGEST_ALGORITHM_LABEL: &str = "diskferry.io/digest-algorithm";
/// Backup label holding the virtual size in bytes of the backed-up disk, which
/// [`DIGEST_LABEL`] covers (the volume size is this rounded up to a block, or larger).
pub const DISK_SIZE_LABEL: &str = "diskferry.io/disk-size";

/// Backup label naming the RBD snapshot a backup was read from, as `POOL@SNAPSHOT_ID` (RBD
/// snapshot ids come from the pool's sequence and are never reused). An incremental backup
/// `--since SNAP` checks that SNAP is still that snapshot: the name alone could belong to a
/// snapshot recreated since, or to another image's, and merging with the wrong base stores a
/// wrong disk without any error.
pub const SOURCE_SNAPSHOT_LABEL: &str = "diskferry.io/rbd-snapshot";

/// Opens the backup store of `target` (`s3://BUCKET@REGION/PATH/` or `vfs:///DIR/`).
///
/// An S3 target is reached with the context's S3 settings, the one S3 configuration of a job
/// (endpoint, keys, CA bundle: [`Context::s3_config`]), in the target's region when it names
/// one: Longhorn takes `@REGION` as the bucket's region, over `AWS_REGION` and the profile.
pub async fn open_store(ctx: &Context, target: &BackupTarget) -> Result<BackupStore> {
    let driver: Arc<dyn longhorn::BackupStoreDriver> = match &target.location {
        TargetLocation::S3 { bucket, region } => {
            let store = match regional_config(ctx.s3_config(), region.as_deref()) {
                Some(config) => S3Store::from_config(&config)?,
                None => ctx.s3().await?.clone(),
            };
            let bucket = Arc::new(S3Bucket::new(store, bucket.clone()));
            Arc::new(StoreDriver::new(bucket, target.root_prefix.clone()))
        }
        TargetLocation::Vfs { .. } => {
            Arc::new(longhorn::VfsDriver::from_target(target).map_err(longhorn::Error::from)?)
        }
    };
    // Every lock this process takes names it, so that the next run, or `diskferry cleanup`,
    // can remove the lock of a run killed while it held one (a restore leaves nothing else
    // that would name it) instead of waiting for it to expire.
    let locks = longhorn::lock::LockOptions {
        writer: Some(objstore::Writer::current().to_string()),
        ..longhorn::lock::LockOptions::default()
    };
    Ok(BackupStore::new(driver).with_lock_options(locks))
}

/// The S3 settings for a target in `region` (its `@REGION`): `base` in that region, or `None`
/// when `base` itself serves (no region named, or the same one).
fn regional_config(base: &S3Config, region: Option<&str>) -> Option<S3Config> {
    let region = region.filter(|r| *r != base.region)?;
    Some(base.clone().with_region(Some(region.to_owned())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_target_region_wins_over_the_configured_one() {
        let base = S3Config::from_lookup(|name| {
            (name == objstore::ENV_REGION).then(|| "from-env".to_owned())
        });
        assert_eq!(base.region, "from-env");
        let config = regional_config(&base, Some("eu-west-3")).unwrap();
        assert_eq!(config.region, "eu-west-3");
        assert_eq!(config.endpoint, base.endpoint);
        assert!(regional_config(&base, Some("from-env")).is_none());
        assert!(regional_config(&base, None).is_none());
    }
}
