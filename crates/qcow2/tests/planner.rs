//! The data reader's plan: neighbouring host ranges are coalesced into large reads, several
//! reads run at once, and the memory budget holds.

mod common;

use std::io;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use qcow2::codec::Codec;
use qcow2::{MemReadAt, Qcow2Image, ReadAt, ReadOptions, WriterOptions};

use common::{content, Disk, Fill};

/// Counts reads, their sizes and the most in flight at once; each read takes a little while.
struct Counting {
    inner: MemReadAt,
    reads: Mutex<Vec<(u64, usize)>>,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
    bytes: AtomicU64,
}

impl ReadAt for Counting {
    fn len(&self) -> u64 {
        self.inner.len()
    }
    fn read_at(&self, offset: u64, len: usize) -> BoxFuture<'_, io::Result<Bytes>> {
        Box::pin(async move {
            self.reads.lock().unwrap().push((offset, len));
            let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
            self.max_in_flight.fetch_max(now, Ordering::SeqCst);
            self.bytes.fetch_add(len as u64, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(5)).await;
            let r = self.inner.read_at(offset, len).await;
            self.in_flight.fetch_sub(1, Ordering::SeqCst);
            r
        })
    }
}

async fn image_bytes(disk: &Disk, codec: Option<Codec>) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("x.qcow2");
    let options = WriterOptions {
        compression: codec,
        ..WriterOptions::default()
    };
    common::write_qcow2(disk, options, 1 << 20, &path).await;
    std::fs::read(&path).unwrap()
}

async fn read_all(bytes: Vec<u8>, options: ReadOptions) -> (Arc<Counting>, Vec<u8>, u64) {
    let counting = Arc::new(Counting {
        inner: MemReadAt::new(bytes),
        reads: Mutex::new(Vec::new()),
        in_flight: AtomicUsize::new(0),
        max_in_flight: AtomicUsize::new(0),
        bytes: AtomicU64::new(0),
    });
    let image = Qcow2Image::open(counting.clone()).await.unwrap();
    let mut out = vec![0u8; image.virtual_size() as usize];
    let mut r = image.data_reader(options);
    let mut peak = 0;
    while let Some(c) = r.next_chunk().await.unwrap() {
        peak = peak.max(r.bytes_in_flight());
        out[c.guest_offset as usize..c.guest_offset as usize + c.data.len()]
            .copy_from_slice(&c.data);
    }
    (counting, out, peak)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contiguous_clusters_are_read_in_max_read_size_pieces_concurrently() {
    let disk = Disk {
        size: 32 << 20,
        segments: vec![(0, content(Fill::Random, 32 << 20, 1))],
    };
    let bytes = image_bytes(&disk, None).await;
    let options = ReadOptions {
        max_read_size: 4 << 20,
        max_in_flight_bytes: 16 << 20,
        concurrency: 4,
    };
    let (c, out, peak) = read_all(bytes, options).await;
    assert!(out == disk.bytes());
    let reads = c.reads.lock().unwrap().clone();
    let data_reads: Vec<_> = reads.iter().filter(|(_, len)| *len == 4 << 20).collect();
    // 32 MiB of 64 KiB clusters: 8 reads of 4 MiB, plus header (two reads), L1 and L2.
    assert_eq!(data_reads.len(), 8, "{reads:?}");
    assert!(reads.len() <= 8 + 4, "{reads:?}");
    assert!(
        c.max_in_flight.load(Ordering::SeqCst) >= 2,
        "reads did not overlap"
    );
    assert!(c.max_in_flight.load(Ordering::SeqCst) <= 4);
    assert!(peak <= 16 << 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compressed_clusters_are_coalesced_and_memory_stays_in_budget() {
    let disk = Disk {
        size: 16 << 20,
        segments: vec![(0, content(Fill::Text, 16 << 20, 2))],
    };
    let bytes = image_bytes(&disk, Some(Codec::Zstd { level: 1 })).await;
    let file_len = bytes.len() as u64;
    let options = ReadOptions {
        max_read_size: 1 << 20,
        max_in_flight_bytes: 3 << 20,
        concurrency: 8,
    };
    let (c, out, peak) = read_all(bytes, options).await;
    assert!(out == disk.bytes());
    let reads = c.reads.lock().unwrap().clone();
    // 256 compressed clusters; each read decodes at most 1 MiB (16 clusters): ~16 reads.
    assert!(reads.len() <= 16 + 4, "{} reads", reads.len());
    assert!(
        c.bytes.load(Ordering::SeqCst) <= file_len,
        "read more than the file"
    );
    assert!(peak <= 3 << 20, "peak {peak}");
}
