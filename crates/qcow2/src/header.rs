//! The qcow2 header: parsing with validation of every field before use, and serialisation for
//! the writer.

use crate::error::{ReadError, ReadResult};
use crate::format::*;

/// The codec of compressed clusters (`compression_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompressionType {
    /// Raw deflate (the default, and the only choice in v2).
    Deflate,
    /// zstd (`compression_type` = 1, incompatible bit 3).
    Zstd,
}

/// One entry of the feature-name table header extension.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeatureName {
    /// 0 incompatible, 1 compatible, 2 autoclear.
    pub kind: u8,
    /// Bit number.
    pub bit: u8,
    /// The name, trimmed of NUL padding.
    pub name: String,
}

/// A parsed and validated qcow2 header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// 2 or 3.
    pub version: u32,
    /// log2 of the cluster size.
    pub cluster_bits: u32,
    /// The size field as stored, in bytes. The disk is [`Header::virtual_size`]: qemu reads this
    /// field in whole sectors, so a size that is not a multiple of 512 is rounded down.
    pub size: u64,
    /// Entries in the active L1 table.
    pub l1_size: u32,
    /// File offset of the active L1 table.
    pub l1_table_offset: u64,
    /// File offset of the refcount table.
    pub refcount_table_offset: u64,
    /// Clusters occupied by the refcount table.
    pub refcount_table_clusters: u32,
    /// Number of internal snapshots.
    pub nb_snapshots: u32,
    /// File offset of the snapshot table.
    pub snapshots_offset: u64,
    /// Incompatible feature bits.
    pub incompatible_features: u64,
    /// Compatible feature bits.
    pub compatible_features: u64,
    /// Autoclear feature bits.
    pub autoclear_features: u64,
    /// log2 of the refcount width in bits.
    pub refcount_order: u32,
    /// Length of the header proper (before extensions).
    pub header_length: u32,
    /// Codec of compressed clusters.
    pub compression_type: CompressionType,
    /// Feature-name table, if the image has one.
    pub feature_names: Vec<FeatureName>,
}

/// Where the writer put a new image's active L1 table and its refcount table: named fields,
/// so that four numbers of two types cannot be passed in the wrong order.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Tables {
    /// Entries in the L1 table.
    pub l1_size: u32,
    /// File offset of the L1 table.
    pub l1_table_offset: u64,
    /// File offset of the refcount table.
    pub refcount_table_offset: u64,
    /// Clusters the refcount table occupies.
    pub refcount_table_clusters: u32,
}

fn be32(buf: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(buf[at..at + 4].try_into().expect("4-byte slice"))
}

fn be64(buf: &[u8], at: usize) -> u64 {
    u64::from_be_bytes(buf[at..at + 8].try_into().expect("8-byte slice"))
}

impl Header {
    /// Cluster size in bytes.
    pub fn cluster_size(&self) -> u64 {
        1 << self.cluster_bits
    }

    /// The virtual disk size as qemu reads it: the size field rounded down to a whole 512-byte
    /// sector (block/qcow2.c: `bs->total_sectors = header.size / BDRV_SECTOR_SIZE`). Bytes past
    /// it are not part of the disk, whatever the L2 tables map there.
    pub fn virtual_size(&self) -> u64 {
        self.size - self.size % SECTOR_SIZE
    }

    /// Entries per L2 table.
    pub fn l2_entries(&self) -> u64 {
        self.cluster_size() / ENTRY_SIZE
    }

    /// A version 3 header as the writer makes one: the given geometry and tables, no
    /// snapshots, no feature bit but the one a zstd `compression` needs, the default refcount
    /// width, and a header long enough to hold the compression type when it is not deflate.
    pub(crate) fn new_v3(
        cluster_bits: u32,
        size: u64,
        tables: Tables,
        compression_type: CompressionType,
    ) -> Header {
        let zstd = compression_type == CompressionType::Zstd;
        Header {
            version: 3,
            cluster_bits,
            size,
            l1_size: tables.l1_size,
            l1_table_offset: tables.l1_table_offset,
            refcount_table_offset: tables.refcount_table_offset,
            refcount_table_clusters: tables.refcount_table_clusters,
            nb_snapshots: 0,
            snapshots_offset: 0,
            incompatible_features: if zstd { INCOMPAT_COMPRESSION_TYPE } else { 0 },
            compatible_features: 0,
            autoclear_features: 0,
            refcount_order: DEFAULT_REFCOUNT_ORDER,
            header_length: if zstd {
                V3_HEADER_LEN_WITH_COMPRESSION_TYPE as u32
            } else {
                V3_HEADER_LEN as u32
            },
            compression_type,
            feature_names: Vec::new(),
        }
    }

