//! Connections an operation may need, made on first use: the Ceph cluster, the S3 endpoint,
//! the HTTP client.

use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};

use objstore::{HttpClient, LocalDir, ObjectStore, S3Bucket, S3Config, S3Store};
use rados::{Cluster, ClusterConfig};
use tokio::sync::OnceCell;

use crate::{Address, Error, Result};

/// The Ceph option naming the pool of images given without one.
const RBD_DEFAULT_POOL_OPTION: &str = "rbd_default_pool";

/// Settings and lazily opened connections shared by operations.
pub struct Context {
    ceph: ClusterConfig,
    s3: S3Config,
    /// The connection, made on first use; [`Context::release_cluster`] lets it go.
    cluster: Mutex<Option<Cluster>>,
    /// Held while connecting, so that concurrent first uses make one connection.
    connecting: tokio::sync::Mutex<()>,
    store: OnceCell<S3Store>,
    http: HttpClient,
}

impl fmt::Debug for Context {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Context")
            .field("ceph", &self.ceph)
            .field("s3_endpoint", &self.s3.describe_endpoint())
            .finish()
    }
}

impl Context {
    /// A context with explicit settings.
    pub fn new(ceph: ClusterConfig, s3: S3Config) -> Context {
        Context {
            ceph,
            s3,
            cluster: Mutex::new(None),
            connecting: tokio::sync::Mutex::new(()),
            store: OnceCell::new(),
            http: HttpClient::new(),
        }
    }

    /// The environment a Ceph and AWS CLI user already has (`CEPH_CONF`, `CEPH_ARGS`,
    /// `AWS_ENDPOINT_URL`, `AWS_ACCESS_KEY_ID`, …).
    pub fn from_env() -> Context {
        Context::new(ClusterConfig::from_env(), S3Config::from_env())
    }

    /// The Ceph cluster, connected on first use (again after [`Context::release_cluster`]).
    async fn cluster(&self) -> Result<Cluster> {
        if let Some(cluster) = self.connected() {
            return Ok(cluster);
        }
        let _connecting = self.connecting.lock().await;
        if let Some(cluster) = self.connected() {
            return Ok(cluster);
        }
        let config = self.ceph.clone();
        let cluster = tokio::task::spawn_blocking(move || Cluster::connect(&config))
            .await
            .map_err(|e| Error::io("connect to the cluster", std::io::Error::other(e)))??;
        *self.slot() = Some(cluster.clone());
        Ok(cluster)
    }

    fn slot(&self) -> std::sync::MutexGuard<'_, Option<Cluster>> {
        // The slot holds a handle, never half-updated: a panic elsewhere leaves it usable.
        self.cluster.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn connected(&self) -> Option<Cluster> {
        self.slot().clone()
    }

    /// Lets go of this context's cluster connection; the next [`Context::pool`] connects
    /// again. A long-running service calls it when no run is in flight, so that an idle
    /// process holds no connection (librados' threads, buffers and timers). The connection
    /// is shut down when the returned value is dropped, if no I/O context made from it is
    /// still alive; that is a blocking call (drop it off the async runtime).
    pub fn release_cluster(&self) -> ReleasedCluster {
        ReleasedCluster(self.slot().take())
    }

    /// An I/O context on a pool; the empty pool name (that of an address without a pool) is
    /// the cluster's `rbd_default_pool`, as for the `rbd` command.
    pub async fn pool(&self, pool: &str) -> Result<rados::IoCtx> {
        let cluster = self.cluster().await?;
        let pool = pool.to_string();
        blocking(move || {
            let pool = if pool == crate::address::DEFAULT_POOL {
                cluster.conf_get(RBD_DEFAULT_POOL_OPTION)?
            } else {
                pool
            };
            cluster.ioctx(&pool)
        })
        .await
    }

    /// The S3 endpoint, configured on first use.
    pub async fn s3(&self) -> Result<&S3Store> {
        self.store
            .get_or_try_init(|| async { S3Store::from_config(&self.s3).map_err(Error::from) })
            .await
    }

    /// The HTTP client.
    pub fn http(&self) -> &HttpClient {
        &self.http
    }

    /// The store of objects `address` names one of, and the object's key in it: the bucket
    /// of an `s3://` address, the directory of a local path. An HTTP(S) URL (read-only) or
    /// an RBD image is no object in a store: [`Error::InvalidAddress`].
    pub async fn store_for(&self, address: &Address) -> Result<(Arc<dyn ObjectStore>, String)> {
        match address {
            Address::S3(a) => {
                let bucket = S3Bucket::new(self.s3().await?.clone(), &a.bucket);
                Ok((Arc::new(bucket), a.key.clone()))
            }
            Address::File(path) => {
                let (dir, key) = LocalDir::for_file(path)?;
                Ok((Arc::new(dir), key))
            }
            Address::Http(_) => Err(Error::InvalidAddress {
                address: address.to_string(),
                reason: "an HTTP(S) URL is read-only; objects are written to s3://BUCKET/KEY \
                         or a local path"
                    .into(),
            }),
            Address::Rbd(_) => Err(Error::InvalidAddress {
                address: address.to_string(),
                reason: "an RBD image is not an object; objects are s3://BUCKET/KEY or a local \
                         path"
                    .into(),
            }),
        }
    }

    /// The S3 settings [`Context::s3`] connects with.
    pub fn s3_config(&self) -> &S3Config {
        &self.s3
    }
}

/// A cluster connection a [`Context`] let go of: dropping it shuts the connection down unless
/// an I/O context made from it is still alive (a blocking call).
#[derive(Debug)]
pub struct ReleasedCluster(Option<Cluster>);

impl ReleasedCluster {
    /// Whether the context held a connection.
    pub fn was_connected(&self) -> bool {
        self.0.is_some()
    }
}

/// Runs a blocking librbd/librados call off the async runtime.
pub async fn blocking<T, F>(f: F) -> Result<T>
where
    F: FnOnce() -> rados::Result<T> + Send + 'static,
    T: Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::io("run a Ceph call", std::io::Error::other(e)))?
        .map_err(Error::from)
}
