//! Longhorn's backup-store driver over any [`ObjectStore`]: an S3 bucket ([`objstore::S3Bucket`])
//! with the target's path as key prefix, as Longhorn's S3 driver maps it.
//!
//! The mapping is Longhorn's (see [`longhorn::driver`]): key = `<prefix>/<path>`, `get` and
//! `put` (overwriting) one request each, `stat` the store's `head` (its `modified` orders
//! locks), `list` one delimiter listing, `list_tree` one flat listing, `exists` one listing
//! of the key itself (see [`StoreDriver`]), `delete` one request per object, several at once.

use std::sync::Arc;
use std::time::SystemTime;

use async_trait::async_trait;
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use longhorn::driver::check_store_path;
use longhorn::{BackupStoreDriver, DriverError, ObjectInfo};
use objstore::{ObjectStore, PutOptions};

/// Longhorn's endpoint variable (`AWS_ENDPOINTS` in the backup-target secret). The library
/// does not read it (a job's S3 settings are its [`Context`](crate::Context)'s); the
/// `diskferry` binary's Longhorn commands take it as the endpoint when the flags, the AWS
/// variables and the profile name none, as a Longhorn user has it set.
pub const ENV_LONGHORN_ENDPOINTS: &str = "AWS_ENDPOINTS";

/// Deletions in flight at once (one DeleteObject each: RGW Pacific's DeleteObjects needs a
/// Content-MD5 the SDK only sends with flexible checksums, which Pacific rejects).
pub const DELETE_CONCURRENCY: usize = 16;

/// A Longhorn backup store in an object store, under a key prefix.
///
/// `exists` lists the key as a prefix instead of asking for the object's head: one request
/// whether or not the object is there, where a HeadObject of a missing key takes a second
/// one (HeadBucket, to tell a missing bucket from a missing key, which a HEAD response
/// cannot say). The backup checks ask it for a backup that does not exist yet.
#[derive(Debug, Clone)]
pub struct StoreDriver {
    store: Arc<dyn ObjectStore>,
    prefix: String,
}

fn backend(op: &'static str, path: &str, e: objstore::Error) -> DriverError {
    DriverError::Backend {
        op,
        path: path.to_owned(),
        source: Box::new(e),
    }
}

impl StoreDriver {
    /// A driver for the objects of `store`, with `backupstore/` under `prefix` (the target's
    /// root prefix, possibly empty).
    pub fn new(store: Arc<dyn ObjectStore>, prefix: impl Into<String>) -> Self {
        Self {
            store,
            prefix: prefix.into().trim_matches('/').to_owned(),
        }
    }

    /// The key prefix of the objects under the directory `dir` (ending in `/`).
    fn dir_prefix(&self, dir: &str) -> Result<String, DriverError> {
        Ok(format!("{}/", self.key(dir)?.trim_end_matches('/')))
    }

    fn key(&self, path: &str) -> Result<String, DriverError> {
        check_store_path(path)?;
        Ok(if self.prefix.is_empty() {
            path.to_owned()
        } else {
            format!("{}/{}", self.prefix, path)
        })
    }
}

#[async_trait]
impl BackupStoreDriver for StoreDriver {
    async fn get(&self, path: &str) -> Result<Bytes, DriverError> {
        match self.store.get(&self.key(path)?).await {
            Ok(b) => Ok(b),
            Err(e) if e.is_not_found() => Err(DriverError::NotFound {
                path: path.to_owned(),
            }),
            Err(e) => Err(backend("get", path, e)),
        }
    }

    async fn put(&self, path: &str, data: Bytes) -> Result<(), DriverError> {
        let opts = PutOptions {
            overwrite: true,
            ..PutOptions::default()
        };
        self.store
            .put(&self.key(path)?, data, &opts)
            .await
            .map(|_| ())
            .map_err(|e| backend("put", path, e))
    }

    async fn stat(&self, path: &str) -> Result<Option<ObjectInfo>, DriverError> {
        match self.store.head(&self.key(path)?).await {
            Ok(info) => Ok(Some(ObjectInfo {
                size: info.size,
                // Every store here records it; a lock without a time counts as new.
                modified: info.modified.unwrap_or_else(SystemTime::now),
            })),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(backend("stat", path, e)),
        }
    }

