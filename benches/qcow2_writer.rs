//! Writer throughput for none, deflate and zstd on 64 MiB of half random, half text data
//! (chunks are produced and dropped: this measures the writer, not a disk).

// `criterion_group!` generates an undocumented public function.
#![allow(missing_docs)]

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use qcow2::codec::{Codec, DEFLATE_DEFAULT_LEVEL, ZSTD_DEFAULT_LEVEL};
use qcow2::{Qcow2Writer, WriterOptions};

const SIZE: usize = 64 << 20;
const PUSH: usize = 4 << 20;

fn data() -> Vec<Bytes> {
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    let mut v = Vec::with_capacity(SIZE);
    while v.len() < SIZE / 2 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    let line = b"the quick qcow2 writer packs compressed clusters at byte granularity\n";
    while v.len() < SIZE {
        v.extend_from_slice(line);
    }
    v.truncate(SIZE);
    let all = Bytes::from(v);
    (0..SIZE / PUSH)
        .map(|i| all.slice(i * PUSH..(i + 1) * PUSH))
        .collect()
}

fn throughput(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let pieces = data();
    let mut group = c.benchmark_group("qcow2_writer_64mib");
    group.sample_size(10);
    group.throughput(Throughput::Bytes(SIZE as u64));
    for (name, codec) in [
        ("none", None),
        (
            "deflate",
            Some(Codec::Deflate {
                level: DEFLATE_DEFAULT_LEVEL,
            }),
        ),
        (
            "zstd",
            Some(Codec::Zstd {
                level: ZSTD_DEFAULT_LEVEL,
            }),
        ),
    ] {
        group.bench_function(name, |b| {
            b.iter(|| {
                rt.block_on(async {
                    let options = WriterOptions {
                        compression: codec,
                        ..WriterOptions::default()
                    };
                    let mut w = Qcow2Writer::new(SIZE as u64, options).unwrap();
                    let mut out = 0u64;
                    for (i, p) in pieces.iter().enumerate() {
                        for c in w.push((i * PUSH) as u64, p.clone()).await.unwrap() {
                            out += c.data.len() as u64;
                        }
                    }
                    let done = w.finish().await.unwrap();
                    out + done
                        .tail_chunks
                        .iter()
                        .map(|c| c.data.len() as u64)
                        .sum::<u64>()
                })
            })
        });
    }
    group.finish();
}

criterion_group!(benches, throughput);
criterion_main!(benches);
