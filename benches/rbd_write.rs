//! Asynchronous sequential writes to an RBD image: 4 MiB writes, 16 in flight, the same
//! shape as `rbd bench --io-type write --io-size 4M --io-threads 16 --io-pattern seq`.
//!
//! Needs the local cluster (`scripts/dev-cluster up`). `benches/compare-rbd-write.sh` runs this
//! and `rbd bench` in one go and prints the ratio. Each iteration overwrites the whole image
//! (criterion's warm-up allocates its objects first), as the script's `rbd bench` run does.

// `criterion_group!` generates an undocumented public function.
#![allow(missing_docs)]

use std::time::Duration;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use diskferry_integration_tests::{cluster, pattern, pool, purge_image, unique};
use futures::stream::{self, StreamExt, TryStreamExt};
use rbd::{CreateOptions, Image, OpenMode};

const IO_SIZE: usize = 4 << 20;
const IN_FLIGHT: usize = 16;
/// Image size, overridable so the script can match `rbd bench --io-total`.
fn image_size() -> u64 {
    std::env::var("DISKFERRY_BENCH_IMAGE_MIB")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(1024)
        << 20
}

async fn write_image(image: &Image, size: u64, data: &Bytes) {
    stream::iter((0..size).step_by(IO_SIZE))
        .map(|offset| image.write(offset, data.clone()))
        .buffer_unordered(IN_FLIGHT)
        .try_collect::<()>()
        .await
        .expect("write");
    image.flush().await.expect("flush");
}

fn bench(c: &mut Criterion) {
    let _ = cluster();
    let ioctx = pool();
    let name = unique("bench-write");
    let size = image_size();
    rbd::create(&ioctx, &name, size, &CreateOptions::default()).expect("create bench image");
    let image = Image::open(&ioctx, &name, OpenMode::ReadWrite).expect("open bench image");
    let data = Bytes::from(pattern(1, IO_SIZE));
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");

    let mut group = c.benchmark_group("rbd_write");
    group.throughput(Throughput::Bytes(size));
    group.sample_size(10);
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(20));
    group.bench_function("seq_4MiB_x16", |b| {
        b.iter(|| runtime.block_on(write_image(&image, size, &data)));
    });
    group.finish();
    drop(image);
    purge_image(&ioctx, &name);
}

criterion_group!(benches, bench);
criterion_main!(benches);
