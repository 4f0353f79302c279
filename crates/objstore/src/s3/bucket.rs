//! One S3 bucket as an [`ObjectStore`].

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;

use super::{ListedObject, ObjectInfo, PutOptions, S3Store, S3Writer, S3WriterOptions, Target};
use crate::error::{Error, Result};
use crate::read::RangeRead;
use crate::store::{DirListing, ObjectStore, WriteOptions};
use crate::write::{ObjectWriter, WrittenObject};

/// The objects of one bucket, through an [`S3Store`] (whose connections it shares).
#[derive(Debug, Clone)]
pub struct S3Bucket {
    store: S3Store,
    bucket: String,
}

impl S3Bucket {
    /// The bucket `bucket` of `store`.
    pub fn new(store: S3Store, bucket: impl Into<String>) -> Self {
        Self {
            store,
            bucket: bucket.into(),
        }
    }

    /// The bucket's name.
    pub fn name(&self) -> &str {
        &self.bucket
    }

    /// The store, for operations on buckets and uploads.
    pub fn store(&self) -> &S3Store {
        &self.store
    }
}

#[async_trait]
impl ObjectStore for S3Bucket {
    fn describe(&self, key: &str) -> String {
        Target {
            bucket: &self.bucket,
            key: Some(key),
        }
        .describe()
    }

    async fn head(&self, key: &str) -> Result<ObjectInfo> {
        self.store.head(&self.bucket, key).await
    }

    async fn exists(&self, key: &str) -> Result<bool> {
        self.store.exists(&self.bucket, key).await
    }

    async fn check_new(&self, key: &str, overwrite: bool) -> Result<()> {
        let what = self.describe(key);
        if overwrite {
            if !self.store.bucket_exists(&self.bucket).await? {
                return Err(Error::NotFound {
                    what: format!("bucket {:?} (for {what})", self.bucket),
                });
            }
        } else if self.store.exists(&self.bucket, key).await? {
            return Err(Error::AlreadyExists { what });
        }
        Ok(())
    }

    async fn open(&self, key: &str) -> Result<Arc<dyn RangeRead>> {
        Ok(Arc::new(self.store.open(&self.bucket, key).await?))
    }

    async fn get(&self, key: &str) -> Result<Bytes> {
        self.store.get_object_bytes(&self.bucket, key).await
    }

    async fn put(&self, key: &str, data: Bytes, options: &PutOptions) -> Result<WrittenObject> {
        self.store
            .put_object(&self.bucket, key, data, options)
            .await
    }

    async fn delete(&self, key: &str) -> Result<()> {
        self.store.delete(&self.bucket, key).await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ListedObject>> {
        self.store.list(&self.bucket, prefix).await
    }

    async fn list_dir(&self, prefix: &str) -> Result<DirListing> {
        let (objects, prefixes) = self.store.list_dir(&self.bucket, prefix).await?;
        Ok(DirListing { objects, prefixes })
    }

    async fn writer(&self, key: &str, options: WriteOptions) -> Result<Box<dyn ObjectWriter>> {
        let mut s3 = S3WriterOptions {
            part_size: options.part_size,
            max_in_flight: options.parts_in_flight,
            put: options.put,
            sparse_size: options.sparse_size,
            cleanup_patience: options.cleanup_patience,
        };
        if let Some(size) = options.expected_size.or(options.sparse_size) {
            s3 = s3.for_expected_size(size);
        }
        Ok(Box::new(
            S3Writer::create(&self.store, &self.bucket, key, s3).await?,
        ))
    }
}
