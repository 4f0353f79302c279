//! A corpus of crafted bad images: each must be rejected with its own specific error, without a
//! panic. With `QCOW2_WRITE_CORPUS=DIR` the images are also written to `DIR` (this is how
//! `fuzz/corpus/mapping` was seeded).

mod common;

use std::sync::Arc;

use bytes::Bytes;
use qcow2::codec::Codec;
use qcow2::format::*;
use qcow2::{MemReadAt, Qcow2Image, Qcow2Writer, ReadError, ReadOptions, WriterOptions};

use common::{content, Fill};

const CS: u64 = 4096;

/// Where things are in the base image.
struct Meta {
    l1_off: usize,
    l2_off: usize,
    /// Index in the L2 table of a raw cluster and of a compressed one.
    raw_index: usize,
    comp_index: usize,
    comp_host: usize,
}

fn be64(b: &[u8], at: usize) -> u64 {
    u64::from_be_bytes(b[at..at + 8].try_into().unwrap())
}
fn set32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_be_bytes());
}
fn set64(b: &mut [u8], at: usize, v: u64) {
    b[at..at + 8].copy_from_slice(&v.to_be_bytes());
}

/// A small valid image: 4 KiB clusters, raw and deflate clusters, holes.
async fn base_image() -> (Vec<u8>, Meta) {
    let options = WriterOptions {
        cluster_size: CS,
        compression: Some(Codec::Deflate { level: 6 }),
        ..WriterOptions::default()
    };
    let mut w = Qcow2Writer::new(256 << 10, options).unwrap();
    let mut file = vec![0u8; CS as usize];
    let put = |chunks: Vec<qcow2::Chunk>, file: &mut Vec<u8>| {
        for c in chunks {
            assert_eq!(c.file_offset as usize, file.len());
            file.extend_from_slice(&c.data);
        }
    };
    put(
        w.push(0, Bytes::from(content(Fill::Random, 4 * CS as usize, 1)))
            .await
            .unwrap(),
        &mut file,
    );
    put(
        w.push(8 * CS, Bytes::from(content(Fill::Text, 4 * CS as usize, 2)))
            .await
            .unwrap(),
        &mut file,
    );
    let done = w.finish().await.unwrap();
    put(done.tail_chunks, &mut file);
    file[..CS as usize].copy_from_slice(&done.header_chunk.data);
    let l1_off = be64(&file, 40) as usize;
    let l2_off = (be64(&file, l1_off) & OFFSET_MASK) as usize;
    let entry = |i: usize| be64(&file, l2_off + 8 * i);
    let raw_index = (0..512).find(|&i| entry(i) & OFLAG_COPIED != 0).unwrap();
    let comp_index = (0..512)
        .find(|&i| entry(i) & OFLAG_COMPRESSED != 0)
        .unwrap();
    let shift = compressed_sectors_shift(12);
    let comp_host = (entry(comp_index) & ((1 << shift) - 1)) as usize;
    (
        file,
        Meta {
            l1_off,
            l2_off,
            raw_index,
            comp_index,
            comp_host,
        },
    )
}

/// Opens, walks and reads everything.
async fn full_read(data: Vec<u8>) -> Result<u64, ReadError> {
    let image = Qcow2Image::open(Arc::new(MemReadAt::new(data))).await?;
    let mut walker = image.extents();
    while walker.next().await?.is_some() {}
    let mut r = image.data_reader(ReadOptions::default());
    let mut bytes = 0;
    while let Some(c) = r.next_chunk().await? {
        bytes += c.data.len() as u64;
    }
    Ok(bytes)
}

type Mutate = Box<dyn Fn(&mut Vec<u8>, &Meta)>;
type Expect = fn(&ReadError) -> bool;

