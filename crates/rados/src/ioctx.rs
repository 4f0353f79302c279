//! I/O contexts: a pool opened for I/O.

use std::fmt;
use std::ptr;
use std::sync::Arc;

use crate::cluster::ClusterHandle;
use crate::cstr::c_string;
use crate::{Error, Result};

struct IoCtxHandle {
    raw: ceph_sys::rados_ioctx_t,
    pool: String,
    // Keeps the cluster connected for as long as this context lives (and answers its mon
    // commands).
    pub(crate) cluster: Arc<ClusterHandle>,
}

// SAFETY: librados allows an I/O context to be used from several threads for I/O and for the
// librbd calls made with it; this wrapper exposes no setter that changes the context's state
// (namespace, snapshot read), which is the part librados does not make thread-safe.
unsafe impl Send for IoCtxHandle {}
// SAFETY: see `Send`.
unsafe impl Sync for IoCtxHandle {}

impl Drop for IoCtxHandle {
    fn drop(&mut self) {
        // SAFETY: `raw` came from `rados_ioctx_create`; this is the last owner, and librbd
        // images opened with it hold their own duplicate of the context.
        unsafe { ceph_sys::api().rados_ioctx_destroy(self.raw) };
    }
}

/// A pool opened for I/O. Cheap to clone; keeps its cluster connected.
#[derive(Clone)]
pub struct IoCtx {
    handle: Arc<IoCtxHandle>,
}

impl fmt::Debug for IoCtx {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IoCtx")
            .field("pool", &self.handle.pool)
            .finish()
    }
}

impl IoCtx {
    pub(crate) fn open(cluster: Arc<ClusterHandle>, pool: &str) -> Result<IoCtx> {
        let c_pool = c_string(pool, pool)?;
        let mut raw: ceph_sys::rados_ioctx_t = ptr::null_mut();
        // SAFETY: connected cluster handle, NUL-terminated name, valid out-pointer.
        let code =
            unsafe { ceph_sys::api().rados_ioctx_create(cluster.raw(), c_pool.as_ptr(), &mut raw) };
        Error::check(code, "open pool", &pool)?;
        Ok(IoCtx {
            handle: Arc::new(IoCtxHandle {
                raw,
                pool: pool.to_string(),
                cluster,
            }),
        })
    }

    /// The pool's name.
    pub fn pool(&self) -> &str {
        &self.handle.pool
    }

    /// Fails with [`crate::ErrorKind::NoSpace`] and the cause in words when the monitors flag
    /// this pool as full (see [`crate::Cluster::check_pool_not_full`]).
    pub fn check_not_full(&self) -> Result<()> {
        crate::pool::check_not_full(&self.handle.cluster, &self.handle.pool)
    }

    /// The raw handle, for the `rbd` crate. It stays valid while this `IoCtx` (or a clone)
    /// lives; using it is `unsafe` on the caller's side.
    pub fn as_raw(&self) -> ceph_sys::rados_ioctx_t {
        self.handle.raw
    }
}