    /// Number of L1 entries needed to map `size` bytes with `cluster_bits`.
    pub fn l1_entries_for(size: u64, cluster_bits: u32) -> u64 {
        let l2_span_bits = cluster_bits + (cluster_bits - 3);
        size.div_ceil(1u64 << l2_span_bits)
    }

    /// Parses and validates the header from the start of the file.
    ///
    /// `cluster0` holds the first `min(file_len, cluster_size)` bytes of the file (or at least
    /// the first 4 KiB; extensions are parsed only within what is given). Every field that later
    /// code uses as a size or an offset is checked here against `file_len`.
    pub fn parse(cluster0: &[u8], file_len: u64) -> ReadResult<Header> {
        let have = cluster0.len() as u64;
        if have < V2_HEADER_LEN as u64 {
            return Err(ReadError::TruncatedHeader {
                len: file_len.min(have),
                needed: V2_HEADER_LEN as u64,
            });
        }
        let magic = be32(cluster0, 0);
        if magic != MAGIC {
            return Err(ReadError::BadMagic(magic));
        }
        let version = be32(cluster0, 4);
        if version != 2 && version != 3 {
            return Err(ReadError::UnsupportedVersion(version));
        }
        if version == 3 && have < V3_HEADER_LEN as u64 {
            return Err(ReadError::TruncatedHeader {
                len: file_len.min(have),
                needed: V3_HEADER_LEN as u64,
            });
        }
        let backing_file_offset = be64(cluster0, 8);
        let backing_file_size = be32(cluster0, 16);
        let cluster_bits = be32(cluster0, 20);
        let size = be64(cluster0, 24);
        let crypt_method = be32(cluster0, 32);
        let l1_size = be32(cluster0, 36);
        let l1_table_offset = be64(cluster0, 40);
        let refcount_table_offset = be64(cluster0, 48);
        let refcount_table_clusters = be32(cluster0, 56);
        let nb_snapshots = be32(cluster0, 60);
        let snapshots_offset = be64(cluster0, 64);

        if !(MIN_CLUSTER_BITS..=MAX_CLUSTER_BITS).contains(&cluster_bits) {
            return Err(ReadError::ClusterBitsOutOfRange(cluster_bits));
        }
        let cluster_size = 1u64 << cluster_bits;

        let (
            incompatible_features,
            compatible_features,
            autoclear_features,
            refcount_order,
            header_length,
        ) = if version == 3 {
            (
                be64(cluster0, 72),
                be64(cluster0, 80),
                be64(cluster0, 88),
                be32(cluster0, 96),
                be32(cluster0, 100),
            )
        } else {
            (0, 0, 0, DEFAULT_REFCOUNT_ORDER, V2_HEADER_LEN as u32)
        };
        if version == 3
            && (u64::from(header_length) < V3_HEADER_LEN as u64
                || !header_length.is_multiple_of(8)
                || u64::from(header_length) > cluster_size)
        {
            return Err(ReadError::BadHeaderLength {
                length: header_length,
                cluster_size,
            });
        }
        if u64::from(header_length) > have {
            return Err(ReadError::TruncatedHeader {
                len: file_len.min(have),
                needed: u64::from(header_length),
            });
        }

        if backing_file_offset != 0 {
            return Err(ReadError::BackingFile {
                offset: backing_file_offset,
                size: backing_file_size,
            });
        }
        if crypt_method != 0 {
            return Err(ReadError::Encrypted(crypt_method));
        }
        let unknown = incompatible_features & !INCOMPAT_KNOWN;
        if unknown != 0 {
            return Err(ReadError::UnknownIncompatibleFeatures(unknown));
        }
        if incompatible_features & INCOMPAT_CORRUPT != 0 {
            return Err(ReadError::Corrupt);
        }
        if incompatible_features & INCOMPAT_DIRTY != 0 {
            return Err(ReadError::Dirty);
        }
        if incompatible_features & INCOMPAT_EXTERNAL_DATA != 0 {
            return Err(ReadError::ExternalDataFile);
        }
        if incompatible_features & INCOMPAT_EXTENDED_L2 != 0 {
            return Err(ReadError::ExtendedL2);
        }

        let bit_set = incompatible_features & INCOMPAT_COMPRESSION_TYPE != 0;
        let kind = if header_length as usize > COMPRESSION_TYPE_OFFSET {
            cluster0[COMPRESSION_TYPE_OFFSET]
        } else {
            COMPRESSION_TYPE_DEFLATE
        };
        // As qemu: deflate must not set bit 3, anything else must set it.
        let compression_type = match (kind, bit_set) {
            (COMPRESSION_TYPE_DEFLATE, false) => CompressionType::Deflate,
            (COMPRESSION_TYPE_ZSTD, true) => CompressionType::Zstd,
            _ => return Err(ReadError::BadCompressionType { kind, bit_set }),
        };

        if refcount_order > MAX_REFCOUNT_ORDER {
            return Err(ReadError::BadRefcountOrder(refcount_order));
        }
        if size > MAX_VIRTUAL_SIZE {
            return Err(ReadError::VirtualSizeTooLarge(size));
        }

        if u64::from(l1_size) * ENTRY_SIZE > MAX_L1_BYTES {
            return Err(ReadError::L1TooLarge(l1_size));
        }
        let needed = Self::l1_entries_for(size, cluster_bits);
        if u64::from(l1_size) < needed {
            return Err(ReadError::L1TooSmall { l1_size, needed });
        }
        if l1_size > 0 {
            check_table(
                "L1 table",
                l1_table_offset,
                u64::from(l1_size) * ENTRY_SIZE,
                cluster_size,
                file_len,
            )?;
        }
        if u64::from(refcount_table_clusters) * cluster_size > MAX_REFTABLE_BYTES {
            return Err(ReadError::RefcountTableTooLarge(refcount_table_clusters));
        }
        if refcount_table_clusters > 0 {
            check_table(
                "refcount table",
                refcount_table_offset,
                u64::from(refcount_table_clusters) * cluster_size,
                cluster_size,
                file_len,
            )?;
        }

        let ext_start = if version == 3 {
            header_length as usize
        } else {
            V2_HEADER_LEN
        };
        let ext_end = cluster0.len().min(cluster_size as usize);
        let feature_names = parse_extensions(cluster0, ext_start, ext_end)?;

        Ok(Header {
            version,
            cluster_bits,
            size,
            l1_size,
            l1_table_offset,
            refcount_table_offset,
            refcount_table_clusters,
            nb_snapshots,
            snapshots_offset,
            incompatible_features,
            compatible_features,
            autoclear_features,
            refcount_order,
            header_length,
            compression_type,
            feature_names,
        })
    }

