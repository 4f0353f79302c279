//! Longhorn block pipeline per 2 MiB block: SHA-512 checksum + compression (lz4, gzip, none),
//! as the backup writer does it (encoder state reused), on random and on text-like blocks;
//! plus the whole-core ceiling: the same work on every core at once.

// `criterion_group!` generates an undocumented public function.
#![allow(missing_docs)]

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use longhorn::{BlockEncoder, Compression};

const BLOCK: usize = 2 << 20;
/// Blocks per all-core iteration, per thread.
const BLOCKS_PER_THREAD: usize = 8;

fn random_block(seed: u64) -> Bytes {
    Bytes::from(diskferry_benches::pseudo_random(BLOCK, seed))
}

fn text_block() -> Bytes {
    let line = b"longhorn backs up volumes in two mebibyte blocks, deduplicated by checksum\n";
    Bytes::from(
        line.iter()
            .copied()
            .cycle()
            .take(BLOCK)
            .collect::<Vec<u8>>(),
    )
}

fn per_block(c: &mut Criterion) {
    let mut group = c.benchmark_group("longhorn_block_2mib");
    group.sample_size(20);
    group.throughput(Throughput::Bytes(BLOCK as u64));
    for (kind, block) in [("random", random_block(7)), ("text", text_block())] {
        for method in [Compression::Lz4, Compression::Gzip, Compression::None] {
            let mut enc = BlockEncoder::new(method);
            group.bench_function(format!("{}_{kind}", method.as_str()), |b| {
                b.iter(|| enc.encode(&block))
            });
        }
        group.bench_function(format!("sha512_only_{kind}"), |b| {
            b.iter(|| BlockEncoder::checksum(&block))
        });
    }
    group.finish();
}

fn all_cores(c: &mut Criterion) {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut group = c.benchmark_group("longhorn_block_all_cores");
    group.sample_size(10);
    group.throughput(Throughput::Bytes(
        (BLOCK * BLOCKS_PER_THREAD * threads) as u64,
    ));
    let block = random_block(9);
    group.bench_function(format!("lz4_sha512_random_{threads}_threads"), |b| {
        b.iter(|| {
            std::thread::scope(|s| {
                for _ in 0..threads {
                    let block = block.clone();
                    s.spawn(move || {
                        let mut enc = BlockEncoder::new(Compression::Lz4);
                        for _ in 0..BLOCKS_PER_THREAD {
                            std::hint::black_box(enc.encode(&block));
                        }
                    });
                }
            })
        })
    });
    group.finish();
}

criterion_group!(benches, per_block, all_cores);
criterion_main!(benches);
