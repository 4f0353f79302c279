//! The content digest alone (issue 13): what the end-to-end verification costs per byte, to set
//! against a job's CPU. 64 MiB of incompressible data, one core:
//! - `content_digest_sha256` and `content_digest_blake3`: diskferry's [`ContentDigest`] with each
//!   [`DigestAlgorithm`] (H of 1 MiB block H's), as the pipeline's digest thread runs it;
//! - `content_digest_half_zero_blocks_*`: the same with every other MiB all zeros (allocated
//!   zeros given as data);
//! - `sha256_flat` and `blake3_flat`: one hash over the same bytes (the hash's own speed,
//!   SHA-NI and the widest SIMD the CPU has), on one thread.

// `criterion_group!` generates an undocumented public function.
#![allow(missing_docs)]

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use diskferry::{ContentDigest, DigestAlgorithm, DIGEST_BLOCK_SIZE};
use sha2::{Digest as _, Sha256};

/// Bytes hashed per iteration.
const INPUT: usize = 64 << 20;

fn digest(c: &mut Criterion) {
    let input = diskferry_benches::pseudo_random(INPUT, 0x9e37_79b9_7f4a_7c15);
    let mut group = c.benchmark_group("digest_64mib");
    group.sample_size(10);
    group.throughput(Throughput::Bytes(INPUT as u64));
    // Every other MiB all zeros, as in a raw file or qcow2 with zeroed, allocated regions.
    let mut half_zero = input.clone();
    for block in half_zero.chunks_mut(2 * DIGEST_BLOCK_SIZE as usize) {
        block[..DIGEST_BLOCK_SIZE as usize].fill(0);
    }
    for (label, algorithm) in [
        ("sha256", DigestAlgorithm::Sha256Blocks),
        ("blake3", DigestAlgorithm::Blake3Blocks),
    ] {
        for (kind, data) in [("", &input), ("_half_zero_blocks", &half_zero)] {
            group.bench_function(format!("content_digest{kind}_{label}"), |b| {
                b.iter(|| {
                    let mut digest = ContentDigest::with_algorithm(algorithm, INPUT as u64);
                    digest.data(0, data);
                    digest.finish()
                })
            });
        }
    }
    group.bench_function("sha256_flat", |b| b.iter(|| Sha256::digest(&input)));
    group.bench_function("blake3_flat", |b| b.iter(|| blake3::hash(&input)));
    group.finish();
}

criterion_group!(benches, digest);
criterion_main!(benches);