    /// Serialises a v3 header (without extensions). The writer pads it to a full cluster, whose
    /// zero bytes after the header are the end-of-extensions marker.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.header_length as usize);
        out.extend_from_slice(&MAGIC.to_be_bytes());
        out.extend_from_slice(&3u32.to_be_bytes());
        out.extend_from_slice(&0u64.to_be_bytes()); // backing_file_offset
        out.extend_from_slice(&0u32.to_be_bytes()); // backing_file_size
        out.extend_from_slice(&self.cluster_bits.to_be_bytes());
        out.extend_from_slice(&self.size.to_be_bytes());
        out.extend_from_slice(&0u32.to_be_bytes()); // crypt_method
        out.extend_from_slice(&self.l1_size.to_be_bytes());
        out.extend_from_slice(&self.l1_table_offset.to_be_bytes());
        out.extend_from_slice(&self.refcount_table_offset.to_be_bytes());
        out.extend_from_slice(&self.refcount_table_clusters.to_be_bytes());
        out.extend_from_slice(&self.nb_snapshots.to_be_bytes());
        out.extend_from_slice(&self.snapshots_offset.to_be_bytes());
        out.extend_from_slice(&self.incompatible_features.to_be_bytes());
        out.extend_from_slice(&self.compatible_features.to_be_bytes());
        out.extend_from_slice(&self.autoclear_features.to_be_bytes());
        out.extend_from_slice(&self.refcount_order.to_be_bytes());
        out.extend_from_slice(&self.header_length.to_be_bytes());
        if self.header_length as usize > COMPRESSION_TYPE_OFFSET {
            out.push(match self.compression_type {
                CompressionType::Deflate => COMPRESSION_TYPE_DEFLATE,
                CompressionType::Zstd => COMPRESSION_TYPE_ZSTD,
            });
        }
        out.resize(self.header_length as usize, 0);
        out
    }
}

