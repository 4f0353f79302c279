//! Entry points for the cargo-fuzz targets in `fuzz/` and for the stable corpus replay test
//! (`tests/fuzz_corpus.rs`). Each takes arbitrary bytes from outside (an object, a file, what
//! a user typed) and must return without panicking, whatever they hold.

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, TimeZone, Utc};
use objstore::{RangeRead, S3Address, S3Config, S3Prefix};
use rados::ClusterConfig;

use crate::formats::raw_zst::{recorded_size, ZstdRawSource};
use crate::ops::{read_manifest, Bundle, Manifest, VmDisk, MANIFEST_NAME};
use crate::serve::config::{Config, ImageSet, CHECK_RUNS};
use crate::{Address, Context, Extent, RbdSpec, Source};

/// Largest disk a `raw.zst` input may record: zstd's RLE blocks turn 4 bytes into 128 KiB,
/// so without a bound a small input could keep the target busy decompressing gigabytes.
pub const RAW_ZST_MAX_SIZE: u64 = 64 << 20;

/// The instant the serve configuration's schedules are evaluated from (fixed, so that a
/// crash replays).
const SCHEDULE_FROM_UNIX: i64 = 1_796_515_200; // 2026-12-06T00:00:00Z

/// Parses `data` as every kind of address a user types: an [`Address`], an [`RbdSpec`], S3
/// addresses and prefixes, a VM bundle and a VM disk. Parsed RBD and S3 addresses must print
/// as text that parses back to them. Returns how many of the parsers accepted it.
pub fn address(data: &[u8]) -> usize {
    let Ok(text) = std::str::from_utf8(data) else {
        return 0;
    };
    let mut accepted = 0;
    if let Ok(a) = Address::parse(text) {
        accepted += 1;
        let shown = a.to_string();
        if matches!(a, Address::Rbd(_) | Address::S3(_)) {
            let again = Address::parse(&shown)
                .unwrap_or_else(|e| panic!("{text:?} printed as {shown:?}, refused: {e}"));
            assert_eq!(again, a, "{text:?} printed as {shown:?}");
        }
    }
    if let Ok(spec) = RbdSpec::parse(text) {
        accepted += 1;
        let shown = spec.to_string();
        let again = Address::parse(&shown)
            .unwrap_or_else(|e| panic!("rbd spec {text:?} printed as {shown:?}, refused: {e}"));
        assert_eq!(
            again,
            Address::Rbd(spec),
            "rbd spec {text:?} printed as {shown:?}"
        );
    }
    accepted += usize::from(S3Address::parse(text).is_ok());
    if let Ok(p) = S3Prefix::parse(text) {
        accepted += 1;
        assert!(p.prefix.is_empty() || p.prefix.ends_with('/'), "{p:?}");
    }
    accepted += usize::from(Bundle::parse(text).is_ok());
    accepted += usize::from(VmDisk::parse(text).is_ok());
    let _ = objstore::redact_url(text);
    accepted
}

/// Reads `data` as a VM bundle's `manifest.json` the way `import-vm` does ([`read_manifest`]
/// on a bundle directory). Whatever deserializes must survive being written back as
/// `export-vm` writes it. Returns whether `read_manifest` accepted it.
pub fn manifest(data: &[u8]) -> bool {
    if let Ok(m) = serde_json::from_slice::<Manifest>(data) {
        let written = serde_json::to_vec_pretty(&m).expect("a manifest always serializes");
        let again: Manifest = serde_json::from_slice(&written).unwrap_or_else(|e| {
            panic!(
                "manifest we wrote is refused: {e}\n{}",
                String::from_utf8_lossy(&written)
            )
        });
        assert_eq!(again, m);
    }
    let dir = manifest_dir();
    std::fs::write(dir.join(MANIFEST_NAME), data).expect("write the fuzz manifest");
    manifest_runtime()
        .block_on(read_manifest(manifest_context(), &Bundle::Dir(dir.clone())))
        .is_ok()
}

