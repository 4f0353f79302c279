//! diskferry: move virtual-machine disks between qcow2 images, Ceph RBD, S3/RGW objects and
//! HTTP(S) in one streaming pass: in parallel, sparse, verified, with no scratch space.
//!
//! Every job is a copy from a [`Source`] to a [`Sink`] through one [`pipeline`]: sources
//! yield the allocated extents of a disk in offset order, sinks write them, and the pipeline
//! computes the content [`digest`] on the way. The jobs in [`ops`] (import, golden, clone,
//! verify) are thin functions over it; the `diskferry` binary is a thin layer over them.
//!
//! ```no_run
//! # async fn f() -> diskferry::Result<()> {
//! use diskferry::{ops, Address, Context, NoProgress, RbdSpec};
//! use tokio_util::sync::CancellationToken;
//! let ctx = Context::from_env();
//! let source = Address::parse("https://example.org/disk.qcow2")?;
//! let target = RbdSpec::parse("rbd/vm-disk")?;
//! let report = ops::import(&ctx, &source, &target, &Default::default(), &NoProgress, &CancellationToken::new()).await?;
//! println!("{} bytes written, digest {}", report.bytes_written, report.digest);
//! # Ok(()) }
//! ```

mod address;
mod compression;
mod context;
pub mod digest;
mod error;
mod extent;
mod format;
pub mod formats;
#[doc(hidden)]
pub mod fuzzing;
mod label;
pub mod longhorn;
pub mod ops;
pub mod pipeline;
mod progress;
pub mod serve;
mod sink;
pub mod sinks;
mod source;
pub mod sources;
pub mod testing;

pub use address::{Address, RbdSpec, RBD_SCHEME};
pub use compression::{check_zstd_level, Compression};
pub use context::{blocking, Context, ReleasedCluster};
pub use digest::{ContentDigest, DigestAlgorithm, DIGEST_ALGORITHM, DIGEST_BLOCK_SIZE};
pub use error::{Error, Result};
pub use extent::{is_zero, Extent};
pub use format::{FormatOrigin, ObjectFormat};
pub use label::parse_label;
pub use progress::{NoProgress, Progress};
pub use sink::{Report, Sink, SinkReport, Summary};
pub use source::Source;

/// S3 multipart limits and the default number of part uploads in flight, for callers that
/// size parts (a command's `--part-size` and `--jobs`).
pub use objstore::{DEFAULT_PARTS_IN_FLIGHT, MAX_PART_SIZE, MIN_PART_SIZE};

/// The settings a [`Context`] connects with: the Ceph cluster's and the S3 endpoint's, each
/// read from the environment as the `rbd` and `aws` commands read it, flags applied on top.
pub use objstore::S3Config;
pub use rados::{allocator, ClusterConfig};

pub use tokio_util::sync::CancellationToken;
