//! Reader conformance: images made by `qemu-img` with various options read byte-identically to
//! `qemu-img convert -O raw`.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use common::*;
use qcow2::{ExtentKind, FileReadAt, Qcow2Image, ReadOptions};

const MIB: u64 = 1 << 20;

/// A 12 MiB disk of random, text, explicit zeros and holes, with unaligned edges.
fn source_disk() -> Disk {
    Disk {
        size: 12 * MIB,
        segments: vec![
            (0, content(Fill::Random, MIB as usize, 11)),
            (MIB, content(Fill::Text, 3 * MIB as usize, 12)),
            (4 * MIB, content(Fill::Zeros, MIB as usize, 0)),
            (6 * MIB + 1234, content(Fill::Random, 100_000, 13)),
            (8 * MIB, content(Fill::Text, 4 * MIB as usize - 512, 14)),
        ],
    }
}

/// Reads `img` with our reader (small reads and budget, to exercise the planner) and compares
/// with qemu-img's raw conversion.
async fn assert_reads_like_qemu(dir: &Path, img: &Path) {
    let ours = dir.join("ours.raw");
    let theirs = dir.join("theirs.raw");
    let _ = std::fs::remove_file(&theirs);
    run(Command::new(qemu_img())
        .args(["convert", "-O", "raw"])
        .arg(img)
        .arg(&theirs));
    for options in [
        ReadOptions::default(),
        ReadOptions {
            max_read_size: 256 << 10,
            max_in_flight_bytes: 1 << 20,
            concurrency: 3,
        },
    ] {
        read_to_raw(img, &ours, options).await;
        assert_files_equal(&ours, &theirs);
    }
}

/// The source disk written to `dir/src.raw` and converted by `qemu-img convert OPTS` into
/// `dir/img.qcow2`, whose path is returned.
fn qemu_converted(dir: &Path, opts: &[&str]) -> PathBuf {
    let raw = dir.join("src.raw");
    source_disk().write_raw(&raw);
    let img = dir.join("img.qcow2");
    run(Command::new(qemu_img())
        .args(["convert", "-f", "raw", "-O", "qcow2"])
        .args(opts)
        .arg(&raw)
        .arg(&img));
    img
}

/// Makes the source disk into a qcow2 image with `qemu-img convert OPTS`, runs `check` on
/// the image, asserts it reads as qemu reads it, and returns it.
async fn qemu_made(opts: &[&str], check: impl Fn(&Qcow2Image)) -> Qcow2Image {
    let dir = tempfile::tempdir().unwrap();
    let img = qemu_converted(dir.path(), opts);
    let image = Qcow2Image::open(Arc::new(FileReadAt::open(&img).unwrap()))
        .await
        .unwrap();
    check(&image);
    assert_reads_like_qemu(dir.path(), &img).await;
    image
}