/// Checks that a metadata table is cluster-aligned, after the header cluster and inside the file.
fn check_table(
    table: &'static str,
    offset: u64,
    len: u64,
    cluster_size: u64,
    file_len: u64,
) -> ReadResult<()> {
    if !offset.is_multiple_of(cluster_size) {
        return Err(ReadError::UnalignedTable { table, offset });
    }
    if offset < cluster_size {
        return Err(ReadError::TableInHeader { table, offset });
    }
    if offset.checked_add(len).is_none_or(|end| end > file_len) {
        return Err(ReadError::TableOutsideFile {
            table,
            offset,
            len,
            file_len,
        });
    }
    Ok(())
}

/// Walks the header extensions in `buf[start..end]`; returns the feature-name table. Each step
/// advances at least 8 bytes, so the walk ends.
fn parse_extensions(buf: &[u8], start: usize, end: usize) -> ReadResult<Vec<FeatureName>> {
    let mut names = Vec::new();
    let mut at = start;
    loop {
        if at + 8 > end {
            return Err(ReadError::UnterminatedExtensions);
        }
        let kind = be32(buf, at);
        let len = be32(buf, at + 4);
        let data_start = at + 8;
        let padded = (len as usize).div_ceil(8) * 8;
        if kind == EXT_END {
            return Ok(names);
        }
        if data_start
            .checked_add(padded)
            .is_none_or(|data_end| data_end > end)
        {
            return Err(ReadError::BadHeaderExtension {
                kind,
                offset: at as u64,
                len,
            });
        }
        let data = &buf[data_start..data_start + len as usize];
        match kind {
            EXT_EXTERNAL_DATA_FILE => return Err(ReadError::ExternalDataFile),
            EXT_FDE => return Err(ReadError::Encrypted(0)),
            EXT_FEATURE_NAMES => {
                for entry in data.chunks_exact(FEATURE_NAME_ENTRY_LEN) {
                    let name_bytes = &entry[2..];
                    let name_len = name_bytes
                        .iter()
                        .position(|&b| b == 0)
                        .unwrap_or(name_bytes.len());
                    names.push(FeatureName {
                        kind: entry[0],
                        bit: entry[1],
                        name: String::from_utf8_lossy(&name_bytes[..name_len]).into_owned(),
                    });
                }
            }
            // Backing format, bitmaps and unknown extensions do not change how the active
            // layer reads; bitmaps are an autoclear feature.
            _ => {}
        }
        at = data_start + padded;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(zstd: bool) -> Header {
        let compression = if zstd {
            CompressionType::Zstd
        } else {
            CompressionType::Deflate
        };
        let tables = Tables {
            l1_size: 20,
            l1_table_offset: 3 << 16,
            refcount_table_offset: 5 << 16,
            refcount_table_clusters: 1,
        };
        let h = Header::new_v3(16, 10 << 30, tables, compression);
        // The lengths the qcow2 specification gives, written out so a wrong constant shows.
        assert_eq!(h.header_length, if zstd { 112 } else { 104 });
        h
    }

    #[test]
    fn serialised_header_parses_back_identically() {
        for zstd in [false, true] {
            let h = sample(zstd);
            let mut cluster = h.to_bytes();
            cluster.resize(1 << 16, 0);
            assert_eq!(Header::parse(&cluster, 6 << 16).unwrap(), h);
        }
    }

    #[test]
    fn l1_entries_cover_the_virtual_size() {
        // 64 KiB clusters: one L2 table maps 512 MiB; 1 TiB needs 2048 entries.
        assert_eq!(Header::l1_entries_for(1 << 40, 16), 2048);
        assert_eq!(Header::l1_entries_for((512 << 20) + 1, 16), 2);
        assert_eq!(Header::l1_entries_for(0, 16), 0);
    }

    #[test]
    fn feature_name_table_is_parsed() {
        let h = sample(false);
        let mut cluster = h.to_bytes();
        cluster.extend_from_slice(&EXT_FEATURE_NAMES.to_be_bytes());
        cluster.extend_from_slice(&(FEATURE_NAME_ENTRY_LEN as u32).to_be_bytes());
        let mut entry = vec![0u8, 0u8];
        entry.extend_from_slice(b"dirty bit");
        entry.resize(FEATURE_NAME_ENTRY_LEN, 0);
        cluster.extend_from_slice(&entry);
        cluster.resize(1 << 16, 0);
        let parsed = Header::parse(&cluster, 6 << 16).unwrap();
        assert_eq!(
            parsed.feature_names,
            vec![FeatureName {
                kind: 0,
                bit: 0,
                name: "dirty bit".into()
            }]
        );
    }
}