    async fn exists(&self, path: &str) -> Result<bool, DriverError> {
        let key = self.key(path)?;
        match self.store.list_dir(&key).await {
            Ok(listing) => Ok(listing.objects.iter().any(|o| o.key == key)),
            // A missing bucket holds nothing, as its HeadObject said before.
            Err(e) if e.is_not_found() => Ok(false),
            Err(e) => Err(backend("stat", path, e)),
        }
    }

    async fn list(&self, dir: &str) -> Result<Vec<String>, DriverError> {
        let prefix = self.dir_prefix(dir)?;
        let listing = self
            .store
            .list_dir(&prefix)
            .await
            .map_err(|e| backend("list", dir, e))?;
        let mut names: Vec<String> = listing
            .objects
            .into_iter()
            .filter_map(|o| o.key.strip_prefix(&prefix).map(str::to_owned))
            .chain(listing.prefixes.into_iter().filter_map(|p| {
                p.strip_prefix(&prefix)
                    .map(|n| n.trim_end_matches('/').to_owned())
            }))
            .filter(|n| !n.is_empty())
            .collect();
        names.sort();
        names.dedup();
        Ok(names)
    }

    async fn list_tree(&self, dir: &str) -> Result<Option<Vec<String>>, DriverError> {
        let prefix = self.dir_prefix(dir)?;
        let objects = self
            .store
            .list(&prefix)
            .await
            .map_err(|e| backend("list", dir, e))?;
        Ok(Some(
            objects
                .into_iter()
                .filter_map(|o| o.key.strip_prefix(&prefix).map(str::to_owned))
                .collect(),
        ))
    }

    async fn delete(&self, paths: &[String]) -> Result<(), DriverError> {
        let keys = paths
            .iter()
            .map(|p| self.key(p).map(|k| (p.clone(), k)))
            .collect::<Result<Vec<_>, _>>()?;
        let store = &self.store;
        futures::stream::iter(keys)
            .map(|(path, key)| async move {
                store
                    .delete(&key)
                    .await
                    .map_err(|e| backend("delete", &path, e))
            })
            .buffer_unordered(DELETE_CONCURRENCY)
            .try_collect::<Vec<()>>()
            .await
            .map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use longhorn::lock::{LockOptions, VolumeLock};
    use longhorn::{LockType, VolumeName};
    use objstore::{
        DirListing, ListedObject, LocalDir, ObjectWriter, RangeRead, WriteOptions, WrittenObject,
    };

    use super::*;

    /// A local directory that records the name of every store operation asked of it.
    #[derive(Debug)]
    struct Counting {
        dir: LocalDir,
        calls: Mutex<Vec<&'static str>>,
    }

    impl Counting {
        fn record(&self, op: &'static str) {
            self.calls.lock().unwrap().push(op);
        }

        /// The operations since the last call, and forgets them.
        fn take(&self) -> Vec<&'static str> {
            std::mem::take(&mut *self.calls.lock().unwrap())
        }
    }

    #[async_trait]
    impl ObjectStore for Counting {
        fn describe(&self, key: &str) -> String {
            self.dir.describe(key)
        }
        async fn head(&self, key: &str) -> objstore::Result<objstore::ObjectInfo> {
            self.record("head");
            self.dir.head(key).await
        }
        async fn exists(&self, key: &str) -> objstore::Result<bool> {
            self.record("exists");
            self.dir.exists(key).await
        }
        async fn check_new(&self, key: &str, overwrite: bool) -> objstore::Result<()> {
            self.record("check_new");
            self.dir.check_new(key, overwrite).await
        }
        async fn open(&self, key: &str) -> objstore::Result<Arc<dyn RangeRead>> {
            self.record("open");
            self.dir.open(key).await
        }
        async fn get(&self, key: &str) -> objstore::Result<Bytes> {
            self.record("get");
            self.dir.get(key).await
        }
        async fn put(
            &self,
            key: &str,
            data: Bytes,
            options: &PutOptions,
        ) -> objstore::Result<WrittenObject> {
            self.record("put");
            self.dir.put(key, data, options).await
        }
        async fn delete(&self, key: &str) -> objstore::Result<()> {
            self.record("delete");
            self.dir.delete(key).await
        }
        async fn list(&self, prefix: &str) -> objstore::Result<Vec<ListedObject>> {
            self.record("list");
            self.dir.list(prefix).await
        }
        async fn list_dir(&self, prefix: &str) -> objstore::Result<DirListing> {
            self.record("list_dir");
            self.dir.list_dir(prefix).await
        }
        async fn writer(
            &self,
            key: &str,
            options: WriteOptions,
        ) -> objstore::Result<Box<dyn ObjectWriter>> {
            self.record("writer");
            self.dir.writer(key, options).await
        }
    }