async fn has_compressed(img: &Qcow2Image) -> bool {
    img.collect_extents()
        .await
        .unwrap()
        .iter()
        .any(|e| matches!(e.kind, ExtentKind::Compressed { .. }))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_default_qemu_image() {
    qemu_made(&[], |i| assert_eq!(i.header().version, 3)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_v2_compat_0_10_image() {
    qemu_made(&["-o", "compat=0.10"], |i| {
        assert_eq!(i.header().version, 2)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_512_byte_cluster_image() {
    qemu_made(&["-o", "cluster_size=512"], |i| {
        assert_eq!(i.cluster_size(), 512)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_2mib_cluster_image() {
    qemu_made(&["-o", "cluster_size=2M"], |i| {
        assert_eq!(i.cluster_size(), 2 * MIB)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_deflate_compressed_image() {
    let image = qemu_made(&["-c"], |i| {
        assert_eq!(i.header().compression_type, qcow2::CompressionType::Deflate)
    })
    .await;
    assert!(has_compressed(&image).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_zstd_compressed_image() {
    let image = qemu_made(&["-c", "-o", "compression_type=zstd"], |i| {
        assert_eq!(i.header().compression_type, qcow2::CompressionType::Zstd)
    })
    .await;
    assert!(has_compressed(&image).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_preallocation_metadata_image() {
    qemu_made(&["-o", "preallocation=metadata"], |_| {}).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_lazy_refcounts_image() {
    qemu_made(&["-o", "lazy_refcounts=on"], |i| {
        assert_ne!(
            i.header().compatible_features & qcow2::format::COMPAT_LAZY_REFCOUNTS,
            0
        )
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_active_layer_of_image_with_internal_snapshots() {
    let dir = tempfile::tempdir().unwrap();
    let img = qemu_converted(dir.path(), &[]);
    run(Command::new(qemu_img())
        .args(["snapshot", "-c", "snap1"])
        .arg(&img));
    // Change the active layer after the snapshot: overwrite, zero and discard ranges.
    qemu_io(
        &img,
        &["write -P 0xab 512k 1M", "write -z 2M 64k", "discard 8M 1M"],
    );
    run(Command::new(qemu_img())
        .args(["snapshot", "-c", "snap2"])
        .arg(&img));
    qemu_io(&img, &["write -P 0xcd 10M 64k"]);
    let image = Qcow2Image::open(Arc::new(FileReadAt::open(&img).unwrap()))
        .await
        .unwrap();
    assert_eq!(image.header().nb_snapshots, 2);
    assert_reads_like_qemu(dir.path(), &img).await;
    // The active layer, not the snapshot: the pattern written after the snapshot is there.
    let ours = dir.path().join("ours.raw");
    read_to_raw(&img, &ours, ReadOptions::default()).await;
    let data = std::fs::read(&ours).unwrap();
    assert!(data[512 << 10..(512 << 10) + (1 << 20)]
        .iter()
        .all(|&b| b == 0xab));
    assert!(data[10 << 20..(10 << 20) + (64 << 10)]
        .iter()
        .all(|&b| b == 0xcd));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn walks_1tib_sparse_qemu_image_into_few_extents() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("big.qcow2");
    qemu_create(&img, "1T");
    qemu_io(&img, &["write -P 0x11 700G 2M", "write -P 0x22 1023G 1M"]);
    let image = Qcow2Image::open(Arc::new(FileReadAt::open(&img).unwrap()))
        .await
        .unwrap();
    let extents = image.collect_extents().await.unwrap();
    let data: Vec<_> = extents
        .iter()
        .filter(|e| !e.reads_as_zero())
        .map(|e| (e.guest_offset, e.len))
        .collect();
    assert_eq!(data, vec![(700 << 30, 2 * MIB), (1023 << 30, MIB)]);
    assert_eq!(extents.last().unwrap().guest_end(), 1 << 40);
    assert!(extents.len() <= 5, "{extents:?}");
    let mut r = image.data_reader(ReadOptions::default());
    let mut total = 0;
    while let Some(c) = r.next_chunk().await.unwrap() {
        let expect = if c.guest_offset < (1000 << 30) {
            0x11
        } else {
            0x22
        };
        assert!(c.data.iter().all(|&b| b == expect));
        total += c.data.len() as u64;
    }
    assert_eq!(total, 3 * MIB);
}

/// qemu reads the size field in whole 512-byte sectors, rounded down (block/qcow2.c:
/// `bs->total_sectors = header.size / BDRV_SECTOR_SIZE`): a field of 8 MiB − 100 is a disk of
/// 8 MiB − 512, and the data in the last partial sector is not part of the disk.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn size_not_a_sector_multiple_reads_as_qemu_reads_it() {
    const FIELD: u64 = 8 * MIB - 100;
    /// Byte offset of the big-endian virtual size field in the header.
    const SIZE_FIELD_OFFSET: u64 = 24;
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("odd.qcow2");
    qemu_create(&img, "8M");
    // Data in the first cluster and in the last 1 KiB: one whole sector inside the disk as qemu
    // reads it, and the partial sector past it.
    qemu_io(&img, &["write -P 0x5a 0 64k", "write -P 0xa5 8191k 1k"]);
    let f = std::fs::OpenOptions::new().write(true).open(&img).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&f, &FIELD.to_be_bytes(), SIZE_FIELD_OFFSET).unwrap();
    drop(f);

    let qemu_size = qemu_virtual_size(&img);
    assert_eq!(
        qemu_size,
        8 * MIB - 512,
        "the oracle rounds down to a sector"
    );
    let image = Qcow2Image::open(Arc::new(FileReadAt::open(&img).unwrap()))
        .await
        .unwrap();
    assert_eq!(image.header().size, FIELD, "the field as stored");
    assert_eq!(image.virtual_size(), qemu_size);
    let extents = image.collect_extents().await.unwrap();
    assert_eq!(extents.last().unwrap().guest_end(), qemu_size);
    assert_reads_like_qemu(dir.path(), &img).await;
}
