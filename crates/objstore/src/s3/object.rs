//! Range reads of one S3 object, pinned to the ETag seen at open.

use std::collections::HashMap;

use async_trait::async_trait;
use bytes::Bytes;

use super::{collect_body, map_sdk_error, S3Store, Target, STATUS_PRECONDITION_FAILED};
use crate::error::{Error, Result};
use crate::read::{check_len, last_byte, metadata_entry, RangeRead};

/// An S3 object opened for ranged GETs.
///
/// Every GET carries `If-Match` with the ETag from open, so an object replaced while it is
/// being read fails with [`Error::Changed`] instead of mixing two versions.
#[derive(Debug, Clone)]
pub struct S3Object {
    store: S3Store,
    bucket: String,
    key: String,
    size: u64,
    etag: Option<String>,
    metadata: HashMap<String, String>,
}

impl S3Object {
    /// HeadObject for size and ETag. Missing bucket or key is [`Error::NotFound`] naming it.
    pub async fn open(store: &S3Store, bucket: &str, key: &str) -> Result<Self> {
        let info = store.head(bucket, key).await?;
        Ok(Self {
            store: store.clone(),
            bucket: bucket.to_owned(),
            key: key.to_owned(),
            size: info.size,
            etag: info.etag,
            metadata: info.metadata,
        })
    }

    /// The ETag seen at open.
    pub fn etag(&self) -> Option<&str> {
        self.etag.as_deref()
    }

    /// The bucket.
    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// The key.
    pub fn key(&self) -> &str {
        &self.key
    }
}

#[async_trait]
impl RangeRead for S3Object {
    fn size(&self) -> u64 {
        self.size
    }

    fn describe(&self) -> String {
        format!("s3://{}/{}", self.bucket, self.key)
    }

    fn metadata(&self, key: &str) -> Option<String> {
        metadata_entry(&self.metadata, key)
    }

    async fn read_at(&self, offset: u64, len: usize) -> Result<Bytes> {
        let Some(last) = last_byte(self, offset, len)? else {
            return Ok(Bytes::new());
        };
        let t = Target {
            bucket: &self.bucket,
            key: Some(&self.key),
        };
        let range = format!("bytes={offset}-{last}");
        let res = self
            .store
            .retry()
            .run(|| async {
                let out = self
                    .store
                    .client()
                    .get_object()
                    .bucket(&self.bucket)
                    .key(&self.key)
                    .range(&range)
                    .set_if_match(self.etag.clone())
                    .send()
                    .await
                    .map_err(|e| map_sdk_error("GetObject", t, e))?;
                // Never more than asked, whatever the server sends.
                collect_body("GetObject", t, out.body, len as u64).await
            })
            .await;
        let bytes = match res {
            Ok(b) => b,
            Err(Error::Http { status, .. }) if status == STATUS_PRECONDITION_FAILED => {
                return Err(Error::Changed {
                    what: self.describe(),
                    etag: self.etag.clone().unwrap_or_default(),
                })
            }
            Err(e) => return Err(e),
        };
        check_len(self, offset, len, &bytes)?;
        Ok(bytes)
    }
}