fn cases() -> Vec<(&'static str, Mutate, Expect)> {
    fn m(f: impl Fn(&mut Vec<u8>, &Meta) + 'static) -> Mutate {
        Box::new(f)
    }
    vec![
        ("truncated-header", m(|b, _| b.truncate(50)), |e| {
            matches!(e, ReadError::TruncatedHeader { needed: 72, .. })
        }),
        ("truncated-v3-header", m(|b, _| b.truncate(90)), |e| {
            matches!(e, ReadError::TruncatedHeader { needed: 104, .. })
        }),
        ("bad-magic", m(|b, _| set32(b, 0, 0x5146_4900)), |e| {
            matches!(e, ReadError::BadMagic(0x5146_4900))
        }),
        ("version-4", m(|b, _| set32(b, 4, 4)), |e| {
            matches!(e, ReadError::UnsupportedVersion(4))
        }),
        ("cluster-bits-8", m(|b, _| set32(b, 20, 8)), |e| {
            matches!(e, ReadError::ClusterBitsOutOfRange(8))
        }),
        ("cluster-bits-40", m(|b, _| set32(b, 20, 40)), |e| {
            matches!(e, ReadError::ClusterBitsOutOfRange(40))
        }),
        ("header-length-100", m(|b, _| set32(b, 100, 100)), |e| {
            matches!(e, ReadError::BadHeaderLength { length: 100, .. })
        }),
        (
            "header-length-unaligned",
            m(|b, _| set32(b, 100, 108)),
            |e| matches!(e, ReadError::BadHeaderLength { length: 108, .. }),
        ),
        (
            "header-length-past-cluster",
            m(|b, _| set32(b, 100, 8192)),
            |e| matches!(e, ReadError::BadHeaderLength { length: 8192, .. }),
        ),
        (
            "backing-file",
            m(|b, _| {
                set64(b, 8, 512);
                set32(b, 16, 9);
                b[512..521].copy_from_slice(b"/etc/host");
            }),
            |e| {
                matches!(
                    e,
                    ReadError::BackingFile {
                        offset: 512,
                        size: 9
                    }
                )
            },
        ),
        ("encrypted-aes", m(|b, _| set32(b, 32, 1)), |e| {
            matches!(e, ReadError::Encrypted(1))
        }),
        ("encrypted-luks", m(|b, _| set32(b, 32, 2)), |e| {
            matches!(e, ReadError::Encrypted(2))
        }),
        ("dirty", m(|b, _| set64(b, 72, INCOMPAT_DIRTY)), |e| {
            matches!(e, ReadError::Dirty)
        }),
        ("corrupt", m(|b, _| set64(b, 72, INCOMPAT_CORRUPT)), |e| {
            matches!(e, ReadError::Corrupt)
        }),
        (
            "external-data-bit",
            m(|b, _| set64(b, 72, INCOMPAT_EXTERNAL_DATA)),
            |e| matches!(e, ReadError::ExternalDataFile),
        ),
        (
            "extended-l2",
            m(|b, _| set64(b, 72, INCOMPAT_EXTENDED_L2)),
            |e| matches!(e, ReadError::ExtendedL2),
        ),
        (
            "unknown-incompatible-bit",
            m(|b, _| set64(b, 72, 1 << 9)),
            |e| matches!(e, ReadError::UnknownIncompatibleFeatures(0x200)),
        ),
        (
            "zstd-type-without-bit",
            m(|b, _| {
                set32(b, 100, 112);
                b[104] = COMPRESSION_TYPE_ZSTD;
            }),
            |e| {
                matches!(
                    e,
                    ReadError::BadCompressionType {
                        kind: 1,
                        bit_set: false
                    }
                )
            },
        ),
        (
            "compression-type-unknown",
            m(|b, _| {
                set32(b, 100, 112);
                b[104] = 7;
                set64(b, 72, INCOMPAT_COMPRESSION_TYPE);
            }),
            |e| {
                matches!(
                    e,
                    ReadError::BadCompressionType {
                        kind: 7,
                        bit_set: true
                    }
                )
            },
        ),
        ("refcount-order-7", m(|b, _| set32(b, 96, 7)), |e| {
            matches!(e, ReadError::BadRefcountOrder(7))
        }),
        ("virtual-size-2^63", m(|b, _| set64(b, 24, 1 << 63)), |e| {
            matches!(e, ReadError::VirtualSizeTooLarge(_))
        }),
        ("huge-l1-size", m(|b, _| set32(b, 36, 0x0100_0000)), |e| {
            matches!(e, ReadError::L1TooLarge(0x0100_0000))
        }),
        (
            "l1-too-small-for-size",
            m(|b, _| set64(b, 24, 1 << 40)),
            |e| matches!(e, ReadError::L1TooSmall { l1_size: 1, .. }),
        ),
        ("l1-outside-file", m(|b, _| set64(b, 40, 1 << 40)), |e| {
            matches!(
                e,
                ReadError::TableOutsideFile {
                    table: "L1 table",
                    ..
                }
            )
        }),
        (
            "l1-unaligned",
            m(|b, m| set64(b, 40, m.l1_off as u64 + 8)),
            |e| {
                matches!(
                    e,
                    ReadError::UnalignedTable {
                        table: "L1 table",
                        ..
                    }
                )
            },
        ),
        ("l1-in-header", m(|b, _| set64(b, 40, 0)), |e| {
            matches!(
                e,
                ReadError::TableInHeader {
                    table: "L1 table",
                    ..
                }
            )
        }),
        (
            "refcount-table-outside-file",
            m(|b, _| set64(b, 48, 1 << 30)),
            |e| {
                matches!(
                    e,
                    ReadError::TableOutsideFile {
                        table: "refcount table",
                        ..
                    }
                )
            },
        ),
        (
            "refcount-table-too-large",
            m(|b, _| set32(b, 56, 0x10000)),
            |e| matches!(e, ReadError::RefcountTableTooLarge(0x10000)),
        ),
        (
            "header-extension-overflow",
            m(|b, _| {
                set32(b, 104, 0x1234_5678);
                set32(b, 108, 0xffff_0000);
            }),
            |e| {
                matches!(
                    e,
                    ReadError::BadHeaderExtension {
                        kind: 0x1234_5678,
                        ..
                    }
                )
            },
        ),
        (
            "header-extensions-unterminated",
            m(|b, _| {
                set32(b, 104, 0x1234_5678);
                set32(b, 108, (CS - 112) as u32);
                for x in &mut b[112..CS as usize] {
                    *x = 0x55;
                }
            }),
            |e| matches!(e, ReadError::UnterminatedExtensions),
        ),
        (
            "external-data-file-extension",
            m(|b, _| {
                set32(b, 104, EXT_EXTERNAL_DATA_FILE);
                set32(b, 108, 8);
                b[112..120].copy_from_slice(b"data.raw");
            }),
            |e| matches!(e, ReadError::ExternalDataFile),
        ),
        (
            "l1-entry-reserved-bits",
            m(|b, m| {
                let e = be64(b, m.l1_off);
                set64(b, m.l1_off, e | 1 << 60);
            }),
            |e| matches!(e, ReadError::L1ReservedBits { index: 0, .. }),
        ),
        (
            "l2-table-outside-file",
            m(|b, m| set64(b, m.l1_off, (1 << 40) | OFLAG_COPIED)),
            |e| {
                matches!(
                    e,
                    ReadError::TableOutsideFile {
                        table: "L2 table",
                        ..
                    }
                )
            },
        ),
        (
            "l2-table-unaligned",
            m(|b, m| set64(b, m.l1_off, (m.l2_off as u64 + 512) | OFLAG_COPIED)),
            |e| {
                matches!(
                    e,
                    ReadError::UnalignedTable {
                        table: "L2 table",
                        ..
                    }
                )
            },
        ),
        (
            "l2-entry-reserved-bits",
            m(|b, m| {
                let at = m.l2_off + 8 * m.raw_index;
                let e = be64(b, at);
                set64(b, at, e | 1 << 3);
            }),
            |e| matches!(e, ReadError::L2ReservedBits { .. }),
        ),
        (
            "data-outside-file",
            m(|b, m| set64(b, m.l2_off + 8 * m.raw_index, (1 << 40) | OFLAG_COPIED)),
            |e| {
                matches!(
                    e,
                    ReadError::DataOutsideFile {
                        host: 0x100_0000_0000,
                        ..
                    }
                )
            },
        ),
        (
            "data-unaligned",
            m(|b, m| {
                let at = m.l2_off + 8 * m.raw_index;
                let e = be64(b, at);
                set64(b, at, e + 512);
            }),
            |e| matches!(e, ReadError::UnalignedData { .. }),
        ),
        (
            "compressed-in-header",
            m(|b, m| set64(b, m.l2_off + 8 * m.comp_index, OFLAG_COMPRESSED | 100)),
            |e| matches!(e, ReadError::DataInHeader { host: 100, .. }),
        ),
        (
            "compressed-past-end",
            m(|b, m| {
                let host = (b.len() - 10) as u64;
                let shift = compressed_sectors_shift(12);
                set64(
                    b,
                    m.l2_off + 8 * m.comp_index,
                    OFLAG_COMPRESSED | (7 << shift) | host,
                );
            }),
            |e| matches!(e, ReadError::CompressedOutsideFile { .. }),
        ),
        (
            "compressed-start-outside-file",
            m(|b, m| {
                let host = b.len() as u64 + 4096;
                set64(b, m.l2_off + 8 * m.comp_index, OFLAG_COMPRESSED | host);
            }),
            |e| matches!(e, ReadError::CompressedOutsideFile { .. }),
        ),
        (
            "compressed-garbage",
            m(|b, m| {
                for x in &mut b[m.comp_host..m.comp_host + 64] {
                    *x = 0xff;
                }
            }),
            |e| {
                matches!(
                    e,
                    ReadError::Decompress {
                        codec: "deflate",
                        ..
                    }
                )
            },
        ),
        (
            "compressed-truncated-stream",
            m(|b, m| {
                // The first 20 bytes of a real stream, placed at the very end of the file: the
                // descriptor's sector is clamped to the file and the stream ends early.
                let n = b.len();
                let head: Vec<u8> = b[m.comp_host..m.comp_host + 20].to_vec();
                b[n - 20..].copy_from_slice(&head);
                set64(
                    b,
                    m.l2_off + 8 * m.comp_index,
                    OFLAG_COMPRESSED | (n as u64 - 20),
                );
            }),
            |e| {
                matches!(
                    e,
                    ReadError::Decompress {
                        codec: "deflate",
                        ..
                    }
                )
            },
        ),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn base_image_is_valid() {
    let (base, _) = base_image().await;
    assert_eq!(full_read(base).await.unwrap(), 8 * CS);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_crafted_bad_image_is_rejected_with_its_specific_error() {
    let (base, meta) = base_image().await;
    let out_dir = std::env::var_os("QCOW2_WRITE_CORPUS").map(std::path::PathBuf::from);
    if let Some(d) = &out_dir {
        std::fs::create_dir_all(d).unwrap();
        std::fs::write(d.join("good-deflate-4k.qcow2"), &base).unwrap();
    }
    let cases = cases();
    assert!(cases.len() >= 20);
    let mut failures = Vec::new();
    for (name, mutate, expect) in &cases {
        let mut img = base.clone();
        mutate(&mut img, &meta);
        if let Some(d) = &out_dir {
            std::fs::write(d.join(format!("bad-{name}.qcow2")), &img).unwrap();
        }
        match full_read(img).await {
            Ok(n) => failures.push(format!("{name}: accepted ({n} bytes read)")),
            Err(e) if expect(&e) => {}
            Err(e) => failures.push(format!("{name}: wrong error: {e:?}")),
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}
