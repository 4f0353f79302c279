//! Clone time against the parent's size: 20 clones of a protected snapshot of a 1 GiB parent
//! and of a 100 GiB parent (the same 64 MiB of data, spread over the disk), in one bench run,
//! for v1 and v2 clones (`rbd::clone`, the call `diskferry clone` makes per child). The clones
//! are removed between samples, outside the timing.
//!
//! Needs the local cluster (`scripts/dev-cluster up`). `benches/compare-clone.sh` runs this and
//! prints the ratio 100 GiB / 1 GiB per format (target: under 1.5).

// `criterion_group!` generates an undocumented public function.
#![allow(missing_docs)]

use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion, SamplingMode};
use diskferry_integration_tests::{cluster, pattern, pool, purge_image, unique};
use rados::IoCtx;
use rbd::{CloneFormat, CloneOptions, CreateOptions, Image, OpenMode};

const CLONES: usize = 20;
const SNAP: &str = "base";
const GIB: u64 = 1 << 30;
const CHUNK: usize = 4 << 20;
const CHUNKS: u64 = 16;

/// A parent of `size` bytes with 16 chunks of 4 MiB spread evenly, snapshotted and protected.
fn make_parent(ioctx: &IoCtx, runtime: &tokio::runtime::Runtime, size: u64) -> String {
    let name = unique("bench-clone-parent");
    rbd::create(ioctx, &name, size, &CreateOptions::default()).expect("create parent");
    let image = Image::open(ioctx, &name, OpenMode::ReadWrite).expect("open parent");
    let stride = size / CHUNKS / CHUNK as u64 * CHUNK as u64;
    runtime.block_on(async {
        for i in 0..CHUNKS {
            let data = Bytes::from(pattern(i, CHUNK));
            image.write(i * stride, data).await.expect("write parent");
        }
        image.flush().await.expect("flush parent");
    });
    image.snap_create(SNAP).expect("snapshot parent");
    image.snap_protect(SNAP).expect("protect snapshot");
    name
}

fn bench(c: &mut Criterion) {
    let _ = cluster();
    let ioctx = pool();
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    let parents = [
        ("1GiB", make_parent(&ioctx, &runtime, GIB)),
        ("100GiB", make_parent(&ioctx, &runtime, 100 * GIB)),
    ];

    let mut group = c.benchmark_group("clone_20");
    group.sampling_mode(SamplingMode::Flat);
    group.sample_size(10);
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(10));
    for (format_name, format) in [("v1", CloneFormat::V1), ("v2", CloneFormat::V2)] {
        let options = CloneOptions {
            format,
            ..CloneOptions::default()
        };
        for (size_name, parent) in &parents {
            group.bench_function(format!("{format_name}/{size_name}"), |b| {
                b.iter_custom(|iters| {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        let children: Vec<String> =
                            (0..CLONES).map(|_| unique("bench-clone-child")).collect();
                        let start = Instant::now();
                        for child in &children {
                            rbd::clone(&ioctx, parent, SNAP, &ioctx, child, &options)
                                .expect("clone");
                        }
                        total += start.elapsed();
                        for child in &children {
                            rbd::remove(&ioctx, child).expect("remove clone");
                        }
                    }
                    total
                });
            });
        }
    }
    group.finish();
    for (_, parent) in &parents {
        purge_image(&ioctx, parent);
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
