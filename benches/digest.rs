//! The content digest alone (issue 13): what the end-to-end verification costs per byte, to set
//! against a job's CPU. 64 MiB of incompressible data, one core:
//! - `content_digest`: diskferry's [`ContentDigest`] (SHA-256 of 1 MiB block SHA-256s), as the
//!   pipeline's digest thread runs it;
//! - `content_digest_half_zero_blocks`: the same with every other MiB all zeros (allocated zeros
//!   given as data);
//! - `sha256_flat`: one SHA-256 over the same bytes (the hash's own speed, SHA-NI when the CPU
//!   has it);
//! - `blake3_of_1mib_blocks` and `blake3_flat`: the same construction and a flat hash with BLAKE3
//!   on one thread, to decide whether a second, separately named algorithm would pay.

// `criterion_group!` generates an undocumented public function.
#![allow(missing_docs)]

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use diskferry::{ContentDigest, DIGEST_BLOCK_SIZE};
use sha2::{Digest as _, Sha256};

/// Bytes hashed per iteration.
const INPUT: usize = 64 << 20;

fn digest(c: &mut Criterion) {
    let input = diskferry_benches::pseudo_random(INPUT, 0x9e37_79b9_7f4a_7c15);
    let mut group = c.benchmark_group("digest_64mib");
    group.sample_size(10);
    group.throughput(Throughput::Bytes(INPUT as u64));
    group.bench_function("content_digest", |b| {
        b.iter(|| {
            let mut digest = ContentDigest::new(INPUT as u64);
            digest.data(0, &input);
            digest.finish()
        })
    });
    // Every other MiB all zeros, as in a raw file or qcow2 with zeroed, allocated regions.
    let mut half_zero = input.clone();
    for block in half_zero.chunks_mut(2 * DIGEST_BLOCK_SIZE as usize) {
        block[..DIGEST_BLOCK_SIZE as usize].fill(0);
    }
    group.bench_function("content_digest_half_zero_blocks", |b| {
        b.iter(|| {
            let mut digest = ContentDigest::new(INPUT as u64);
            digest.data(0, &half_zero);
            digest.finish()
        })
    });
    group.bench_function("sha256_flat", |b| b.iter(|| Sha256::digest(&input)));
    group.bench_function("blake3_of_1mib_blocks", |b| {
        b.iter(|| {
            let mut outer = blake3::Hasher::new();
            for block in input.chunks(DIGEST_BLOCK_SIZE as usize) {
                outer.update(blake3::hash(block).as_bytes());
            }
            outer.finalize()
        })
    });
    group.bench_function("blake3_flat", |b| b.iter(|| blake3::hash(&input)));
    group.finish();
}

criterion_group!(benches, digest);
criterion_main!(benches);
