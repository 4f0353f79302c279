//! Writer conformance: for every mode and shape, `qemu-img check` finds no errors, `qemu-img
//! compare` says the image equals the raw source, and (uncompressed and deflate) the independent
//! `qcow2-rs` reader reads back the same bytes.

mod common;

use common::*;
use qcow2::codec::Codec;
use qcow2::{Qcow2Writer, WriteError, WriterOptions};

const MIB: u64 = 1 << 20;

fn shapes() -> Vec<(&'static str, Disk)> {
    let unaligned = 5 * 65536 + 4608;
    vec![
        (
            "empty",
            Disk {
                size: 0,
                segments: vec![],
            },
        ),
        (
            "holes-only",
            Disk {
                size: 16 * MIB,
                segments: vec![],
            },
        ),
        (
            "size-not-cluster-multiple",
            Disk {
                size: unaligned,
                segments: vec![
                    (0, content(Fill::Random, 100_000, 1)),
                    (
                        200_000,
                        content(Fill::Text, (unaligned - 200_000) as usize, 2),
                    ),
                ],
            },
        ),
        (
            "1tib-sparse",
            Disk {
                size: 1 << 40,
                segments: vec![
                    (512 * MIB - 4096, content(Fill::Random, 8192, 3)),
                    (700 << 30, content(Fill::Text, 2 * MIB as usize, 4)),
                    (
                        (1 << 40) - 3 * MIB,
                        content(Fill::Random, 3 * MIB as usize, 5),
                    ),
                ],
            },
        ),
        (
            "all-zero",
            Disk {
                size: 8 * MIB,
                segments: vec![(0, content(Fill::Zeros, 8 * MIB as usize, 0))],
            },
        ),
        (
            "all-random",
            Disk {
                size: 8 * MIB,
                segments: vec![(0, content(Fill::Random, 8 * MIB as usize, 6))],
            },
        ),
        (
            "mixed",
            Disk {
                size: 12 * MIB,
                segments: vec![
                    (0, content(Fill::Random, MIB as usize, 7)),
                    (MIB, content(Fill::Text, 3 * MIB as usize, 8)),
                    (4 * MIB, content(Fill::Zeros, MIB as usize, 0)),
                    (6 * MIB + 1234, content(Fill::Random, 100_000, 9)),
                    (8 * MIB, content(Fill::Text, 4 * MIB as usize, 10)),
                ],
            },
        ),
    ]
}

/// Ranges to read back with qcow2-rs: every segment, plus holes around and between them.
fn readback_ranges(disk: &Disk) -> Vec<(u64, usize)> {
    let mut r = Vec::new();
    for (off, data) in &disk.segments {
        // qcow2-rs reads whole 512-byte sectors only.
        let start = off.saturating_sub(4096) / 512 * 512;
        let end = (off + data.len() as u64 + 4096)
            .next_multiple_of(512)
            .min(disk.size);
        r.push((start, (end - start) as usize));
    }
    if disk.size > 0 {
        r.push((disk.size / 3 / 512 * 512, 4096.min(disk.size as usize)));
    }
    r
}

fn expected(disk: &Disk, off: u64, len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    for (s, data) in &disk.segments {
        let (a, b) = (off.max(*s), (off + len as u64).min(s + data.len() as u64));
        if a < b {
            v[(a - off) as usize..(b - off) as usize]
                .copy_from_slice(&data[(a - s) as usize..(b - s) as usize]);
        }
    }
    v
}

