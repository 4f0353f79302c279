//! Rough single-thread codec throughput and an end-to-end vfs backup/restore timing.
//!
//! `cargo run --release -p longhorn --example throughput [DIR]` (DIR defaults to a temp dir).

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use longhorn::{
    BackupName, BackupOptions, BackupStore, BlockDecoder, BlockEncoder, Compression, RestoreItem,
    RestoreOptions, VfsDriver, VolumeName,
};

const BS: usize = 2 << 20;
const BLOCKS: usize = 64;

fn blocks() -> Vec<Bytes> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..BLOCKS)
        .map(|i| {
            let v: Vec<u8> = if i % 2 == 0 {
                (0..BS)
                    .map(|_| {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        x as u8
                    })
                    .collect()
            } else {
                format!("block {i}: the quick brown fox jumps over the lazy dog\n")
                    .into_bytes()
                    .into_iter()
                    .cycle()
                    .take(BS)
                    .collect()
            };
            Bytes::from(v)
        })
        .collect()
}

fn mib_s(bytes: usize, secs: f64) -> f64 {
    bytes as f64 / (1 << 20) as f64 / secs
}

#[tokio::main]
async fn main() {
    let data = blocks();
    let total = BS * BLOCKS;
    let t = Instant::now();
    for b in &data {
        std::hint::black_box(BlockEncoder::checksum(b));
    }
    println!(
        "checksum (SHA-512/64): {:.0} MiB/s",
        mib_s(total, t.elapsed().as_secs_f64())
    );
    for method in [Compression::Lz4, Compression::Gzip, Compression::None] {
        let mut enc = BlockEncoder::new(method);
        let t = Instant::now();
        let encoded: Vec<_> = data.iter().map(|b| enc.encode(b)).collect();
        let enc_s = t.elapsed().as_secs_f64();
        let stored: usize = encoded.iter().map(|e| e.payload.len()).sum();
        let mut dec = BlockDecoder::new();
        let t = Instant::now();
        for e in &encoded {
            std::hint::black_box(
                dec.decode(method, &e.payload, BS as u64, &e.checksum, 0)
                    .unwrap(),
            );
        }
        let dec_s = t.elapsed().as_secs_f64();
        println!(
            "{method}: encode (hash+compress) {:.0} MiB/s, decode+verify {:.0} MiB/s, stored {:.1}%",
            mib_s(total, enc_s),
            mib_s(total, dec_s),
            stored as f64 * 100.0 / total as f64
        );
    }

    let tmp = tempfile::tempdir().unwrap();
    let root = std::env::args()
        .nth(1)
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| tmp.path().to_owned());
    let store = BackupStore::new(Arc::new(VfsDriver::new(&root).unwrap()));
    let vol = VolumeName::new("bench-vol").unwrap();
    let backup = BackupName::generate();
    let t = Instant::now();
    let mut w = store
        .begin_backup(BackupOptions::new(
            vol.clone(),
            backup.clone(),
            total as u64,
        ))
        .await
        .unwrap();
    for (i, b) in data.iter().enumerate() {
        w.put_block((i * BS) as u64, b.clone()).await.unwrap();
    }
    let (stats, _) = w.finish().await.unwrap();
    println!(
        "vfs backup lz4 {} MiB: {:.0} MiB/s wall (incl. 2 s lock wait), {} new blocks",
        total >> 20,
        mib_s(total, t.elapsed().as_secs_f64() - 2.0),
        stats.new_blocks
    );
    let t = Instant::now();
    let mut r = store
        .open_restore(&vol, &backup, RestoreOptions::default())
        .await
        .unwrap();
    let mut n = 0usize;
    while let Some(item) = r.next().await {
        if let RestoreItem::Data { data, .. } = item.unwrap() {
            n += data.len();
        }
    }
    r.finish().await.unwrap();
    println!(
        "vfs restore lz4 {} MiB: {:.0} MiB/s wall (incl. 2 s lock wait)",
        n >> 20,
        mib_s(n, t.elapsed().as_secs_f64() - 2.0)
    );
}
