//! Mapping walk of 1 TiB qcow2 images held in memory: a sparse one (a few MiB at high offsets)
//! and one with a cluster in every L2 table (2048 L2 tables, 16M entries to decode).

// `criterion_group!` generates an undocumented public function.
#![allow(missing_docs)]

use std::sync::Arc;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion};
use qcow2::{MemReadAt, Qcow2Image, Qcow2Writer, WriterOptions};

const TIB: u64 = 1 << 40;
const MIB: u64 = 1 << 20;

/// Builds an image in memory from (offset, length) runs of non-zero data.
fn build(runs: &[(u64, u64)], rt: &tokio::runtime::Runtime) -> Bytes {
    rt.block_on(async {
        let mut w = Qcow2Writer::new(TIB, WriterOptions::default()).unwrap();
        let mut file = vec![0u8; 1 << 16];
        for &(off, len) in runs {
            for c in w
                .push(off, Bytes::from(vec![0x5a; len as usize]))
                .await
                .unwrap()
            {
                assert_eq!(c.file_offset as usize, file.len());
                file.extend_from_slice(&c.data);
            }
        }
        let done = w.finish().await.unwrap();
        for c in done.tail_chunks {
            file.extend_from_slice(&c.data);
        }
        file[..1 << 16].copy_from_slice(&done.header_chunk.data);
        Bytes::from(file)
    })
}

fn walk(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let sparse = build(
        &[
            (300 << 30, 2 * MIB),
            (700 << 30, MIB),
            (TIB - 4 * MIB, 4 * MIB),
        ],
        &rt,
    );
    let per_l2: Vec<(u64, u64)> = (0..2048u64).map(|i| (i * 512 * MIB, 1 << 16)).collect();
    let every_l2 = build(&per_l2, &rt);
    let mut group = c.benchmark_group("qcow2_mapping_walk_1tib");
    group.sample_size(10);
    for (name, image) in [("sparse_3_runs", sparse), ("one_cluster_per_l2", every_l2)] {
        group.bench_function(name, |b| {
            b.iter(|| {
                rt.block_on(async {
                    let img = Qcow2Image::open(Arc::new(MemReadAt::new(image.clone())))
                        .await
                        .unwrap();
                    let mut w = img.extents();
                    let mut n = 0;
                    while w.next().await.unwrap().is_some() {
                        n += 1;
                    }
                    n
                })
            })
        });
    }
    group.finish();
}

criterion_group!(benches, walk);
criterion_main!(benches);