async fn check_mode(name: &str, codec: Option<Codec>, second_reader: bool) {
    let dir = tempfile::tempdir().unwrap();
    for (shape, disk) in shapes() {
        let raw = dir.path().join(format!("{shape}.raw"));
        let img = dir.path().join(format!("{shape}-{name}.qcow2"));
        disk.write_raw(&raw);
        let options = WriterOptions {
            compression: codec,
            threads: 2,
            ..WriterOptions::default()
        };
        // Odd push sizes exercise partial clusters.
        let done = write_qcow2(&disk, options, 300_007, &img).await;
        let check = qemu_check(&img);
        qemu_compare(&raw, &img);
        if codec.is_some() && matches!(shape, "mixed" | "size-not-cluster-multiple") {
            assert!(
                done.compressed_clusters > 0,
                "{shape}/{name}: no compressed clusters\n{check}"
            );
        }
        if shape == "all-zero" || shape == "holes-only" || shape == "empty" {
            assert_eq!(
                done.allocated_clusters, 0,
                "{shape}: zero clusters must stay unallocated"
            );
        }
        if second_reader && disk.size > 0 {
            let ranges = readback_ranges(&disk);
            let got = qcow2rs_read(&img, &ranges);
            for ((off, len), data) in ranges.iter().zip(got) {
                assert!(
                    data == expected(&disk, *off, *len),
                    "{shape}/{name}: qcow2-rs reads different bytes at {off}+{len}"
                );
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uncompressed_images_pass_qemu_check_compare_and_qcow2_rs() {
    check_mode("none", None, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deflate_images_pass_qemu_check_compare_and_qcow2_rs() {
    check_mode("deflate", Some(Codec::Deflate { level: 6 }), true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zstd_images_pass_qemu_check_and_compare() {
    check_mode("zstd", Some(Codec::Zstd { level: 3 }), false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smallest_and_largest_cluster_sizes_pass_qemu_check_and_compare() {
    let dir = tempfile::tempdir().unwrap();
    let (_, disk) = shapes().into_iter().find(|(n, _)| *n == "mixed").unwrap();
    let raw = dir.path().join("mixed.raw");
    disk.write_raw(&raw);
    for cs in [512u64, 4096, 2 * MIB] {
        for codec in [
            None,
            Some(Codec::Deflate { level: 1 }),
            Some(Codec::Zstd { level: 1 }),
        ] {
            let img = dir.path().join(format!("cs{cs}.qcow2"));
            let options = WriterOptions {
                cluster_size: cs,
                compression: codec,
                ..WriterOptions::default()
            };
            write_qcow2(&disk, options, 1 << 20, &img).await;
            qemu_check(&img);
            qemu_compare(&raw, &img);
        }
    }
}

/// The writer never changes the size it is given: a size qemu reads as it is (a whole number of
/// 512-byte sectors) is the size `qemu-img info` reports, with the data up to its last byte; a
/// size qemu would read differently (it rounds the field down to a sector) is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn written_virtual_size_is_the_size_given_or_refused() {
    let dir = tempfile::tempdir().unwrap();
    for size in [
        512,
        8 * MIB - 512,
        8 * MIB,
        5 * 65536 + 4608,
        8 * MIB - 100,
        8 * MIB + 1,
        511,
    ] {
        if size % 512 != 0 {
            let err = Qcow2Writer::new(size, WriterOptions::default())
                .expect_err("a size that is not a multiple of 512 must be refused");
            assert!(
                matches!(err, WriteError::UnalignedVirtualSize(s) if s == size),
                "{size}: {err}"
            );
            let message = err.to_string();
            assert!(
                message.contains(&size.to_string()) && message.contains("512"),
                "the message names the size and the sector: {message}"
            );
            continue;
        }
        // Data up to the last byte, so a shorter image would lose it.
        let tail = 1000.min(size);
        let disk = Disk {
            size,
            segments: vec![(size - tail, content(Fill::Random, tail as usize, size))],
        };
        let raw = dir.path().join(format!("{size}.raw"));
        let img = dir.path().join(format!("{size}.qcow2"));
        disk.write_raw(&raw);
        write_qcow2(&disk, WriterOptions::default(), 4096, &img).await;
        assert_eq!(qemu_virtual_size(&img), size, "qemu-img info of {size}");
        qemu_check(&img);
        qemu_compare(&raw, &img);
    }
}
