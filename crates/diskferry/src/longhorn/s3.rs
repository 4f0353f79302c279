//! Longhorn's S3 backup-store driver over [`objstore::S3Store`].
//!
//! The mapping is Longhorn's (see [`longhorn::driver`]): key = `<root_prefix>/<path>`, `list`
//! is one delimiter listing, `list_tree` one flat listing, `stat` is HeadObject whose
//! `LastModified` feeds the lock protocol.

use std::time::SystemTime;

use async_trait::async_trait;
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use longhorn::driver::check_store_path;
use longhorn::{BackupStoreDriver, DriverError, ObjectInfo};
use objstore::{PutOptions, S3Store};

/// Longhorn's endpoint variable (`AWS_ENDPOINTS` in the backup-target secret). The library
/// does not read it (a job's S3 settings are its [`Context`](crate::Context)'s); the
/// `diskferry` binary's Longhorn commands take it as the endpoint when the flags, the AWS
/// variables and the profile name none, as a Longhorn user has it set.
pub const ENV_LONGHORN_ENDPOINTS: &str = "AWS_ENDPOINTS";

/// Deletions in flight at once (one DeleteObject each: RGW Pacific's DeleteObjects needs a
/// Content-MD5 the SDK only sends with flexible checksums, which Pacific rejects).
pub const DELETE_CONCURRENCY: usize = 16;

/// A Longhorn backup store in an S3 bucket.
#[derive(Clone)]
pub struct S3Driver {
    store: S3Store,
    bucket: String,
    prefix: String,
}

impl std::fmt::Debug for S3Driver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Driver")
            .field("bucket", &self.bucket)
            .field("prefix", &self.prefix)
            .finish()
    }
}

fn backend(
    op: &'static str,
    path: &str,
    e: impl std::error::Error + Send + Sync + 'static,
) -> DriverError {
    DriverError::Backend {
        op,
        path: path.to_owned(),
        source: Box::new(e),
    }
}

impl S3Driver {
    /// A driver for `bucket`, with `backupstore/` under `prefix` (the target's root prefix,
    /// possibly empty).
    pub fn new(store: S3Store, bucket: impl Into<String>, prefix: impl Into<String>) -> Self {
        Self {
            store,
            bucket: bucket.into(),
            prefix: prefix.into().trim_matches('/').to_owned(),
        }
    }

    /// The bucket.
    pub fn bucket(&self) -> &str {
        &self.bucket
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
impl BackupStoreDriver for S3Driver {
    async fn get(&self, path: &str) -> Result<Bytes, DriverError> {
        let key = self.key(path)?;
        match self.store.get_object_bytes(&self.bucket, &key).await {
            Ok(b) => Ok(b),
            Err(e) if e.is_not_found() => Err(DriverError::NotFound {
                path: path.to_owned(),
            }),
            Err(e) => Err(backend("get", path, e)),
        }
    }

    async fn put(&self, path: &str, data: Bytes) -> Result<(), DriverError> {
        let key = self.key(path)?;
        let opts = PutOptions {
            overwrite: true,
            ..PutOptions::default()
        };
        self.store
            .put_object(&self.bucket, &key, data, &opts)
            .await
            .map(|_| ())
            .map_err(|e| backend("put", path, e))
    }

    async fn stat(&self, path: &str) -> Result<Option<ObjectInfo>, DriverError> {
        let key = self.key(path)?;
        // HeadObject through the client: objstore's `head` does not report LastModified,
        // which the lock protocol orders locks by.
        let res = self
            .store
            .client()
            .head_object()
            .bucket(&self.bucket)
            .key(&key)
            .send()
            .await;
        match res {
            Ok(out) => {
                let modified = out
                    .last_modified()
                    .and_then(|t| SystemTime::try_from(*t).ok())
                    .unwrap_or_else(SystemTime::now);
                Ok(Some(ObjectInfo {
                    size: out.content_length().map_or(0, |n| n.max(0) as u64),
                    modified,
                }))
            }
            Err(e) => {
                let not_found = e.as_service_error().is_some_and(|s| s.is_not_found())
                    || e.raw_response().is_some_and(|r| r.status().as_u16() == 404);
                if not_found {
                    Ok(None)
                } else {
                    Err(backend("stat", path, e))
                }
            }
        }
    }

    async fn list(&self, dir: &str) -> Result<Vec<String>, DriverError> {
        let prefix = self.dir_prefix(dir)?;
        let (objects, prefixes) = self
            .store
            .list_dir(&self.bucket, &prefix)
            .await
            .map_err(|e| backend("list", dir, e))?;
        let mut names: Vec<String> = objects
            .into_iter()
            .filter_map(|o| o.key.strip_prefix(&prefix).map(str::to_owned))
            .chain(prefixes.into_iter().filter_map(|p| {
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
            .list(&self.bucket, &prefix)
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
        let (store, bucket) = (&self.store, self.bucket.as_str());
        futures::stream::iter(keys)
            .map(|(path, key)| async move {
                store
                    .delete(bucket, &key)
                    .await
                    .map_err(|e| backend("delete", &path, e))
            })
            .buffer_unordered(DELETE_CONCURRENCY)
            .try_collect::<Vec<()>>()
            .await
            .map(|_| ())
    }
}
