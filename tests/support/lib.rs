//! Shared helpers for the integration tests: finding the local cluster, unique names, and
//! cleanup.
//!
//! The tests run against a real cluster: the one `scripts/dev-cluster up` starts (found through
//! `CEPH_CONF`, or at its default place under `target/dev-cluster`). Without one they fail
//! with a message saying how to start it; they never pass silently.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;

use rados::{Cluster, ClusterConfig, ErrorKind, IoCtx};

/// The pool `scripts/dev-cluster` creates for RBD.
pub const TEST_POOL: &str = "rbd";

/// The repository root (the parent of this package's directory).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// The cluster's conf file: `CEPH_CONF`, else the dev cluster's default location.
pub fn ceph_conf() -> PathBuf {
    if let Some(conf) = std::env::var_os("CEPH_CONF") {
        return PathBuf::from(conf);
    }
    let dir = std::env::var_os("DISKFERRY_CLUSTER_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target/dev-cluster"));
    let conf = dir.join("ceph.conf");
    assert!(
        conf.is_file(),
        "no Ceph cluster: {} does not exist and CEPH_CONF is not set; run `scripts/dev-cluster up`",
        conf.display()
    );
    conf
}

/// The connection settings for the test cluster.
pub fn cluster_config() -> ClusterConfig {
    ClusterConfig {
        conf_file: Some(ceph_conf()),
        ..ClusterConfig::default()
    }
}

/// One connection shared by all tests of a binary.
pub fn cluster() -> &'static Cluster {
    static CLUSTER: OnceLock<Cluster> = OnceLock::new();
    CLUSTER.get_or_init(|| {
        Cluster::connect(&cluster_config()).unwrap_or_else(|err| {
            panic!("cannot connect to the test cluster ({err}); run `scripts/dev-cluster up`")
        })
    })
}

/// The RBD test pool.
pub fn pool() -> IoCtx {
    cluster().ioctx(TEST_POOL).expect("open the rbd pool")
}

/// A name no other test or run uses: `prefix-<pid>-<n>`.
pub fn unique(prefix: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    format!(
        "{}-{}-{}",
        prefix,
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// Removes an image with all its snapshots (unprotecting them), its clones first. Missing
/// images are fine. Used by guards so a failing test leaves nothing behind.
pub fn purge_image(ioctx: &IoCtx, name: &str) {
    let image = match rbd::Image::open(ioctx, name, rbd::OpenMode::ReadWrite) {
        Ok(image) => image,
        Err(err) if err.kind() == ErrorKind::NotFound => return,
        Err(err) => panic!("purge {name}: {err}"),
    };
    for snap in image.snap_list().unwrap_or_default() {
        if let Ok(at_snap) =
            rbd::Image::open(ioctx, name, rbd::OpenMode::Snapshot(snap.name.clone()))
        {
            for child in at_snap.children().unwrap_or_default() {
                if let Ok(child_io) = cluster().ioctx(&child.pool) {
                    purge_image(&child_io, &child.image);
                }
            }
        }
        if image.snap_is_protected(&snap.name).unwrap_or(false) {
            let _ = image.snap_unprotect(&snap.name);
        }
        let _ = image.snap_remove(&snap.name);
    }
    drop(image);
    match rbd::remove(ioctx, name) {
        Ok(()) => {}
        Err(err) if err.kind() == ErrorKind::NotFound => {}
        Err(err) => eprintln!("warning: could not remove test image {name}: {err}"),
    }
}

/// Removes the named images when dropped, even when the test panics.
#[derive(Debug)]
pub struct ImageGuard {
    ioctx: IoCtx,
    names: Vec<String>,
}

impl ImageGuard {
    /// Guards nothing yet.
    pub fn new(ioctx: &IoCtx) -> ImageGuard {
        ImageGuard {
            ioctx: ioctx.clone(),
            names: Vec::new(),
        }
    }

    /// Adds an image name to remove at drop, and returns it.
    pub fn add(&mut self, name: String) -> String {
        self.names.push(name.clone());
        name
    }
}

impl Drop for ImageGuard {
    fn drop(&mut self) {
        // Children before parents: later names were usually made from earlier ones.
        for name in self.names.iter().rev() {
            purge_image(&self.ioctx, name);
        }
    }
}

/// Deterministic pseudo-random bytes, so a failure can be reproduced.
pub fn pattern(seed: u64, len: usize) -> Vec<u8> {
    use rand::{RngCore, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut data = vec![0u8; len];
    rng.fill_bytes(&mut data);
    data
}
