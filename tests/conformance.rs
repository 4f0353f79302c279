//! The conformance suite every `Source` and every `Sink` runs, on the live cluster (in the
//! style of objstore's suite for its readers and writers): generic checks of the traits'
//! contracts, called once per implementation and location.
//!
//! - A source reports its size and format, yields extents in strictly increasing,
//!   non-overlapping order inside the disk, `Zero` extents only where the disk is zero, and
//!   exactly the disk's bytes (gaps read as zeros).
//! - A sink that finished holds exactly the disk (read back with a tool other than ours), an
//!   existing destination is refused without `--force` and left as it was, and an aborted sink
//!   leaves nothing behind.
//!
//! Every implementation sees the same disk: data at both ends, a hole, text, a small unaligned
//! island, and (in the RBD image) a range written with zeros, which a source may report as
//! data, as zeros or not at all.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use diskferry::longhorn::{self as lh, LonghornSource};
use diskferry::ops::longhorn::{self as lh_ops, BackupJob};
use diskferry::sinks::{ObjectFormat, ObjectSink, ObjectSinkOptions, RbdSink, RbdSinkOptions};
use diskferry::sources::{open_object, open_source, RawSource};
use diskferry::{pipeline, Address, CancellationToken, Extent, NoProgress, RbdSpec, Sink, Source};
use diskferry_integration_tests::{
    context, pattern, pool, rbd_export, run, s3_config, text, unique, ImageGuard, TEST_POOL,
};
use rbd::{CreateOptions, Image, OpenMode};
use sha2::{Digest, Sha256};

const MIB: usize = 1 << 20;
/// A multiple of Longhorn's 2 MiB block, so that a backup's volume is the disk itself.
const SIZE: usize = 24 * MIB;
/// The range of zeros written as data.
const WRITTEN_ZEROS: std::ops::Range<usize> = 12 * MIB..14 * MIB;

/// The disk every implementation is checked with.
fn disk() -> Vec<u8> {
    let mut d = vec![0u8; SIZE];
    d[..MIB].copy_from_slice(&pattern(1, MIB));
    let text = text(b"conformance suite text; ", 2 * MIB);
    d[4 * MIB..6 * MIB].copy_from_slice(&text);
    d[9 * MIB + 4096..9 * MIB + 4096 + 8192].copy_from_slice(&pattern(2, 8192));
    d[SIZE - MIB - 512..].copy_from_slice(&pattern(3, MIB + 512));
    d
}

/// The non-zero runs of the disk, as (offset, bytes) writes.
fn data_runs(d: &[u8]) -> Vec<(usize, Vec<u8>)> {
    [
        0..MIB,
        4 * MIB..6 * MIB,
        9 * MIB + 4096..9 * MIB + 4096 + 8192,
        SIZE - MIB - 512..SIZE,
    ]
    .into_iter()
    .map(|r| (r.start, d[r].to_vec()))
    .collect()
}

fn sha(d: &[u8]) -> String {
    hex::encode(Sha256::digest(d))
}

fn first_difference(a: &[u8], b: &[u8]) -> Option<usize> {
    a.iter().zip(b).position(|(x, y)| x != y)
}

fn assert_same_disk(what: &str, got: &[u8], expected: &[u8]) {
    assert_eq!(got.len(), expected.len(), "{what}: size");
    assert!(
        sha(got) == sha(expected),
        "{what}: content differs, first at byte {:?}",
        first_difference(got, expected)
    );
}

// ------------------------------------------------------------------------------- the suite

/// The `Source` contract against `expected`.
async fn source_contract(mut source: Box<dyn Source>, format: &str, expected: &[u8]) {
    let what = source.describe();
    assert_eq!(source.format(), format, "{what}: format");
    assert_eq!(source.size(), expected.len() as u64, "{what}: size");
    let mut seen = vec![0u8; expected.len()];
    let mut position = 0u64;
    while let Some(extent) = source
        .next_extent()
        .await
        .unwrap_or_else(|e| panic!("{what}: {e}"))
    {
        let (start, end) = (extent.offset(), extent.end());
        assert!(
            start >= position,
            "{what}: extent [{start}, {end}) out of order or overlapping (previous end {position})"
        );
        assert!(end <= expected.len() as u64, "{what}: extent ends at {end}");
        match extent {
            Extent::Data { offset, data } => {
                seen[offset as usize..offset as usize + data.len()].copy_from_slice(&data)
            }
            Extent::Zero { offset, len } => assert!(
                expected[offset as usize..(offset + len) as usize]
                    .iter()
                    .all(|&b| b == 0),
                "{what}: Zero extent [{offset}, +{len}) over data"
            ),
        }
        position = end;
    }
    assert_same_disk(&what, &seen, expected);
}

