//! On-disk constants of the qcow2 format (qemu `docs/interop/qcow2.rst`). All numbers are
//! big-endian on disk.

/// The magic at byte 0: `QFI\xfb`.
pub const MAGIC: u32 = 0x5146_49fb;
/// Length of the fixed v2 header.
pub const V2_HEADER_LEN: usize = 72;
/// Minimum length of the v3 header (`header_length` field).
pub const V3_HEADER_LEN: usize = 104;
/// v3 header length once the `compression_type` field (byte 104) is present, padded to 8.
pub const V3_HEADER_LEN_WITH_COMPRESSION_TYPE: usize = 112;
/// Offset of the `compression_type` byte in a v3 header.
pub const COMPRESSION_TYPE_OFFSET: usize = 104;

/// Smallest cluster size: 512 B.
pub const MIN_CLUSTER_BITS: u32 = 9;
/// Largest cluster size qemu accepts: 2 MiB.
pub const MAX_CLUSTER_BITS: u32 = 21;
/// Default cluster size of the writer: 64 KiB.
pub const DEFAULT_CLUSTER_BITS: u32 = 16;
/// qemu's sector (`BDRV_SECTOR_SIZE`): the unit of compressed descriptors, and of the virtual
/// size as qemu reads it (the size field rounded down to a whole sector).
pub const SECTOR_SIZE: u64 = 512;

/// Largest refcount order (64-bit refcounts).
pub const MAX_REFCOUNT_ORDER: u32 = 6;
/// Refcount order implied by a v2 image, and written by ours (16-bit refcounts).
pub const DEFAULT_REFCOUNT_ORDER: u32 = 4;

/// Largest active L1 table qemu accepts, in bytes (`QCOW_MAX_L1_SIZE`).
pub const MAX_L1_BYTES: u64 = 32 << 20;
/// Largest refcount table qemu accepts, in bytes (`QCOW_MAX_REFTABLE_SIZE`).
pub const MAX_REFTABLE_BYTES: u64 = 8 << 20;
/// Largest virtual size we accept: qemu's `QCOW_MAX_VIRTUAL_SIZE` limit of 2^63 - 512... we keep
/// offsets arithmetic safely inside `u64` by bounding to 2^62.
pub const MAX_VIRTUAL_SIZE: u64 = 1 << 62;

/// Incompatible feature bit 0: the refcounts may be stale (image not closed cleanly).
pub const INCOMPAT_DIRTY: u64 = 1 << 0;
/// Incompatible feature bit 1: the image is marked corrupt.
pub const INCOMPAT_CORRUPT: u64 = 1 << 1;
/// Incompatible feature bit 2: guest data lives in an external data file.
pub const INCOMPAT_EXTERNAL_DATA: u64 = 1 << 2;
/// Incompatible feature bit 3: the `compression_type` header field is in use.
pub const INCOMPAT_COMPRESSION_TYPE: u64 = 1 << 3;
/// Incompatible feature bit 4: extended L2 entries (subclusters).
pub const INCOMPAT_EXTENDED_L2: u64 = 1 << 4;
/// Every incompatible bit this reader knows about.
pub const INCOMPAT_KNOWN: u64 = INCOMPAT_DIRTY
    | INCOMPAT_CORRUPT
    | INCOMPAT_EXTERNAL_DATA
    | INCOMPAT_COMPRESSION_TYPE
    | INCOMPAT_EXTENDED_L2;
/// Compatible feature bit 0: lazy refcounts (harmless for a reader).
pub const COMPAT_LAZY_REFCOUNTS: u64 = 1 << 0;

/// `compression_type` 0: raw deflate (no zlib header).
pub const COMPRESSION_TYPE_DEFLATE: u8 = 0;
/// `compression_type` 1: zstd.
pub const COMPRESSION_TYPE_ZSTD: u8 = 1;

/// Header extension type: end of the extension list.
pub const EXT_END: u32 = 0;
/// Header extension type: backing file format name.
pub const EXT_BACKING_FORMAT: u32 = 0xe279_2aca;
/// Header extension type: feature name table.
pub const EXT_FEATURE_NAMES: u32 = 0x6803_f857;
/// Header extension type: bitmaps.
pub const EXT_BITMAPS: u32 = 0x2385_2875;
/// Header extension type: full disk encryption header pointer.
pub const EXT_FDE: u32 = 0x0537_be77;
/// Header extension type: external data file name.
pub const EXT_EXTERNAL_DATA_FILE: u32 = 0x4441_5441;
/// Size of one feature-name table entry: type (1), bit (1), name (46).
pub const FEATURE_NAME_ENTRY_LEN: usize = 48;

/// Bit 63 of L1 and standard L2 entries: refcount is exactly one.
pub const OFLAG_COPIED: u64 = 1 << 63;
/// Bit 62 of L2 entries: the cluster is compressed.
pub const OFLAG_COMPRESSED: u64 = 1 << 62;
/// Bit 0 of a standard L2 entry (v3): the cluster reads as zeros.
pub const OFLAG_ZERO: u64 = 1;
/// Bits 9..=55 of L1 and standard L2 entries: a cluster-aligned host offset.
pub const OFFSET_MASK: u64 = 0x00ff_ffff_ffff_fe00;
/// Reserved bits of an L1 entry (1..=8 and 56..=62) that must be zero.
pub const L1_RESERVED_MASK: u64 = 0x7f00_0000_0000_01fe;
/// Reserved bits of a standard L2 entry (1..=8 and 56..=61) that must be zero.
pub const L2_STANDARD_RESERVED_MASK: u64 = 0x3f00_0000_0000_01fe;
/// Size of one L1 or L2 entry (non-extended).
pub const ENTRY_SIZE: u64 = 8;

/// Largest refcount value a 16-bit refcount block holds.
pub const REFCOUNT16_MAX: u64 = u16::MAX as u64;

/// Bit position of the first "additional sectors" bit in a compressed descriptor.
pub fn compressed_sectors_shift(cluster_bits: u32) -> u32 {
    62 - (cluster_bits - 8)
}