/// One runtime for every input. A runtime per input started a thread for its file reads each
/// time (its blocking pool), and the sanitizer's record of every thread ever started grew the
/// target's memory by about 0.3 KiB per input, past its limit after ~450 000 inputs.
fn manifest_runtime() -> &'static tokio::runtime::Runtime {
    thread_local! {
        static RUNTIME: &'static tokio::runtime::Runtime = Box::leak(Box::new(
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("current-thread runtime"),
        ));
    }
    RUNTIME.with(|runtime| *runtime)
}

/// One context for every input: making one loads the TLS roots of its HTTP client, which
/// held the target to 15 inputs a second.
fn manifest_context() -> &'static Context {
    thread_local! {
        static CONTEXT: &'static Context =
            Box::leak(Box::new(Context::new(ClusterConfig::default(), S3Config::default())));
    }
    CONTEXT.with(|context| *context)
}

/// The bundle directory the manifest target writes its input into: one per process, left in
/// the temporary directory (it holds one small file).
fn manifest_dir() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir =
            std::env::temp_dir().join(format!("diskferry-fuzz-manifest-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("create the fuzz bundle directory");
        dir
    })
}

/// Validates `data` as a `diskferry serve` TOML configuration. When it is valid, every job's
/// next runs are computed and its snapshot names read back. Returns whether it was valid.
pub fn serve_config(data: &[u8]) -> bool {
    let Ok(text) = std::str::from_utf8(data) else {
        return false;
    };
    let config = match Config::parse(text, "fuzz.toml") {
        Ok(config) => config,
        Err(e) => {
            let _ = e.to_string();
            return false;
        }
    };
    let from: DateTime<Utc> = Utc
        .timestamp_opt(SCHEDULE_FROM_UNIX, 0)
        .single()
        .expect("a valid instant");
    for job in &config.jobs {
        let runs = job.schedule.upcoming(from, CHECK_RUNS);
        assert!(
            runs.windows(2).all(|w| w[0] < w[1]),
            "{}: {runs:?}",
            job.name
        );
        assert!(runs.iter().all(|r| *r > from), "{}: {runs:?}", job.name);
        let name = job.snapshot_name(from);
        assert_eq!(job.snapshot_time(&name), Some(from), "{name}");
        let _ = job.images.to_string();
        if let ImageSet::Select(selectors) = &job.images {
            for selector in selectors {
                let _ = selector.matches_name("vm-1");
                let _ = selector.lists_job(Some("a, b c"), &job.name);
            }
        }
    }
    true
}

/// An object in memory, read as any store is.
#[derive(Debug)]
struct MemObject(Bytes);

#[async_trait]
impl RangeRead for MemObject {
    fn size(&self) -> u64 {
        self.0.len() as u64
    }

    fn describe(&self) -> String {
        "fuzz.raw.zst".into()
    }

    async fn read_at(&self, offset: u64, len: usize) -> objstore::Result<Bytes> {
        objstore::check_range(self, offset, len)?;
        let start = offset as usize;
        Ok(self.0.slice(start..start + len))
    }
}

/// Reads `data` as a `raw.zst` object to its end (or its first error). Inputs recording a
/// disk larger than [`RAW_ZST_MAX_SIZE`] are skipped. Extents must come in order, non-empty,
/// within the recorded size. Returns the number of data bytes, or `None` if it was refused.
pub fn raw_zst(data: &[u8]) -> Option<u64> {
    if recorded_size(data).is_none_or(|size| size > RAW_ZST_MAX_SIZE) {
        return None;
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("current-thread runtime");
    runtime.block_on(async {
        let object = Arc::new(MemObject(Bytes::copy_from_slice(data)));
        let mut source = ZstdRawSource::open(object).await.ok()?;
        let size = source.size();
        let (mut end, mut bytes) = (0u64, 0u64);
        loop {
            match source.next_extent().await {
                Ok(Some(Extent::Data { offset, data })) => {
                    assert!(!data.is_empty() && offset >= end, "extent out of order");
                    end = offset + data.len() as u64;
                    assert!(end <= size, "extent past the recorded size {size}");
                    bytes += data.len() as u64;
                }
                Ok(Some(Extent::Zero { offset, len })) => {
                    assert!(len > 0 && offset >= end, "zero extent out of order");
                    end = offset + len;
                    assert!(end <= size, "zero extent past the recorded size {size}");
                }
                Ok(None) => return Some(bytes),
                Err(_) => return None,
            }
        }
    })
}