type SinkFuture = Pin<Box<dyn Future<Output = diskferry::Result<Box<dyn Sink>>> + Send>>;
type ReadFuture = Pin<Box<dyn Future<Output = Option<Vec<u8>>> + Send>>;

/// One sink implementation at a family of locations: `make(n)` creates a sink at location
/// `n` (refusing an existing one), `read(n)` reads location `n` back with an independent tool
/// (`None`: nothing there, no partial upload or temporary file either).
struct SinkUnderTest {
    name: &'static str,
    make: Box<dyn Fn(u32) -> SinkFuture + Send + Sync>,
    read: Box<dyn Fn(u32) -> ReadFuture + Send + Sync>,
}

/// A raw file of the disk and a source over it, to feed the sinks.
async fn raw_source(path: &Path) -> Box<dyn Source> {
    let object = open_object(&context(), &Address::File(path.to_path_buf()))
        .await
        .unwrap();
    Box::new(RawSource::new(object))
}

/// The `Sink` contract: finish, refuse an existing destination, abort.
async fn sink_contract(sink: SinkUnderTest, raw: &Path, expected: &[u8]) {
    let name = sink.name;
    assert_eq!((sink.read)(0).await, None, "{name}: location 0 is not new");

    let mut source = raw_source(raw).await;
    let target = (sink.make)(0).await.unwrap();
    let transfer = pipeline::run(
        source.as_mut(),
        target,
        &NoProgress,
        &CancellationToken::new(),
    )
    .await
    .unwrap_or_else(|e| panic!("{name}: {e}"));
    assert!(transfer.sink.bytes_written > 0, "{name}: nothing written");
    let back = (sink.read)(0)
        .await
        .unwrap_or_else(|| panic!("{name}: gone"));
    assert_same_disk(name, &back, expected);

    let refused = (sink.make)(0).await;
    assert!(
        refused.is_err(),
        "{name}: an existing destination was accepted"
    );
    let again = (sink.read)(0).await.unwrap();
    assert_same_disk(&format!("{name} after the refusal"), &again, expected);

    let mut source = raw_source(raw).await;
    let mut target = (sink.make)(1).await.unwrap();
    for _ in 0..2 {
        let extent = source.next_extent().await.unwrap().unwrap();
        target.write(extent).await.unwrap();
    }
    target
        .abort()
        .await
        .unwrap_or_else(|e| panic!("{name}: abort: {e}"));
    assert_eq!((sink.read)(1).await, None, "{name}: abort left something");
}

// ----------------------------------------------------------------------------- fixtures

/// A scratch directory holding the disk as a raw file.
struct Scratch {
    dir: tempfile::TempDir,
    raw: PathBuf,
    expected: Vec<u8>,
}

fn scratch() -> Scratch {
    let dir = tempfile::tempdir().unwrap();
    let raw = dir.path().join("disk.raw");
    let expected = disk();
    let file = std::fs::File::create(&raw).unwrap();
    file.set_len(SIZE as u64).unwrap();
    for (offset, data) in data_runs(&expected) {
        use std::os::unix::fs::FileExt;
        file.write_all_at(&data, offset as u64).unwrap();
    }
    Scratch { dir, raw, expected }
}

impl Scratch {
    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// `qemu-img convert` of the raw file to qcow2 with `options`.
    fn qcow2(&self, name: &str, options: &[&str]) -> PathBuf {
        let out = self.path(name);
        let (raw, out_s) = (self.raw.to_str().unwrap(), out.to_str().unwrap());
        let mut args = vec!["convert", "-f", "raw", "-O", "qcow2"];
        args.extend_from_slice(options);
        args.extend_from_slice(&[raw, out_s]);
        run("qemu-img", &args);
        out
    }
}