    fn counting(root: &std::path::Path) -> Arc<Counting> {
        Arc::new(Counting {
            dir: LocalDir::new(root),
            calls: Mutex::new(Vec::new()),
        })
    }

    #[tokio::test]
    async fn paths_are_keys_under_the_prefix() {
        let root = tempfile::tempdir().unwrap();
        let d = StoreDriver::new(counting(root.path()), "/backups/");
        let cfg = "backupstore/volumes/47/e3/vol/volume.cfg";
        assert!(d.get(cfg).await.unwrap_err().is_not_found());
        assert_eq!(d.stat(cfg).await.unwrap(), None);
        assert!(!d.exists(cfg).await.unwrap());
        d.put(cfg, Bytes::from_static(b"one")).await.unwrap();
        d.put(cfg, Bytes::from_static(b"two!")).await.unwrap();
        let file = root.path().join("backups").join(cfg);
        assert_eq!(std::fs::read(&file).unwrap(), b"two!");
        assert_eq!(&d.get(cfg).await.unwrap()[..], b"two!");
        assert_eq!(d.size(cfg).await.unwrap(), 4);
        assert!(d.exists(cfg).await.unwrap());
        // A key that only starts like the one asked about is not it.
        assert!(!d
            .exists("backupstore/volumes/47/e3/vol/volume")
            .await
            .unwrap());
        let blk = "backupstore/volumes/47/e3/vol/blocks/ab/cd/abcd.blk";
        d.put(blk, Bytes::from_static(b"block")).await.unwrap();
        let vol = "backupstore/volumes/47/e3/vol";
        assert_eq!(d.list(vol).await.unwrap(), ["blocks", "volume.cfg"]);
        let mut tree = d.list_tree(vol).await.unwrap().unwrap();
        tree.sort();
        assert_eq!(tree, ["blocks/ab/cd/abcd.blk", "volume.cfg"]);
        assert!(d.list("backupstore/missing").await.unwrap().is_empty());
        d.delete(&[
            cfg.to_owned(),
            blk.to_owned(),
            "backupstore/none".to_owned(),
        ])
        .await
        .unwrap();
        assert!(!file.exists());
        for bad in ["../etc/passwd", "/abs", "a//b"] {
            assert!(matches!(
                d.get(bad).await.unwrap_err(),
                DriverError::InvalidPath { .. }
            ));
        }
    }

    /// What the lock protocol costs in store requests: a listing, our lock written, its time
    /// read, the listing again after the wait, our lock marked acquired; and for each other
    /// lock, its content and its time. Asking whether an object exists is one request either
    /// way (a listing), never a head that a missing object makes two on S3.
    #[tokio::test]
    async fn store_requests_of_a_lock_and_of_a_missing_object() {
        let root = tempfile::tempdir().unwrap();
        let store = counting(root.path());
        let d: Arc<dyn BackupStoreDriver> = Arc::new(StoreDriver::new(store.clone(), ""));
        let v = VolumeName::new("vol").unwrap();
        let opts = LockOptions {
            check_wait: std::time::Duration::from_millis(10),
            ..LockOptions::default()
        };
        let first = VolumeLock::acquire(d.clone(), &v, LockType::BackupOrRestore, &opts)
            .await
            .unwrap();
        assert_eq!(store.take(), ["list_dir", "put", "head", "list_dir", "put"]);
        let second = VolumeLock::acquire(d.clone(), &v, LockType::BackupOrRestore, &opts)
            .await
            .unwrap();
        assert_eq!(
            store.take(),
            ["list_dir", "get", "head", "put", "head", "list_dir", "get", "head", "put"]
        );
        first.release().await.unwrap();
        second.release().await.unwrap();
        store.take();
        assert!(!d.exists("backupstore/missing.cfg").await.unwrap());
        assert_eq!(store.take(), ["list_dir"]);
    }
}
