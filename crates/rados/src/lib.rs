//! Safe wrapper of librados: connect to a Ceph cluster, list pools, open I/O contexts.
//!
//! This crate and `rbd` are the only places above `ceph-sys` that contain `unsafe` code; every
//! block states its invariants in a `// SAFETY:` comment. Handles are reference counted
//! ([`Cluster`] → [`IoCtx`]), so a handle never outlives what it was created from, and futures
//! that hold them can be `'static`.
//!
//! # Example
//! ```no_run
//! use rados::{Cluster, ClusterConfig};
//! let cluster = Cluster::connect(&ClusterConfig::from_env())?;
//! let pools = cluster.pools()?;
//! let ioctx = cluster.ioctx("rbd")?;
//! # Ok::<(), rados::Error>(())
//! ```

// This crate wraps C: `unsafe` is allowed here, and only here and in `rbd` (workspace lint).
#![allow(unsafe_code)]

pub mod allocator;
mod cluster;
mod cstr;
mod error;
mod grow;
mod ioctx;
mod lock;
mod pool;
mod stderr_mode;

pub use cluster::{
    Cluster, ClusterConfig, DEFAULT_CLIENT_ID, DEFAULT_CONNECT_TIMEOUT, DEFAULT_MON_OP_TIMEOUT,
    DEFAULT_OSD_OP_TIMEOUT,
};
pub use cstr::{c_string, owned_from_ptr, split_nul_list, string_from_c_buf};
pub use error::{Error, ErrorKind, Result};
pub use grow::{grow_until_fits, Fit, MAX_GROWN_BUFFER_BYTES};
pub use ioctx::IoCtx;
pub use lock::{Lock, LockError, LockInfo, Locker, MIN_LEASE};