/// A disk in an RBD image with the data written and the zero range written as zeros.
async fn rbd_image(guard: &mut ImageGuard, expected: &[u8]) -> String {
    let name = guard.add(unique("conf"));
    rbd::create(&pool(), &name, SIZE as u64, &CreateOptions::default()).unwrap();
    let image = Image::open(&pool(), &name, OpenMode::ReadWrite).unwrap();
    for (offset, data) in data_runs(expected) {
        image.write(offset as u64, Bytes::from(data)).await.unwrap();
    }
    let zeros = vec![0u8; WRITTEN_ZEROS.len()];
    image
        .write(WRITTEN_ZEROS.start as u64, Bytes::from(zeros))
        .await
        .unwrap();
    image.flush().await.unwrap();
    name
}

async fn new_bucket() -> (objstore::S3Store, String) {
    let store = objstore::S3Store::from_config(&s3_config()).unwrap();
    let bucket = unique("conf").to_lowercase();
    store.create_bucket(&bucket).await.unwrap();
    (store, bucket)
}

async fn open(address: &str) -> Box<dyn Source> {
    open_source(&context(), &Address::parse(address).unwrap())
        .await
        .unwrap_or_else(|e| panic!("open {address}: {e}"))
}

// ------------------------------------------------------------------------------ sources

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sources_over_local_files() {
    let s = scratch();
    source_contract(open(s.raw.to_str().unwrap()).await, "raw", &s.expected).await;
    for (name, options) in [
        ("plain.qcow2", &[][..]),
        ("deflate.qcow2", &["-c"][..]),
        ("zstd.qcow2", &["-c", "-o", "compression_type=zstd"][..]),
        ("v2-512.qcow2", &["-o", "compat=0.10,cluster_size=512"][..]),
    ] {
        let qcow2 = s.qcow2(name, options);
        source_contract(open(qcow2.to_str().unwrap()).await, "qcow2", &s.expected).await;
    }
    // raw.zst as diskferry writes it (what an export to a .raw.zst key produces).
    let zst = s.path("disk.raw.zst");
    let options = ObjectSinkOptions {
        format: ObjectFormat::RawZstd,
        ..ObjectSinkOptions::default()
    };
    let sink = ObjectSink::create(
        &context(),
        &Address::File(zst.clone()),
        SIZE as u64,
        "conformance",
        &options,
    )
    .await
    .unwrap();
    let mut source = raw_source(&s.raw).await;
    pipeline::run(
        source.as_mut(),
        Box::new(sink),
        &NoProgress,
        &CancellationToken::new(),
    )
    .await
    .unwrap();
    let decoded = run("zstd", &["-d", "-c", zst.to_str().unwrap()]);
    assert_same_disk("zstd -d of the raw.zst", &decoded, &s.expected);
    let zst_source = open(zst.to_str().unwrap()).await;
    source_contract(zst_source, "raw.zst", &s.expected).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sources_over_rgw_objects() {
    let s = scratch();
    let (store, bucket) = new_bucket().await;
    let qcow2 = s.qcow2("disk.qcow2", &[]);
    let put = objstore::PutOptions::default();
    for (key, file) in [("disk.raw", &s.raw), ("disk.qcow2", &qcow2)] {
        let body = Bytes::from(std::fs::read(file).unwrap());
        store.put_object(&bucket, key, body, &put).await.unwrap();
    }
    let raw = open(&format!("s3://{bucket}/disk.raw")).await;
    source_contract(raw, "raw", &s.expected).await;
    let qcow2 = open(&format!("s3://{bucket}/disk.qcow2")).await;
    source_contract(qcow2, "qcow2", &s.expected).await;
    store.empty_and_delete_bucket(&bucket).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sources_over_rbd_images_and_snapshots() {
    let expected = disk();
    let mut guard = ImageGuard::new(&pool());
    let name = rbd_image(&mut guard, &expected).await;
    source_contract(
        open(&format!("rbd:{TEST_POOL}/{name}")).await,
        "rbd",
        &expected,
    )
    .await;
    Image::open(&pool(), &name, OpenMode::ReadWrite)
        .unwrap()
        .snap_create("conf")
        .unwrap();
    let snap = open(&format!("rbd:{TEST_POOL}/{name}@conf")).await;
    source_contract(snap, "rbd", &expected).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn source_over_a_longhorn_backup() {
    let s = scratch();
    let url = format!("vfs://{}/", s.path("store").display());
    std::fs::create_dir(s.path("store")).unwrap();
    let target = lh::BackupTarget::parse(&url).unwrap();
    let store = lh::open_store(&context(), &target).await.unwrap();
    let mut job = BackupJob::new("confvol");
    job.backup = Some("conf1".into());
    let address = Address::File(s.raw.clone());
    let cancel = CancellationToken::new();
    lh_ops::backup(
        &context(),
        &store,
        &target,
        &address,
        &job,
        &NoProgress,
        &cancel,
    )
    .await
    .unwrap();
    let volume = longhorn::VolumeName::new("confvol").unwrap();
    let backup = longhorn::BackupName::new("conf1").unwrap();
    let reader = store
        .open_restore(&volume, &backup, longhorn::RestoreOptions::default())
        .await
        .unwrap();
    let source = LonghornSource::new(reader, "longhorn confvol/conf1".into());
    source_contract(Box::new(source), "longhorn", &s.expected).await;
}

// -------------------------------------------------------------------------------- sinks

/// The disk in a qcow2 file, as `qemu-img convert -O raw` reads it.
fn qcow2_to_raw(qcow2: &Path) -> Vec<u8> {
    let raw = qcow2.with_extension("check.raw");
    let (q, r) = (qcow2.to_str().unwrap(), raw.to_str().unwrap());
    run("qemu-img", &["convert", "-f", "qcow2", "-O", "raw", q, r]);
    let content = std::fs::read(&raw).unwrap();
    std::fs::remove_file(&raw).unwrap();
    content
}

/// The entries of `dir` other than `keep` (to find temporary files left behind).
fn leftovers(dir: &Path, keep: &[&Path]) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| !keep.contains(&p.as_path()))
        .collect()
}

/// An object sink to local files `out-N.EXT` in a directory of their own.
fn object_file_sink(name: &'static str, dir: PathBuf, format: ObjectFormat) -> SinkUnderTest {
    let ext = format.name();
    let path = move |dir: &Path, n: u32| dir.join(format!("out-{n}.{ext}"));
    let (make_dir, read_dir) = (dir.clone(), dir);
    SinkUnderTest {
        name,
        make: Box::new(move |n| {
            let address = Address::File(path(&make_dir, n));
            Box::pin(async move {
                let options = ObjectSinkOptions {
                    format,
                    ..ObjectSinkOptions::default()
                };
                let sink =
                    ObjectSink::create(&context(), &address, SIZE as u64, "conformance", &options)
                        .await?;
                Ok(Box::new(sink) as Box<dyn Sink>)
            })
        }),
        read: Box::new(move |n| {
            let file = path(&read_dir, n);
            let others = leftovers(&read_dir, &[]);
            Box::pin(async move {
                if !file.exists() {
                    // Nothing for this location, not even a temporary file.
                    let stem = file.file_name().unwrap().to_string_lossy().into_owned();
                    let partial: Vec<_> = others
                        .iter()
                        .filter(|p| p.to_string_lossy().contains(&stem))
                        .collect();
                    assert!(partial.is_empty(), "left behind: {partial:?}");
                    return None;
                }
                Some(match format {
                    ObjectFormat::Qcow2 => {
                        run("qemu-img", &["check", "-q", file.to_str().unwrap()]);
                        qcow2_to_raw(&file)
                    }
                    ObjectFormat::Raw => std::fs::read(&file).unwrap(),
                    ObjectFormat::RawZstd => run("zstd", &["-d", "-c", file.to_str().unwrap()]),
                })
            })
        }),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn object_sinks_to_local_files() {
    let s = scratch();
    for (name, format) in [
        ("object sink, local qcow2", ObjectFormat::Qcow2),
        ("object sink, local raw", ObjectFormat::Raw),
        ("object sink, local raw.zst", ObjectFormat::RawZstd),
    ] {
        let dir = s.path(format.name());
        std::fs::create_dir(&dir).unwrap();
        sink_contract(object_file_sink(name, dir, format), &s.raw, &s.expected).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn object_sink_to_rgw() {
    let s = scratch();
    let (store, bucket) = new_bucket().await;
    let key = |n: u32| format!("out-{n}.qcow2");
    let download_dir = Arc::new(tempfile::tempdir().unwrap());
    let (make_bucket, read_bucket) = (bucket.clone(), bucket.clone());
    let read_store = store.clone();
    let sink = SinkUnderTest {
        name: "object sink, RGW qcow2",
        make: Box::new(move |n| {
            let address = Address::parse(&format!("s3://{make_bucket}/{}", key(n))).unwrap();
            Box::pin(async move {
                let sink = ObjectSink::create(
                    &context(),
                    &address,
                    SIZE as u64,
                    "conformance",
                    &ObjectSinkOptions::default(),
                )
                .await?;
                Ok(Box::new(sink) as Box<dyn Sink>)
            })
        }),
        read: Box::new(move |n| {
            let (store, bucket, key) = (read_store.clone(), read_bucket.clone(), key(n));
            let dir = download_dir.clone();
            Box::pin(async move {
                let uploads = store.list_multipart_uploads(&bucket, &key).await.unwrap();
                assert!(uploads.is_empty(), "multipart uploads left: {uploads:?}");
                if !store.exists(&bucket, &key).await.unwrap() {
                    return None;
                }
                let file = dir.path().join(&key);
                std::fs::write(&file, store.get_object_bytes(&bucket, &key).await.unwrap())
                    .unwrap();
                run("qemu-img", &["check", "-q", file.to_str().unwrap()]);
                Some(qcow2_to_raw(&file))
            })
        }),
    };
    sink_contract(sink, &s.raw, &s.expected).await;
    store.empty_and_delete_bucket(&bucket).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rbd_sink() {
    let s = scratch();
    let names = Arc::new([unique("confsink0"), unique("confsink1")]);
    let mut guard = ImageGuard::new(&pool());
    for n in names.iter() {
        guard.add(n.clone());
    }
    let (make_names, read_names) = (names.clone(), names.clone());
    let sink = SinkUnderTest {
        name: "RBD sink",
        make: Box::new(move |n| {
            let spec = RbdSpec {
                pool: TEST_POOL.into(),
                image: make_names[n as usize].clone(),
                snap: None,
            };
            Box::pin(async move {
                let sink =
                    RbdSink::create(&context(), &spec, SIZE as u64, RbdSinkOptions::default())
                        .await?;
                Ok(Box::new(sink) as Box<dyn Sink>)
            })
        }),
        read: Box::new(move |n| {
            let name = read_names[n as usize].clone();
            Box::pin(async move {
                // Any image left, under the name or a temporary one, counts.
                let left: Vec<String> = rbd::list(&pool())
                    .unwrap()
                    .into_iter()
                    .filter(|i| i.contains(&name))
                    .collect();
                if left.contains(&name) {
                    return Some(rbd_export(&name));
                }
                assert!(left.is_empty(), "left behind: {left:?}");
                None
            })
        }),
    };
    sink_contract(sink, &s.raw, &s.expected).await;
}

// ------------------------------------------------------------------ the in-memory doubles

/// The doubles the engine's unit tests use pass the same contracts as the real
/// implementations, so that what those tests show holds for them too. The "locations" of the
/// memory sink are kept here: a finished one is an existing destination, refused as the
/// real sinks refuse theirs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_in_memory_source_and_sink() {
    use diskferry::testing::{MemorySink, MemorySource, SinkRecord};
    use std::collections::HashMap;
    use std::sync::Mutex;

    let s = scratch();
    source_contract(
        Box::new(MemorySource::from_disk(&s.expected, 64 << 10)),
        "raw",
        &s.expected,
    )
    .await;

    type Records = Arc<Mutex<HashMap<u32, Arc<Mutex<SinkRecord>>>>>;
    let records: Records = Arc::default();
    let (made, read) = (Arc::clone(&records), Arc::clone(&records));
    let sink = SinkUnderTest {
        name: "memory sink",
        make: Box::new(move |n| {
            let records = Arc::clone(&made);
            Box::pin(async move {
                let mut records = records.lock().unwrap();
                let taken = records
                    .get(&n)
                    .is_some_and(|r| r.lock().unwrap().finished.is_some());
                if taken {
                    return Err(diskferry::Error::AlreadyExists(format!("memory {n}")));
                }
                let (sink, record) = MemorySink::new(SIZE as u64);
                records.insert(n, record);
                Ok(Box::new(sink) as Box<dyn Sink>)
            })
        }),
        read: Box::new(move |n| {
            let records = Arc::clone(&read);
            Box::pin(async move {
                let record = records.lock().unwrap().get(&n).cloned()?;
                let record = record.lock().unwrap();
                record.finished.as_ref().map(|_| record.content.clone())
            })
        }),
    };
    sink_contract(sink, &s.raw, &s.expected).await;
}
