//! Object storage for diskferry: S3 and Ceph RGW (through aws-sdk-s3), HTTP(S) and local files.
//!
//! Reading: every source is a [`RangeRead`] (`size`, `read_at`, `describe`), shareable as
//! `Arc<dyn RangeRead>`: [`S3Object`], [`HttpObject`], [`LocalFile`]. [`ranges`] fetches a
//! byte range as many ranged reads in flight, in offset order, with bounded memory.
//!
//! Writing: every destination is an [`ObjectWriter`] (`write_at`, `set_metadata`, `finish`,
//! `abort`): [`S3Writer`] (multipart, first part uploaded last, so a qcow2 header can come at
//! the end) and [`LocalFileWriter`] (temporary file renamed on finish).
//!
//! Stores: an [`ObjectStore`] is a namespace of objects named by keys, with head, exists,
//! ranged reads, small puts and gets, delete, listing and writers: [`S3Bucket`] (one bucket
//! of an [`S3Store`]) and [`LocalDir`] (the files below a directory). Callers hold them as
//! `Arc<dyn ObjectStore>` and never ask which kind they have. [`MultipartUpload`] is the
//! low-level multipart API; [`S3Store`] has the operations on buckets and uploads.
//!
//! ```no_run
//! # async fn demo() -> objstore::Result<()> {
//! use objstore::{S3Address, S3Config, S3Store, RangeRead};
//! let store = S3Store::from_config(&S3Config::from_env())?;
//! let addr = S3Address::parse("s3://disks/vm.qcow2")?;
//! let obj = store.open(&addr.bucket, &addr.key).await?;
//! let header = obj.read_at(0, 512).await?;
//! # Ok(()) }
//! ```

mod address;
mod config;
mod coverage;
mod dir;
mod error;
mod http;
mod local;
mod read;
mod retry;
mod s3;
mod store;
mod write;

pub use address::{
    S3Address, S3Prefix, BUCKET_NAME_MAX, BUCKET_NAME_MIN, KEY_MAX_BYTES, S3_SCHEME,
};
pub use config::{
    S3Config, DEFAULT_ATTEMPT_TIMEOUT, DEFAULT_CONFIG_FILE, DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_CREDENTIALS_FILE, DEFAULT_PROFILE, DEFAULT_READ_TIMEOUT, DEFAULT_REGION,
    ENV_ACCESS_KEY_ID, ENV_CA_BUNDLE, ENV_CONFIG_FILE, ENV_DEFAULT_REGION, ENV_ENDPOINT_URL,
    ENV_ENDPOINT_URL_S3, ENV_IGNORE_CONFIGURED_ENDPOINT_URLS, ENV_PROFILE, ENV_REGION,
    ENV_SECRET_ACCESS_KEY, ENV_SESSION_TOKEN, ENV_SHARED_CREDENTIALS_FILE, ERROR_BODY_MAX,
};
pub use dir::LocalDir;
pub use error::{BoxError, Error, Result};
pub use http::{redact_url, HttpClient, HttpObject, MAX_REDIRECTS, MAX_RESPONSE_HEAD};
pub use local::{LocalFile, LocalFileWriter, TEMP_SUFFIX, XATTR_PREFIX};
pub use read::{check_len, check_range, ranges, read_range_parallel, RangeRead, GET_MAX};
pub use retry::{
    RetryPolicy, DEFAULT_INITIAL_BACKOFF, DEFAULT_MAX_ATTEMPTS, DEFAULT_MAX_BACKOFF,
    DEFAULT_RETRY_BUDGET,
};
pub use s3::{
    BadWriter, ListedObject, MultipartUpload, ObjectInfo, PendingUpload, PutOptions, S3Bucket,
    S3Object, S3Store, S3Writer, S3WriterOptions, UploadJournal, UploadRecord, UploadedPart,
    Writer, WriterState, DEFAULT_PARTS_IN_FLIGHT, DEFAULT_PART_SIZE, ENV_STATE_DIR, MAX_PARTS,
    MAX_PART_NUMBER, MAX_PART_SIZE, MIN_PART_NUMBER, MIN_PART_SIZE,
};
pub use store::{DirListing, ObjectStore, WriteOptions, DEFAULT_CLEANUP_PATIENCE};
pub use write::{ObjectWriter, WrittenObject};
