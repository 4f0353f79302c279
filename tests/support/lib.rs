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

/// `len` bytes of `line` repeated: compressible, non-zero data.
pub fn text(line: &[u8], len: usize) -> Vec<u8> {
    line.iter().copied().cycle().take(len).collect()
}

/// Deterministic pseudo-random bytes, so a failure can be reproduced.
pub fn pattern(seed: u64, len: usize) -> Vec<u8> {
    use rand::{RngCore, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut data = vec![0u8; len];
    rng.fill_bytes(&mut data);
    data
}

pub mod http;
pub mod serve;

/// The S3 settings of the test cluster: the `AWS_*` environment when `AWS_ENDPOINT_URL` is set,
/// else what `scripts/dev-cluster env` prints for the default cluster.
pub fn s3_config() -> objstore::S3Config {
    if std::env::var_os("AWS_ENDPOINT_URL").is_some() {
        return objstore::S3Config::from_env();
    }
    let output = std::process::Command::new(repo_root().join("scripts/dev-cluster"))
        .arg("env")
        .output()
        .expect("run scripts/dev-cluster env");
    assert!(
        output.status.success(),
        "no S3 endpoint: AWS_ENDPOINT_URL is unset and `scripts/dev-cluster env` failed; run `scripts/dev-cluster up`"
    );
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    let vars: std::collections::HashMap<String, String> = text
        .lines()
        .filter_map(|l| l.strip_prefix("export "))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.trim_matches(['\'', '"']).to_string()))
        .collect();
    objstore::S3Config::from_lookup(|name| vars.get(name).cloned())
}

/// A diskferry context on the test cluster and its RGW.
pub fn context() -> diskferry::Context {
    diskferry::Context::new(cluster_config(), s3_config())
}

/// Runs a command, panicking with its stderr when it fails; returns stdout.
pub fn run(program: &str, args: &[&str]) -> Vec<u8> {
    let output = std::process::Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program} (is it installed?): {e}"));
    assert!(
        output.status.success(),
        "{program} {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output.stdout
}

/// `qemu-img convert -f raw -O qcow2 OPTIONS RAW QCOW2`: the reference qcow2 of a raw file;
/// `options` choose e.g. compression (`["-c"]`, `["-c", "-o", "compression_type=zstd"]`).
pub fn qemu_img_qcow2(raw: &Path, qcow2: &Path, options: &[&str]) {
    let (raw, qcow2) = (raw.to_string_lossy(), qcow2.to_string_lossy());
    let mut args = vec!["convert", "-f", "raw", "-O", "qcow2"];
    args.extend_from_slice(options);
    args.extend([raw.as_ref(), qcow2.as_ref()]);
    run("qemu-img", &args);
}

/// A free TCP port on 127.0.0.1: free when asked, for a server the test starts next.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The names of the entries of the directory `dir`, sorted.
pub fn file_names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// `qemu-img check` finds no error in `qcow2`, and `qemu-img compare` finds it identical to
/// the raw file `raw` (the qcow2 oracle every test uses).
pub fn qemu_check_and_compare(qcow2: &Path, raw: &Path) {
    let (q, r) = (qcow2.to_string_lossy(), raw.to_string_lossy());
    let check = run("qemu-img", &["check", "-f", "qcow2", &q]);
    let check = String::from_utf8_lossy(&check);
    assert!(
        check.contains("No errors were found"),
        "qemu-img check {q}: {check}"
    );
    // Exits non-zero (so `run` panics) when the contents differ.
    let compare = run("qemu-img", &["compare", "-f", "qcow2", "-F", "raw", &q, &r]);
    assert!(
        String::from_utf8_lossy(&compare).contains("Images are identical"),
        "qemu-img compare {q} {r}"
    );
}

/// The content of an RBD image as the `rbd` CLI exports it (an oracle independent of ours).
pub fn rbd_export(image: &str) -> Vec<u8> {
    let conf = ceph_conf();
    run(
        "rbd",
        &[
            "--conf",
            &conf.to_string_lossy(),
            "export",
            "--no-progress",
            &format!("{TEST_POOL}/{image}"),
            "-",
        ],
    )
}

/// The digest diskferry records for new copies ([`diskferry::DigestAlgorithm::DEFAULT`]),
/// computed from its definition (independently of the library's incremental implementation).
pub fn reference_digest(content: &[u8]) -> String {
    reference_digest_with(diskferry::DigestAlgorithm::DEFAULT, content)
}

/// The digest of `algorithm`, computed from its definition.
pub fn reference_digest_with(algorithm: diskferry::DigestAlgorithm, content: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    let blocks = content.chunks(diskferry::DIGEST_BLOCK_SIZE as usize);
    match algorithm {
        diskferry::DigestAlgorithm::Sha256Blocks => {
            let mut outer = Sha256::new();
            for block in blocks {
                outer.update(Sha256::digest(block));
            }
            hex::encode(outer.finalize())
        }
        diskferry::DigestAlgorithm::Blake3Blocks => {
            let mut outer = blake3::Hasher::new();
            for block in blocks {
                outer.update(blake3::hash(block).as_bytes());
            }
            outer.finalize().to_hex().to_string()
        }
    }
}

/// The names of the snapshots of the test pool's image `image`.
pub fn snapshot_names(image: &str) -> Vec<String> {
    rbd::Image::open(&pool(), image, rbd::OpenMode::ReadOnly)
        .unwrap()
        .snap_list()
        .unwrap()
        .into_iter()
        .map(|s| s.name)
        .collect()
}

/// A new bucket `prefix-<pid>-<n>` in `store`.
pub async fn new_bucket(store: &objstore::S3Store, prefix: &str) -> String {
    let name = unique(prefix).to_lowercase();
    store.create_bucket(&name).await.unwrap();
    name
}

/// The RBD group `image` of the test pool is in, if any.
pub fn group_of(image: &str) -> Option<String> {
    rbd::Image::open(&pool(), image, rbd::OpenMode::ReadOnly)
        .unwrap()
        .group()
        .unwrap()
        .map(|g| g.name)
}

/// Makes group `group` of the test pool as an export-vm killed mid-copy leaves it: `writer`
/// (a metadata key and `HOST PID`) recorded on each image (none: a group diskferry did not
/// make), the images in it, its snapshot `export` taken.
pub fn make_group(group: &str, images: &[&str], writer: Option<(&str, &str)>) {
    let io = pool();
    if let Some((key, value)) = writer {
        for image in images {
            rbd::Image::open(&io, image, rbd::OpenMode::ReadWrite)
                .unwrap()
                .metadata_set(key, value)
                .unwrap();
        }
    }
    rbd::group_create(&io, group).unwrap();
    for image in images {
        rbd::group_image_add(&io, group, &io, image).unwrap();
    }
    rbd::group_snap_create(&io, group, "export").unwrap();
}

/// The metadata keys of `image` of the test pool that start with `prefix`.
pub fn metadata_keys(image: &str, prefix: &str) -> Vec<String> {
    rbd::Image::open(&pool(), image, rbd::OpenMode::ReadOnly)
        .unwrap()
        .metadata_list()
        .unwrap()
        .into_iter()
        .map(|(k, _)| k)
        .filter(|k| k.starts_with(prefix))
        .collect()
}
